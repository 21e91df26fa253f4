"""Moving Shapes Sentences: generator determinism, referents, motion-needed share, masks, writer, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lbdt_cli.data.shapes_generator import (
    COLOURS, MOTIONS, SHAPES, VOCABULARY, ShapesDataset, _shape_mask, _templates, generate_clip, read_shapes,
    render_frame, resolve, split_seeds, write_shapes,
)
from lbdt_cli.model.text import tokenize


def test_same_seed_same_bytes_and_different_seeds_differ():
    a, b = generate_clip(11, size=64, num_frames=8), generate_clip(11, size=64, num_frames=8)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert all(x.masks.tobytes() == y.masks.tobytes() for x, y in zip(a.objects, b.objects))
    assert a.expressions == b.expressions
    assert generate_clip(12, size=64, num_frames=8).frames.tobytes() != a.frames.tobytes()
    # render=False draws the same frames on demand
    lazy = generate_clip(11, size=64, num_frames=8, render=False)
    frame, masks = render_frame(lazy, 5)
    assert np.array_equal(frame, a.frames[5])
    assert np.array_equal(masks, np.stack([o.masks[5] for o in a.objects]))


def test_clip_contents_and_unique_referents():
    seen_motion_needed = seen_colour_twin = 0
    for seed in range(60):
        clip = generate_clip(seed, render=False)
        assert 2 <= len(clip.objects) <= 4
        for ob in clip.objects:
            assert ob.colour in COLOURS and ob.shape in SHAPES and ob.motion in MOTIONS
            assert 8 <= ob.size <= 16
            assert ob.motion == "still" or 1.5 <= ob.speed <= 4.0
            for t in (0, clip.num_frames - 1):  # straight-line motion: the ends bound the path
                cx, cy = ob.centre(t)
                assert ob.size <= cx <= 127 - ob.size and ob.size <= cy <= 127 - ob.size
        assert clip.expressions
        for e in clip.expressions:
            words = tokenize(e.text).real_tokens
            assert set(words) <= set(VOCABULARY), e.text
            # re-derive the predicate from the template table and check it names exactly this object
            preds = [p for text, kind, p in _templates(clip.objects[e.object]) if text == e.text and kind == e.kind]
            assert preds and resolve(clip.objects, preds[0]) == [e.object], e.text
            appearance = {k: v for k, v in preds[0].items() if k in ("colour", "shape")}
            assert e.needs_motion == (len(resolve(clip.objects, appearance)) > 1)
            seen_motion_needed += e.needs_motion
        obs = clip.objects
        seen_colour_twin += any(a.shape == b.shape and a.motion == b.motion and a.colour != b.colour
                                for i, a in enumerate(obs) for b in obs[i + 1:])
    assert seen_motion_needed >= 40  # a good share of expressions cannot be resolved by appearance
    assert seen_colour_twin >= 5


def test_masks_are_visible_pixels():
    clip = generate_clip(3, size=64, num_frames=6, min_visible=0.0)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    order = clip.draw_order
    for t in range(6):
        covered = np.zeros((64, 64), bool)
        union = np.zeros((64, 64), bool)
        for i in reversed(order):
            ob = clip.objects[i]
            full = _shape_mask(ob.shape, *ob.centre(t), ob.size, yy, xx)
            assert np.array_equal(ob.masks[t], full & ~covered)
            assert np.all(clip.frames[t][ob.masks[t]] == COLOURS[ob.colour])
            covered |= full
            union |= ob.masks[t]
        assert sum(int(o.masks[t].sum()) for o in clip.objects) == int(union.sum())  # disjoint


def test_splits_are_disjoint_and_dataset_items():
    assert not set(split_seeds("train", 50)) & set(split_seeds("val", 50))
    with pytest.raises(ValueError):
        split_seeds("bogus", 1)
    ds = ShapesDataset("train", num_clips=2, size=64, num_frames=8, interval=3)
    assert len(ds) == sum(8 * len(c.expressions) for c in ds.clips)
    item = ds[len(ds) - 1]
    clip = ds.clips[item["clip"]]
    full = generate_clip(clip.seed, size=64, num_frames=8)
    t = item["t"]
    assert np.array_equal(item["frame"], full.frames[t])
    assert np.array_equal(item["prev_frame"], full.frames[max(t - 3, 0)])
    expr = [e for e in clip.expressions if e.text == item["text"]][0]
    assert np.array_equal(item["mask"], full.objects[expr.object].masks[t])


def test_write_shapes_layout_roundtrip_and_atomicity(tmp_path, monkeypatch):
    out = tmp_path / "clips"
    index = write_shapes(out, 2, seed=5, size=64, frames=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips"]
    for cid, entry in index["clips"].items():
        assert (out / f"{cid}.mp4").is_file()
        assert sorted(os.listdir(out / cid / "masks")) == [f"{t:05d}.png" for t in range(6)]
        assert {"text", "object", "kind", "needs_motion"} <= set(entry["expressions"][0])
    assert json.loads((out / "expressions.json").read_text()) == index
    back = read_shapes(out)
    for clip in back:  # lossless codec: decoded frames are exact
        ref = generate_clip(clip.seed, size=64, num_frames=6)
        assert np.array_equal(clip.frames, ref.frames)
        assert all(np.array_equal(a.masks, b.masks) for a, b in zip(clip.objects, ref.objects))
    # existing output is kept without overwrite
    from lbdt_cli.errors import OutputError

    with pytest.raises(OutputError):
        write_shapes(out, 1, seed=9, size=64, frames=6)
    # a failure half-way leaves neither a partial folder nor a temporary one
    import lbdt_cli.data.shapes_generator as shapes

    def boom(*a, **k):
        raise RuntimeError("encoder died")

    monkeypatch.setattr(shapes, "encode_video", boom)
    with pytest.raises(RuntimeError):
        write_shapes(tmp_path / "other", 1, seed=9, size=64, frames=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips"]


def test_read_shapes_closes_every_mask_file(tmp_path, monkeypatch):
    from PIL import Image

    out = tmp_path / "clips"
    write_shapes(out, 1, seed=5, size=32, frames=3)
    opened = []
    real_open = Image.open

    def tracking_open(*a, **k):
        im = real_open(*a, **k)
        opened.append(im)
        return im

    monkeypatch.setattr(Image, "open", tracking_open)
    closed = []  # with-blocks and close() both count as closing (which one PIL's `with` uses varies)
    for cls in Image.Image.__subclasses__() + [Image.Image]:
        for name in ("close", "__exit__"):
            if name in cls.__dict__:
                real = cls.__dict__[name]
                monkeypatch.setattr(cls, name, lambda self, *a, _real=real: (closed.append(self), _real(self, *a))[1])
    assert len(read_shapes(out)) == 1
    assert len(opened) == 3 and all(any(im is c for c in closed) for im in opened)


def test_make_shapes_cli(tmp_path, run_cli):
    from typer.testing import CliRunner

    from lbdt_cli.cli import app

    runner = CliRunner()
    out = tmp_path / "demo"
    res = runner.invoke(app, ["make-shapes", str(out), "--clips", "1", "--size", "64", "--frames", "4"])
    assert res.exit_code == 0, res.output
    index = json.loads((out / "expressions.json").read_text())
    (cid, entry), = index["clips"].items()
    assert f"{cid}.mp4" in res.output and entry["expressions"][0]["text"] in res.output
    res = runner.invoke(app, ["make-shapes", str(out), "--clips", "1"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["make-shapes", str(tmp_path / "x"), "--clips", "0"])
    assert res.exit_code != 0 and not (tmp_path / "x").exists()
    res = run_cli("make-shapes", tmp_path / "x", "--clips", "0")  # a bad flag: exit 2, one line
    assert res.code == 2 and res.stderr.strip() == "error: --clips must be at least 1"


def test_dataset_model_ready_tensors():
    ds = ShapesDataset("val", num_clips=1, size=64, num_frames=4, interval=2, input_size=32)
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["frame_diff"].shape == (3, 32, 32)
    assert item["target"].shape == (1, 32, 32) and set(item["target"].unique().tolist()) <= {0.0, 1.0}
    assert float(item["frame_diff"].abs().sum()) == 0.0  # frame 0 is its own previous frame
