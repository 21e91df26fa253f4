"""What a clip is (`VideoInfo`, the answer of `probe`) and one decoded frame (`Frame`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Frame", "VideoInfo", "DEFAULT_FOLDER_FPS"]

DEFAULT_FOLDER_FPS = 25.0  # frame folders carry no timing; DAVIS / YouTube-VOS style folders


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source clip (0-based), not in the selection
    timestamp_s: float  # presentation time from the decoder (frame folders, or a frame without one: index / fps)
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
    sar: tuple[int, int] | None = None  # sample (pixel) aspect ratio when not square, as displayed
    color: dict | None = None  # {"range", "space", "primaries", "trc"} that the source declares (ffmpeg names)
