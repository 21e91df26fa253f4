"""All outputs of one clip: `OUT/<clip>/`, built under a hidden temporary name beside it and renamed
into place only when every writer has finished (`VideoOutputs.finish`). On an error or Ctrl-C the
temporary folder is deleted, so a half-written output never appears under the final name.

A live source (`meta.live`) is different: what was written before the stream ended is the result,
and it must be usable while the stream runs. Its folder is created under the final name at the
start; manifest.json and summary.json say `"in_progress": true` until the run ends, and
summary.json is rewritten (renamed into place) about every second. Every ending (the stream
ending, Ctrl-C, SIGTERM, an error) closes the files and writes `"in_progress": false` with how it
ended; the folder is removed only if it fails before the first frame could be written."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import numpy as np

from lbdt_cli.errors import LbdtError, OutputError
from lbdt_cli.utils.atomic import atomic_dir, check_writable_output, remove_path
from lbdt_cli.video.info import Frame, VideoInfo
from lbdt_cli.video.writers import (
    H5Writer, MaskVideoWriter, OverlayWriter, PaletteWriter, PngWriter, SegmentMeta, SummaryWriter, Writer,
    expr_dir_name,
)  # fmt: skip

__all__ = ["FORMATS", "parse_formats", "VideoOutputs"]

FORMATS = ("h5", "png", "mask-video", "overlay")


def parse_formats(text: str) -> list[str]:
    """'h5,png' -> ['h5', 'png']; 'all' -> every format. LbdtError on an unknown name."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise LbdtError(f"--format {text!r} names no format (choose from {', '.join(FORMATS)}, or all)")
    if names == ["all"]:
        return list(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise LbdtError(f"unknown --format {', '.join(unknown)} (choose from {', '.join(FORMATS)}, or all)")
    return list(dict.fromkeys(names))


class VideoOutputs:
    """All writers of one clip, in a temporary folder renamed to `final_dir` by `finish`.

        with VideoOutputs(final_dir, info, meta, formats=["h5", "png"], overwrite=False) as out:
            for frame, probs in ...:
                out.write(frame, probs)
            summary = out.finish(timings)
    """

    def __init__(self, final_dir: str | os.PathLike, info: VideoInfo, meta: SegmentMeta, formats: Sequence[str],
                 *, save_probs: bool = False, palette: bool = False, lossless: bool = False,
                 overwrite: bool = False) -> None:  # fmt: skip
        self.final_dir = Path(final_dir)
        self.info, self.meta = info, meta
        self.formats = list(formats)
        self.options = dict(save_probs=save_probs, palette=palette, lossless=lossless)
        self.overwrite = overwrite
        self.writers: list[Writer] = []
        self.summary_writer: SummaryWriter | None = None
        self._stack: ExitStack | None = None
        self.root: Path | None = None
        self.finished = False

    def __enter__(self) -> "VideoOutputs":
        check_writable_output(self.final_dir, self.overwrite)
        if self.meta.live:
            return self._enter_live()
        self._stack = ExitStack()
        self.root = self._stack.enter_context(atomic_dir(self.final_dir, overwrite=self.overwrite))
        try:
            with self._disk_errors():
                self._open_writers()
        except BaseException:
            self._abort_writers()
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def _enter_live(self) -> "VideoOutputs":
        remove_path(self.final_dir)  # only there with --overwrite (checked above)
        try:
            self.final_dir.mkdir(parents=True)
        except OSError as exc:
            raise OutputError(f"cannot create {self.final_dir}: {exc.strerror or exc}") from None
        self.root = self.final_dir
        self._last_progress = 0.0
        try:
            self._open_writers()
            self._write_manifest(in_progress=True)
            self.summary_writer.finish({}, {"in_progress": True})
        except BaseException:
            self._abort_writers()
            remove_path(self.final_dir)
            raise
        return self

    def _planned_writers(self) -> list[Writer]:
        root, info, meta, o = self.root, self.info, self.meta, self.options
        planned: list[Writer] = []
        if "h5" in self.formats:
            planned.append(H5Writer(root, info, meta, save_probs=o["save_probs"]))
        if "png" in self.formats:
            planned.append(PngWriter(root, info, meta))
        if o["palette"]:
            planned.append(PaletteWriter(root, info, meta))
        if "mask-video" in self.formats:
            planned.append(MaskVideoWriter(root, info, meta, lossless=o["lossless"]))
        if "overlay" in self.formats:
            planned.append(OverlayWriter(root, info, meta))
        self.summary_writer = SummaryWriter(root, info, meta)
        return planned + [self.summary_writer]

    def _open_writers(self) -> None:
        for e in range(len(self.meta.expressions)):
            (self.root / expr_dir_name(e)).mkdir(exist_ok=True)
        for w in self._planned_writers():
            self.writers.append(w)  # aborted with the others if open() fails part-way
            w.open()

    @contextlib.contextmanager
    def _disk_errors(self):
        """A full disk (ENOSPC), a file size limit (EFBIG), a lost mount...: one OutputError (exit 5)."""
        try:
            yield
        except OSError as exc:
            raise OutputError(f"cannot write {self.final_dir}: {exc.strerror or exc}") from None

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray | None = None) -> None:
        """probs: float32 [E, H, W] at the clip's own size; thresholded here (> threshold) unless
        the masks are given."""
        if masks is None:
            masks = (probs > self.meta.threshold).astype(np.uint8)
        with self._disk_errors():
            for w in self.writers:
                w.write(frame, probs, masks)

    def skip(self, frame: Frame) -> None:
        """A live frame the model skipped (--max-latency)."""
        for w in self.writers:
            w.skip(frame)

    def progress(self, status) -> None:
        """Live runs: rewrite summary.json with `status()` (a dict) at most about once a second."""
        now = time.monotonic()
        if now - self._last_progress >= 1.0:
            self._last_progress = now
            self.summary_writer.finish({}, {"in_progress": True, **status()})

    def write_attention(self, name: str, image: np.ndarray) -> None:
        import cv2

        with self._disk_errors():
            d = self.root / "attention"
            d.mkdir(exist_ok=True)
            if not cv2.imwrite(str(d / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OutputError(f"cannot write {d / name}")

    def _manifest(self) -> dict:
        files = {"summary": "summary.json"}
        if "h5" in self.formats:
            files["h5"] = "masks.h5"
        if "overlay" in self.formats:
            files["overlay"] = "overlay.mp4"
        if self.options["palette"]:
            files["palette"] = "palette/<frame>.png"
        per_expr = {}
        if "png" in self.formats:
            per_expr["png"] = "masks/<frame>.png"
        if "mask-video" in self.formats:
            per_expr["mask_video"] = "mask.mp4"
        return {
            "source": self.meta.source,
            "expressions": {expr_dir_name(e): t for e, t in enumerate(self.meta.expressions)},
            "files": files,
            "per_expression_files": per_expr,
            "frame_file_names": "<frame> is the source frame index, 6 digits (000000.png)",
        }

    def _write_manifest(self, in_progress: bool | None = None) -> None:
        manifest = self._manifest()
        if in_progress is not None:
            manifest["in_progress"] = in_progress
        tmp = self.root / ".manifest.json.tmp"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, self.root / "manifest.json")

    def finish(self, timings: dict | None = None, request: dict | None = None, extra: dict | None = None) -> dict:
        """Close every writer, write manifest.json and summary.json (+ `extra`; and, given `request`,
        the completion marker, last), move the folder into place (live runs: it is in place already)."""
        with self._disk_errors():
            for w in self.writers:
                w.close()
            if self.meta.live:
                self.finished = True
                self._write_manifest(in_progress=False)
                return self.summary_writer.finish(timings, {"in_progress": False, **(extra or {})})
            self._write_manifest()
            summary = self.summary_writer.finish(timings, extra)
            if request is not None:
                from lbdt_cli.utils.completion import write_marker

                write_marker(self.root, request)
            self.finished = True
            self._stack.__exit__(None, None, None)  # renames the temporary folder onto final_dir
        return summary

    def _finish_live_after(self, exc: BaseException) -> None:
        """A live run stopped by an exception: keep what was written, closing what can be closed."""
        for w in self.writers:
            try:
                w.close()
            except BaseException:  # noqa: BLE001 - one broken file must not lose the others
                w.abort()
        # KeyboardInterrupt: a second Ctrl-C; another BaseException: a signal turned into one
        ended = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error" if isinstance(exc, Exception) \
            else "terminated"
        try:
            self._write_manifest(in_progress=False)
            self.summary_writer.finish({}, {"in_progress": False, "ended": ended, "ended_detail": str(exc)})
        except OSError:
            pass

    def _abort_writers(self) -> None:
        for w in self.writers:
            w.abort()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.finished:
            return False
        if self.meta.live:
            self.finished = True
            self._finish_live_after(exc if exc is not None else OutputError("the run was not finished"))
            return False
        if exc_type is None:  # left without finish(): treat as a failure, leave nothing behind
            exc_type, exc = OutputError, OutputError(f"{self.final_dir} was not finished")
        self._abort_writers()
        self._stack.__exit__(exc_type, exc, tb)  # deletes the temporary folder
        return False
