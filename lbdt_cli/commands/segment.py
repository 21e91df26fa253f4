"""`lbdt segment`: masks for what each sentence describes, on every frame of each clip.

    lbdt segment clip.mp4 other.mkv frames_dir/ "the man in red" "a dog jumping"
    lbdt segment 'videos/*.mp4' -e "the man in red" -e "a dog jumping" --format h5,overlay

Arguments: leading arguments that exist as files or folders (or match a glob, or end like a video
file) are inputs, the rest are expressions. With -e/--expression, every argument is an input.

Exit codes: 0 success; 1 unexpected failure (a bug: please report); 2 bad flag or argument;
3 bad input (video, frame folder, GloVe file); 4 bad checkpoint; 5 output exists or cannot be
written; 130 interrupted (Ctrl-C). Nothing half-written is left in any case.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from lbdt_cli.errors import LbdtError

console = Console()
err_console = Console(stderr=True)


class _FpsColumn(ProgressColumn):
    def render(self, task) -> Text:
        # frames arrive in batches, so rich's windowed speed jumps; the mean since the start does not
        elapsed = task.finished_time if task.finished else task.elapsed
        fps = task.completed / elapsed if elapsed and task.completed else None
        return Text(f"{fps:.2f} fps" if fps else "- fps", style="cyan")


def _parse_frame_list(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        values = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise LbdtError(f"--attention-maps takes frame numbers separated by commas, got {text!r}") from None
    if any(v < 0 for v in values):
        raise LbdtError("--attention-maps frame numbers must be >= 0")
    return values


def register(app: typer.Typer) -> None:
    @app.command("segment", epilog="Exit codes: 0 ok, 2 bad argument, 3 bad input, 4 bad checkpoint, "
                                   "5 output exists/unwritable, 130 interrupted.")  # fmt: skip
    def segment(
        args: List[str] = typer.Argument(..., metavar="INPUTS... EXPRESSIONS...",
            help="Video files, frame folders, folders of videos or globs, then one or more expressions."),
        expression: Optional[List[str]] = typer.Option(None, "--expression", "-e",
            help="An expression (repeatable). When given, all positional arguments are inputs."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
            help="Model checkpoint (ours or the authors' LBDT-1/4). Default: weights/lbdt_shapes_demo.pt."),
        glove: Optional[Path] = typer.Option(None, "--glove", help="GloVe 840B.300d text file (GloVe models)."),
        interval: Optional[int] = typer.Option(None, "--interval", help="δ: frames between a frame and its "
            "previous frame (default: the model's). The first δ frames use the first frame."),
        threshold: float = typer.Option(0.5, "--threshold", help="Mask = probability > threshold."),
        size: Optional[int] = typer.Option(None, "--size", help="Model input size, multiple of 32 (default: model's)."),
        start: int = typer.Option(0, "--start", help="First frame (0-based)."),
        end: Optional[int] = typer.Option(None, "--end", help="Stop before this frame."),
        stride: int = typer.Option(1, "--stride", help="Segment every N-th frame."),
        batch_size: int = typer.Option(8, "--batch-size", "-b", help="(frame, expression) pairs per model batch."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 (CUDA) or bf16."),
        output: Path = typer.Option(Path("runs/segment"), "--output", "-o", help="Output root; one folder per clip."),
        formats: str = typer.Option("h5,overlay", "--format", "-f",
            help="Comma list of h5, png, mask-video, overlay, or all. summary.json is always written."),
        save_probs: bool = typer.Option(False, "--save-probs", help="Also store float16 probabilities in masks.h5."),
        palette: bool = typer.Option(False, "--palette", help="Also write indexed palette PNGs (DAVIS style)."),
        lossless: bool = typer.Option(False, "--lossless", help="Lossless mask videos."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output folders."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the output folders."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (no progress)."),
        attention_maps: Optional[str] = typer.Option(None, "--attention-maps", metavar="FRAMES",
            help="Comma list of frame numbers: save per-word attention maps (frame and difference)."),
        benchmark: bool = typer.Option(False, "--benchmark", help="Time end-to-end, model-only and a naive "
            "per-frame loop on the first clip; writes nothing."),
        benchmark_rounds: int = typer.Option(1, "--benchmark-rounds", help="With --benchmark: repeat the "
            "three runs this many times, taking turns going first, and report medians."),
    ) -> None:  # fmt: skip
        """Segment the object each expression describes in every frame of each clip.

        Leading arguments that exist (or match a glob, or end like a video file) are inputs; the
        rest are expressions. Output: OUT/<clip>/ with manifest.json, summary.json and the chosen
        formats (see docs/segment-output.md).
        """
        from lbdt_cli.video.pipeline import (
            Segmenter, VideoJob, check_expressions, check_selection, plan_outputs, resolve_inputs,
            split_inputs_and_expressions,
        )  # fmt: skip
        from lbdt_cli.runtime import dist_env, shard
        from lbdt_cli.video.outputs import parse_formats
        from lbdt_cli.video.reader import probe
        from lbdt_cli.utils.atomic import check_writable_output

        # Cheap checks first, so a typo fails before the model loads.
        fmt = parse_formats(formats)
        if benchmark_rounds < 1:
            raise LbdtError(f"--benchmark-rounds must be >= 1, got {benchmark_rounds}")
        frame_list = _parse_frame_list(attention_maps)
        inputs, expressions = split_inputs_and_expressions(args, expression or ())
        expressions = check_expressions(expressions)
        clips = resolve_inputs(inputs)
        outputs = plan_outputs(clips, output)
        env = dist_env()
        rank, world = env.rank, env.world_size
        clips_outs = shard(list(zip(clips, outputs)), env)
        jobs = [VideoJob(c, o, probe(c)) for c, o in clips_outs]
        for job in jobs:
            check_selection(job.info, start, end, stride)
        if not benchmark:
            for job in jobs:
                check_writable_output(job.output, overwrite)
        show = not (quiet or as_json)

        with err_console.status("loading model...", spinner="dots") if show else _Null():
            seg = Segmenter(checkpoint, glove, device, precision, batch_size, size, interval, threshold)
            warnings = seg.set_expressions(expressions)
        for w in warnings:
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        if show:
            err_console.print(
                f"model [bold]{seg.config_name}[/] on {seg.predictor.device} ({precision}), input "
                f"{seg.predictor.input_size}, δ={seg.predictor.interval}, {len(expressions)} expression(s), "
                f"{len(jobs)} clip(s)" + (f" [rank {rank}/{world}]" if world > 1 else ""), highlight=False)

        if benchmark:
            if not jobs:
                return
            from lbdt_cli.benchmark import benchmark_segment

            result = benchmark_segment(seg, jobs[0], fmt, start=start, end=end, stride=stride, rounds=benchmark_rounds,
                                       progress=(lambda m: err_console.print(f"[dim]benchmark: {m}[/]")) if show else None)
            _print_benchmark(result, as_json, quiet)
            return

        results = []
        for job in jobs:
            total = job.info.num_frames
            if total is not None:
                stop = total if end is None else min(end, total)
                total = max(0, -(-(stop - start) // stride))
            if show:
                with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("frames"), _FpsColumn(), TimeRemainingColumn(), console=err_console,
                              transient=False) as progress:  # fmt: skip
                    task = progress.add_task(job.source.name, total=total or None)
                    summary = seg.segment(job, fmt, start=start, end=end, stride=stride, save_probs=save_probs,
                                          palette=palette, lossless=lossless, overwrite=overwrite,
                                          attention_frames=frame_list,
                                          on_frame=lambda n: progress.advance(task, n))  # fmt: skip
                    progress.update(task, total=summary["frames"], completed=summary["frames"])
            else:
                summary = seg.segment(job, fmt, start=start, end=end, stride=stride, save_probs=save_probs,
                                      palette=palette, lossless=lossless, overwrite=overwrite,
                                      attention_frames=frame_list)  # fmt: skip
            results.append(summary)
            if quiet and not as_json:
                console.print(str(job.output), highlight=False, soft_wrap=True)
            elif show:
                t = summary["time_s"]
                err_console.print(
                    f"[green]wrote[/] {job.output}/  {summary['frames']} frames, "
                    f"{summary['fps_measured'] or 0:.2f} fps (decode {t['decode_s']:.1f}s, model {t['model_s']:.1f}s, "
                    f"encode {t['encode_s']:.1f}s)", highlight=False, soft_wrap=True)
                for e in summary["expressions"]:
                    err_console.print(f"    {e['folder']}  \"{e['text']}\"  object in {e['frames_with_object']}/"
                                      f"{summary['frames']} frames", highlight=False, soft_wrap=True)  # fmt: skip
        if as_json:
            doc = {"videos": [_brief(s) for s in results], "warnings": warnings, "rank": rank, "world_size": world}
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")


def _brief(summary: dict) -> dict:
    keys = ("source", "output", "frames", "width", "height", "source_fps", "fps_measured", "time_s", "model")
    out = {k: summary.get(k) for k in keys}
    out["expressions"] = [{k: e[k] for k in ("folder", "text", "frames_with_object", "mean_area_fraction")}
                          for e in summary["expressions"]]  # fmt: skip
    return out


def _print_benchmark(r: dict, as_json: bool, quiet: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(r, indent=1) + "\n")
        return
    rounds = f", median of {r['rounds']} rounds" if r["rounds"] > 1 else ""
    table = Table(title=f"{r['source']}: {r['frames']} frames x {r['expressions']} expression(s), {r['model']} "
                        f"@ {r['input_size']}, {r['device']}{rounds}", title_justify="left")  # fmt: skip
    table.add_column("run")
    table.add_column("fps", justify="right")
    table.add_column("s/frame", justify="right")
    table.add_column("vs naive", justify="right")
    naive = r["naive_fps"]
    rows = [
        (f"end-to-end (batch {r['batch_size']}, {r['precision']}, overlapped)", r["end_to_end_fps"]),
        ("model only (same batches, frames in memory)", r["model_only_fps"]),
        ("naive per-frame loop (batch 1, fp32, no overlap)", naive),
    ]
    for name, fps in rows:
        table.add_row(name, f"{fps:.2f}", f"{1 / fps:.3f}", f"{fps / naive:.2f}x")
    console.print(table)
    if not quiet:
        console.print(f"pipeline cost over model-only: {100 * r['pipeline_overhead']:+.1f}%   "
                      f"end-to-end speed-up over naive: {r['speedup_vs_naive']:.2f}x   "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB", highlight=False)  # fmt: skip
        if r["rounds"] > 1:
            console.print("per round: speed-up over naive " + ", ".join(f"{x:.2f}x" for x in r["speedup_by_round"])
                          + "; pipeline cost " + ", ".join(f"{100 * x:+.1f}%" for x in r["overhead_by_round"]),
                          highlight=False)  # fmt: skip
        console.print(f"model compute: {r['gflop_per_frame']:.1f} GFLOP/frame; model-only ran at "
                      f"{r['model_only_gflops']:.0f} GFLOP/s = {100 * r['model_only_gflops'] / r['peak_gflops']:.0f}% "
                      f"of this device's dense-kernel peak ({r['peak_gflops']:.0f} GFLOP/s, best measured in this run); "
                      f"at that peak the model alone would give {r['fps_at_peak']:.2f} fps = "
                      f"{r['fps_at_peak'] / naive:.2f}x naive", highlight=False)  # fmt: skip


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
