"""Raw frames with their presentation times, as a Matroska stream for an encoding ffmpeg's stdin.

A raw-video pipe has no timestamps (ffmpeg times it by a fixed rate), so a clip with a variable
frame rate would come out evenly spaced. Matroska carries a time for every frame and ffmpeg reads
uncompressed video from it, so each frame goes out in its own cluster at its own time:

    header = stream_header(width, height, "rgb24", fps_hint)    # once
    block = frame_block(data, time_us)                          # every frame, times increasing

Only the few elements ffmpeg needs are written: the EBML header, a Segment of unknown size (a
stream), the track (V_UNCOMPRESSED with the pixel format as a four-character code) and one
Cluster per frame with its Timestamp and a key-frame SimpleBlock. Times are in microseconds
(TimestampScale 1000 ns).
"""

from __future__ import annotations

__all__ = ["PIXEL_FORMATS", "stream_header", "frame_block"]

# ffmpeg pixel format -> the four-character code its raw-video tag table maps back to it
PIXEL_FORMATS = {"rgb24": b"RGB\x18", "gray": b"Y800"}

_UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def _size(n: int) -> bytes:
    return (0x01 << 56 | n).to_bytes(8, "big")  # always the 8-byte form: simple, and any size fits


def _element(element_id: int, payload: bytes) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + _size(len(payload)) + payload


def _uint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def stream_header(width: int, height: int, pix_fmt: str, fps_hint: float | None = None) -> bytes:
    """EBML header, the start of an endless Segment, its Info and the one video track.
    `fps_hint` (the source's nominal rate) becomes the track's default frame duration, which
    players show as the rate; the frames' own times still rule."""
    ebml = _element(0x1A45DFA3, b"".join([
        _uint(0x4286, 1), _uint(0x42F7, 1), _uint(0x42F2, 4), _uint(0x42F3, 8),
        _element(0x4282, b"matroska"), _uint(0x4287, 4), _uint(0x4285, 2),
    ]))  # fmt: skip
    info = _element(0x1549A966, _uint(0x2AD7B1, 1000) + _element(0x4D80, b"lbdt") + _element(0x5741, b"lbdt"))
    video = _element(0xE0, _uint(0xB0, width) + _uint(0xBA, height) + _element(0x2EB524, PIXEL_FORMATS[pix_fmt]))
    duration = _uint(0x23E383, round(1e9 / fps_hint)) if fps_hint and fps_hint > 0 else b""
    track = _element(0xAE, b"".join([
        _uint(0xD7, 1), _uint(0x73C5, 1), _uint(0x83, 1), _uint(0x9C, 0), duration,
        _element(0x86, b"V_UNCOMPRESSED"), video,
    ]))  # fmt: skip
    return ebml + b"\x18\x53\x80\x67" + _UNKNOWN_SIZE + info + _element(0x1654AE6B, track)


def frame_block(data: bytes | memoryview, time_us: int) -> list[bytes | memoryview]:
    """One frame as a Cluster at `time_us`; the pieces in order (the frame itself is not copied)."""
    block_head = b"\x81\x00\x00\x80"  # track 1, time relative to the cluster 0, key frame
    timestamp = _uint(0xE7, time_us)
    block_size = len(block_head) + len(data)
    cluster_size = len(timestamp) + 1 + 8 + block_size
    return [b"\x1f\x43\xb6\x75" + _size(cluster_size) + timestamp + b"\xa3" + _size(block_size) + block_head, data]
