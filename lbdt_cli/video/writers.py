"""The output formats of `lbdt segment`, one small class each over a common `Writer` base.

Every writer is built from the clip's folder, its `VideoInfo` and the run's `SegmentMeta`, then

    w.open()                       creates its files / starts its ffmpeg process
    w.write(frame, probs, masks)   each frame in order: probs float32 [E, H, W], masks uint8 0/1 [E, H, W]
    w.skip(frame)                  a live-source frame the model skipped (--max-latency): the videos
                                   hold the last mask so they keep the source timing; others ignore it
    w.close()                      completes the files (OutputError if they cannot be written)
    w.abort()                      stops and drops what is open, never raises (the folder is deleted anyway)

For a live source (`meta.live`) every file can be read while it grows: HDF5 in SWMR mode, flushed
at least every half second; PNGs renamed into place complete; fragmented mp4 videos.

Writers keep no frame history, so memory stays flat for any clip length. `VideoOutputs`
(outputs.py) picks the writers of a run and owns the folder. Layout: docs/segment-output.md.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lbdt_cli.errors import OutputError
from lbdt_cli.video.draw import davis_palette, draw_overlay, label_image
from lbdt_cli.video.ffmpeg import FFmpegWriter, h264_args, source_look_args
from lbdt_cli.video.info import Frame, VideoInfo

__all__ = [
    "SegmentMeta",
    "Writer",
    "H5Writer",
    "PngWriter",
    "PaletteWriter",
    "MaskVideoWriter",
    "OverlayWriter",
    "SummaryWriter",
    "expr_dir_name",
]

# Audio codecs that an .mp4 can hold as they are; anything else is re-encoded to AAC.
_MP4_AUDIO = {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}


def expr_dir_name(e: int) -> str:
    """Folder for expression number `e` (never the expression text: it may hold any character)."""
    return f"expr_{e:02d}"


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
    live: bool = False  # a live source: files readable while they grow (see the module doc)
    extra: dict = field(default_factory=dict)

    def output_fps(self, info: VideoInfo) -> float:
        return info.fps / self.stride  # keeps the source timing when frames are skipped

    def h264_args(self, info: VideoInfo, lossless: bool = False) -> list[str]:
        # live: a fragment (and keyframe) about every second
        frag = max(1, round(self.output_fps(info))) if self.live else None
        return h264_args(info.width, info.height, lossless, fragment_frames=frag)


class Writer:
    """One output of one clip; see the module docstring for the open/write/close/abort contract."""

    def __init__(self, root: Path, info: VideoInfo, meta: SegmentMeta) -> None:
        self.root, self.info, self.meta = Path(root), info, meta

    def open(self) -> None:
        pass

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        raise NotImplementedError

    def skip(self, frame: Frame) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _write_image(path: Path, write, live: bool) -> None:
    """write(path) creates the image; for live runs under a temporary name renamed into place, so
    a reader never sees half a file."""
    target = path.with_name(f".{path.stem}.tmp{path.suffix}") if live else path
    if write(target) is False:
        raise OutputError(f"cannot write {path}")
    if live:
        os.replace(target, path)


class _GuardedFile:
    """The file HDF5 writes masks.h5 through (h5py's file-object driver), absorbing write errors.

    When the disk fills up (ENOSPC) or a file size limit is hit (EFBIG), a write that fails inside
    HDF5's own driver leaves the library in a broken state: h5py objects then fail to free
    themselves and the process can crash at exit. Here the first failed write is recorded and it
    and every later write are kept in memory instead (reads see them), so HDF5 always sees a
    consistent file and closes cleanly; the writer then reports the error, and the half-written
    file is deleted with its folder. The writer stops at the next frame, so little is kept."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "w+b", buffering=0)  # unbuffered: a failing write fails here, not later
        self.pos = 0
        self.error: OSError | None = None
        self.kept: list[tuple[int, bytes]] = []  # (offset, data) written after the error

    def write(self, data) -> int:
        data = bytes(data)
        if self.error is None:
            try:
                self.f.seek(self.pos)
                done = 0
                while done < len(data):
                    done += self.f.write(data[done:])
                self.pos += done
                return done
            except OSError as exc:
                self.error = exc
        self.kept.append((self.pos, data))
        self.pos += len(data)
        return len(data)

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = len(view)
        try:
            self.f.seek(self.pos)
            got = self.f.readinto(view) or 0
        except OSError:
            got = 0
        view[got:] = bytes(n - got)  # past the end of what reached the disk
        for off, data in self.kept:  # later writes win
            lo, hi = max(off, self.pos), min(off + len(data), self.pos + n)
            if lo < hi:
                view[lo - self.pos : hi - self.pos] = data[lo - off : hi - off]
        self.pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(max(n, 0))
        self.readinto(buf)
        return bytes(buf)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            end = self.f.seek(0, 2)
            self.pos = max([end] + [o + len(d) for o, d in self.kept]) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.error is None:
            try:
                self.f.truncate(size)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        try:
            self.f.close()
        except OSError as exc:
            self.error = self.error or exc


class H5Writer(Writer):
    """masks.h5: `masks` uint8 0/1 [E, T, H, W], chunked per frame and gzip-compressed, grown frame by frame."""

    def __init__(self, root: Path, info: VideoInfo, meta: SegmentMeta, save_probs: bool = False) -> None:
        super().__init__(root, info, meta)
        self.path = self.root / "masks.h5"
        self.save_probs = save_probs
        self.f = None
        self.t = 0

    def open(self) -> None:
        import h5py

        info, meta = self.info, self.meta
        E, H, W = len(meta.expressions), info.height, info.width
        if meta.live:  # live: SWMR (readers open it while it grows) needs HDF5's own file driver
            self.sink = None
            self.f = h5py.File(self.path, "w", libver="latest")
        else:
            self.sink = _GuardedFile(self.path)
            self.f = h5py.File(self.sink, "w")
        kw = dict(chunks=(1, 1, H, W), compression="gzip", compression_opts=4, shuffle=True)
        self.masks = self.f.create_dataset("masks", (E, 0, H, W), maxshape=(E, None, H, W), dtype="u1", **kw)
        self.probs = (
            self.f.create_dataset("probs", (E, 0, H, W), maxshape=(E, None, H, W), dtype="f2", **kw)
            if self.save_probs else None
        )  # fmt: skip
        self.frame_indices = self.f.create_dataset("frame_indices", (0,), maxshape=(None,), dtype="i8", chunks=(1024,))
        self.timestamps = self.f.create_dataset("timestamps", (0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        str_dt = h5py.string_dtype("utf-8")
        self.f.create_dataset("expressions", data=np.array(meta.expressions, dtype=object), dtype=str_dt)
        self.f.attrs.update(
            fps=meta.output_fps(info), source_fps=info.fps, threshold=meta.threshold, interval=meta.interval,
            input_size=meta.input_size, checkpoint=meta.checkpoint, source=meta.source, stride=meta.stride,
            masks_axes="expression, frame, height, width",
        )  # fmt: skip
        if meta.live:
            self.f.swmr_mode = True
            self._flushed = float("-inf")  # the first frame is flushed at once, later ones every 0.5 s

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
        if self.meta.live and time.monotonic() - self._flushed >= 0.5:
            self.f.flush()
            self._flushed = time.monotonic()
        self._check()

    def _check(self) -> None:
        if self.sink is not None and self.sink.error is not None:
            raise OutputError(f"cannot write {self.path.name}: {self.sink.error.strerror or self.sink.error}")

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.sink is not None:
            self.sink.close()
        self._check()

    def abort(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except Exception:  # noqa: BLE001 - the folder is deleted anyway
                pass
            self.f = None
            if self.sink is not None:
                self.sink.close()


class PngWriter(Writer):
    """expr_XX/masks/<frame:06d>.png: 8-bit greyscale, 0 background, 255 object."""

    def open(self) -> None:
        self.dirs = [self.root / expr_dir_name(e) / "masks" for e in range(len(self.meta.expressions))]
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        import cv2

        for d, m in zip(self.dirs, masks):
            _write_image(d / f"{frame.index:06d}.png", lambda p, m=m: cv2.imwrite(str(p), m * np.uint8(255)),
                         self.meta.live)  # fmt: skip


class PaletteWriter(Writer):
    """palette/<frame:06d>.png: one indexed PNG per frame, pixel = expression number + 1 (0 background),
    DAVIS palette; where masks overlap, the later expression wins."""

    def open(self) -> None:
        self.dir = self.root / "palette"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.palette = davis_palette()

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        from PIL import Image

        img = Image.fromarray(label_image(masks), mode="P")
        img.putpalette(self.palette)
        _write_image(self.dir / f"{frame.index:06d}.png", lambda p: img.save(p, optimize=False), self.meta.live)


def _last_or_empty(last: np.ndarray | None, expressions: int, frame: Frame) -> np.ndarray:
    """The masks a video shows for a frame the model skipped: the last ones, or none yet."""
    return last if last is not None else np.zeros((expressions, *frame.rgb.shape[:2]), np.uint8)


class MaskVideoWriter(Writer):
    """expr_XX/mask.mp4: the mask as a black/white H.264 video (lossless with `lossless=True`)."""

    def __init__(self, root: Path, info: VideoInfo, meta: SegmentMeta, lossless: bool = False) -> None:
        super().__init__(root, info, meta)
        self.lossless = lossless
        self.encoders: list[FFmpegWriter] = []
        self.last: np.ndarray | None = None

    def open(self) -> None:
        info = self.info
        for e in range(len(self.meta.expressions)):
            d = self.root / expr_dir_name(e)
            d.mkdir(parents=True, exist_ok=True)
            args = self.meta.h264_args(info, self.lossless) + source_look_args(info, colors=False)
            self.encoders.append(FFmpegWriter(d / "mask.mp4", info.width, info.height, self.meta.output_fps(info),
                                              "gray", args, own_session=self.meta.live))  # fmt: skip

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        self.last = masks
        self._encode(frame, masks)

    def skip(self, frame: Frame) -> None:
        self._encode(frame, _last_or_empty(self.last, len(self.encoders), frame))

    def _encode(self, frame: Frame, masks: np.ndarray) -> None:
        for w, m in zip(self.encoders, masks):
            w.write(m * np.uint8(255), frame.timestamp_s)

    def close(self) -> None:
        for w in self.encoders:
            w.close()

    def abort(self) -> None:
        for w in self.encoders:
            w.abort()


class OverlayWriter(Writer):
    """overlay.mp4: source frames with all masks drawn on them, at the source timing, with its audio.

    The encoder starts with the first frame: the audio is cut from that frame's presentation time
    (with --start, or a variable frame rate, the frame index does not say when that is)."""

    encoder: FFmpegWriter | None = None
    last: np.ndarray | None = None

    def _start(self, first: Frame) -> None:
        info, meta = self.info, self.meta
        extra, maps, audio = [], ["-map", "0:v:0"], []
        if info.has_audio and not info.is_folder:
            extra = ["-ss", f"{first.timestamp_s:.6f}"] if first.timestamp_s > 0 else []
            if meta.end is not None:
                extra += ["-t", f"{(meta.end - meta.start) / info.fps:.6f}"]
            extra += ["-i", info.path]
            maps += ["-map", "1:a:0?"]
            # the audio runs to its own end, as in the source (-shortest would cut the last frames)
            audio = ["-c:a", "copy" if (info.audio_codec or "") in _MP4_AUDIO else "aac"]
        args = meta.h264_args(info) + source_look_args(info) + audio
        self.encoder = FFmpegWriter(self.root / "overlay.mp4", info.width, info.height, meta.output_fps(info),
                                    "rgb24", args, extra, maps, own_session=meta.live)  # fmt: skip

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        self.last = masks
        self._encode(frame, masks)

    def skip(self, frame: Frame) -> None:
        self._encode(frame, _last_or_empty(self.last, len(self.meta.expressions), frame))

    def _encode(self, frame: Frame, masks: np.ndarray) -> None:
        if self.encoder is None:
            self._start(frame)
        self.encoder.write(draw_overlay(frame.rgb, masks, self.meta.expressions), frame.timestamp_s)

    def close(self) -> None:
        if self.encoder is not None:
            self.encoder.close()

    def abort(self) -> None:
        if self.encoder is not None:
            self.encoder.abort()


class SummaryWriter(Writer):
    """summary.json: frames, timing, measured fps and per-expression mask area for every frame.
    Written by `finish(timings)`, after the other writers have closed."""

    def __init__(self, root: Path, info: VideoInfo, meta: SegmentMeta) -> None:
        super().__init__(root, info, meta)
        self.path = self.root / "summary.json"
        self.frame_indices: list[int] = []
        self.areas: list[list[int]] = [[] for _ in meta.expressions]
        self.warnings: list[str] = []  # what was asked or expected but not done (frames missing, ...)

    def write(self, frame: Frame, probs: np.ndarray, masks: np.ndarray) -> None:
        self.frame_indices.append(frame.index)
        for e, area in enumerate(masks.reshape(masks.shape[0], -1).sum(axis=1, dtype=np.int64)):
            self.areas[e].append(int(area))

    def summary(self, timings: dict | None = None) -> dict:
        info, meta = self.info, self.meta
        n, pixels = len(self.frame_indices), info.width * info.height
        timings = dict(timings or {})
        startup = timings.pop("startup", None)  # process start -> first mask, by phase
        total = timings.get("total_s") or 0.0
        return {
            "source": meta.source,
            "width": info.width, "height": info.height, "rotation": info.rotation,
            "source_fps": info.fps, "output_fps": meta.output_fps(info),
            "frames": n, "start": meta.start, "end": meta.end, "stride": meta.stride,
            "threshold": meta.threshold, "interval": meta.interval, "input_size": meta.input_size,
            "checkpoint": meta.checkpoint,
            "fps_measured": (n / total) if total > 0 else None,
            "time_s": timings,
            **({"startup": startup} if startup is not None else {}),
            "frame_indices": self.frame_indices,
            "warnings": self.warnings,
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

    def finish(self, timings: dict | None = None, extra: dict | None = None) -> dict:
        """Writes summary.json (renamed into place complete, so a reader never sees half of it)."""
        data = {**self.summary(timings), **(extra or {})}
        tmp = self.path.with_name(".summary.json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.path)
        return data
