"""Timing: the device's dense-kernel peak, the forward pass's frames/s (`lbdt benchmark-flops
--speed`) and the whole `lbdt segment` road against a naive per-frame loop (`lbdt segment
--benchmark`). Every number is measured beside its baseline in the same run; nothing is asserted.
Counting multiply-adds is in `lbdt_cli.flops`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from lbdt_cli.errors import LbdtError
from lbdt_cli.flops import example_inputs, frame_gflop
from lbdt_cli.runtime import autocast, precision_dtype, resolve_device
from lbdt_cli.utils.memory import peak_rss_mb

if TYPE_CHECKING:
    from lbdt_cli.video.pipeline import Segmenter, VideoJob

__all__ = ["SpeedResult", "peak_rate", "measure_speed", "benchmark_segment", "benchmark_live"]


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
    dev = resolve_device(device)
    dtype = precision_dtype(precision)
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
                  repeats: int = 3, backends: Sequence = ()) -> list[SpeedResult]:
    """Frames per second of the forward pass: a naive baseline (batch 1, fp32, eager, text
    encoded per frame) first, then the tuned path (text encoded once, batched, chosen precision),
    then each exported model of `backends` (`lbdt_cli.backends.runtime.ExportedModel`, CPU) on
    the same inputs."""
    dev = resolve_device(device)
    precision_dtype(precision)  # an unknown name fails before any timing
    model = model.eval().to(dev)
    results = []
    with torch.inference_mode():
        base_inputs = example_inputs(model, 1, size, dev)
        t = _median_time(lambda: model(*base_inputs), dev, warmup, repeats)
        results.append(SpeedResult("baseline: batch 1, fp32, eager, per-frame", 1, t))

        tuned = model
        if fold_bn:
            from lbdt_cli.model.batchnorm_folding import fold_batchnorm

            tuned = fold_batchnorm(model)
        if channels_last:
            tuned = tuned.to(memory_format=torch.channels_last)
        forward = torch.compile(tuned.forward_with_text) if compile else tuned.forward_with_text
        for batch in batch_sizes:
            image, diff, words, mask = example_inputs(model, batch, size, dev)
            if channels_last:
                image, diff = (x.contiguous(memory_format=torch.channels_last) for x in (image, diff))
            text = tuned.encode_text(words[:1], mask[:1]).index([0] * batch)

            def run():
                with autocast(dev, precision):
                    forward(image, diff, text)

            t = _median_time(run, dev, warmup, repeats)
            label = f"batch {batch}, {precision}" + (", BN folded" if fold_bn else "") + \
                    (", channels_last" if channels_last else "") + (", compiled" if compile else "")
            results.append(SpeedResult(label, batch, t))
        if channels_last and not fold_bn:
            model.to(memory_format=torch.contiguous_format)
        for exported in backends:
            for batch in batch_sizes:
                image, diff, words, mask = (x.cpu() for x in example_inputs(model, batch, size, dev))
                text = exported.encode_text(words[:1], mask[:1]).index([0] * batch)
                t = _median_time(lambda: exported.forward_with_text(image, diff, text), torch.device("cpu"),
                                 warmup, repeats)  # fmt: skip
                results.append(SpeedResult(f"{exported.backend_name} ({Path(exported.folder).name}), batch {batch}",
                                           batch, t))  # fmt: skip
    return results


def _segment_argv(seg: Segmenter, job: VideoJob, formats: Sequence[str], out_dir: Path, start: int,
                  end: int | None, stride: int) -> list[str]:
    """`lbdt segment` with the settings of this run, for a fresh process."""
    pred = seg.predictor
    argv = [sys.executable, "-m", "lbdt_cli", "segment", str(job.source), "-o", str(out_dir), "--quiet",
            "--format", ",".join(formats), "--checkpoint", str(seg.checkpoint), "--device", str(pred.device),
            "--precision", seg.precision, "--batch-size", str(seg.batch_size), "--size", str(pred.input_size),
            "--interval", str(pred.interval), "--threshold", str(seg.threshold), "--start", str(start),
            "--stride", str(stride)]  # fmt: skip
    if end is not None:
        argv += ["--end", str(end)]
    if seg.glove is not None:
        argv += ["--glove", str(seg.glove)]
    for e in seg.expressions:
        argv += ["-e", e]
    return argv


def _child_env() -> dict:
    """This process's environment, with this lbdt_cli first on the import path."""
    import lbdt_cli

    root = str(Path(lbdt_cli.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}


def _baseline_checkpoint(checkpoint) -> Path:
    """The PyTorch checkpoint the naive loop runs: the checkpoint itself, or the one an export came from."""
    from lbdt_cli.backends import MANIFEST, is_export

    if not is_export(checkpoint):
        return Path(checkpoint)
    import json

    src = json.loads((Path(checkpoint) / MANIFEST).read_text()).get("provenance", {}).get("exported_from")
    if not src or not Path(src).is_file():
        raise LbdtError(f"--benchmark needs the PyTorch checkpoint {checkpoint} was exported from for the naive "
                        f"baseline ({src or 'not recorded'}); pass it as --checkpoint and the export as --backends")
    return Path(src)


def benchmark_segment(seg: Segmenter, job: VideoJob, formats: Sequence[str], *, start: int = 0,
                      end: int | None = None, stride: int = 1, rounds: int = 1,
                      progress: Callable[[str], None] | None = None,
                      backends: Sequence[Segmenter] = ()) -> dict:  # fmt: skip
    """End-to-end, model-only and naive per-frame loop fps on the same clip. Reports, never asserts.

    - end-to-end: the real pipeline (threads, batching, writers into a temporary folder).
    - model-only: the same batches on frames decoded beforehand (preprocess + model + upsample).
    - naive: one frame and one expression at a time, fp32, batch 1, the model's default memory
      layout, decode/model/write in turn.
    - whole command: `lbdt segment` with the same settings in a fresh process, timed from its
      launch to its exit (start-up included); its summary.json gives the time to first mask.

    - each of `backends` (Segmenters over exported models, `--backends`): its end-to-end run
      and its model-only run, the same way.

    With several `rounds` the runs take turns going first (a shared machine's speed drifts) and
    each run's median time is reported.
    """
    from lbdt_cli.engine import Predictor
    from lbdt_cli.model.preprocess import previous_frame_index
    from lbdt_cli.video.outputs import VideoOutputs
    from lbdt_cli.video.pipeline import VideoJob
    from lbdt_cli.video.reader import iter_frames

    if rounds < 1:
        raise LbdtError(f"--benchmark-rounds must be >= 1, got {rounds}")
    say = progress or (lambda _m: None)
    pred = seg.predictor
    select = (lambda f: (f.index - start) % stride == 0) if stride > 1 else None
    naive_pred = Predictor.from_checkpoint(_baseline_checkpoint(seg.checkpoint), glove=seg.glove, device=pred.device,
                                           precision="fp32", batch_size=1, input_size=pred.input_size,
                                           interval=pred.interval, channels_last=False,
                                           fold_batchnorm=False)  # the model as built
    naive_model = naive_pred.model
    meta = seg.meta_for(job, start, end, stride)
    with tempfile.TemporaryDirectory(prefix="lbdt-bench-") as tmp:
        say("warm-up")
        frames = list(iter_frames(job.source, start, end, 1, info=job.info))
        for s in (seg, *backends):
            for _ in s.predictor.predict_stream(frames[: min(len(frames), 2 * s.batch_size)], s.text):
                pass
        naive_pred.predict_pairs([frames[0].rgb], [frames[0].rgb], [0], seg.text)
        counts: dict[str, int] = {}
        summaries: list[dict] = []
        samples: dict[str, list[float]] = {"end_to_end": [], "model_only": [], "naive": []}
        peaks: list[float] = []

        def end_to_end(s=seg, key="end_to_end") -> float:
            bench_job = VideoJob(job.source, Path(tmp) / f"e2e{len(summaries)}", job.info)
            t0 = time.perf_counter()
            summaries.append(s.segment(bench_job, formats, start=start, end=end, stride=stride))
            counts[key] = summaries[-1]["frames"]
            return time.perf_counter() - t0

        def model_only(s=seg, key="model_only") -> float:
            t0 = time.perf_counter()
            counts[key] = sum(1 for _ in s.predictor.predict_stream(frames, s.text, select=select, first_index=start))
            return time.perf_counter() - t0

        def naive() -> float:
            n, t0 = 0, time.perf_counter()
            with VideoOutputs(Path(tmp) / f"naive{len(samples['naive'])}", job.info, meta, formats) as out:
                prev_of: dict[int, np.ndarray] = {}
                for frame in iter_frames(job.source, start, end, 1, info=job.info):
                    prev_of[frame.index] = frame.rgb
                    prev_idx = previous_frame_index(frame.index, pred.interval, start)
                    for old in [i for i in prev_of if i < frame.index - pred.interval]:
                        del prev_of[old]
                    if select is not None and not select(frame):
                        continue
                    probs = [
                        naive_pred.predict_pairs([frame.rgb], [prev_of.get(prev_idx, frame.rgb)], [e], seg.text)[0]
                        for e in range(len(seg.expressions))
                    ]
                    out.write(frame, np.stack(probs))
                    n += 1
                out.finish({})
            counts["naive"] = n
            return time.perf_counter() - t0

        cold: list[dict] = []

        def whole_command() -> float:
            """The same `lbdt segment` in a fresh process: start-up (interpreter, imports,
            checkpoint, model) included, as a user runs it."""
            out_dir = Path(tmp) / f"cmd{len(cold)}"
            t0 = time.perf_counter()
            proc = subprocess.run(_segment_argv(seg, job, formats, out_dir, start, end, stride), env=_child_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines()
                raise LbdtError(f"the fresh-process run failed: {lines[-1] if lines else proc.returncode}")
            summary = json.loads(next(out_dir.glob("*/summary.json")).read_text())
            cold.append({"wall_s": wall, "frames": summary["frames"], **(summary.get("startup") or {})})
            counts["whole_command"] = summary["frames"]
            return wall

        runs = {"end_to_end": (end_to_end, "end-to-end pipeline"), "model_only": (model_only, "model only"),
                "naive": (naive, "naive per-frame loop"),
                "whole_command": (whole_command, "the whole command in a fresh process")}  # fmt: skip
        samples["whole_command"] = []
        for i, b in enumerate(backends):
            name = b.predictor.model.backend_name
            runs[f"b{i}_end_to_end"] = (lambda b=b, i=i: end_to_end(b, f"b{i}_end_to_end"), f"{name} end-to-end")
            runs[f"b{i}_model_only"] = (lambda b=b, i=i: model_only(b, f"b{i}_model_only"), f"{name} model only")
            samples[f"b{i}_end_to_end"], samples[f"b{i}_model_only"] = [], []
        order = list(runs)
        for r in range(rounds):
            k = r % len(order)
            for name in order[k:] + order[:k]:
                fn, label = runs[name]
                say(label + (f" (round {r + 1}/{rounds})" if rounds > 1 else ""))
                samples[name].append(fn())
            say("device peak" + (f" (round {r + 1}/{rounds})" if rounds > 1 else ""))
            peaks.append(peak_rate(pred.device, seg.precision))
        del frames
        gflop = frame_gflop(naive_model, pred.input_size, len(seg.expressions))
    del naive_pred, naive_model
    med = {k: statistics.median(v) for k, v in samples.items()}
    fps = {k: counts[k] / med[k] for k in med}
    return {
        "source": str(job.source), "frames": counts["end_to_end"], "expressions": len(seg.expressions),
        "model": seg.config_name, "input_size": pred.input_size, "device": str(pred.device),
        "precision": pred.precision, "batch_size": seg.batch_size, "formats": list(formats),
        "rounds": rounds,
        "end_to_end_fps": fps["end_to_end"], "model_only_fps": fps["model_only"], "naive_fps": fps["naive"],
        "end_to_end_s": med["end_to_end"], "model_only_s": med["model_only"], "naive_s": med["naive"],
        "samples_s": {k: [round(t, 3) for t in v] for k, v in samples.items()},
        "speedup_vs_naive": fps["end_to_end"] / fps["naive"],
        # runs of one round are close in time, so their ratio is less exposed to a drifting machine
        "speedup_by_round": [round(counts["end_to_end"] / e / (counts["naive"] / n), 3)
                             for e, n in zip(samples["end_to_end"], samples["naive"])],
        "overhead_by_round": [round(counts["model_only"] / m / (counts["end_to_end"] / e) - 1, 3)
                              for e, m in zip(samples["end_to_end"], samples["model_only"])],
        "pipeline_overhead": fps["model_only"] / fps["end_to_end"] - 1.0,
        "stage_times_s": summaries[-1]["time_s"],
        # the ceiling: how close the model came to the device's best dense-kernel rate in this
        # run, and the frames/s the model alone would give at that rate
        # (the peak is PyTorch's kernels at the run's --precision, whatever runs the model)
        "gflop_per_frame": gflop, "peak_gflops": max(peaks), "peak_precision": seg.precision,
        "peak_gflops_samples": [round(p, 1) for p in peaks],
        "model_only_gflops": fps["model_only"] * gflop, "fps_at_peak": max(peaks) / gflop,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        # start-up included: the command as a user runs it, against the naive loop of a model
        # already loaded (which has paid its start-up before the clock starts)
        "whole_command_s": med["whole_command"], "whole_command_vs_naive": med["naive"] / med["whole_command"],
        "whole_command_by_round": [round(n / w, 3) for w, n in zip(samples["whole_command"], samples["naive"])],
        "time_to_first_mask_s": statistics.median(c["time_to_first_mask_s"] for c in cold),
        "time_to_first_mask_by_round": [c["time_to_first_mask_s"] for c in cold],
        "startup_phases_s": cold[-1].get("phases_s", {}),
        "backends": [_backend_row(b, i, counts, samples, med, fps) for i, b in enumerate(backends)],
    }  # fmt: skip


def _backend_row(b: Segmenter, i: int, counts: dict, samples: dict, med: dict, fps: dict) -> dict:
    e2e, mo = f"b{i}_end_to_end", f"b{i}_model_only"
    model = b.predictor.model
    return {
        "checkpoint": str(b.checkpoint), "backend": model.backend_name, "format": model.format,
        "precision": model.precision, "batch_size": b.batch_size,
        "end_to_end_fps": fps[e2e], "model_only_fps": fps[mo], "end_to_end_s": med[e2e], "model_only_s": med[mo],
        "samples_s": {"end_to_end": [round(t, 3) for t in samples[e2e]],
                      "model_only": [round(t, 3) for t in samples[mo]]},
        "speedup_vs_naive": fps[e2e] / fps["naive"],
        "speedup_by_round": [round(counts[e2e] / e / (counts["naive"] / n), 3)
                             for e, n in zip(samples[e2e], samples["naive"])],
    }  # fmt: skip


def benchmark_live(seg: Segmenter, source, formats: Sequence[str], *, max_latency: float | None = None,
                   progress: Callable[[str], None] | None = None, baseline_repeats: int = 10) -> dict:  # fmt: skip
    """`lbdt segment <live source> --benchmark`: the real live pipeline (writers into a temporary
    folder) until the source ends, its arrival-to-mask latency (median, p95, max), and beside it
    the latency floor measured in the same run: one frame of the source's size alone through the
    same road (preprocess, model at batch 1, upsample, threshold), with nothing waiting."""
    from lbdt_cli.video.info import Frame

    say = progress or (lambda _m: None)
    info = source.info
    with tempfile.TemporaryDirectory(prefix="lbdt-bench-") as tmp:
        say("live run until the source ends (Ctrl-C ends it too)")
        summary, res = seg.segment_live(source, Path(tmp) / "live", formats, max_latency=max_latency)
    say("baseline: one frame at a time through the model")
    pred = seg.predictor
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (info.height, info.width, 3), dtype=np.uint8) for _ in range(2)]
    num_expr = len(seg.expressions)
    times: list[float] = []
    t_end = time.perf_counter() + 30.0  # enough repeats for a median, bounded for big models
    for i in range(baseline_repeats + 1):
        t0 = time.perf_counter()
        frame = Frame(i, 0.0, rgb[i % 2])
        out = pred.predict_batch([(frame, pred.preprocess(frame.rgb), pred.preprocess(rgb[(i + 1) % 2]))], seg.text)
        (out[0].probs > seg.threshold).astype(np.uint8)
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end and len(times) >= 3:
            break
    base = np.asarray(times)
    lat = res.latency.summary()
    total = res.time_s.get("total_s") or 0.0
    return {
        "source": source.url, "source_fps": info.fps, "width": info.width, "height": info.height,
        "expressions": num_expr, "model": seg.config_name, "input_size": pred.input_size,
        "device": str(pred.device), "precision": seg.precision, "batch_size": seg.batch_size,
        "formats": list(formats), "max_latency_s": max_latency, "ended": res.ended,
        "frames_received": res.frames_received, "frames": res.frames, "skipped": res.skipped,
        "fps_processed": res.frames / total if total else 0.0,
        "latency_s": lat,
        "baseline_s": {"frames": int(base.size), "median_s": round(float(np.median(base)), 4),
                       "p95_s": round(float(np.percentile(base, 95)), 4), "max_s": round(float(base.max()), 4)},
        "time_s": res.time_s, "peak_rss_mb": round(peak_rss_mb(), 1),
    }  # fmt: skip
