"""Reading clips: video files through an ffmpeg subprocess (streaming rgb24), or folders of frames.

Both kinds of input go through the same two calls:

    info = probe(path)                          # VideoInfo: size after rotation, fps, ...
    for frame in iter_frames(path, start, end, stride):
        frame.index, frame.timestamp_s, frame.rgb   # rgb: uint8 [H, W, 3]

Only one frame is held at a time, so memory does not grow with the length of the clip. There is
no ffprobe here: `probe` parses the stream banner that `ffmpeg -i` prints on stderr.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from lbdt_cli.errors import InputError, LbdtError

__all__ = [
    "Frame",
    "VideoInfo",
    "IMAGE_SUFFIXES",
    "ffmpeg_exe",
    "list_frame_files",
    "probe",
    "iter_frames",
    "count_frames",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_FPS = 25.0  # frame folders carry no timing; DAVIS / YouTube-VOS style folders


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source clip (0-based), not in the selection
    timestamp_s: float  # nominal time: index / fps
    rgb: np.ndarray  # uint8 [H, W, 3]


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int  # as displayed, i.e. after rotation metadata is applied
    height: int
    fps: float
    num_frames: int | None  # estimate from duration x fps (exact for frame folders); None if unknown
    duration: float | None  # seconds
    rotation: int  # display rotation in degrees, counter-clockwise (0, 90, 180, 270)
    has_audio: bool
    codec: str  # "h264", "vp9", ... or "images" for a frame folder
    is_folder: bool = False
    audio_codec: str | None = None


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: `ffmpeg` on PATH, else the one bundled with imageio-ffmpeg."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        raise InputError(f"ffmpeg not found: install ffmpeg or the imageio-ffmpeg package ({exc})") from None


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


def _read_image(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # also drops alpha, expands grey
    if bgr is None:
        raise InputError(f"{path} is not an image that can be read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _probe_folder(folder: Path, fps: float | None) -> VideoInfo:
    files = list_frame_files(folder)
    if not files:
        raise InputError(f"{folder} has zero frames (no {'/'.join(s[1:] for s in IMAGE_SUFFIXES[:3])}... images)")
    first = _read_image(files[0])
    fps = float(fps or DEFAULT_FOLDER_FPS)
    return VideoInfo(
        path=str(folder), width=first.shape[1], height=first.shape[0], fps=fps, num_frames=len(files),
        duration=len(files) / fps, rotation=0, has_audio=False, codec="images", is_folder=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# video files

_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:(\d+)[^:]*:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_SIZE = re.compile(r"(?:^|[\s,])(\d{1,6})x(\d{1,6})(?=[\s,\[]|$)")
_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_ROTATION = re.compile(r"(?:rotation of|rotate\s*:)\s*(-?\d+(?:\.\d+)?)")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        return
    if not os.access(path, os.R_OK):
        raise InputError(f"{path} is not readable")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)")


def _parse_banner(path: Path, text: str) -> VideoInfo:
    duration = None
    m = _DURATION.search(text)
    if m:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    video = None  # (codec, w, h, fps, rotation)
    has_audio, audio_codec = False, None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        s = _STREAM.match(line)
        if not s:
            continue
        kind, desc = s.group(2), s.group(3)
        if kind == "Audio":
            if not has_audio:
                audio_codec = desc.split(None, 1)[0].rstrip(",") if desc else None
            has_audio = True
            continue
        if kind != "Video" or video is not None or "attached pic" in desc:
            continue
        size = _SIZE.search(desc)
        if not size:
            continue
        fps_values = {unit: float(v) * (1000 if k else 1) for v, k, unit in _FPS.findall(desc)}
        fps = fps_values.get("fps") or fps_values.get("tbr") or 0.0
        rotation = 0.0
        for follow in lines[i + 1 :]:  # stream metadata / side data until the next stream
            if _STREAM.match(follow) or not follow.startswith("    "):
                break
            r = _ROTATION.search(follow)
            if r:
                rotation = float(r.group(1))
        video = (desc.split(None, 1)[0].rstrip(","), int(size.group(1)), int(size.group(2)), fps, rotation)
    if video is None:
        raise InputError(f"{path} has no video stream")
    codec, w, h, fps, rotation = video
    rot = int(round(rotation)) % 360
    if rot in (90, 270):  # ffmpeg autorotates while decoding, so frames come out transposed
        w, h = h, w
    if fps <= 0 or fps > 1000:
        fps = DEFAULT_FOLDER_FPS
    num_frames = int(round(duration * fps)) if duration else None
    return VideoInfo(str(path), w, h, fps, num_frames, duration, rot, has_audio, codec, audio_codec=audio_codec)


def _ffmpeg_error(text: str) -> str:
    """The most telling line of an ffmpeg failure."""
    for key in ("Invalid data found", "End of file", "Permission denied", "moov atom not found"):
        if key in text:
            return key.lower()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("  ")]
    return lines[-1] if lines else "ffmpeg failed"


def probe(path: str | os.PathLike, folder_fps: float | None = None) -> VideoInfo:
    """Size (after rotation), fps, frame-count estimate, audio and codec of a video file or frame folder.

    Raises InputError for a missing, empty or unreadable file, or one without a video stream.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        return _probe_folder(path, folder_fps)
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True, text=True, errors="replace", timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffmpeg took over 60 s to read the header") from None
    text = proc.stderr
    if "Input #0" not in text:
        raise InputError(f"{path} is not a video file ffmpeg can read ({_ffmpeg_error(text)})")
    return _parse_banner(path, text)


def count_frames(path: str | os.PathLike) -> int:
    """Exact number of video frames, by demuxing without decoding (fast, but reads the whole file)."""
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True, errors="replace",
    )  # fmt: skip
    counts = re.findall(r"frame=\s*(\d+)", proc.stderr)
    return int(counts[-1]) if counts else 0


class _FFmpegStream:
    """An ffmpeg process writing raw rgb24 frames to a pipe; stderr drained on a thread."""

    def __init__(self, info: VideoInfo, start: int) -> None:
        import ffmpeg  # ffmpeg-python builds the command line

        # One decoder thread: the model needs the cores, and decoding is never the bottleneck here.
        stream = ffmpeg.input(info.path, threads=1)["v:0"]  # first video stream; autorotate is the default
        if start > 0:  # drop frames before the selection ahead of the rgb conversion
            stream = stream.filter("select", f"gte(n,{start})")
        out = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *out.get_args()]
        self.frame_bytes = info.width * info.height * 3
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=50)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def read(self) -> bytearray | None:
        """One frame's bytes in a fresh (writable) buffer, or None at the end of the stream."""
        assert self.proc.stdout is not None
        buf = bytearray(self.frame_bytes)
        view, got = memoryview(buf), 0
        while got < self.frame_bytes:
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                return None
            got += n
        return buf

    def error_text(self) -> str:
        self.proc.wait()
        self._drain.join(timeout=5)
        return b"".join(self._stderr).decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self.proc.wait()
        self._drain.join(timeout=5)


def _check_range(start: int, end: int | None, stride: int) -> None:
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
    _check_range(start, end, stride)
    info = info or probe(path)
    yielded = 0
    if info.is_folder:
        files = list_frame_files(info.path)
        for index in range(start, len(files) if end is None else min(end, len(files)), stride):
            rgb = _read_image(files[index])
            if rgb.shape[:2] != (info.height, info.width):
                raise InputError(
                    f"{files[index]} is {rgb.shape[1]}x{rgb.shape[0]}, other frames are {info.width}x{info.height}"
                )
            yielded += 1
            yield Frame(index, index / info.fps, rgb)
    else:
        stream = _FFmpegStream(info, start)
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
                    yielded += 1
                    yield Frame(index, index / info.fps, rgb)
                index += 1
            if reached_eof or yielded == 0:
                text = stream.error_text()  # waits for ffmpeg to exit
                if stream.proc.returncode != 0:
                    # A failure part-way must not pass for a short clip.
                    where = f" after frame {index - 1}" if yielded else ""
                    raise InputError(f"{info.path}: cannot decode video{where} ({_ffmpeg_error(text)})")
        finally:
            stream.close()  # kills ffmpeg when the caller stopped early
    if yielded == 0:
        where = "" if start == 0 and end is None else f" in the selected range (start {start}, end {end})"
        raise InputError(f"{info.path} has zero frames{where}")
