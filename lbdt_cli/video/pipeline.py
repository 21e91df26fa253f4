"""The `segment` road as a library: resolve inputs, load the model once, run the engine over each
clip into its writers. `lbdt_cli.commands.segment` only parses flags and renders; everything it
does goes through `Segmenter` here (and `lbdt_cli.benchmark.benchmark_segment` for `--benchmark`).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Sequence

import numpy as np

from lbdt_cli.errors import InputError, LbdtError
from lbdt_cli.utils.memory import peak_rss_mb
from lbdt_cli.utils.startup import mark
from lbdt_cli.utils.startup import report as startup_report
from lbdt_cli.video.draw import render_attention
from lbdt_cli.video.info import VideoInfo
from lbdt_cli.video.live_source import LiveSource, is_live_source
from lbdt_cli.video.mask_records import JsonLinesWriter
from lbdt_cli.video.outputs import VideoOutputs
from lbdt_cli.video.reader import IMAGE_SUFFIXES, check_range, count_frames, iter_frames, list_frame_files
from lbdt_cli.video.writers import SegmentMeta, expr_dir_name

if TYPE_CHECKING:
    from lbdt_cli.video.live import LiveResult

__all__ = [
    "VIDEO_SUFFIXES",
    "Segmenter",
    "VideoJob",
    "looks_like_input",
    "resolve_inputs",
    "split_inputs_and_expressions",
    "check_expressions",
    "plan_outputs",
    "check_selection",
]

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
    ".gif", ".3gp", ".ogv", ".y4m",
)  # fmt: skip
_GLOB_CHARS = "*?["


# ---------------------------------------------------------------------------------------------
# arguments


def looks_like_input(arg: str) -> bool:
    """An existing path, a glob, or a name ending like a video file (so a typo is reported as a
    missing file rather than taken for an expression). Live sources (`-`, stream URLs,
    /dev/video*) are inputs too."""
    if is_live_source(arg) or os.path.exists(arg):
        return True
    if any(c in arg for c in _GLOB_CHARS) and glob.glob(arg):
        return True
    return Path(arg).suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES and " " not in arg


def split_inputs_and_expressions(args: Sequence[str], expressions: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """`lbdt segment INPUTS... EXPRESSIONS...`: leading arguments that look like inputs are inputs, the
    rest are expressions. With `-e/--expression` given, every positional argument is an input."""
    args = list(args)
    if expressions:
        return args, list(expressions)
    k = 0
    while k < len(args) and looks_like_input(args[k]):
        k += 1
    return args[:k], args[k:]


def check_expressions(expressions: Sequence[str]) -> list[str]:
    if not expressions:
        raise LbdtError('give at least one expression, e.g. lbdt segment clip.mp4 "the man in red"')
    out = []
    for i, e in enumerate(expressions):
        text = " ".join(e.split())
        if not text:
            raise LbdtError(f"expression {i + 1} is empty")
        out.append(text)
    return out


def resolve_inputs(args: Sequence[str]) -> list[Path]:
    """Files, frame folders, folders of videos and globs -> clip paths (files or frame folders)."""
    if not args:
        raise InputError("give at least one video file or frame folder")
    clips: list[Path] = []
    for arg in args:
        if any(c in arg for c in _GLOB_CHARS) and not os.path.exists(arg):
            matches = sorted(glob.glob(arg))
            if not matches:
                raise InputError(f"no file matches {arg}")
            clips += [Path(m) for m in matches if Path(m).is_file() or list_frame_files(m)]
            continue
        p = Path(arg)
        if not p.exists():
            raise InputError(f"{p} does not exist")
        if p.is_dir() and not list_frame_files(p):
            videos = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
            if not videos:
                raise InputError(f"{p} holds no frames (images) and no video files")
            clips += videos
        else:
            clips.append(p)
    return list(dict.fromkeys(clips))


def plan_outputs(clips: Sequence[Path], out_root: Path) -> list[Path]:
    """OUT/<stem>/ per clip; clips sharing a stem get -2, -3, ... in input order."""
    seen: dict[str, int] = {}
    dirs = []
    for c in clips:
        stem = c.name if c.is_dir() else c.stem
        stem = stem.lstrip(".") or "clip"
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        dirs.append(out_root / (stem if n == 1 else f"{stem}-{n}"))
    return dirs


@dataclass
class VideoJob:
    source: Path
    output: Path
    info: VideoInfo


def check_selection(info: VideoInfo, start: int, end: int | None, stride: int) -> None:
    """Fail before the model loads when the clip has no frame or --start/--end/--stride select none."""
    check_range(start, end, stride)
    n = info.num_frames
    unknown_length = n is None and not info.duration and not info.is_folder  # e.g. raw Y4M: count it
    if unknown_length or (start > 0 and (n is None or start >= n - 2)):  # an estimate may be off by one
        n = count_frames(info.path)
    if n == 0:
        raise InputError(f"{info.path} has zero frames")
    if n is not None and start >= n:
        raise InputError(f"{info.path} has zero frames in the selected range (--start {start}, clip has {n})")


# ---------------------------------------------------------------------------------------------


def check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:  # also refuses NaN
        raise LbdtError(f"--threshold must be between 0 and 1, got {threshold}")


def check_flags(device: str, precision: str, batch_size: int, size: int | None, interval: int | None,
                threshold: float, glove: Path | None, start: int, end: int | None, stride: int) -> None:
    """Every `segment` flag that needs neither a clip nor the model, checked before anything else."""
    from lbdt_cli.engine import Predictor
    from lbdt_cli.video.reader import check_range

    check_threshold(threshold)
    check_range(start, end, stride)
    Predictor.check_flags(device, precision, batch_size, size, interval, glove)


@dataclass
class Segmenter:
    """A loaded model, its text embedder and a Predictor; segments one clip after another."""

    checkpoint: Path | None  # None: the demo checkpoint
    glove: Path | None = None
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 8
    input_size: int | None = None
    interval: int | None = None
    threshold: float = 0.5
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from lbdt_cli.engine import Predictor

        check_threshold(self.threshold)
        # The predictor keeps an inference copy (BatchNorm folded); the loaded model is not kept.
        self.predictor = Predictor.from_checkpoint(
            self.checkpoint, glove=self.glove, device=self.device, precision=self.precision,
            batch_size=self.batch_size, input_size=self.input_size, interval=self.interval,
        )  # fmt: skip
        self.checkpoint = self.predictor.checkpoint
        self.model = self.predictor.model
        self.embedder = self.predictor.embedder
        bad = self.predictor.non_finite_weights()
        if bad:
            self.warnings.append(f"{self.checkpoint}: {bad} weight(s) are NaN or infinite; the masks will "
                                 "likely be empty or meaningless")  # fmt: skip
        self.text = None
        self.expressions: list[str] = []
        self.tokens: list[list[str]] = []

    @property
    def config_name(self) -> str:
        return self.model.config.name

    def set_expressions(self, expressions: Sequence[str]) -> list[str]:
        """Embed and encode the expressions once; returns warnings (unknown words, truncation)."""
        vectors, mask, reports = self.embedder.embed(list(expressions))
        warnings = []
        for i, r in enumerate(reports):
            if r.unknown_words:
                words = ", ".join(dict.fromkeys(r.unknown_words))
                warnings.append(f"expression {i + 1}: unknown word(s) {words} (zero vectors)")
            if r.truncated:
                warnings.append(f"expression {i + 1}: {r.num_tokens} tokens, only the first "
                                f"{self.model.config.max_words} are used")  # fmt: skip
        self.text = self.predictor.encode_text(vectors, mask)
        mark("text_encoded")
        self.expressions = list(expressions)
        self.tokens = [r.tokens[: self.model.config.max_words] for r in reports]
        self.warnings += warnings
        return warnings

    def meta_for(self, job: VideoJob, start: int, end: int | None, stride: int) -> SegmentMeta:
        return SegmentMeta(
            source=str(job.source), expressions=self.expressions, threshold=self.threshold,
            interval=self.predictor.interval, input_size=self.predictor.input_size, checkpoint=str(self.checkpoint),
            start=start, end=end, stride=stride,
            extra={"model": self.config_name, "device": str(self.predictor.device), "precision": self.predictor.precision,
                   "batch_size": self.batch_size},
        )  # fmt: skip

    def segment(self, job: VideoJob, formats: Sequence[str], *, start: int = 0, end: int | None = None,
                stride: int = 1, save_probs: bool = False, palette: bool = False, lossless: bool = False,
                overwrite: bool = False, attention_frames: Sequence[int] | None = None,
                on_frame: Callable[[int], None] | None = None, request: dict | None = None,
                json_lines: IO[str] | None = None) -> dict:  # fmt: skip
        """Run the clip through the engine into its writers; returns the summary dict. `request`
        (what was asked, see `request_key`) goes into the folder's completion marker.
        `json_lines`: a text stream that gets one JSON object per frame (mask_records)."""
        meta = self.meta_for(job, start, end, stride)
        tokens = self.tokens
        seen = {"attention": set(), "nan_frames": 0}
        records = JsonLinesWriter(json_lines, self.expressions) if json_lines is not None else None
        with VideoOutputs(job.output, job.info, meta, formats, save_probs=save_probs, palette=palette,
                          lossless=lossless, overwrite=overwrite) as out:  # fmt: skip

            def sink(pred) -> None:
                if np.isnan(pred.probs).any():  # NaN > threshold is False: an empty mask, said below
                    seen["nan_frames"] += 1
                out.write(pred.frame, pred.probs)
                if records is not None:
                    masks = (pred.probs > self.threshold).astype(np.uint8)
                    records.write(pred.frame.index, pred.frame.timestamp_s, masks)
                if pred.attention:
                    seen["attention"].add(pred.frame.index)
                    for e, maps in enumerate(pred.attention):
                        image = render_attention(pred.frame.rgb, pred.extra.get("prev_rgb"), tokens[e], maps,
                                                 self.expressions[e])  # fmt: skip
                        out.write_attention(f"{pred.frame.index:06d}_{expr_dir_name(e)}.png", image)

            frames = iter_frames(job.source, start, end, 1, info=job.info)
            timings = self.predictor.run(
                frames, self.text, sink,
                select=(lambda f: (f.index - start) % stride == 0) if stride > 1 else None,
                attention_frames=attention_frames, first_index=start,
                on_frame=(lambda p: on_frame(1)) if on_frame else None,
            )  # fmt: skip
            if timings.frames == 0:
                raise InputError(f"{job.source} has zero frames in the selected range")
            skipped = self._skipped(job.info, start, end, stride, timings.frames, attention_frames, seen)
            out.summary_writer.warnings = skipped
            summary = out.finish({**timings.as_dict(), "peak_rss_mb": round(peak_rss_mb(), 1),
                                  "startup": startup_report()}, request=request)
        summary["output"] = str(job.output)
        return summary

    @staticmethod
    def _skipped(info: VideoInfo, start: int, end: int | None, stride: int, done: int,
                 attention_frames: Sequence[int] | None, seen: dict) -> list[str]:  # fmt: skip
        """What the run did not do that was asked or expected, one sentence each."""
        notes = []
        if info.num_frames is not None:
            stop = info.num_frames if end is None else min(end, info.num_frames)
            expected = len(range(start, stop, stride))
            # the count of a video file is an estimate (duration x fps): one frame off is normal
            if done < expected - (0 if info.is_folder else 1):
                notes.append(f"decoded {done} of {expected} expected frames: the clip's data ends early "
                             "(a cut or damaged file?)")  # fmt: skip
        missing = sorted(set(attention_frames or ()) - seen["attention"])
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            why = f"not segmented (the run covered frames {start}..{start + (done - 1) * stride}"
            why += f" every {stride})" if stride > 1 else ")"
            notes.append(f"--attention-maps: frame(s) {shown} {why}; no map written for them")
        if seen["nan_frames"]:
            notes.append(f"the model's output was NaN on {seen['nan_frames']} of {done} frames; their masks are "
                         "empty (check the checkpoint's weights)")  # fmt: skip
        return notes
    def segment_live(self, source: LiveSource, output: Path, formats: Sequence[str], *, save_probs: bool = False,
                     palette: bool = False, lossless: bool = False, overwrite: bool = False,
                     max_latency: float | None = None, json_lines: IO[str] | None = None,
                     on_frame: Callable | None = None, handle_signals: bool = True) -> tuple[dict, "LiveResult"]:  # fmt: skip
        """Segment an opened live source until it ends (see video/live.py) into `output`, which is
        written in place and finalised on every ending. Returns (summary dict, LiveResult)."""
        from lbdt_cli.video.live import LiveRun

        assert source.info is not None, "open the source first"
        meta = SegmentMeta(
            source=source.url, expressions=self.expressions, threshold=self.threshold,
            interval=self.predictor.interval, input_size=self.predictor.input_size, checkpoint=str(self.checkpoint),
            live=True,
            extra={"model": self.config_name, "device": str(self.predictor.device), "precision": self.precision,
                   "batch_size": self.batch_size, "live": True, "max_latency_s": max_latency},
        )  # fmt: skip
        with VideoOutputs(output, source.info, meta, formats, save_probs=save_probs, palette=palette,
                          lossless=lossless, overwrite=overwrite) as out:  # fmt: skip
            records = JsonLinesWriter(json_lines, self.expressions) if json_lines is not None else None
            run = LiveRun(self.predictor, self.text, len(self.expressions), self.threshold, source,
                          max_latency=max_latency, json_lines=records, outputs=out, on_frame=on_frame,
                          handle_signals=handle_signals)  # fmt: skip
            result = run.run()
            summary = out.finish({**result.time_s, "peak_rss_mb": round(peak_rss_mb(), 1)},
                                 extra=result.as_dict())
        summary["output"] = str(output)
        return summary, result
