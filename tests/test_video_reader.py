"""lbdt_cli.video.reader: probing and streaming frames from video files and frame folders."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lbdt_cli.errors import InputError, LbdtError
from lbdt_cli.video.reader import count_frames, iter_frames, list_frame_files, probe
from video_clips import FPS, H, N, W


@pytest.mark.parametrize("name", ["mp4", "mkv", "webm", "avi", "mov"])
def test_containers_probe_and_decode(clips, name):
    info = probe(clips[name])
    assert (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(FPS)
    assert info.num_frames == N
    assert not info.has_audio and info.rotation == 0
    frames = list(iter_frames(clips[name]))
    assert [f.index for f in frames] == list(range(N))
    assert all(f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert frames[3].timestamp_s == pytest.approx(3 / FPS)
    assert count_frames(clips[name]) == N


def test_lossy_codecs_match_lossless_decode(clips):
    ref = np.stack([f.rgb for f in iter_frames(clips["mkv"])]).astype(np.int16)
    for name in ("mp4", "webm", "avi"):
        got = np.stack([f.rgb for f in iter_frames(clips[name])]).astype(np.int16)
        assert np.abs(got - ref).mean() < 12, name  # same picture, only codec loss


def test_odd_size(clips):
    info = probe(clips["odd"])
    assert (info.width, info.height) == (65, 47)
    frames = list(iter_frames(clips["odd"]))
    assert len(frames) == N and frames[0].rgb.shape == (47, 65, 3)


def test_rotation_metadata_is_applied(clips):
    info = probe(clips["rotated"])
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (H, W)
    frames = list(iter_frames(clips["rotated"]))
    assert frames[0].rgb.shape == (W, H, 3)
    upright = next(iter_frames(clips["mp4"])).rgb.astype(np.int16)
    turned = frames[0].rgb.astype(np.int16)
    # one of the two quarter turns reproduces the upright frame
    assert min(np.abs(np.rot90(turned, k).astype(np.int16) - upright).mean() for k in (1, 3)) < 3


def test_audio_is_reported(clips):
    info = probe(clips["audio"])
    assert info.has_audio and info.audio_codec == "aac"


def test_start_end_stride(clips):
    got = [f.index for f in iter_frames(clips["mp4"], start=2, end=9, stride=3)]
    assert got == [2, 5, 8]
    frames_all = list(iter_frames(clips["mkv"]))
    frames_sel = list(iter_frames(clips["mkv"], start=4, end=6))
    assert [f.index for f in frames_sel] == [4, 5]
    assert np.array_equal(frames_sel[0].rgb, frames_all[4].rgb)


def test_frame_folder_natural_order_and_rgb(clips):
    files = list_frame_files(clips["folder"])
    assert [p.name for p in files[:3]] == ["frame_1.png", "frame_2.png", "frame_3.png"]
    assert files[-1].name == "frame_10.png"
    info = probe(clips["folder"])
    assert info.is_folder and (info.width, info.height, info.num_frames) == (W, H, N)
    frames = list(iter_frames(clips["folder"], stride=2))
    assert [f.index for f in frames] == [0, 2, 4, 6, 8]
    f = frames[1]  # frame_3.png: value 40, left half red = 255 - 40
    assert f.rgb[0, 0].tolist() == [215, 40, 40] and f.rgb[0, -1].tolist() == [40, 40, 40]


def test_early_close_stops_ffmpeg(clips):
    gen = iter_frames(clips["mp4"])
    next(gen)
    t0 = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize(
    "key, message",
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("not_video", "is not a video file"),
        ("audio_only", "has no video stream"),
        ("empty_folder", "has zero frames"),
    ],
)
def test_bad_inputs(clips, tmp_path, key, message):
    path = tmp_path / "nope.mp4" if key == "missing" else clips[key]
    with pytest.raises(InputError, match=message) as err:
        list(iter_frames(path))
    assert "\n" not in str(err.value)


def test_zero_frames_in_selection(clips):
    with pytest.raises(InputError, match="zero frames"):
        list(iter_frames(clips["mp4"], start=50))
    with pytest.raises(LbdtError, match="--end") as info:  # a bad flag, not a bad file
        list(iter_frames(clips["mp4"], start=5, end=5))
    assert info.value.exit_code == 2


def test_segment_and_eval_decode_a_jpeg_to_the_same_pixels(tmp_path):
    import cv2
    from PIL import Image

    from lbdt_cli.data.common import read_rgb_image

    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (5, 5), 2)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "00000.jpg", quality=80)  # 4:2:0, lossy
    (seg_frame,) = iter_frames(folder)
    assert np.array_equal(seg_frame.rgb, read_rgb_image(folder / "00000.jpg"))
    assert np.abs(seg_frame.rgb.astype(int) - rgb).mean() < 8  # it is the picture, decoded
