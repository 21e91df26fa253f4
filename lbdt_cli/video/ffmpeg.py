"""Every ffmpeg process of the package: probing, decoding to raw frames, encoding from raw frames.

    info = probe_file(path)                          # parses the banner of `ffmpeg -i` (no ffprobe)
    reader = FFmpegReader(info, start)               # raw rgb24 frames from a pipe
    writer = FFmpegWriter(path, w, h, fps, "rgb24", h264_args(w, h))   # raw frames into a file
    live = FFmpegLiveReader(url, input_args)         # a live source: size, rate and pts from its log
    frames = decode_video(path); encode_video(frames, path, fps)       # whole clips (small data)

The binary is `ffmpeg` on PATH, else the one the imageio-ffmpeg wheel carries.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from lbdt_cli.errors import InputError, OutputError
from lbdt_cli.video.info import DEFAULT_FOLDER_FPS, VideoInfo

__all__ = [
    "ffmpeg_exe",
    "probe_file",
    "count_file_frames",
    "ffmpeg_error",
    "FFmpegReader",
    "FFmpegWriter",
    "FFmpegLiveReader",
    "h264_args",
    "decode_video",
    "encode_video",
]


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
# probing

_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:(\d+)[^:]*:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_SIZE = re.compile(r"(?:^|[\s,])(\d{1,6})x(\d{1,6})(?=[\s,\[]|$)")
_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_ROTATION = re.compile(r"(?:rotation of|rotate\s*:)\s*(-?\d+(?:\.\d+)?)")


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
        video = (desc.split(None, 1)[0].rstrip(","), int(size.group(1)), int(size.group(2)), fps, rotation,
                 _sar(desc), _color(desc))  # fmt: skip
    if video is None:
        raise InputError(f"{path} has no video stream")
    codec, w, h, fps, rotation, sar, color = video
    rot = int(round(rotation)) % 360
    if rot in (90, 270):  # ffmpeg autorotates while decoding, so frames come out transposed
        w, h = h, w
        sar = sar and (sar[1], sar[0])
    if fps <= 0 or fps > 1000:
        fps = DEFAULT_FOLDER_FPS
    num_frames = int(round(duration * fps)) if duration else None
    return VideoInfo(str(path), w, h, fps, num_frames, duration, rot, has_audio, codec, audio_codec=audio_codec,
                     sar=sar, color=color)  # fmt: skip


_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")
_PIXFMT_PROPS = re.compile(r"^\S+ .*?, ?[a-z0-9_]+\(([^)]*)\)")
_COLOR_NAMES = {"bt709", "bt470bg", "smpte170m", "bt2020nc", "bt2020ncl", "smpte240m", "fcc", "bt601", "gbr"}


def _sar(desc: str) -> tuple[int, int] | None:
    m = _SAR.search(desc)
    if not m or int(m.group(2)) == 0 or int(m.group(1)) in (0, int(m.group(2))):
        return None  # square pixels, or none declared
    return int(m.group(1)), int(m.group(2))


def _color(desc: str) -> dict | None:
    """`yuv420p(tv, bt709/bt709/bt709, progressive)` or `yuv420p(tv, bt709, progressive)` -> names."""
    m = _PIXFMT_PROPS.search(desc)
    if not m:
        return None
    out = {}
    for token in (t.strip() for t in m.group(1).split(",")):
        if token in ("tv", "pc"):
            out["range"] = token
        elif "/" in token:
            for key, value in zip(("space", "primaries", "trc"), token.split("/")):
                if value != "unknown" and value != "reserved":
                    out[key] = value
        elif token in _COLOR_NAMES:
            out.update(space=token, primaries=token, trc=token)
    return out or None


# swscale's names for the RGB -> YUV matrix of a colour space
_MATRIX = {"bt709": "bt709", "bt470bg": "bt601", "smpte170m": "smpte170m", "smpte240m": "smpte240m",
           "fcc": "fcc", "bt2020nc": "bt2020", "bt2020ncl": "bt2020"}


def source_look_args(info: VideoInfo, colors: bool = True) -> list[str]:
    """Output options that keep the source's pixel aspect ratio and declared colours in an H.264
    video encoded from rgb24 frames: setsar, the matching RGB -> YUV matrix and range, and the
    colour tags (a player then shows the frames as the source was shown)."""
    filters, args = [], []
    color = (info.color or {}) if colors else {}  # masks are not colour pictures: only the pixel shape
    matrix = _MATRIX.get(color.get("space", ""))
    if matrix or color.get("range"):
        opts = ([f"out_color_matrix={matrix}"] if matrix else []) + (
            [f"out_range={color['range']}"] if color.get("range") else [])
        filters.append("scale=" + ":".join(opts))
    if info.sar:
        filters.append(f"setsar={info.sar[0]}/{info.sar[1]}")
    if filters:
        args += ["-vf", ",".join(filters)]
    for key, flag in (("space", "-colorspace"), ("primaries", "-color_primaries"), ("trc", "-color_trc"),
                      ("range", "-color_range")):
        if color.get(key) and (key != "space" or matrix):
            args += [flag, color[key]]
    return args


def ffmpeg_error(text: str) -> str:
    """The most telling line of an ffmpeg failure."""
    for key in ("Invalid data found", "End of file", "Permission denied", "moov atom not found"):
        if key in text:
            return key.lower()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("  ")]
    return lines[-1] if lines else "ffmpeg failed"


def probe_file(path: str | os.PathLike) -> VideoInfo:
    """Size (after rotation), fps, frame-count estimate, audio and codec of a video file.
    InputError when ffmpeg cannot read it or it has no video stream."""
    path = Path(path)
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True, text=True, errors="replace", timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffmpeg took over 60 s to read the header") from None
    text = proc.stderr
    if "Input #0" not in text:
        raise InputError(f"{path} is not a video file ffmpeg can read ({ffmpeg_error(text)})")
    return _parse_banner(path, text)


def count_file_frames(path: str | os.PathLike) -> int:
    """Exact number of video frames, by demuxing without decoding (fast, but reads the whole file)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True, errors="replace",
    )  # fmt: skip
    counts = re.findall(r"frame=\s*(\d+)", proc.stderr)
    return int(counts[-1]) if counts else 0


# ---------------------------------------------------------------------------------------------
# decoding and encoding processes


class FFmpegReader:
    """An ffmpeg process decoding the first video stream of `info.path` to raw rgb24 frames on a
    pipe, from frame `start` on (as displayed: rotation applied); stderr drained on a thread."""

    def __init__(self, info: VideoInfo, start: int = 0) -> None:
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
        """Waits for ffmpeg to exit; its last stderr lines."""
        self.proc.wait()
        self._drain.join(timeout=5)
        return b"".join(self._stderr).decode("utf-8", "replace")

    def close(self) -> None:
        """Stops ffmpeg if it is still running (the caller stopped early)."""
        _stop(self.proc, self._drain)


class FFmpegWriter:
    """An ffmpeg process encoding raw frames from a pipe into a video file.

    write() each frame, then close() (OutputError if ffmpeg failed) or abort() (kills it)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, pix_fmt_in: str, codec_args: list[str],
                 extra_inputs: list[str] | None = None, maps: list[str] | None = None,
                 threads: int | None = 1, own_session: bool = False) -> None:  # fmt: skip
        """`own_session`: not in the terminal's process group, so Ctrl-C reaches only us and we
        close the file properly (live runs finalise their outputs on Ctrl-C)."""
        self.path = Path(path)
        self._log = tempfile.TemporaryFile()
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", pix_fmt_in, "-s", f"{width}x{height}", "-r", f"{fps:.6g}", "-i", "pipe:0",
            *(extra_inputs or []), *(maps or []), *codec_args,
            # encoding runs beside the model; leave it the cores (None: ffmpeg's default)
            *(["-threads", str(threads)] if threads else []),
            str(self.path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
                                     start_new_session=own_session)  # fmt: skip

    def write(self, data: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(data).tobytes())
        except (BrokenPipeError, OSError):
            raise OutputError(f"ffmpeg stopped while writing {self.path.name}: {self._error()}") from None

    def _error(self) -> str:
        self.proc.wait()
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        code = self.proc.returncode
        if code is not None and code < 0 and -code == getattr(signal, "SIGXFSZ", 0):
            return "File too large (the file size limit was reached)"
        if lines:
            return lines[-1].strip()
        return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"

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


_LIVE_OUTPUT_STREAM = re.compile(r"^\s*Stream #0:\d+.*: Video: rawvideo.*?, (\d{1,6})x(\d{1,6})\b")
_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(\S+)\s+pts_time:(\S+)")


class FFmpegLiveReader:
    """An ffmpeg process decoding a live source (URL, `pipe:0`, V4L2 device) to raw rgb24 frames.

    There is no separate probe (a pipe or a live stream can be read only once): the log is read
    on a thread, the output banner gives the frame size and rate (`ready` is set then, or when
    ffmpeg exits), and the `showinfo` filter gives each frame's presentation time. ffmpeg runs
    in its own session, so Ctrl-C in the terminal reaches only us.
    """

    def __init__(self, source: str, input_args: list[str], stdin=subprocess.DEVNULL,
                 size: tuple[int, int] | None = None) -> None:  # fmt: skip
        vf = "showinfo" if size is None else f"scale={size[0]}:{size[1]},showinfo"
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-threads", "1", *input_args,
            "-i", source, "-map", "0:v:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-fps_mode", "passthrough", "pipe:1",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)  # fmt: skip
        self.lines: collections.deque[str] = collections.deque(maxlen=40)
        self.pts: collections.deque[float | None] = collections.deque()
        self.size: tuple[int, int] | None = None
        self.fps: float | None = None
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self._log_done = False
        self._thread = threading.Thread(target=self._read_log, daemon=True)
        self._thread.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        input_fps = None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            m = _SHOWINFO.search(line)
            if m:
                try:
                    t = float(m.group(3))
                except ValueError:  # NOPTS
                    t = None
                with self._cond:
                    self.pts.append(t)
                    self._cond.notify_all()
                continue
            if "Parsed_showinfo" in line:
                continue  # side data of a frame
            self.lines.append(line)
            if self.size is None and " Video: " in line:
                fps_values = {u: float(v) * (1000 if k else 1) for v, k, u in _FPS.findall(line)}
                fps = fps_values.get("fps") or fps_values.get("tbr")
                out = _LIVE_OUTPUT_STREAM.match(line)
                if out:
                    self.size = (int(out.group(1)), int(out.group(2)))
                    self.fps = input_fps or fps
                    self.ready.set()
                elif fps:
                    input_fps = input_fps or fps
        with self._cond:
            self._log_done = True
            self._cond.notify_all()
        self.ready.set()

    def read(self) -> bytearray | None:
        """One frame's bytes, or None at the end (or when stopped)."""
        n = self.size[0] * self.size[1] * 3
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            try:
                k = self.proc.stdout.readinto(view[got:])
            except (OSError, ValueError):  # closed by stop()
                return None
            if not k:
                return None
            got += k
        return buf

    def pts_of(self, n: int, timeout: float = 0.5) -> float | None:
        """Presentation time (s) of the n-th frame read (its log line may trail the frame a little)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.pts) <= n and not self._log_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.pts[n] if len(self.pts) > n else None

    def error_text(self) -> str:
        """The last telling log line (after ffmpeg exited)."""
        self._thread.join(timeout=5)
        skip = ("Input #", "Output #", "Stream ", "Metadata", "Duration", "  ", "Press [q]")
        lines = [ln.strip() for ln in self.lines if ln.strip() and not ln.startswith(skip)]
        return lines[-1] if lines else f"ffmpeg exit code {self.proc.returncode}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        _stop(self.proc, self._thread)



def _stop(proc: subprocess.Popen, log_thread: threading.Thread) -> None:
    """Kills a decoding ffmpeg that is still running, closes its pipes, reaps it and waits for the
    thread reading its log (shared by the file and live readers)."""
    if proc.poll() is None:
        proc.kill()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    proc.wait()
    log_thread.join(timeout=5)

def h264_args(width: int, height: int, lossless: bool = False, fragment_frames: int | None = None) -> list[str]:
    """H.264 output options for an mp4 that plays everywhere.

    With `fragment_frames` (live sources) the mp4 is fragmented, with a keyframe and a fragment
    every that many frames, and no encoder delay: players can open it while it grows, and
    whatever was written before the process stopped stays playable."""
    # yuv420p needs even sizes; odd-sized clips keep their exact size with yuv444p instead of padding.
    pix = "yuv420p" if width % 2 == 0 and height % 2 == 0 and not lossless else "yuv444p"
    quality = ["-qp", "0"] if lossless else ["-crf", "18"]
    if fragment_frames:
        layout = ["-tune", "zerolatency", "-g", str(fragment_frames),
                  "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-flush_packets", "1"]  # fmt: skip
    else:
        layout = ["-movflags", "+faststart"]
    return ["-c:v", "libx264", "-preset", "veryfast", *quality, "-pix_fmt", pix, *layout]


# ---------------------------------------------------------------------------------------------
# whole clips in memory (generated data: small)


def decode_video(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video file as uint8 [T, H, W, 3]. InputError if it cannot be decoded."""
    info = probe_file(path)
    reader = FFmpegReader(info)
    try:
        frames = []
        while (data := reader.read()) is not None:
            frames.append(np.frombuffer(data, np.uint8).reshape(info.height, info.width, 3))
        text = reader.error_text()
        if reader.proc.returncode != 0 or not frames:
            raise InputError(f"{path}: cannot decode video ({ffmpeg_error(text)})")
    finally:
        reader.close()
    return np.stack(frames)


_CODECS = {
    "lossless": ["-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast", "-pix_fmt", "rgb24"],  # exact RGB
    "compatible": ["-c:v", "libx264", "-crf", "12", "-preset", "veryfast", "-pix_fmt", "yuv420p"],  # plays anywhere
}


def encode_video(frames: np.ndarray, path: str | os.PathLike, fps: float, codec: str = "lossless") -> None:
    """Write uint8 [T, H, W, 3] frames as an H.264 mp4: `lossless` (an exact RGB round trip through
    any ffmpeg-based reader) or `compatible` (yuv420p, slightly lossy). OutputError if ffmpeg fails."""
    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec!r} (lossless or compatible)")
    h, w = frames.shape[1:3]
    writer = FFmpegWriter(Path(path), w, h, fps, "rgb24", ["-an", *_CODECS[codec], "-r", f"{fps:.6g}", "-f", "mp4"],
                          threads=None)  # fmt: skip
    try:
        writer.write(frames)
    except BaseException:
        writer.abort()
        raise
    writer.close()
