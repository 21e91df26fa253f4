"""MeViS (reader, metrics equal to the benchmark's evaluation on hand-computed cases) and the server
submissions (MeViS valid, Ref-YouTube-VOS valid): zip layouts written by `lbdt eval --submission`."""

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from lbdt_cli.data import open_dataset
from lbdt_cli.errors import InputError, LbdtError
from rvos_layouts import MEVIS_OBJECTS, H, W, box, frame_rgb, make_mevis, make_ytvos


def test_mevis_reader_unites_objects_and_handles_absent_ones(tmp_path):
    root = make_mevis(tmp_path)
    ds = open_dataset("mevis", root)  # valid_u by default
    assert ds.split == "valid_u" and len(ds) == 9  # 3 expressions x 3 frames, every frame
    gt = {(s.expression_id, s.frame): s.load_gt()[0] for s in ds.samples}
    ten, eleven = MEVIS_OBJECTS["10"], MEVIS_OBJECTS["11"]
    assert (gt["0", "00001"] == ten[1].astype(bool)).all()
    assert not gt["0", "00002"].any() and gt["0", "00002"].shape == (H, W)  # object absent from the frame
    assert (gt["1", "00000"] == (ten[0] | eleven[0]).astype(bool)).all()  # several objects united
    assert (gt["1", "00002"] == eleven[2].astype(bool)).all()
    assert not gt["2", "00000"].any() and gt["2", "00000"].shape == (H, W)  # no target: empty at frame size
    s = ds.samples[1]
    assert (s.prev_frame, s.frame, s.expression) == ("00000", "00001", "the box moving left")
    assert {ds.sample_group(s) for s in ds.samples} == {"one object", "several objects", "no target"}
    assert (ds.load_frames("m1", ["00002"])["00002"][..., 0].astype(int) - frame_rgb(2)[..., 0]).max() <= 2
    rep = ds.check()
    assert (rep.videos, rep.expressions, rep.annotated_frames, rep.samples) == (1, 3, 3, 9)


def test_mevis_malformed_files_are_one_line_errors(tmp_path):
    root = make_mevis(tmp_path)
    (root / "valid_u" / "meta_expressions.json").write_text('{"videos": {"m1": {"frames": []}}}')
    with pytest.raises(InputError, match="meta_expressions.json"):
        open_dataset("mevis", root)
    with pytest.raises(LbdtError, match="split must be one of"):
        open_dataset("mevis", root, "test")
    root = make_mevis(tmp_path / "b")
    (root / "valid_u" / "mask_dict.json").write_text(json.dumps({"10": [None]}))
    ds = open_dataset("mevis", root)
    with pytest.raises(InputError, match="annotation 10 has 1 frames"):
        ds.samples[0].load_gt()


def _run(run_cli, args):
    r = run_cli(*args)
    return r.code, r.stdout, r.stderr


def _png(path, mask, value=255):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * value, mode="L").save(path)


def test_mevis_j_f_match_hand_computed_values(tmp_path, run_cli):
    """J and F per expression over its frames, then the mean over expressions (the benchmark's rule).

    An h x w box away from the border has 2(h + w) boundary pixels; a far extra box adds its own, which
    match nothing (tolerance ceil(0.008 * 40) = 1 px): with pred = GT + extra, recall 1, precision
    b_gt / (b_gt + b_extra)."""
    root = make_mevis(tmp_path)
    pred = tmp_path / "pred" / "m1"
    ten, eleven = MEVIS_OBJECTS["10"], MEVIS_OBJECTS["11"]
    extra = box(18, 22, 26, 30)  # 4x4, 16 boundary pixels
    empty = np.zeros((H, W), np.uint8)
    # expression 0 (object 10): exact; GT + extra (J 64/80, F 2*(32/48)/(1+32/48)); absent and empty (1, 1)
    _png(pred / "0" / "00000.png", ten[0])
    _png(pred / "0" / "00001.png", ten[1] | extra, value=1)  # any non-zero grey is foreground
    _png(pred / "0" / "00002.png", empty)
    # expression 1 (objects 10 + 11): empty on a present GT (0, 0); exact; GT (11 only) + a far 8x8 box
    _png(pred / "1" / "00000.png", empty)
    _png(pred / "1" / "00001.png", ten[1] | eleven[1])
    _png(pred / "1" / "00002.png", eleven[2] | box(2, 10, 4, 12))
    # expression 2 (no target): empty (1, 1) twice, then a box on an empty GT (0, 0)
    _png(pred / "2" / "00000.png", empty)
    _png(pred / "2" / "00001.png", empty)
    _png(pred / "2" / "00002.png", extra)

    def f(b_gt, b_extra):
        p = b_gt / (b_gt + b_extra)
        return 2 * p / (1 + p)

    j_expr = [(1 + 64 / 80 + 1) / 3, (0 + 1 + 160 / 224) / 3, (1 + 1 + 0) / 3]
    f_expr = [(1 + f(32, 16) + 1) / 3, (0 + 1 + f(56, 32)) / 3, (1 + 1 + 0) / 3]
    code, out, err = _run(run_cli, ["eval", "--dataset", "mevis", "--split", "valid_u", "--root", str(root),
                              "--predictions", str(tmp_path / "pred"), "--json"])
    assert code == 0, err
    m = json.loads(out)
    assert m["J"] == pytest.approx(np.mean(j_expr), abs=1e-12)
    assert m["F"] == pytest.approx(np.mean(f_expr), abs=1e-12)
    assert m["J&F"] == pytest.approx((np.mean(j_expr) + np.mean(f_expr)) / 2, abs=1e-12)
    assert m["num_samples"] == 9 and set(m["by_group"]) == {"one object", "several objects", "no target"}
    # binary PNGs and no scores.json: the tied confidences make mAP depend on the sample order
    assert "warning:" in err and "COCO mAP" in err and "scores.json" in err
    assert m["by_group"]["no target"]["J"] == pytest.approx(2 / 3)


def test_mevis_valid_submission_zip(tmp_path, tiny_checkpoint, run_cli):
    root = make_mevis(tmp_path, "valid", with_masks=False)
    base = ["eval", "--dataset", "mevis", "--split", "valid", "--root", str(root), "--checkpoint", str(tiny_checkpoint)]
    code, _, err = _run(run_cli, base + ["--device", "cpu"])
    assert code == 3 and "no public masks" in err and "--submission" in err
    out = tmp_path / "sub" / "mevis_valid.zip"
    code, _, err = _run(run_cli, base + ["--device", "cpu", "--submission", str(out)])
    assert code == 0, err
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(f"m1/{e}/{f}.png" for e in "012" for f in ("00000", "00001", "00002"))
        with zf.open(names[0]) as fh, Image.open(fh) as im:
            assert im.mode == "L" and im.size == (W, H)
            assert set(np.unique(np.array(im))) <= {0, 255}
    assert not list(out.parent.glob(".*"))  # no temporary left beside it
    code, _, err = _run(run_cli, base + ["--submission", str(out)])
    assert code == 5 and "exists" in err
    code, _, err = _run(run_cli, ["eval", "--dataset", "a2d", "--root", str(tmp_path), "--checkpoint", str(tiny_checkpoint),
                            "--submission", str(tmp_path / "a.zip")])
    assert code == 2 and "no evaluation server" in err


def test_ytvos_valid_submission_zip_skips_test_videos_and_keeps_frame_sizes(tmp_path, tiny_checkpoint, run_cli):
    root = make_ytvos(tmp_path)
    meta = {"videos": {}}
    for vid, (h, w) in {"va": (20, 28), "vt": (H, W)}.items():  # "vt" is a test video listed in valid's file
        frames = ["00000", "00005"]
        d = root / "valid" / "JPEGImages" / vid
        d.mkdir(parents=True)
        for f in frames:
            Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(d / f"{f}.jpg")
        meta["videos"][vid] = {"frames": frames, "expressions": {"0": {"exp": "a cat"}, "1": {"exp": "a dog"}}}
    for split, videos in (("valid", meta["videos"]), ("test", {"vt": meta["videos"]["vt"]})):
        p = root / "meta_expressions" / split / "meta_expressions.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"videos": videos}))
    out = tmp_path / "ytvos_valid.zip"
    code, out_text, err = _run(run_cli, ["eval", "--dataset", "ytvos", "--split", "valid", "--root", str(root),
                                   "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--submission", str(out),
                                   "--json"])
    assert code == 0, err
    assert json.loads(out_text)["masks"] == 4
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == [f"Annotations/va/{e}/{f}.png" for e in "01" for f in ("00000", "00005")]
        with zf.open(names[-1]) as fh, Image.open(fh) as im:
            assert im.mode == "L" and im.size == (28, 20)  # the frame's own size


def test_davis_unsupervised_merge_rule():
    from lbdt_cli.davis_unsupervised import merge_frame

    p1 = np.array([[0.7, 0.4, 0.5, 0.9]], np.float32)
    p2 = np.array([[0.7, 0.45, 0.2, 0.95]], np.float32)
    # a tie goes to the first label, below 0.5 is background, exactly 0.5 counts, the highest wins
    assert merge_frame([(1, p1), (2, p2)]).tolist() == [[1, 0, 1, 2]]


def test_davis_unsupervised_protocol_hand_computed_and_model_round_trip(tmp_path, tiny_checkpoint, run_cli):
    from rvos_layouts import davis_labels, make_davis, palette_png

    root = make_davis(tmp_path / "davis")
    pred = tmp_path / "pred"
    for k in range(3):
        lab = davis_labels(k)
        swapped = np.where(lab == 1, 2, 0).astype(np.uint8)  # the object under another label
        swapped[20:23, 0:3] = 1  # plus a stray label elsewhere: matching must pick label 2
        palette_png(pred / "annot1" / "bear" / f"{k:05d}.png", swapped)
        palette_png(pred / "annot2" / "dogs-scale" / f"{k:05d}.png", np.zeros_like(lab))  # nothing found
    code, out, err = _run(run_cli, ["eval", "--dataset", "davis", "--root", str(root), "--predictions", str(pred),
                                    "--protocol", "unsupervised", "--json"])
    assert code == 0, err
    m = json.loads(out)
    # annot1: J = F = 1 (void excluded); annot2: the object is missed on every frame, J = F = 0
    assert m["by_group"]["annot1"]["J"] == 1.0 and m["by_group"]["annot1"]["F"] == 1.0
    assert m["by_group"]["annot2"]["J"] == 0.0 and m["by_group"]["annot2"]["F"] == 0.0
    assert (m["J"], m["F"], m["J&F"], m["num_objects"]) == (0.5, 0.5, 0.5, 2)
    # a model run writes the merged indexed masks; scoring them again gives the same numbers
    saved = tmp_path / "saved"
    code, out, err = _run(run_cli, ["eval", "--dataset", "davis", "--root", str(root), "--checkpoint",
                                    str(tiny_checkpoint), "--device", "cpu", "--protocol", "unsupervised",
                                    "--save-masks", str(saved), "--json"])
    assert code == 0, err
    first = json.loads(out)
    assert sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*.png")) == sorted(
        [f"annot1/bear/{k:05d}.png" for k in range(3)] + [f"annot2/dogs-scale/{k:05d}.png" for k in range(3)])
    with Image.open(saved / "annot1" / "bear" / "00000.png") as im:
        assert im.mode == "P"
    code, out, err = _run(run_cli, ["eval", "--dataset", "davis", "--root", str(root), "--predictions", str(saved),
                                    "--protocol", "unsupervised", "--json"])
    assert code == 0, err
    again = json.loads(out)
    assert (again["J"], again["F"]) == (first["J"], first["F"])
    code, _, err = _run(run_cli, ["eval", "--dataset", "a2d", "--root", str(root), "--predictions", str(pred),
                                  "--protocol", "unsupervised"])
    assert code == 2 and "davis" in err


def test_report_is_self_contained_with_charts_groups_and_examples(tmp_path, run_cli):
    root = make_mevis(tmp_path)
    pred = tmp_path / "pred" / "m1"
    for e, masks in (("0", MEVIS_OBJECTS["10"]), ("1", MEVIS_OBJECTS["11"]), ("2", [None] * 3)):
        for k, m in enumerate(masks):
            _png(pred / e / f"0000{k}.png", np.zeros((H, W), np.uint8) if m is None else m)
    out = tmp_path / "out"
    code, _, err = _run(run_cli, ["eval", "--dataset", "mevis", "--root", str(root), "--predictions",
                                  str(tmp_path / "pred"), "--output", str(out), "--report"])
    assert code == 0, err
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert page.count("<svg") == 2 and "P@K" in page and "IoU histogram" in page
    assert "By subset" in page and "no target" in page and "several objects" in page
    assert page.count("data:image/png;base64,") == 9  # 6 worst + the 3 best not already shown
    assert "two boxes moving right" in page  # captions carry the expression
    code, _, err = _run(run_cli, ["eval", "--dataset", "mevis", "--root", str(root), "--predictions",
                                  str(tmp_path / "pred"), "--report"])
    assert code == 2 and "--output" in err


def test_report_groups_of_a2d_and_jhmdb(tmp_path):
    from rvos_layouts import make_a2d, make_jhmdb

    a2d = open_dataset("a2d", make_a2d(tmp_path / "a2d"), "test")
    assert {tuple(sorted(a2d.report_groups(s).items())) for s in a2d.samples} == {
        (("action", "climbing"), ("actor", "adult")), (("action", "jumping"), ("actor", "ball"))}  # labels 11 and 35
    jhmdb = open_dataset("jhmdb", make_jhmdb(tmp_path / "jhmdb"))
    assert {jhmdb.report_groups(s)["action"] for s in jhmdb.samples} == {"brush_hair", "wave"}
