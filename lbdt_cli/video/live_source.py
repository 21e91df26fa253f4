"""Live sources: network streams, standard input and capture devices, read as frames arrive.

    source = LiveSource("rtsp://camera/stream", reconnect_s=30)
    info = source.open()                    # waits for the stream's size and rate
    for frame in source.frames():           # LiveFrame: index, timestamp_s, rgb, arrival
        ...
    source.ended                            # "end_of_stream", "disconnected", "source_error", ...

One ffmpeg process (`FFmpegLiveReader`) decodes the source into raw rgb24 frames on a pipe and
reports the size, rate and each frame's presentation time in its log. `arrival` is when the last
byte of the decoded frame reached this process (`time.perf_counter`).

A network source that stops is opened again for up to `reconnect_s` seconds (waits 0.5 s, 1 s,
2 s, ... capped at 5 s); frames keep counting up across reconnects and keep the first size.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from lbdt_cli.errors import InputError
from lbdt_cli.video.ffmpeg import FFmpegLiveReader
from lbdt_cli.video.info import DEFAULT_FOLDER_FPS, Frame, VideoInfo

__all__ = ["LIVE_SCHEMES", "RECONNECTED", "LiveFrame", "LiveSource", "is_live_source", "live_output_name"]

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "rtp", "tcp", "http", "https")


def is_live_source(arg: str) -> bool:
    """`-` (standard input), a URL of a streaming protocol ffmpeg reads, or a V4L2 device."""
    if arg == "-":
        return True
    if arg.startswith("/dev/video"):
        return True
    scheme = urlsplit(arg).scheme.lower()
    return scheme in LIVE_SCHEMES and "://" in arg


def live_output_name(arg: str) -> str:
    """Output folder name for a live source: `stdin`, `video0`, or the URL's last path part
    (its host when the path is empty), reduced to safe characters."""
    if arg == "-":
        return "stdin"
    if arg.startswith("/dev/"):
        name = Path(arg).name
    else:
        parts = urlsplit(arg)
        name = Path(parts.path).stem or parts.hostname or parts.scheme
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "live"
    return name


@dataclass(frozen=True)
class LiveFrame(Frame):
    arrival: float = 0.0  # time.perf_counter() when the decoded frame reached this process


class LiveSource:
    """A stream of unknown length read as it arrives (see the module doc)."""

    def __init__(self, url: str, *, reconnect_s: float = 0.0, stdin_fd: int | None = None,
                 open_timeout_s: float = 60.0, on_event: Callable[[str], None] | None = None) -> None:  # fmt: skip
        if reconnect_s < 0:
            raise InputError(f"--reconnect must be >= 0 seconds, got {reconnect_s}")
        self.url = url
        self.kind = "stdin" if url == "-" else "device" if url.startswith("/dev/") else "network"
        self.reconnect_s = float(reconnect_s) if self.kind == "network" else 0.0
        self.stdin_fd = stdin_fd
        self.open_timeout_s = open_timeout_s
        self.on_event = on_event or (lambda _m: None)
        self.info: VideoInfo | None = None
        self.ended: str | None = None  # why the frames stopped
        self.ended_detail = ""
        self.reconnects = 0
        self.frames_read = 0
        self._conn: FFmpegLiveReader | None = None
        self._stop_reason: str | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ process

    def _input_args(self) -> list[str]:
        if self.kind == "device":
            return ["-f", "v4l2"]
        if self.kind == "network":
            # Start decoding after ~1 s of probing instead of the default 5 s (a live stream
            # arrives in real time, so probing is waiting).
            return ["-probesize", "500000", "-analyzeduration", "1000000"]
        return []

    def _connect(self) -> tuple[FFmpegLiveReader | None, str]:
        """Start ffmpeg and wait for the output size; (reader, "") or (None, why not)."""
        stdin = subprocess.DEVNULL
        if self.kind == "stdin":
            stdin = self.stdin_fd if self.stdin_fd is not None else 0
        size = (self.info.width, self.info.height) if self.info is not None else None  # kept across reconnects
        conn = FFmpegLiveReader("pipe:0" if self.kind == "stdin" else self.url, self._input_args(), stdin, size)
        with self._lock:
            self._conn = conn
        conn.ready.wait(self.open_timeout_s)
        if conn.size is None:
            timed_out = conn.proc.poll() is None
            conn.close()
            return None, f"no video frame after {self.open_timeout_s:.0f} s" if timed_out else conn.error_text()
        return conn, ""

    def _connect_with_retries(self, first: bool) -> FFmpegLiveReader | None:
        deadline = time.monotonic() + self.reconnect_s
        wait = 0.5
        while True:
            if self._stop_reason:
                return None
            conn, why = self._connect()
            if conn is not None:
                return conn
            self.ended_detail = why
            if self._stop_reason or time.monotonic() + wait > deadline:
                if first:
                    raise InputError(f"{self.url}: cannot open live source ({why})")
                return None
            self.on_event(f"cannot connect ({why}); retrying in {wait:g} s")
            self._stopped.wait(wait)
            wait = min(wait * 2, 5.0)

    def open(self) -> VideoInfo:
        """Start reading; returns the stream's size and rate. InputError if it cannot be opened."""
        conn = self._connect_with_retries(first=True)
        if conn is None:
            raise InputError(f"{self.url}: stopped before the source opened")
        w, h = conn.size
        fps = conn.fps if conn.fps and 0 < conn.fps <= 1000 else DEFAULT_FOLDER_FPS
        self.info = VideoInfo(path=self.url, width=w, height=h, fps=fps, num_frames=None, duration=None,
                              rotation=0, has_audio=False, codec="live")  # fmt: skip
        return self.info

    def stop(self, reason: str = "stopped") -> None:
        """End the frames (from a signal handler or another thread): ffmpeg is stopped."""
        self._stop_reason = self._stop_reason or reason
        self._stopped.set()
        with self._lock:
            conn = self._conn
        if conn is not None:
            conn.kill()

    # ------------------------------------------------------------------ frames

    def frames(self) -> Iterator[LiveFrame]:
        """Frames until the source ends (or `stop`); then `ended` says why."""
        if self.info is None:
            self.open()
        info = self.info
        conn = self._conn
        index = 0
        try:
            while conn is not None:
                n = 0  # frames of this connection
                while True:
                    buf = conn.read()
                    if buf is None:
                        break
                    arrival = time.perf_counter()
                    pts = conn.time_of(n)
                    ts = pts if pts is not None else index / info.fps
                    yield LiveFrame(index, ts, _as_rgb(buf, info), arrival)
                    index += 1
                    n += 1
                    self.frames_read = index
                conn.proc.wait()
                code = conn.proc.returncode
                why = conn.error_text() if code else ""
                conn.close()
                if self._stop_reason:
                    self.ended = self._stop_reason
                    return
                if self.reconnect_s <= 0:
                    self.ended, self.ended_detail = ("source_error", why) if code else ("end_of_stream", "")
                    return
                self.on_event(f"source stopped ({why or 'end of stream'}); reconnecting for up to "
                              f"{self.reconnect_s:g} s")  # fmt: skip
                conn = self._connect_with_retries(first=False)
                if conn is not None:
                    self.reconnects += 1
                    self.on_event(f"reconnected after frame {index - 1}")
                    yield _RECONNECTED  # type: ignore[misc]  # tells the consumer to restart the look-back
            self.ended = self._stop_reason or "disconnected"
        finally:
            with self._lock:
                c, self._conn = self._conn, None
            if c is not None:
                c.close()


class _Marker:
    def __repr__(self) -> str:
        return "RECONNECTED"


_RECONNECTED = _Marker()
RECONNECTED = _RECONNECTED  # yielded between the frames of two connections


def _as_rgb(buf: bytearray, info: VideoInfo):
    import numpy as np

    return np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
