"""Cost of a model: multiply-adds (fvcore's convention, as in the paper's Table 8) and parameters.
Counting runs the real forward pass under torch's FlopCounterMode. Timing is in `lbdt_cli.benchmark`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

GROUPS = {  # report group -> top-level submodules of LBDT
    "encoders": ("spatial_encoder", "temporal_encoder"),
    "text": ("text_encoder", "word_embedding"),
    "transfer": ("transfer",),
    "decoder": ("decoder",),
}

aten = torch.ops.aten


def _prod(shape) -> int:
    return math.prod(shape) if shape is not None else 0


# FlopCounterMode counts 2 FLOPs per multiply-add for matmuls and convolutions; the counts
# below are doubled likewise so that halving the total gives fvcore's numbers for these ops.
def _batch_norm(input_shape, weight_shape=None, *args, out_shape=None, **kwargs):
    return 2 * _prod(input_shape) * (2 if weight_shape is not None else 1)


def _layer_norm(input_shape, normalized_shape=None, weight_shape=None, *args, out_shape=None, **kwargs):
    return 2 * _prod(input_shape) * (5 if weight_shape is not None else 4)


def _upsample_bilinear(input_shape, *args, out_shape=None, **kwargs):
    return 2 * 4 * _prod(out_shape)


def _attention(query_shape, key_shape, *args, out_shape=None, **kwargs):
    # q·kᵀ and attn·v: two multiply-adds per (query, key, channel) triple
    b, h, lq, d = query_shape
    return 2 * 2 * b * h * lq * key_shape[-2] * d


_EXTRA_OPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    aten.native_batch_norm: _batch_norm,
    aten._native_batch_norm_legit_no_training: _batch_norm,
    aten.native_layer_norm: _layer_norm,
    aten.upsample_bilinear2d: _upsample_bilinear,
}


@dataclass
class CostReport:
    model: str
    frames: int
    size: int
    gmacs: float  # "GFLOPs" in the paper's and fvcore's sense: 1e9 multiply-adds
    params: int
    params_by_group: dict[str, int] = field(default_factory=dict)
    gmacs_by_group: dict[str, float] = field(default_factory=dict)
    gmacs_by_operator: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"model": self.model, "frames": self.frames, "size": self.size, "gflops": round(self.gmacs, 4),
                "params": self.params, "gflops_by_group": {k: round(v, 4) for k, v in self.gmacs_by_group.items()},
                "params_by_group": self.params_by_group,
                "convention": "multiply-adds (fvcore): conv, linear/matmul, attention, 2/elem batch norm, "
                              "5/elem layer norm, 4/output bilinear upsampling"}


def example_inputs(model, batch: int, size: int, device="cpu"):
    cfg = model.config
    image = torch.randn(batch, 3, size, size, device=device)
    words = torch.randn(batch, cfg.max_words, cfg.word_dim, device=device)
    mask = torch.zeros(batch, cfg.max_words, device=device)
    mask[:, :8] = 1
    return image, image.abs(), words, mask


def count_params(model) -> tuple[int, dict[str, int]]:
    by_group = {}
    for group, names in GROUPS.items():
        by_group[group] = sum(p.numel() for n in names if getattr(model, n, None) is not None
                              for p in getattr(model, n).parameters())
    return sum(p.numel() for p in model.parameters()), by_group


def count_cost(model, frames: int = 2, size: int = 320) -> CostReport:
    """Multiply-adds of one forward pass on a pair of `frames` = 2 (the frame and the one δ
    before it, i.e. batch 1) at size×size; `frames` = 2k counts a batch of k pairs."""
    if frames < 2 or frames % 2:
        raise ValueError("frames counts the input frames of whole pairs: 2, 4, ...")
    model = model.eval()
    inputs = example_inputs(model, frames // 2, size)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_OPS)
    with torch.no_grad(), counter:
        model(*inputs)
    counts = counter.get_flop_counts()
    total = sum(counts["Global"].values()) / 2
    root = type(model).__name__

    def group_total(name: str) -> float:
        full = f"{root}.{name}"
        if full in counts:
            return sum(counts[full].values()) / 2
        depth = full.count(".") + 1
        return sum(sum(v.values()) for k, v in counts.items()
                   if k.startswith(full + ".") and k.count(".") == depth) / 2

    by_group = {g: sum(group_total(n) for n in names) / 1e9 for g, names in GROUPS.items()}
    other = total / 1e9 - sum(by_group.values())
    if abs(other) > 1e-6:
        by_group["other"] = other
    by_op: dict[str, float] = {}
    for op, n in counts["Global"].items():
        name = str(op).split(".")[-1]  # "aten.convolution" -> "convolution"
        by_op[name] = by_op.get(name, 0.0) + n / 2e9
    params, params_by_group = count_params(model)
    return CostReport(model.config.name, frames, size, total / 1e9, params, params_by_group, by_group, by_op)


def frame_gflop(model, size: int, expressions: int = 1) -> float:
    """GFLOP (2 per multiply-add) of the per-frame work when segmenting a video: one frame pair
    with `expressions` expressions, the text side encoded beforehand (as the engine runs it)."""
    model = model.eval()
    image, diff, words, mask = example_inputs(model, 1, size)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_OPS)
    with torch.no_grad():
        text = model.encode_text(words.expand(expressions, -1, -1), mask.expand(expressions, -1))
        with counter:
            model.forward_with_text(image, diff, text, expressions_per_frame=expressions)
    return counter.get_total_flops() / 1e9
