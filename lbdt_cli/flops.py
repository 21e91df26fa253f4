"""Cost of a model: multiply-adds (fvcore's convention, as in the paper's Table 8), parameters
and measured speed. Counting runs the real forward pass under torch's FlopCounterMode."""

from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
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


@dataclass
class SpeedResult:
    label: str
    batch: int
    seconds_per_batch: float

    @property
    def fps(self) -> float:
        return self.batch / self.seconds_per_batch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _times(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _median_time(fn, device, warmup: int, repeats: int) -> float:
    return statistics.median(_times(fn, device, warmup, repeats))


def peak_rate(device: str | torch.device = "cpu", precision: str = "fp32", repeats: int = 8,
              budget_s: float = 1.0) -> float:
    """GFLOP/s (2 per multiply-add) of the faster of two large dense kernels on `device`: a square
    matmul and a ResNet-sized 3×3 convolution (channels-last), best of up to `repeats` (fewer when
    a kernel is slow, e.g. bf16 on a CPU without bf16 units: about `budget_s` per kernel). A
    practical ceiling for a compute-bound forward pass, measured in the same process rather than
    taken from a data sheet."""
    from lbdt_cli.engine import PRECISION_DTYPES, resolve_device

    dev = resolve_device(str(device))
    dtype = PRECISION_DTYPES[precision]
    n, batch = (8192, 64) if dev.type == "cuda" else (1024, 8)

    def best_rate(fn, flop: int) -> float:
        first = _times(fn, dev, warmup=1, repeats=1)[0]
        rest = _times(fn, dev, warmup=0, repeats=max(0, min(repeats, int(budget_s / first)) - 1))
        return flop / min([first, *rest])

    with torch.inference_mode():
        a = torch.randn(n, n, device=dev, dtype=dtype)
        mm = best_rate(lambda: torch.mm(a, a), 2 * n**3)
        x = torch.randn(batch, 256, 40, 40, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
        conv = best_rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * x.numel() * 256 * 9)
    return max(mm, conv) / 1e9


def measure_speed(model, size: int, device: str = "auto", batch_sizes=(1, 4), precision: str = "fp32",
                  channels_last: bool = False, compile: bool = False, fold_bn: bool = True, warmup: int = 2,
                  repeats: int = 3) -> list[SpeedResult]:
    """Frames per second of the forward pass: a naive baseline (batch 1, fp32, eager, text
    encoded per frame) first, then the tuned path (text encoded once, batched, chosen precision)."""
    from lbdt_cli.engine import PRECISION_DTYPES, resolve_device

    dev = resolve_device(device)
    model = model.eval().to(dev)
    results = []
    with torch.inference_mode():
        base_inputs = example_inputs(model, 1, size, dev)
        t = _median_time(lambda: model(*base_inputs), dev, warmup, repeats)
        results.append(SpeedResult("baseline: batch 1, fp32, eager, per-frame", 1, t))

        tuned = model
        if fold_bn:
            from lbdt_cli.model.fusion import fold_batchnorm

            tuned = fold_batchnorm(model)
        if channels_last:
            tuned = tuned.to(memory_format=torch.channels_last)
        forward = torch.compile(tuned.forward_with_text) if compile else tuned.forward_with_text
        dtype = PRECISION_DTYPES[precision]
        autocast = (lambda: torch.autocast(dev.type, dtype=dtype)) if precision != "fp32" else nullcontext
        for batch in batch_sizes:
            image, diff, words, mask = example_inputs(model, batch, size, dev)
            if channels_last:
                image, diff = (x.contiguous(memory_format=torch.channels_last) for x in (image, diff))
            text = tuned.encode_text(words[:1], mask[:1]).index([0] * batch)

            def run():
                with autocast():
                    forward(image, diff, text)

            t = _median_time(run, dev, warmup, repeats)
            label = f"batch {batch}, {precision}" + (", BN folded" if fold_bn else "") + \
                    (", channels_last" if channels_last else "") + (", compiled" if compile else "")
            results.append(SpeedResult(label, batch, t))
        if channels_last and not fold_bn:
            model.to(memory_format=torch.contiguous_format)
    return results
