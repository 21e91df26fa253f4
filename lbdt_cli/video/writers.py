"""Output writers for `lbdt segment`: HDF5, PNG, mask videos, overlay video, JSON summary.

All outputs of one clip go into one folder, `OUT/<video_stem>/`, which is built under a hidden
temporary name beside it and renamed into place only when every writer has finished
(`VideoOutputs.finish`). On an error or Ctrl-C the temporary folder is deleted, so a half-written
output never appears under the final name. Layout: see docs/segment-output.md.

Each writer takes frames one at a time (`write(frame, probs)`, probs float32 [E, H, W]) and keeps
no frame history, so memory stays flat for any clip length.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lbdt_cli.errors import LbdtError, OutputError
from lbdt_cli.utils.atomic import atomic_dir, check_writable_output
from lbdt_cli.video.reader import Frame, VideoInfo, ffmpeg_exe

__all__ = [
    "FORMATS",
    "SegmentMeta",
    "VideoOutputs",
    "H5Writer",
    "PngWriter",
    "PaletteWriter",
    "MaskVideoWriter",
    "OverlayWriter",
    "SummaryWriter",
    "expr_dir_name",
    "parse_formats",
    "davis_palette",
    "COLORS",
    "draw_overlay",
    "render_attention",
]

FORMATS = ("h5", "png", "mask-video", "overlay")

# Distinct, saturated colours (RGB) for expressions 0, 1, ... in overlays.
COLORS = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
    (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip

# Audio codecs that an .mp4 can hold as they are; anything else is re-encoded to AAC.
_MP4_AUDIO = {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}


def expr_dir_name(e: int) -> str:
    """Folder for expression number `e` (never the expression text: it may hold any character)."""
    return f"expr_{e:02d}"


def parse_formats(text: str) -> list[str]:
    """'h5,png' -> ['h5', 'png']; 'all' -> every format. LbdtError on an unknown name."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise LbdtError(f"unknown --format {', '.join(unknown)} (choose from {', '.join(FORMATS)}, or all)")
    return list(dict.fromkeys(names))


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS annotation PNGs (index 0 black, 1 red, 2 green, ...)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


@dataclass
class SegmentMeta:
    """What a run was: stored in the HDF5 attributes, manifest.json and summary.json."""

    source: str
    expressions: list[str]
    threshold: float = 0.5
    interval: int = 6
    input_size: int = 320
    checkpoint: str = ""
    start: int = 0
    end: int | None = None
    stride: int = 1
    extra: dict = field(default_factory=dict)


def _out_fps(info: VideoInfo, meta: SegmentMeta) -> float:
    return info.fps / meta.stride  # keeps the source timing when frames are skipped


class _FFmpegWriter:
    """An ffmpeg process encoding raw frames from a pipe into a video file."""

    def __init__(self, path: Path, width: int, height: int, fps: float, pix_fmt_in: str, codec_args: list[str],
                 extra_inputs: list[str] | None = None, maps: list[str] | None = None) -> None:  # fmt: skip
        self.path = path
        self._log = tempfile.TemporaryFile()
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", pix_fmt_in, "-s", f"{width}x{height}", "-r", f"{fps:.6g}", "-i", "pipe:0",
            *(extra_inputs or []), *(maps or []), *codec_args,
            "-threads", "1",  # encoding runs beside the model; leave it the cores
            str(path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def write(self, data: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(data).tobytes())
        except (BrokenPipeError, OSError):
            raise OutputError(f"ffmpeg stopped while writing {self.path.name}: {self._error()}") from None

    def _error(self) -> str:
        self.proc.wait()
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else f"exit code {self.proc.returncode}"

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.wait() != 0:
            raise OutputError(f"ffmpeg could not write {self.path.name}: {self._error()}")
        self._log.close()

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()
        self._log.close()


def _h264_args(width: int, height: int, lossless: bool) -> list[str]:
    # yuv420p needs even sizes; odd-sized clips keep their exact size with yuv444p instead of padding.
    pix = "yuv420p" if width % 2 == 0 and height % 2 == 0 and not lossless else "yuv444p"
    quality = ["-qp", "0"] if lossless else ["-crf", "18"]
    return ["-c:v", "libx264", "-preset", "veryfast", *quality, "-pix_fmt", pix, "-movflags", "+faststart"]


# ---------------------------------------------------------------------------------------------
# writers: each has write(frame, probs, masks) and close(); abort() on failure


class H5Writer:
    """masks.h5: `masks` uint8 0/1 [E, T, H, W], chunked per frame and gzip-compressed, grown frame by frame."""

    def __init__(self, path: Path, info: VideoInfo, meta: SegmentMeta, save_probs: bool = False) -> None:
        import h5py

        E, H, W = len(meta.expressions), info.height, info.width
        self.f = h5py.File(path, "w")
        try:
            self._create(h5py, E, H, W, info, meta, save_probs)
        except BaseException:
            self.abort()
            raise
        self.t = 0

    def _create(self, h5py, E, H, W, info: VideoInfo, meta: SegmentMeta, save_probs: bool) -> None:
        kw = dict(chunks=(1, 1, H, W), compression="gzip", compression_opts=4, shuffle=True)
        self.masks = self.f.create_dataset("masks", (E, 0, H, W), maxshape=(E, None, H, W), dtype="u1", **kw)
        self.probs = (
            self.f.create_dataset("probs", (E, 0, H, W), maxshape=(E, None, H, W), dtype="f2", **kw) if save_probs else None
        )
        self.frame_indices = self.f.create_dataset("frame_indices", (0,), maxshape=(None,), dtype="i8", chunks=(1024,))
        self.timestamps = self.f.create_dataset("timestamps", (0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        str_dt = h5py.string_dtype("utf-8")
        self.f.create_dataset("expressions", data=np.array(meta.expressions, dtype=object), dtype=str_dt)
        self.f.attrs.update(
            fps=info.fps / meta.stride, source_fps=info.fps, threshold=meta.threshold, interval=meta.interval,
            input_size=meta.input_size, checkpoint=meta.checkpoint, source=meta.source, stride=meta.stride,
            masks_axes="expression, frame, height, width",
        )  # fmt: skip

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        t = self.t
        for ds in (self.masks, self.probs):
            if ds is not None:
                ds.resize(t + 1, axis=1)
        self.masks[:, t] = masks
        if self.probs is not None:
            self.probs[:, t] = probs.astype(np.float16)
        for ds, value in ((self.frame_indices, frame.index), (self.timestamps, frame.timestamp_s)):
            ds.resize(t + 1, axis=0)
            ds[t] = value
        self.t += 1

    def close(self) -> None:
        self.f.close()

    def abort(self) -> None:
        try:
            self.f.close()
        except Exception:  # noqa: BLE001 - the folder is deleted anyway
            pass


class PngWriter:
    """expr_XX/masks/<frame:06d>.png: 8-bit greyscale, 0 background, 255 object."""

    def __init__(self, root: Path, num_expressions: int) -> None:
        self.dirs = [root / expr_dir_name(e) / "masks" for e in range(num_expressions)]
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        import cv2

        for d, m in zip(self.dirs, masks):
            if not cv2.imwrite(str(d / f"{frame.index:06d}.png"), m * np.uint8(255)):
                raise OutputError(f"cannot write {d / f'{frame.index:06d}.png'}")

    def close(self) -> None:
        pass

    abort = close


class PaletteWriter:
    """palette/<frame:06d>.png: one indexed PNG per frame, pixel = expression number + 1 (0 background),
    DAVIS palette; where masks overlap, the later expression wins."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "palette"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.palette = davis_palette()

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        from PIL import Image

        label = np.zeros(masks.shape[1:], np.uint8)
        for e, m in enumerate(masks):
            label[m > 0] = e + 1
        img = Image.fromarray(label, mode="P")
        img.putpalette(self.palette)
        img.save(self.dir / f"{frame.index:06d}.png", optimize=False)

    def close(self) -> None:
        pass

    abort = close


class MaskVideoWriter:
    """expr_XX/mask.mp4: the mask as a black/white H.264 video (lossless with `lossless=True`)."""

    def __init__(self, root: Path, info: VideoInfo, meta: SegmentMeta, lossless: bool = False) -> None:
        self.writers = []
        try:
            for e in range(len(meta.expressions)):
                d = root / expr_dir_name(e)
                d.mkdir(parents=True, exist_ok=True)
                args = _h264_args(info.width, info.height, lossless)
                self.writers.append(
                    _FFmpegWriter(d / "mask.mp4", info.width, info.height, _out_fps(info, meta), "gray", args))
        except BaseException:
            self.abort()  # stop the ffmpeg processes already started
            raise

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        for w, m in zip(self.writers, masks):
            w.write(m * np.uint8(255))

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def abort(self) -> None:
        for w in self.writers:
            w.abort()


def draw_overlay(rgb: np.ndarray, masks: np.ndarray, expressions: Sequence[str], alpha: float = 0.45) -> np.ndarray:
    """Source frame with each mask tinted and outlined in its colour, and a legend of the expressions."""
    import cv2

    out = rgb.copy()
    H, W = out.shape[:2]
    for e, m in enumerate(masks):
        color = np.array(COLORS[e % len(COLORS)], np.float32)
        sel = m.astype(bool)
        if sel.any():
            out[sel] = (out[sel] * (1 - alpha) + color * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), max(1, round(min(H, W) / 200)))
    scale = max(0.3, min(H, W) / 720)
    thick = max(1, round(scale * 2))
    y = 0
    for e, text in enumerate(expressions):
        label = f"{e}: {text}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        y += th + base + 4
        cv2.rectangle(out, (0, y - th - base - 2), (tw + 8, y + 2), (0, 0, 0), -1)
        cv2.putText(out, label, (4, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, COLORS[e % len(COLORS)], thick, cv2.LINE_AA)
    return out


def render_attention(rgb: np.ndarray, prev_rgb: np.ndarray | None, tokens: Sequence[str], maps: dict,
                     expression: str = "", tile: int = 160) -> np.ndarray:
    """A grid like the paper's Fig. 6: one column per word; top row, where the word looked in the
    frame; bottom row, where it looked in the frame difference |frame - previous frame|."""
    import cv2

    h, w = rgb.shape[:2]
    tw, th = tile, max(1, round(tile * h / w))
    frame = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    diff_src = rgb if prev_rgb is None else cv2.absdiff(rgb, prev_rgb)
    diff = cv2.resize(diff_src, (tw, th), interpolation=cv2.INTER_AREA)
    if prev_rgb is not None:  # stretch so small motions are visible
        diff = cv2.normalize(diff, None, 0, 255, cv2.NORM_MINMAX)
    words = list(tokens) or ["<none>"]
    label_h = 18
    rows = []
    for name, base in (("frame", frame), ("difference", diff)):
        cells = []
        for n, word in enumerate(words):
            m = maps[name][n] if n < len(maps[name]) else np.zeros((2, 2), np.float32)
            m = (m - m.min()) / (m.max() - m.min() + 1e-8)
            heat = cv2.applyColorMap(cv2.resize((m * 255).astype(np.uint8), (tw, th)), cv2.COLORMAP_JET)
            cell = cv2.addWeighted(base, 0.5, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), 0.5, 0)
            top = np.zeros((label_h, tw, 3), np.uint8)
            cv2.putText(top, f"{word} ({'frame' if name == 'frame' else 'diff'})", (3, label_h - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
            cells.append(np.concatenate([top, cell], axis=0))
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    title = np.zeros((22, grid.shape[1], 3), np.uint8)
    cv2.putText(title, expression[:200], (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return np.concatenate([title, grid], axis=0)


class OverlayWriter:
    """overlay.mp4: source frames with all masks drawn on them, at the source timing, with its audio."""

    def __init__(self, root: Path, info: VideoInfo, meta: SegmentMeta) -> None:
        self.expressions = meta.expressions
        fps = _out_fps(info, meta)
        extra, maps, audio = [], ["-map", "0:v:0"], []
        if info.has_audio and not info.is_folder:
            start_s = meta.start / info.fps
            extra = ["-ss", f"{start_s:.6f}"]
            if meta.end is not None:
                extra += ["-t", f"{(meta.end - meta.start) / info.fps:.6f}"]
            extra += ["-i", info.path]
            maps += ["-map", "1:a:0?"]
            audio = ["-c:a", "copy" if (info.audio_codec or "") in _MP4_AUDIO else "aac", "-shortest"]
        args = _h264_args(info.width, info.height, lossless=False) + audio
        self.writer = _FFmpegWriter(root / "overlay.mp4", info.width, info.height, fps, "rgb24", args, extra, maps)

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        self.writer.write(draw_overlay(frame.rgb, masks, self.expressions))

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class SummaryWriter:
    """summary.json: frames, timing, measured fps and per-expression mask area for every frame."""

    def __init__(self, root: Path, info: VideoInfo, meta: SegmentMeta) -> None:
        self.path = root / "summary.json"
        self.info, self.meta = info, meta
        self.frame_indices: list[int] = []
        self.areas: list[list[int]] = [[] for _ in meta.expressions]

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        self.frame_indices.append(frame.index)
        for e, area in enumerate(masks.reshape(masks.shape[0], -1).sum(axis=1, dtype=np.int64)):
            self.areas[e].append(int(area))

    def summary(self, timings: dict | None = None) -> dict:
        info, meta = self.info, self.meta
        n, pixels = len(self.frame_indices), info.width * info.height
        timings = dict(timings or {})
        total = timings.get("total_s") or 0.0
        return {
            "source": meta.source,
            "width": info.width, "height": info.height, "rotation": info.rotation,
            "source_fps": info.fps, "output_fps": info.fps / meta.stride,
            "frames": n, "start": meta.start, "end": meta.end, "stride": meta.stride,
            "threshold": meta.threshold, "interval": meta.interval, "input_size": meta.input_size,
            "checkpoint": meta.checkpoint,
            "fps_measured": (n / total) if total > 0 else None,
            "time_s": timings,
            "frame_indices": self.frame_indices,
            "expressions": [
                {
                    "index": e, "folder": expr_dir_name(e), "text": text,
                    "mask_area": self.areas[e],
                    "mean_area_fraction": (sum(self.areas[e]) / (n * pixels)) if n else 0.0,
                    "frames_with_object": sum(a > 0 for a in self.areas[e]),
                }
                for e, text in enumerate(meta.expressions)
            ],
            **meta.extra,
        }  # fmt: skip

    def finish(self, timings: dict | None = None) -> dict:
        data = self.summary(timings)
        self.path.write_text(json.dumps(data, indent=1) + "\n")
        return data

    def close(self) -> None:
        pass

    abort = close


# ---------------------------------------------------------------------------------------------


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
        self.writers: list = []
        self.summary_writer: SummaryWriter | None = None
        self._stack: ExitStack | None = None
        self.root: Path | None = None
        self.finished = False

    def __enter__(self) -> "VideoOutputs":
        check_writable_output(self.final_dir, self.overwrite)
        self._stack = ExitStack()
        self.root = self._stack.enter_context(atomic_dir(self.final_dir, overwrite=self.overwrite))
        try:
            self._open_writers()
        except BaseException:
            self._abort_writers()
            self._stack.__exit__(*__import__("sys").exc_info())
            raise
        return self

    def _open_writers(self) -> None:
        root, info, meta, o = self.root, self.info, self.meta, self.options
        for e in range(len(meta.expressions)):
            (root / expr_dir_name(e)).mkdir(exist_ok=True)
        if "h5" in self.formats:
            self.writers.append(H5Writer(root / "masks.h5", info, meta, save_probs=o["save_probs"]))
        if "png" in self.formats:
            self.writers.append(PngWriter(root, len(meta.expressions)))
        if o["palette"]:
            self.writers.append(PaletteWriter(root))
        if "mask-video" in self.formats:
            self.writers.append(MaskVideoWriter(root, info, meta, lossless=o["lossless"]))
        if "overlay" in self.formats:
            self.writers.append(OverlayWriter(root, info, meta))
        self.summary_writer = SummaryWriter(root, info, meta)
        self.writers.append(self.summary_writer)

    def write(self, frame: Frame, probs: np.ndarray) -> None:
        """probs: float32 [E, H, W] at the clip's own size; thresholded here (> threshold)."""
        masks = (probs > self.meta.threshold).astype(np.uint8)
        for w in self.writers:
            w.write(frame, probs, masks)

    def write_attention(self, name: str, image: np.ndarray) -> None:
        import cv2

        d = self.root / "attention"
        d.mkdir(exist_ok=True)
        cv2.imwrite(str(d / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

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

    def finish(self, timings: dict | None = None) -> dict:
        """Close every writer, write manifest.json and summary.json, move the folder into place."""
        for w in self.writers:
            w.close()
        with open(self.root / "manifest.json", "w") as f:
            json.dump(self._manifest(), f, indent=1, ensure_ascii=False)
            f.write("\n")
        summary = self.summary_writer.finish(timings)
        self.finished = True
        self._stack.__exit__(None, None, None)  # renames the temporary folder onto final_dir
        return summary

    def _abort_writers(self) -> None:
        for w in self.writers:
            w.abort()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.finished:
            return False
        if exc_type is None:  # left without finish(): treat as a failure, leave nothing behind
            exc_type, exc = OutputError, OutputError(f"{self.final_dir} was not finished")
        self._abort_writers()
        self._stack.__exit__(exc_type, exc, tb)  # deletes the temporary folder
        return False

