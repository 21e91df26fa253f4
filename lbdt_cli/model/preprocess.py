"""Frame preprocessing as the authors trained: square resize (aspect ratio not kept), ImageNet
normalisation, and the frame difference taken between the NORMALISED tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B,H,W,3] (or [H,W,3]) RGB -> float [B,3,size,size], normalised.

    Bilinear with antialiasing approximates the PIL resize the released loaders used.
    """
    if frames.ndim == 3:
        frames = frames.unsqueeze(0)
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def frame_difference(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    return (current - previous).abs()


def previous_frame_index(t: int, interval: int, first: int = 0) -> int:
    """The frame paired with frame t: t - δ, clamped to the clip's first frame (so the first δ
    frames see a zero difference). The released loaders had no working rule here."""
    return max(t - interval, first)
