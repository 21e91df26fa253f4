"""Tiny generated clips for the video / segment tests (made once per session with the ffmpeg binary)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

W, H, N, FPS = 64, 48, 10, 10

# name -> (file name, size, extra ffmpeg output args)
CLIPS = {
    "mp4": ("h264.mp4", (W, H), ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
    "mkv": ("ffv1.mkv", (W, H), ["-c:v", "ffv1"]),
    "webm": ("vp9.webm", (W, H), ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"]),
    "avi": ("mjpeg.avi", (W, H), ["-c:v", "mjpeg", "-q:v", "3"]),
    "mov": ("h264.mov", (W, H), ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
    "odd": ("odd.mkv", (65, 47), ["-c:v", "ffv1"]),
}

_cache: dict[str, dict] = {}


def ffmpeg() -> str:
    from lbdt_cli.video.ffmpeg import ffmpeg_exe

    return ffmpeg_exe()


def _run(args: list[str]) -> None:
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def make_clips(root: Path) -> dict:
    """Every test clip under `root`; memoised so several test modules share one set."""
    if "clips" in _cache:
        return _cache["clips"]
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, (fname, (w, h), args) in CLIPS.items():
        src = ["-f", "lavfi", "-i", f"testsrc=size={w}x{h}:rate={FPS}", "-frames:v", str(N)]
        _run([*src, *args, str(root / fname)])
        paths[name] = root / fname
    # display-matrix rotation by 90 degrees: decoded frames are 48 wide, 64 high
    _run(["-display_rotation", "90", "-i", str(paths["mp4"]), "-c", "copy", str(root / "rotated.mp4")])
    paths["rotated"] = root / "rotated.mp4"
    # a clip with an audio track
    _run(["-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate={FPS}", "-f", "lavfi", "-i", "sine=frequency=440",
          "-frames:v", str(N), "-t", str(N / FPS), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
          "-c:a", "aac", "-shortest", str(root / "audio.mp4")])  # fmt: skip
    paths["audio"] = root / "audio.mp4"
    # audio only
    _run(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "0.5", "-c:a", "aac", str(root / "sound.m4a")])
    paths["audio_only"] = root / "sound.m4a"
    # a frame folder with natural-order names (frame_2 before frame_10)
    folder = root / "frames"
    folder.mkdir(exist_ok=True)
    import cv2

    for i in range(N):
        img = np.full((H, W, 3), 20 * i, np.uint8)
        img[:, : W // 2, 2] = 255 - 20 * i  # BGR: red half changes, so channel order is checked too
        cv2.imwrite(str(folder / f"frame_{i + 1}.png"), img)
    paths["folder"] = folder
    (root / "empty.mp4").write_bytes(b"")
    paths["empty"] = root / "empty.mp4"
    (root / "notes.mp4").write_text("this is not a video\n")
    paths["not_video"] = root / "notes.mp4"
    (root / "no_frames").mkdir(exist_ok=True)
    paths["empty_folder"] = root / "no_frames"
    _cache["clips"] = paths
    return paths
