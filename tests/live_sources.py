"""Live sources made on this machine for the tests: loopback HTTP only, no network.

- `ffmpeg_http_server(clip)`: ffmpeg reads a clip at its real-time rate (`-re`) and serves it as
  a Matroska stream to one client on http://127.0.0.1:PORT (`-listen 1`).
- `TrickleServer(data, seconds)`: a Python http.server thread that sends `data` in small pieces
  spread over `seconds`, optionally hanging up after a fraction of it (a source that stops
  mid-way); it records when the last byte went out, so a test can tell what arrived while the
  source was still sending.
- `live_clip(path)`: a lossless Matroska clip (FFV1) of moving shapes, so masks decoded from the
  stream and from the file are the same frames bit for bit.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from video_clips import ffmpeg

__all__ = ["live_clip", "ffmpeg_http_server", "TrickleServer", "free_port", "wait_listening"]


def live_clip(path: Path, frames: int = 30, fps: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """A clip of a square moving right over a still circle, FFV1 in Matroska (lossless)."""
    if path.exists():
        return path
    w, h = size
    raw = np.zeros((frames, h, w, 3), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for t in range(frames):
        raw[t] = (30, 30, 60)
        raw[t][(yy - h // 2) ** 2 + (xx - w // 4) ** 2 < (h // 5) ** 2] = (220, 200, 30)
        x0 = (t * 2) % (w - 12)
        raw[t, h // 4 : h // 4 + 12, x0 : x0 + 12] = (200, 30, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0", "-c:v", "ffv1", "-g", "1", str(path)],
        input=raw.tobytes(), check=True,
    )  # fmt: skip
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on 127.0.0.1:port, without connecting (a `-listen 1` ffmpeg
    serves exactly one client, so a test connection would use it up)."""
    want = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp",):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    parts = line.split()
                    if parts[1] == want and parts[3] == "0A":  # 0A = LISTEN
                        return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


def ffmpeg_http_server(clip: Path) -> tuple[str, subprocess.Popen]:
    """Serve `clip` at real-time rate to one client; returns (url, process)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/{clip.stem}.mkv"
    proc = subprocess.Popen(
        [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(clip), "-c", "copy",
         "-flush_packets", "1", "-f", "matroska", "-live", "1", "-cluster_time_limit", "100", "-listen", "1", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_listening(port)
    return url, proc


class TrickleServer:
    """Serves `data` to each client in pieces spread over `seconds` (see the module doc)."""

    def __init__(self, data: bytes, seconds: float, stop_after: float = 1.0, pieces: int = 60,
                 name: str = "stream.mkv", hang_up_clients: int = 1, max_clients: int = 2) -> None:  # fmt: skip
        # the first `hang_up_clients` clients get `stop_after` of the data, later ones all of it;
        # clients after `max_clients` get 503 (the source is gone)
        self.data, self.seconds, self.stop_after, self.pieces = data, seconds, stop_after, pieces
        self.hang_up_clients, self.max_clients = hang_up_clients, max_clients
        self.clients = 0
        self.first_byte_at: float | None = None
        self.last_byte_at: float | None = None  # time.monotonic() when the source stopped sending
        self.finished = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # no length: the stream ends when the connection closes

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.clients += 1
                if outer.clients > outer.max_clients:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/x-matroska")
                self.end_headers()
                outer._send(self.wfile, outer.clients <= outer.hang_up_clients)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _send(self, out, hang_up: bool) -> None:
        limit = int(len(self.data) * self.stop_after) if hang_up else len(self.data)
        step = max(1, -(-len(self.data) // self.pieces))
        t0 = time.monotonic()
        self.first_byte_at = t0
        try:
            for k, lo in enumerate(range(0, limit, step)):
                delay = t0 + k * self.seconds / self.pieces - time.monotonic()  # real time
                if delay > 0:
                    time.sleep(delay)
                out.write(self.data[lo : min(lo + step, limit)])
                out.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.last_byte_at = time.monotonic()
            self.finished.set()

    def __enter__(self) -> "TrickleServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
