"""`lbdt segment`: masks for what each sentence describes, on every frame of each clip.

    lbdt segment clip.mp4 other.mkv frames_dir/ "the man in red" "a dog jumping"
    lbdt segment 'videos/*.mp4' -e "the man in red" -e "a dog jumping" --format h5,overlay

Arguments: leading arguments that exist as files or folders (or match a glob, or end like a video
file) are inputs, the rest are expressions. With -e/--expression, every argument is an input.

An expression that starts with "-" goes after `--`:  lbdt segment clip.mp4 -- "-the odd one"

Exit codes: 0 success; 1 unexpected failure (a bug: please report); 2 bad flag or argument;
3 bad input (video, frame folder, GloVe file); 4 bad checkpoint; 5 output exists or cannot be
written; 6 some clips failed (--keep-going; the others are done); 130 interrupted (Ctrl-C);
143 terminated (SIGTERM), 129 (SIGHUP). Nothing half-written is left in any case; a live source's
files are finalised instead (docs/live.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from lbdt_cli.errors import SOME_FAILED_EXIT, CheckpointError, InputError, LbdtError
from lbdt_cli.utils.terminal import markup_safe, printable

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
    @app.command("segment", epilog="An expression starting with '-' goes after '--': lbdt segment clip.mp4 -- "
                                   "\"-the odd one\". Exit codes: 0 ok, 2 bad argument, 3 bad input, 4 bad "
                                   "checkpoint, 5 output exists/unwritable, 6 some clips failed (--keep-going), "
                                   "130 interrupted, 143 terminated (SIGTERM).")  # fmt: skip
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
        keep_going: bool = typer.Option(False, "--keep-going", help="A clip that fails is reported and skipped; "
            "the others are done. Failures are listed at the end and in OUT/failures.json; exit code 6."),
        skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip clips whose output folder is "
            "complete and was made with the same inputs, expressions and options (resumes a killed batch)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the output folders."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (no progress)."),
        attention_maps: Optional[str] = typer.Option(None, "--attention-maps", metavar="FRAMES",
            help="Comma list of frame numbers: save per-word attention maps (frame and difference)."),
        benchmark: bool = typer.Option(False, "--benchmark", help="Time end-to-end, model-only and a naive "
            "per-frame loop on the first clip; writes nothing."),
        benchmark_rounds: int = typer.Option(1, "--benchmark-rounds", help="With --benchmark: repeat the "
            "three runs this many times, taking turns going first, and report medians."),
        json_lines: bool = typer.Option(False, "--json-lines", help="One JSON object per frame on stdout as "
            "soon as its masks exist (frame, timestamp, per expression area, bbox, COCO RLE)."),
        max_latency: Optional[float] = typer.Option(None, "--max-latency", metavar="SECONDS", help="Live "
            "sources: skip frames when the model falls behind, keeping arrival-to-mask latency under this."),
        reconnect: float = typer.Option(0.0, "--reconnect", metavar="SECONDS", help="Live network sources: "
            "when the stream drops, try again (with back-off) for this long before finishing."),
        backends: Optional[str] = typer.Option(None, "--backends", help="With --benchmark: comma list of "
            "export folders (`lbdt export`) to time beside the PyTorch runs, in the same rounds."),
    ) -> None:  # fmt: skip
        """Segment the object each expression describes in every frame of each clip.

        Leading arguments that exist (or match a glob, or end like a video file) are inputs; the
        rest are expressions. An expression that starts with "-" goes after "--"
        (lbdt segment clip.mp4 -- "-the odd one"). Output: OUT/<clip>/ with manifest.json,
        summary.json and the chosen formats (see docs/segment-output.md). A live source (`-` for
        standard input, an rtsp/rtmp/srt/udp/http(s) URL, /dev/videoN) is segmented as it arrives
        (docs/live.md).
        """
        from lbdt_cli.utils.startup import mark

        mark("command_started")  # interpreter, CLI modules, argument parsing
        from lbdt_cli.video.pipeline import (
            Segmenter, VideoJob, check_expressions, check_flags, check_selection,
            plan_outputs, resolve_inputs, split_inputs_and_expressions,
        )  # fmt: skip
        from lbdt_cli.runtime import dist_env, shard
        from lbdt_cli.weights import checkpoint_or_default
        from lbdt_cli.utils.atomic import check_writable_output
        from lbdt_cli.utils.completion import is_complete
        from lbdt_cli.video.reader import VideoInfo, probe
        from lbdt_cli.video.outputs import parse_formats
        from lbdt_cli.video.live_source import is_live_source

        mark("modules_imported")  # torch among them
        # Cheap checks first, so a typo fails before the model loads. Clips are probed one at a time
        # as their turn comes (the first one now), so a run over 10,000 clips starts at once.
        fmt = parse_formats(formats)
        if benchmark_rounds < 1:
            raise LbdtError(f"--benchmark-rounds must be >= 1, got {benchmark_rounds}")
        backend_dirs = [b.strip() for b in (backends or "").split(",") if b.strip()]
        if backend_dirs and not benchmark:
            raise LbdtError("--backends goes with --benchmark (to run an export, pass it as --checkpoint)")
        from lbdt_cli.backends import is_export

        for b in backend_dirs:
            if not is_export(b):
                raise CheckpointError(f"--backends {b}: not an export folder (no export.json; see lbdt export)")
        frame_list = _parse_frame_list(attention_maps)
        check_flags(device, precision, batch_size, size, interval, threshold, glove, start, end, stride)
        inputs, expressions = split_inputs_and_expressions(args, expression or ())
        expressions = check_expressions(expressions)
        if as_json and json_lines:
            raise LbdtError("--json and --json-lines both write to standard output; choose one")
        live = [a for a in inputs if is_live_source(a)]
        if live:
            if len(inputs) > 1:
                raise LbdtError(f"a live source ({live[0]}) must be the only input")
            if start or end is not None or stride != 1 or frame_list or keep_going or skip_existing:
                raise LbdtError("--start, --end, --stride, --attention-maps, --keep-going and --skip-existing are "
                                "for files, not live sources")  # fmt: skip
            if max_latency is not None and max_latency <= 0:
                raise LbdtError(f"--max-latency must be > 0 seconds, got {max_latency}")
            if reconnect < 0:
                raise LbdtError(f"--reconnect must be >= 0 seconds, got {reconnect}")
            return _segment_live(
                live[0], expressions, checkpoint=checkpoint_or_default(checkpoint), glove=glove, device=device,
                precision=precision, batch_size=batch_size, size=size, interval=interval, threshold=threshold,
                output=output, fmt=fmt, save_probs=save_probs, palette=palette, lossless=lossless,
                overwrite=overwrite, quiet=quiet, as_json=as_json, json_lines=json_lines, max_latency=max_latency,
                reconnect=reconnect, benchmark=benchmark)  # fmt: skip
        if max_latency is not None or reconnect:
            raise LbdtError("--max-latency and --reconnect are for live sources (-, stream URLs, /dev/videoN)")
        clips = resolve_inputs(inputs)
        outputs = plan_outputs(clips, output)
        env = dist_env()
        rank, world = env.rank, env.world_size
        clips_outs = shard(list(zip(clips, outputs)), env)
        checkpoint = checkpoint_or_default(checkpoint)
        settings = dict(expressions=expressions, formats=sorted(fmt), save_probs=save_probs, palette=palette,
                        lossless=lossless, start=start, end=end, stride=stride, threshold=threshold,
                        checkpoint=os.path.abspath(checkpoint), glove=glove and os.path.abspath(glove),
                        size=size, interval=interval, precision=precision, attention_maps=frame_list)  # fmt: skip
        todo, skipped = [], []
        for clip, out_dir in clips_outs:
            request = {"source": os.path.abspath(clip), **settings}
            if not benchmark:
                if skip_existing and is_complete(out_dir, request):
                    skipped.append(out_dir)
                    continue
                check_writable_output(out_dir, overwrite)
            todo.append((clip, out_dir, request))
        probed: dict[Path, VideoInfo] = {}

        def job_for(clip: Path, out_dir: Path) -> VideoJob:
            info = probed.pop(clip, None) or probe(clip)
            check_selection(info, start, end, stride)
            return VideoJob(clip, out_dir, info)

        if todo and not keep_going:  # a bad first clip fails before the model loads
            probed[todo[0][0]] = job_for(todo[0][0], todo[0][1]).info
        show = not (quiet or as_json)
        if skipped and show:
            err_console.print(f"skipping {len(skipped)} clip(s) whose output is complete (--skip-existing)",
                              highlight=False)  # fmt: skip

        seg, warnings = _load(checkpoint, glove, device, precision, batch_size, size, interval, threshold,
                              expressions, show, glove_progress=show and rank == 0,
                              attention=bool(frame_list))  # fmt: skip
        if show:
            err_console.print(f"{_model_line(seg, expressions)}, {len(todo)} clip(s)"
                              + (f" [rank {rank}/{world}]" if world > 1 else ""), highlight=False)  # fmt: skip

        if benchmark:
            if not todo:
                return
            from lbdt_cli.benchmark import benchmark_segment

            with err_console.status("loading backends...", spinner="dots") if show and backend_dirs else _Null():
                others = [Segmenter(b, glove, "cpu", "fp32", batch_size, size, interval, threshold)
                          for b in backend_dirs]  # fmt: skip
                for other in others:
                    other.set_expressions(expressions)
            result = benchmark_segment(seg, job_for(*todo[0][:2]), fmt, start=start, end=end, stride=stride,
                                       rounds=benchmark_rounds,
                                       progress=(lambda m: err_console.print(f"[dim]benchmark: {m}[/]")) if show else None,
                                       backends=others)  # fmt: skip
            _print_benchmark(result, as_json, quiet)
            return

        results, failures = [], []
        options = dict(start=start, end=end, stride=stride, save_probs=save_probs, palette=palette,
                       lossless=lossless, overwrite=overwrite, attention_frames=frame_list,
                       json_lines=sys.stdout if json_lines else None)  # fmt: skip
        for clip, out_dir, request in todo:
            try:
                job = job_for(clip, out_dir)
                summary = _segment_one(seg, job, fmt, options, request, show)
            except Exception as exc:  # noqa: BLE001 - with --keep-going any failing clip is skipped
                if not keep_going or (isinstance(exc, LbdtError) and not isinstance(exc, InputError)):
                    raise  # output and flag errors would fail every clip alike
                code = exc.exit_code if isinstance(exc, LbdtError) else 1
                reason = str(exc) if isinstance(exc, LbdtError) else f"unexpected {type(exc).__name__}: {exc}"
                failures.append({"source": str(clip), "output": str(out_dir), "exit_code": code, "error": reason})
                if not as_json:
                    err_console.print(f"[bold red]failed:[/] {markup_safe(clip)}: {markup_safe(reason)}",
                                      highlight=False, soft_wrap=True)  # fmt: skip
                continue
            results.append(summary)
            if not (as_json or json_lines):
                for w in summary.get("warnings", []):
                    err_console.print(f"[yellow]warning:[/] {markup_safe(job.source.name)}: {markup_safe(w)}",
                                      highlight=False, soft_wrap=True)  # fmt: skip
            if quiet and not (as_json or json_lines):
                console.print(markup_safe(job.output), highlight=False, soft_wrap=True)
            elif show:
                t = summary["time_s"]
                err_console.print(
                    f"[green]wrote[/] {markup_safe(job.output)}/  {summary['frames']} frames, "
                    f"{summary['fps_measured'] or 0:.2f} fps (decode {t['decode_s']:.1f}s, model {t['model_s']:.1f}s, "
                    f"encode {t['encode_s']:.1f}s)", highlight=False, soft_wrap=True)
                for e in summary["expressions"]:
                    err_console.print(f"    {e['folder']}  \"{markup_safe(e['text'])}\"  object in "
                                      f"{e['frames_with_object']}/{summary['frames']} frames",
                                      highlight=False, soft_wrap=True)  # fmt: skip
        failures_file = None
        if keep_going:
            failures_file = _write_failures(output, rank, world, failures, results, skipped)
            if failures and not as_json:
                _print_failures(failures, failures_file, len(results) + len(skipped) + len(failures))
        if as_json:
            doc = {"videos": [_brief(s) for s in results], "warnings": warnings, "rank": rank, "world_size": world,
                   "skipped": [str(p) for p in skipped], "failures": failures,
                   "failures_file": failures_file and str(failures_file)}  # fmt: skip
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        if failures:
            raise typer.Exit(SOME_FAILED_EXIT)


def _segment_one(seg, job, fmt, options: dict, request: dict, show: bool) -> dict:
    if not show:
        return seg.segment(job, fmt, request=request, **options)
    total = job.info.num_frames
    if total is not None:
        stop = total if options["end"] is None else min(options["end"], total)
        total = max(0, -(-(stop - options["start"]) // options["stride"]))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                  _FpsColumn(), TimeRemainingColumn(), console=err_console, transient=False) as progress:  # fmt: skip
        task = progress.add_task(markup_safe(job.source.name), total=total or None)
        summary = seg.segment(job, fmt, request=request, on_frame=lambda n: progress.advance(task, n), **options)
        progress.update(task, total=summary["frames"], completed=summary["frames"])
    return summary


def _write_failures(root: Path, rank: int, world: int, failures: list, results: list, skipped: list) -> Path:
    """OUT/failures.json (failures-rank<r>.json under torchrun): what failed and why, what was done."""
    from lbdt_cli.utils.atomic import atomic_path

    path = root / ("failures.json" if world <= 1 else f"failures-rank{rank}.json")
    doc = {"failed": failures, "done": [s["output"] for s in results], "skipped": [str(p) for p in skipped],
           "rank": rank, "world_size": world}  # fmt: skip
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def _print_failures(failures: list, path: Path, total: int) -> None:
    table = Table(title=f"{len(failures)} of {total} clip(s) failed (listed in {markup_safe(path)})",
                  title_justify="left")  # fmt: skip
    table.add_column("clip")
    table.add_column("exit", justify="right")
    table.add_column("reason")
    for f in failures:
        table.add_row(Text(printable(f["source"])), str(f["exit_code"]), Text(printable(f["error"])))
    err_console.print(table)


def _model_line(seg, expressions: list[str]) -> str:
    """`model lbdt1 on cpu (fp32), input 320, δ=6, 2 expression(s)`; for an exported model the
    runtime and the precision it runs at in place of the precision."""
    pred = seg.predictor
    runs = pred.model.backend_name + " export" if pred.exported else pred.precision
    return (f"model [bold]{markup_safe(seg.config_name)}[/] on {pred.device} ({runs}), input {pred.input_size}, "
            f"δ={pred.interval}, {len(expressions)} expression(s)")


def _load(checkpoint, glove, device, precision, batch_size, size, interval, threshold, expressions, show,
          glove_progress: bool | None = None, attention: bool = False):  # fmt: skip
    from lbdt_cli.commands._glove import prepare_glove
    from lbdt_cli.utils.startup import mark
    from lbdt_cli.video.pipeline import Segmenter

    mark("arguments_checked")  # the first clip probed
    prepare_glove(glove, show if glove_progress is None else glove_progress, err_console)
    mark("glove_checked")
    with err_console.status("loading model...", spinner="dots") if show else _Null():
        seg = Segmenter(checkpoint, glove, device, precision, batch_size, size, interval, threshold)
        if attention and seg.predictor.exported:
            raise LbdtError("--attention-maps needs the PyTorch checkpoint: an exported model returns logits only")
        seg.set_expressions(expressions)
        warnings = seg.warnings  # the checkpoint's (NaN weights) and the expressions'
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {markup_safe(w)}", highlight=False, soft_wrap=True)
    return seg, warnings


# How a live run ended -> exit code (the outputs are finalised in every case).
_LIVE_EXIT = {"interrupted": 130, "terminated": 143, "hangup": 129}


def _segment_live(url: str, expressions: list[str], *, checkpoint, glove, device, precision, batch_size, size,
                  interval, threshold, output: Path, fmt, save_probs, palette, lossless, overwrite, quiet, as_json,
                  json_lines, max_latency, reconnect, benchmark) -> None:  # fmt: skip
    from lbdt_cli.utils.atomic import check_writable_output
    from lbdt_cli.video.live_source import LiveSource, live_output_name

    out_dir = output / live_output_name(url)
    if not benchmark:
        check_writable_output(out_dir, overwrite)
    show = not (quiet or as_json)
    seg, warnings = _load(checkpoint, glove, device, precision, batch_size, size, interval, threshold, expressions,
                          show)  # fmt: skip
    say = (lambda m: err_console.print(f"[dim]{m}[/]", highlight=False, soft_wrap=True)) if show else (lambda m: None)
    # The model loads first: a live source opened earlier would pile up frames meanwhile.
    source = LiveSource(url, reconnect_s=reconnect, stdin_fd=sys.stdin.fileno() if url == "-" else None,
                        on_event=say)  # fmt: skip
    with err_console.status(f"opening {markup_safe(url)} ...", spinner="dots") if show else _Null():
        info = source.open()
    if show:
        err_console.print(
            f"{_model_line(seg, expressions)}; live source {info.width}x{info.height} at {info.fps:g} fps"
            + (f", max latency {max_latency:g} s" if max_latency else ""), highlight=False)
    if benchmark:
        from lbdt_cli.benchmark import benchmark_live

        r = benchmark_live(seg, source, fmt, max_latency=max_latency, progress=say)
        _print_live_benchmark(r, as_json)
        return
    records_to = sys.stdout if json_lines else None
    if show:
        with Progress(TextColumn("[bold]{task.description}"), TextColumn("{task.completed} frames"), _FpsColumn(),
                      TextColumn("{task.fields[status]}"), console=err_console, transient=False) as progress:  # fmt: skip
            task = progress.add_task(live_output_name(url), total=None, status="")
            last = [0.0]

            def on_frame(res) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.2:  # a few updates a second are enough
                    last[0] = now
                    progress.update(task, completed=res.frames,
                                    status=f"latency {res.latency.last():.3f} s, skipped {res.skipped}")  # fmt: skip

            summary, res = seg.segment_live(source, out_dir, fmt, save_probs=save_probs, palette=palette,
                                            lossless=lossless, overwrite=overwrite, max_latency=max_latency,
                                            json_lines=records_to, on_frame=on_frame)  # fmt: skip
            progress.update(task, completed=res.frames)
    else:
        summary, res = seg.segment_live(source, out_dir, fmt, save_probs=save_probs, palette=palette,
                                        lossless=lossless, overwrite=overwrite, max_latency=max_latency,
                                        json_lines=records_to)  # fmt: skip
    lat = summary["latency_s"]
    if as_json:
        sys.stdout.write(json.dumps({"videos": [_brief(summary)], "warnings": warnings}, indent=1) + "\n")
    elif quiet:
        if not json_lines:
            console.print(markup_safe(out_dir), highlight=False, soft_wrap=True)
    else:
        ended = res.ended + (f" ({markup_safe(res.ended_detail)})" if res.ended_detail else "")
        err_console.print(
            f"[green]wrote[/] {markup_safe(out_dir)}/  {res.frames} frames processed, {res.skipped} skipped, of "
            f"{res.frames_received} received; ended: {ended}", highlight=False, soft_wrap=True)
        if lat["frames"]:
            err_console.print(f"    latency (arrival to mask): median {lat['median_s']:.3f} s, p95 {lat['p95_s']:.3f} s, "
                              f"max {lat['max_s']:.3f} s", highlight=False)  # fmt: skip
    if res.ended in _LIVE_EXIT:
        raise typer.Exit(_LIVE_EXIT[res.ended])


def _print_live_benchmark(r: dict, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(r, indent=1) + "\n")
        return
    lat = r["latency_s"]
    table = Table(title=f"{r['source']}: live, {r['frames_received']} frames received at {r['source_fps']:g} fps, "
                        f"{r['expressions']} expression(s), {r['model']} @ {r['input_size']}, {r['device']}",
                  title_justify="left")  # fmt: skip
    for col in ("", "median", "p95", "max"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("latency, arrival to mask (s)", f"{lat['median_s']:.3f}", f"{lat['p95_s']:.3f}", f"{lat['max_s']:.3f}")
    b = r["baseline_s"]
    table.add_row("baseline: one frame alone through the model, batch 1 (s)", f"{b['median_s']:.3f}",
                  f"{b['p95_s']:.3f}", f"{b['max_s']:.3f}")  # fmt: skip
    console.print(table)
    console.print(f"processed {r['frames']} frames ({r['fps_processed']:.2f} fps), skipped {r['skipped']}"
                  + (f" (--max-latency {r['max_latency_s']:g} s)" if r["max_latency_s"] else "")
                  + f"; ended: {r['ended']}; peak RSS {r['peak_rss_mb']:.0f} MiB", highlight=False)  # fmt: skip


def _brief(summary: dict) -> dict:
    keys = ("source", "output", "frames", "width", "height", "source_fps", "fps_measured", "time_s", "model",
            "warnings")
    out = {k: summary.get(k) for k in keys}
    if summary.get("live"):
        for k in ("ended", "ended_detail", "frames_received", "skipped_frames", "reconnects", "latency_s"):
            out[k] = summary.get(k)
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
    for b in r.get("backends", ()):
        rows.insert(-1, (f"{b['backend']} end-to-end (batch {b['batch_size']}, {Path(b['checkpoint']).name})",
                         b["end_to_end_fps"]))
        rows.insert(-1, (f"{b['backend']} model only", b["model_only_fps"]))
    for name, fps in rows:
        table.add_row(name, f"{fps:.2f}", f"{1 / fps:.3f}", f"{fps / naive:.2f}x")
    console.print(table)
    if not quiet:
        console.print(f"pipeline cost over model-only: {100 * r['pipeline_overhead']:+.1f}%   "
                      f"end-to-end speed-up over naive: {r['speedup_vs_naive']:.2f}x   "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB", highlight=False)  # fmt: skip
        if r["rounds"] > 1:
            console.print(f"per round: speed-up over naive {_series(r['speedup_by_round'], '{:.2f}x')}; "
                          f"pipeline cost {_series(r['overhead_by_round'], '{:+.1%}')}", highlight=False)  # fmt: skip
            for b in r.get("backends", ()):
                console.print(f"per round: {b['backend']} end-to-end speed-up over naive "
                              f"{_series(b['speedup_by_round'], '{:.2f}x')}", highlight=False)  # fmt: skip
        naive_s = r["frames"] / naive
        console.print(f"whole command in a fresh process, start-up included: {r['whole_command_s']:.2f} s for "
                      f"{r['frames']} frames, first mask {r['time_to_first_mask_s']:.2f} s after launch; naive loop "
                      f"with its model already loaded: {naive_s:.2f} s -> the command is "
                      f"{r['whole_command_vs_naive']:.2f}x as fast", highlight=False)  # fmt: skip
        if r["rounds"] > 1:
            console.print(f"per round: command vs naive {_series(r['whole_command_by_round'], '{:.2f}x')}; "
                          f"first mask at {_series(r['time_to_first_mask_by_round'], '{:.2f} s')}",
                          highlight=False)  # fmt: skip
        console.print("start-up (last round): " + ", ".join(f"{k} {v:.2f} s" for k, v in r["startup_phases_s"].items()),
                      highlight=False, soft_wrap=True)  # fmt: skip
        peak = (f"{100 * r['model_only_gflops'] / r['peak_gflops']:.0f}% of this device's {r['peak_precision']} "
                f"dense-kernel peak ({r['peak_gflops']:.0f} GFLOP/s, best measured in this run); at that peak the "
                f"model alone would give {r['fps_at_peak']:.2f} fps = {r['fps_at_peak'] / naive:.2f}x naive")
        if r["peak_precision"] != r["precision"]:  # int8 / bf16 kernels of another runtime are not bound by it
            peak = f"this device's {r['peak_precision']} dense-kernel peak, for scale: {r['peak_gflops']:.0f} GFLOP/s"
        console.print(f"model compute: {r['gflop_per_frame']:.1f} GFLOP/frame; model-only ran at "
                      f"{r['model_only_gflops']:.0f} GFLOP/s ({r['precision']}); {peak}", highlight=False)  # fmt: skip


def _series(values, fmt: str) -> str:
    """One number a round: `1.21x, 1.34x`."""
    return ", ".join(fmt.format(x) for x in values)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
