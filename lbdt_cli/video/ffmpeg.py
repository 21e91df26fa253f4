"""Every ffmpeg process of the package: probing, decoding to raw frames, encoding from raw frames.

    info = probe_file(path)                          # parses the banner of `ffmpeg -i` (no ffprobe)
    reader = FFmpegReader(info, start)               # raw rgb24 frames from a pipe
    writer = FFmpegWriter(path, w, h, fps, "rgb24", h264_args(w, h))   # raw frames, each at its time
    live = FFmpegLiveReader(url, input_args)         # a live source: size, rate and pts from its log
    frames = decode_video(path); encode_video(frames, path, fps)       # whole clips (small data)

The binary is `ffmpeg` on PATH, else the one the imageio-ffmpeg wheel carries.
"""

from __future__ import annotations

import collections
import contextlib
import math
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
from lbdt_cli.video import matroska
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


# names the setparams filter takes (as ffmpeg's banner prints them)
_PRIMARIES = {"bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film", "bt2020", "smpte428", "smpte431",
              "smpte432", "jedec-p22", "ebu3213"}
_TRANSFERS = {"bt709", "bt470m", "bt470bg", "gamma22", "gamma28", "smpte170m", "smpte240m", "linear", "log100",
              "log316", "iec61966-2-4", "bt1361e", "iec61966-2-1", "bt2020-10", "bt2020-12", "smpte2084",
              "smpte428", "arib-std-b67"}


def source_look_args(info: VideoInfo, colors: bool = True) -> list[str]:
    """Output options that keep the source's pixel aspect ratio and declared colours in an H.264
    video encoded from rgb24 frames: setsar, the matching RGB -> YUV matrix and range, and the
    colour tags (matrix, range, primaries, transfer) set on the frames with setparams, which the
    encoder writes into the stream (its -color_primaries / -color_trc options are not honoured
    here). A player then shows the frames as the source was shown. The pixels are not colour
    managed: the decoded RGB is still in the source's primaries and transfer, so the tags hold."""
    filters = []
    color = (info.color or {}) if colors else {}  # masks are not colour pictures: only the pixel shape
    matrix = _MATRIX.get(color.get("space", ""))
    if matrix or color.get("range"):
        opts = ([f"out_color_matrix={matrix}"] if matrix else []) + (
            [f"out_range={color['range']}"] if color.get("range") else [])
        filters.append("scale=" + ":".join(opts))
    tags = ([f"colorspace={color['space']}"] if matrix else []) + (
        [f"range={color['range']}"] if color.get("range") else []) + (
        [f"color_primaries={color['primaries']}"] if color.get("primaries") in _PRIMARIES else []) + (
        [f"color_trc={color['trc']}"] if color.get("trc") in _TRANSFERS else [])  # fmt: skip
    if tags:
        filters.append("setparams=" + ":".join(tags))
    if info.sar:
        filters.append(f"setsar={info.sar[0]}/{info.sar[1]}")
    return ["-vf", ",".join(filters)] if filters else []


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


_LIVE_OUTPUT_STREAM = re.compile(r"^\s*Stream #0:\d+.*: Video: rawvideo.*?, (\d{1,6})x(\d{1,6})\b")
_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(\S+)\s+pts_time:(\S+)")
_SHOWINFO_TIME_BASE = re.compile(r"config in time_base: (\d+)/(\d+)")
_LEVEL_TAG = re.compile(r"\[(?:error|fatal|panic)\] ")


class FrameLog:
    """An ffmpeg log read on a thread: each frame's presentation time from the `showinfo` filter
    (exact: its integer pts times the filter's time base), and the other lines, the last 40 kept
    for messages. `on_line` sees every other line as it comes (the live reader reads its banner);
    `on_end` is called when the log ends (ffmpeg exited)."""

    def __init__(self, stderr, on_line=None, on_end=None) -> None:
        self.times: collections.deque[float | None] = collections.deque()
        self.lines: collections.deque[str] = collections.deque(maxlen=40)
        self._on_line = on_line
        self._on_end = on_end
        self._time_base: tuple[int, int] | None = None
        self._cond = threading.Condition()
        self._done = False
        self.thread = threading.Thread(target=self._read, args=(stderr,), daemon=True)
        self.thread.start()

    def _read(self, stderr) -> None:
        try:
            self._read_lines(stderr)
        except (OSError, ValueError):  # the pipe was closed under us (a stop that could not wait)
            pass
        with self._cond:
            self._done = True
            self._cond.notify_all()
        if self._on_end is not None:
            self._on_end()

    def _read_lines(self, stderr) -> None:
        for raw in stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if "Parsed_showinfo" in line:
                m = _SHOWINFO.search(line)
                if m:
                    with self._cond:
                        self.times.append(self._seconds(m.group(2), m.group(3)))
                        self._cond.notify_all()
                elif (tb := _SHOWINFO_TIME_BASE.search(line)) and int(tb.group(2)):
                    self._time_base = (int(tb.group(1)), int(tb.group(2)))
                continue  # the frame's side data and colours
            self.lines.append(line)
            if self._on_line is not None:
                self._on_line(line)

    def _seconds(self, pts: str, pts_time: str) -> float | None:
        try:
            if self._time_base is not None:
                return int(pts) * self._time_base[0] / self._time_base[1]
            return float(pts_time)  # rounded to 6 digits by ffmpeg: the time base line came first so far
        except ValueError:  # NOPTS
            return None

    def time_of(self, n: int, timeout: float | None = None) -> float | None:
        """Presentation time (s) of the n-th frame out (its log line may trail the frame a
        little); None when it has none or did not come within `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self.times) <= n and not self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self.times[n] if len(self.times) > n else None


def _read_frame(pipe, frame_bytes: int) -> bytearray | None:
    """One frame's bytes from a decoder's stdout in a fresh (writable) buffer; None at the end."""
    buf = bytearray(frame_bytes)
    view, got = memoryview(buf), 0
    while got < frame_bytes:
        try:
            n = pipe.readinto(view[got:])
        except (OSError, ValueError):  # closed by a stop from another thread
            return None
        if not n:
            return None
        got += n
    return buf


class FFmpegReader:
    """An ffmpeg process decoding the first video stream of `info.path` to raw rgb24 frames on a
    pipe, from frame `start` on (as displayed: rotation applied), with each frame's presentation
    time (`time_of`, seconds from the start of the file) read from its log on a thread."""

    def __init__(self, info: VideoInfo, start: int = 0) -> None:
        import ffmpeg  # ffmpeg-python builds the command line

        # One decoder thread: the model needs the cores, and decoding is never the bottleneck here.
        stream = ffmpeg.input(info.path, threads=1)["v:0"]  # first video stream; autorotate is the default
        if start > 0:  # drop frames before the selection ahead of the rgb conversion
            stream = stream.filter("select", f"gte(n,{start})")
        stream = stream.filter("showinfo", checksum=0)  # the frames' real times (variable frame rates)
        out = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        # info level for showinfo; each line tagged with its level, so errors can be told apart
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", *out.get_args()]
        self.frame_bytes = info.width * info.height * 3
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log = FrameLog(self.proc.stderr)

    def read(self) -> bytearray | None:
        """One frame's bytes in a fresh (writable) buffer, or None at the end of the stream."""
        return _read_frame(self.proc.stdout, self.frame_bytes)

    def time_of(self, n: int, timeout: float = 10.0) -> float | None:
        """Presentation time (s) of the n-th frame read; None if the file gives it none."""
        return self.log.time_of(n, timeout)

    def error_text(self) -> str:
        """Waits for ffmpeg to exit; its error lines."""
        self.proc.wait()
        self.log.thread.join(timeout=5)
        errors = [_LEVEL_TAG.sub("", ln) for ln in self.log.lines if _LEVEL_TAG.search(ln)]
        return "\n".join(errors)

    def close(self) -> None:
        """Stops ffmpeg if it is still running (the caller stopped early)."""
        _stop(self.proc, self.log.thread)


class Timeline:
    """Frame times in microseconds for an encoder, strictly increasing: a frame without a time, or
    one that goes back (a live source that reconnected and starts again from 0), follows the last
    by one nominal frame, and the frames after it keep their own spacing."""

    def __init__(self, fps: float | None) -> None:
        self.step_us = max(1, round(1e6 / fps)) if fps and fps > 0 else 40_000
        self.last_us: int | None = None
        self.shift_us = 0

    def us(self, time_s: float | None) -> int:
        if time_s is None or not math.isfinite(time_s):
            t = (self.last_us + self.step_us) if self.last_us is not None else 0
        else:
            t = round(time_s * 1e6) + self.shift_us
        if self.last_us is not None and t <= self.last_us:
            self.shift_us += self.last_us + self.step_us - t
            t = self.last_us + self.step_us
        self.last_us = t
        return t


class FFmpegWriter:
    """An ffmpeg process encoding raw frames from a pipe into a video file, each frame at its own
    presentation time (the frames go in as a Matroska stream, which carries them: see matroska.py),
    so a source with a variable frame rate keeps its timing.

    write() each frame with its time, then close() (OutputError if ffmpeg failed) or abort() (kills it)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, pix_fmt_in: str, codec_args: list[str],
                 extra_inputs: list[str] | None = None, maps: list[str] | None = None,
                 threads: int | None = 1, own_session: bool = False) -> None:  # fmt: skip
        """`fps`: the nominal rate (a hint for players, and the step for frames without a time).
        `own_session`: not in the terminal's process group, so Ctrl-C reaches only us and we
        close the file properly (live runs finalise their outputs on Ctrl-C)."""
        self.path = Path(path)
        self._log = tempfile.TemporaryFile()
        self.timeline = Timeline(fps)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "matroska", "-i", "pipe:0",
            # every frame as it comes, timed in the input's microseconds (the default time base, one
            # over the nominal rate, would move the frames of a variable-rate clip onto its grid)
            *(extra_inputs or []), *(maps or []), *codec_args, "-fps_mode", "passthrough", "-enc_time_base", "demux",
            # encoding runs beside the model; leave it the cores (None: ffmpeg's default)
            *(["-threads", str(threads)] if threads else []),
            str(self.path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
                                     start_new_session=own_session)  # fmt: skip
        self._frame_shape = (height, width, 3) if pix_fmt_in == "rgb24" else (height, width)
        self._send([matroska.stream_header(width, height, pix_fmt_in, fps)])

    def _send(self, pieces) -> None:
        try:
            for piece in pieces:
                self.proc.stdin.write(piece)
        except (BrokenPipeError, OSError):
            raise OutputError(f"ffmpeg stopped while writing {self.path.name}: {self._error()}") from None

    def write(self, data: np.ndarray, time_s: float | None) -> None:
        """One frame (uint8 [H, W, 3] for rgb24, [H, W] for gray) shown at `time_s` seconds."""
        if data.shape != self._frame_shape:
            raise ValueError(f"frame of shape {data.shape}, the video's is {self._frame_shape}")
        self._send(matroska.frame_block(np.ascontiguousarray(data).data.cast("B"), self.timeline.us(time_s)))

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


class FFmpegLiveReader:
    """An ffmpeg process decoding a live source (URL, `pipe:0`, V4L2 device) to raw rgb24 frames.

    There is no separate probe (a pipe or a live stream can be read only once): the log is read
    on a thread, the output banner gives the frame size and rate (`ready` is set then, or when
    ffmpeg exits), and the `showinfo` filter gives each frame's presentation time. ffmpeg runs
    in its own session, so Ctrl-C in the terminal reaches only us.
    """

    def __init__(self, source: str, input_args: list[str], stdin=subprocess.DEVNULL,
                 size: tuple[int, int] | None = None) -> None:  # fmt: skip
        vf = "showinfo=checksum=0" if size is None else f"scale={size[0]}:{size[1]},showinfo=checksum=0"
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-threads", "1", *input_args,
            "-i", source, "-map", "0:v:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-fps_mode", "passthrough", "pipe:1",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)  # fmt: skip
        self.size: tuple[int, int] | None = None
        self.fps: float | None = None
        self.ready = threading.Event()
        self._input_fps: float | None = None
        self.log = FrameLog(self.proc.stderr, on_line=self._banner_line, on_end=self.ready.set)

    def _banner_line(self, line: str) -> None:
        if self.size is None and " Video: " in line:
            fps_values = {u: float(v) * (1000 if k else 1) for v, k, u in _FPS.findall(line)}
            fps = fps_values.get("fps") or fps_values.get("tbr")
            out = _LIVE_OUTPUT_STREAM.match(line)
            if out:
                self.size = (int(out.group(1)), int(out.group(2)))
                self.fps = self._input_fps or fps
                self.ready.set()
            elif fps:
                self._input_fps = self._input_fps or fps

    def read(self) -> bytearray | None:
        """One frame's bytes, or None at the end (or when stopped)."""
        return _read_frame(self.proc.stdout, self.size[0] * self.size[1] * 3)

    def time_of(self, n: int, timeout: float = 0.5) -> float | None:
        """Presentation time (s) of the n-th frame read (its log line may trail the frame a little)."""
        return self.log.time_of(n, timeout)

    def error_text(self) -> str:
        """The last telling log line (after ffmpeg exited)."""
        self.log.thread.join(timeout=5)
        skip = ("Input #", "Output #", "Stream ", "Metadata", "Duration", "  ", "Press [q]")
        lines = [ln.strip() for ln in self.log.lines if ln.strip() and not ln.startswith(skip)]
        return lines[-1] if lines else f"ffmpeg exit code {self.proc.returncode}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        _stop(self.proc, self.log.thread)


def _stop(proc: subprocess.Popen, log_thread: threading.Thread) -> None:
    """Kills a decoding ffmpeg that is still running, reaps it, waits for the thread reading its
    log (it ends at the log's end) and closes the pipes (shared by the file and live readers)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    log_thread.join(timeout=5)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


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
    writer = FFmpegWriter(Path(path), w, h, fps, "rgb24", ["-an", *_CODECS[codec], "-f", "mp4"], threads=None)
    try:
        for i, frame in enumerate(frames):
            writer.write(frame, i / fps)
    except BaseException:
        writer.abort()
        raise
    writer.close()
