"""Random weights laid out exactly like the authors' released checkpoints (keys, shapes, dtypes
from tests/data/official_keys_L*.tsv, the key list of the released files)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"


def official_keys(layers: int) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (DATA / f"official_keys_L{layers}.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
        rows.append((key, dims, dtype))
    return rows


def random_official_state_dict(layers: int, seed: int = 0, prefix: str = "") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    sd = {}
    for key, shape, dtype in official_keys(layers):
        if dtype == "torch.int64":
            t = torch.tensor(0, dtype=torch.int64)
        elif key.endswith("running_var"):
            t = 0.5 + torch.rand(*shape, generator=g)
        elif key.endswith("running_mean"):
            t = 0.1 * randn(*shape)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = randn(*shape) * math.sqrt(2.0 / fan_in)
        elif len(shape) == 2:
            t = randn(*shape) / math.sqrt(shape[1])
        elif key.endswith("weight"):  # BatchNorm / LayerNorm scale
            t = 0.6 + 0.4 * torch.rand(*shape, generator=g)
        else:
            t = 0.05 * randn(*shape)
        sd[prefix + key] = t
    return sd
