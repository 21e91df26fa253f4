"""Sinusoidal position encodings, laid out exactly as the authors' released code builds them."""

from __future__ import annotations

import math

import torch


def sine_encoding_1d(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Word-position encoding [length, dim]: sin on even channels, cos on odd channels."""
    position = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.to(dtype)


def sine_encoding_2d(dim: int, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-position encoding [dim, height, width].

    The first half of the channels encodes x (sin on even, cos on odd), the second half y,
    each half with its own frequency ladder over dim/2 channels.
    """
    if dim % 4 != 0:
        raise ValueError(f"2-D sinusoidal encoding needs a channel count divisible by 4, got {dim}")
    half = dim // 2
    div_term = torch.exp(torch.arange(0.0, half, 2, device=device) * -(math.log(10000.0) / half))
    pos_w = torch.arange(0.0, width, device=device).unsqueeze(1) * div_term  # [W, half/2]
    pos_h = torch.arange(0.0, height, device=device).unsqueeze(1) * div_term  # [H, half/2]
    pe = torch.zeros(dim, height, width, device=device)
    pe[0:half:2] = torch.sin(pos_w).t().unsqueeze(1).expand(-1, height, -1)
    pe[1:half:2] = torch.cos(pos_w).t().unsqueeze(1).expand(-1, height, -1)
    pe[half::2] = torch.sin(pos_h).t().unsqueeze(2).expand(-1, -1, width)
    pe[half + 1 :: 2] = torch.cos(pos_h).t().unsqueeze(2).expand(-1, -1, width)
    return pe.to(dtype)
