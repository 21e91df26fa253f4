"""Reading clips: video files through an ffmpeg subprocess (streaming rgb24), or folders of frames.

Both kinds of input go through the same two calls:

    info = probe(path)                          # VideoInfo: size after rotation, fps, ...
    for frame in iter_frames(path, start, end, stride):
        frame.index, frame.timestamp_s, frame.rgb   # rgb: uint8 [H, W, 3]; time as the decoder gives it

Only one frame is held at a time, so memory does not grow with the length of the clip. The ffmpeg
processes themselves are in `lbdt_cli.video.ffmpeg`.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterator

import numpy as np

from lbdt_cli.errors import InputError, LbdtError
from lbdt_cli.video.ffmpeg import FFmpegReader, count_file_frames, ffmpeg_error, probe_file
from lbdt_cli.video.info import DEFAULT_FOLDER_FPS, Frame, VideoInfo

__all__ = [
    "Frame",
    "VideoInfo",
    "IMAGE_SUFFIXES",
    "list_frame_files",
    "read_image",
    "probe",
    "check_range",
    "iter_frames",
    "count_frames",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------------------------
# frame folders


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in natural order (frame2 before frame10); hidden files skipped."""
    folder = Path(folder)
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def read_image(path: Path) -> np.ndarray:
    """One frame image as uint8 RGB [H, W, 3] (alpha dropped, grey expanded, EXIF orientation
    applied), with OpenCV. The only image decoder for frames: segment's frame folders and eval's
    dataset frames both come through here."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # also drops alpha, expands grey
    if bgr is None:
        raise InputError(f"{path} is not an image that can be read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _probe_folder(folder: Path, fps: float | None) -> VideoInfo:
    files = list_frame_files(folder)
    if not files:
        raise InputError(f"{folder} has zero frames (no {'/'.join(s[1:] for s in IMAGE_SUFFIXES[:3])}... images)")
    first = read_image(files[0])
    fps = float(fps or DEFAULT_FOLDER_FPS)
    return VideoInfo(
        path=str(folder), width=first.shape[1], height=first.shape[0], fps=fps, num_frames=len(files),
        duration=len(files) / fps, rotation=0, has_audio=False, codec="images", is_folder=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# either kind


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        return
    if not os.access(path, os.R_OK):
        raise InputError(f"{path} is not readable")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):  # a FIFO or /dev/zero has no size to speak of: say what it is
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
        raise InputError(f"{path} is {kind}, not a video file or a folder of frames")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)")


def probe(path: str | os.PathLike, folder_fps: float | None = None) -> VideoInfo:
    """Size (after rotation), fps, frame-count estimate, audio and codec of a video file or frame folder.

    Raises InputError for a missing, empty or unreadable file, or one without a video stream.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        return _probe_folder(path, folder_fps)
    return probe_file(path)


def count_frames(path: str | os.PathLike) -> int:
    """Exact number of frames of a video file (demuxed, not decoded) or frame folder."""
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    return count_file_frames(path)


def check_range(start: int, end: int | None, stride: int) -> None:
    """LbdtError (a bad argument) for a negative start, an end not after start, or a stride below 1."""
    if start < 0:
        raise LbdtError(f"--start must be >= 0, got {start}")
    if end is not None and end <= start:
        raise LbdtError(f"--end ({end}) must be greater than --start ({start})")
    if stride < 1:
        raise LbdtError(f"--stride must be >= 1, got {stride}")


def iter_frames(
    path: str | os.PathLike,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    info: VideoInfo | None = None,
) -> Iterator[Frame]:
    """Frames `start, start+stride, ...` (< `end`) of a video file or frame folder, one at a time.

    Rotation metadata is honoured (frames come out as displayed, matching `probe`'s width/height).
    Closing the generator early (break, exception, Ctrl-C) stops the ffmpeg process.
    Raises InputError if the selection holds no frame or the file cannot be decoded.
    """
    check_range(start, end, stride)
    info = info or probe(path)
    yielded = 0
    if info.is_folder:
        files = list_frame_files(info.path)
        for index in range(start, len(files) if end is None else min(end, len(files)), stride):
            rgb = read_image(files[index])
            if rgb.shape[:2] != (info.height, info.width):
                raise InputError(
                    f"{files[index]} is {rgb.shape[1]}x{rgb.shape[0]}, other frames are {info.width}x{info.height}"
                )
            yielded += 1
            yield Frame(index, index / info.fps, rgb)
    else:
        stream = FFmpegReader(info, start)
        try:
            index = start
            reached_eof = False
            while end is None or index < end:
                data = stream.read()
                if data is None:
                    reached_eof = True
                    break
                if (index - start) % stride == 0:
                    rgb = np.frombuffer(data, np.uint8).reshape(info.height, info.width, 3)
                    t = stream.time_of(index - start)
                    yielded += 1
                    yield Frame(index, index / info.fps if t is None else t, rgb)
                index += 1
            if reached_eof or yielded == 0:
                text = stream.error_text()  # waits for ffmpeg to exit
                if stream.proc.returncode != 0:
                    # A failure part-way must not pass for a short clip.
                    where = f" after frame {index - 1}" if yielded else ""
                    raise InputError(f"{info.path}: cannot decode video{where} ({ffmpeg_error(text)})")
        finally:
            stream.close()  # kills ffmpeg when the caller stopped early
    if yielded == 0:
        where = "" if start == 0 and end is None else f" in the selected range (start {start}, end {end})"
        raise InputError(f"{info.path} has zero frames{where}")
