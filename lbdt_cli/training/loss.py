"""The released LBDT training loss: 0.5 * BCE(pos_weight 1.5) + 0.5 * Dice on the full-size logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-sample 1 - (2·Σpt + 1) / (Σp + Σt + 1) with p = sigmoid clamped to [eps, 1-eps]; batch mean."""
    p = torch.sigmoid(logits.float()).clamp(eps, 1 - eps).flatten(1)
    t = target.float().flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def lbdt_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.5, bce_weight: float = 0.5,
              dice_weight: float = 0.5) -> torch.Tensor:
    pw = torch.tensor(pos_weight, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pw)
    return bce_weight * bce + dice_weight * dice_loss(logits, target)
