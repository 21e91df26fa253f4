"""lbdt_cli.video.writers and lbdt_cli.utils.atomic: every format, atomic folders, no leftovers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from lbdt_cli.errors import LbdtError, OutputError
from lbdt_cli.utils.atomic import atomic_dir, atomic_path, check_writable_output
from lbdt_cli.video.reader import iter_frames, probe
from lbdt_cli.video.outputs import FORMATS, VideoOutputs, parse_formats
from lbdt_cli.video.writers import SegmentMeta
from video_clips import H, W


def _probs(frame_index, h=H, w=W):
    """Expression 0: left half; expression 1: a square that moves with the frame index."""
    p = np.zeros((2, h, w), np.float32)
    p[0, :, : w // 2] = 0.9
    x = 4 + 2 * frame_index
    p[1, 10:20, x : x + 10] = 0.7
    return p


def test_atomic_helpers(tmp_path):
    with atomic_path(tmp_path / "a.txt") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.tmp-")
        tmp.write_text("done")
    assert (tmp_path / "a.txt").read_text() == "done"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("half")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("1")
    with atomic_dir(tmp_path / "d") as tmp:  # replaced as a whole, not merged
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["y"]
    with pytest.raises(OutputError, match="exists already"):
        check_writable_output(tmp_path / "d", overwrite=False)
    check_writable_output(tmp_path / "d", overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot create output folder"):
        check_writable_output(tmp_path / "file" / "sub" / "out", overwrite=False)


def test_parse_formats():
    assert parse_formats("h5, png") == ["h5", "png"]
    assert parse_formats("all") == list(FORMATS)
    with pytest.raises(LbdtError, match="unknown --format gif"):
        parse_formats("h5,gif")


def test_every_format(clips, tmp_path):
    src = clips["audio"]
    info = probe(src)
    meta = SegmentMeta(str(src), ["the left half", "a/moving: square?"], threshold=0.5, interval=3,
                       checkpoint="ck.pt", start=1, end=9, stride=2)
    frames = list(iter_frames(src, 1, 9, 2))
    out_dir = tmp_path / "clip"
    with VideoOutputs(out_dir, info, meta, FORMATS, save_probs=True, palette=True, lossless=True) as out:
        for f in frames:
            out.write(f, _probs(f.index))
        summary = out.finish({"decode_s": 0.1, "model_s": 1.0, "encode_s": 0.2, "total_s": 1.5})
    idx = [f.index for f in frames]
    assert idx == [1, 3, 5, 7]
    names = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")}
    assert {"manifest.json", "summary.json", "masks.h5", "overlay.mp4", "expr_00/mask.mp4",
            "expr_01/masks/000007.png", "palette/000001.png"} <= names
    assert not any(n.startswith(".") or "/." in n for n in names)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["expressions"] == {"expr_00": "the left half", "expr_01": "a/moving: square?"}

    with h5py.File(out_dir / "masks.h5") as h5:
        masks = h5["masks"][:]
        assert masks.shape == (2, 4, H, W) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
        assert h5["probs"].dtype == np.float16
        assert h5["frame_indices"][:].tolist() == idx
        np.testing.assert_allclose(h5["timestamps"][:], np.array(idx) / 10)
        assert [e.decode() for e in h5["expressions"][:]] == meta.expressions
        assert h5.attrs["fps"] == pytest.approx(5.0) and h5.attrs["threshold"] == 0.5
        assert h5.attrs["interval"] == 3 and h5.attrs["checkpoint"] == "ck.pt"
        assert h5["masks"].chunks == (1, 1, H, W) and h5["masks"].compression == "gzip"
    expect = np.stack([(_probs(i) > 0.5) for i in idx], axis=1).astype(np.uint8)
    assert np.array_equal(masks, expect)

    png = np.array(Image.open(out_dir / "expr_01" / "masks" / "000005.png"))
    assert png.dtype == np.uint8 and np.array_equal(png, expect[1, 2] * 255)
    pal = Image.open(out_dir / "palette" / "000005.png")
    assert pal.mode == "P"
    label = np.array(pal)
    assert set(np.unique(label)) == {0, 1, 2}
    assert np.array_equal(label == 2, expect[1, 2].astype(bool))

    mv = probe(out_dir / "expr_01" / "mask.mp4")
    assert (mv.width, mv.height, mv.fps) == (W, H, 5.0)
    decoded = np.stack([f.rgb[..., 0] for f in iter_frames(out_dir / "expr_01" / "mask.mp4")])
    assert np.array_equal(decoded, expect[1] * 255)  # --lossless

    ov = probe(out_dir / "overlay.mp4")
    assert (ov.width, ov.height) == (W, H) and ov.fps == pytest.approx(5.0) and ov.has_audio
    assert len(list(iter_frames(out_dir / "overlay.mp4"))) == 4

    s = json.loads((out_dir / "summary.json").read_text())
    assert s == summary
    assert s["frames"] == 4 and s["frame_indices"] == idx and s["fps_measured"] == pytest.approx(4 / 1.5)
    assert s["time_s"]["model_s"] == 1.0
    assert s["expressions"][0]["mask_area"] == [H * (W // 2)] * 4
    assert s["expressions"][1]["mask_area"] == [100] * 4


def test_odd_size_videos(clips, tmp_path):
    src = clips["odd"]
    info = probe(src)
    meta = SegmentMeta(str(src), ["x"])
    with VideoOutputs(tmp_path / "odd", info, meta, ["mask-video", "overlay"]) as out:
        for f in iter_frames(src):
            out.write(f, np.ones((1, 47, 65), np.float32))
        out.finish()
    for name in ("overlay.mp4", "expr_00/mask.mp4"):
        i = probe(tmp_path / "odd" / name)
        assert (i.width, i.height) == (65, 47)


def test_error_or_interrupt_leaves_nothing(clips, tmp_path):
    src = clips["mp4"]
    info = probe(src)
    meta = SegmentMeta(str(src), ["a", "b"])
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with VideoOutputs(tmp_path / "clip", info, meta, FORMATS, palette=True) as out:
                for f in iter_frames(src):
                    out.write(f, _probs(f.index))
                    if f.index == 3:
                        raise exc
    assert list(tmp_path.iterdir()) == []
    # an existing output is not replaced without overwrite, and is intact afterwards
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="exists already"):
        VideoOutputs(tmp_path / "clip", info, meta, ["h5"]).__enter__()
    assert (tmp_path / "clip" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]


def test_encoder_timeline_stays_increasing():
    from lbdt_cli.video.ffmpeg import Timeline

    tl = Timeline(25.0)
    assert [tl.us(t) for t in (0.0, 0.04, 0.2)] == [0, 40_000, 200_000]  # the source's own spacing
    assert tl.us(None) == 240_000  # no time: one nominal frame on
    # a live source that reconnects starts again near 0: one frame on, then its own spacing again
    assert [tl.us(t) for t in (0.0, 0.1, 0.13)] == [280_000, 380_000, 410_000]
    assert tl.us(0.41) == 690_000  # not squeezed onto the previous frame
    assert tl.us(float("nan")) == 730_000
