"""`lbdt eval`: scoring a predictions folder, bad inputs, and end-to-end runs with the tiny model."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lbdt_cli.cli import main
from lbdt_cli.data import open_dataset
from rvos_layouts import A2D_MASKS, make_a2d


def run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def a2d_root(tmp_path_factory):
    return make_a2d(tmp_path_factory.mktemp("a2d"))


@pytest.fixture(scope="module")
def a2d_predictions(a2d_root, tmp_path_factory):
    """Perfect masks for three samples, an empty one for vidB."""
    pred_dir = tmp_path_factory.mktemp("pred")
    ds = open_dataset("a2d", a2d_root, "test")
    for s in ds.samples:
        m = A2D_MASKS[s.video_id, s.frame, int(s.object_id)] * 255
        if s.video_id == "vidB":
            m = np.zeros_like(m)
        p = pred_dir / ds.mask_relpath(s)
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(m.astype(np.uint8), mode="L").save(p)
    return pred_dir


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from lbdt_cli.data.shapes_generator import write_shapes

    root = tmp_path_factory.mktemp("shapes") / "clips"
    write_shapes(root, 1, seed=7, size=64, frames=3)
    return root


def test_predictions_scoring_known_numbers(a2d_root, a2d_predictions, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["eval", "--dataset", "a2d", "--root", str(a2d_root), "--predictions",
                                 str(a2d_predictions), "--json", "-o", str(out)], capsys)
    assert code == 0, err
    m = json.loads(stdout)
    areas = {k[0] + k[1] + str(k[2]): int(v.sum()) for k, v in A2D_MASKS.items()}
    perfect = areas["vidA000030"] + areas["vidA000031"] + areas["vidA000081"]
    assert m["overall_iou"] == pytest.approx(perfect / (perfect + areas["vidB000050"]))
    assert m["mean_iou"] == pytest.approx(0.75, abs=1e-6)
    for k in ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "AP"):
        assert m[k] == pytest.approx(0.75)
    assert m["mAP_coco"] == pytest.approx(0.75, abs=0.01)  # the empty mask ranks last (confidence 0)
    assert "J" not in m and m["num_samples"] == 4
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == m and saved["protocol"] == "default" and "original frame size" in saved["resolution"]
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert [r["video_id"] for r in rows] == ["vidA", "vidA", "vidA", "vidB"]
    assert rows[3]["iou"] == "0.000000" and rows[3]["expression"] == "ball rolling"
    assert int(rows[0]["intersection"]) == int(rows[0]["union"]) == areas["vidA000030"]

    # existing outputs are not overwritten without --overwrite
    code, _, err = run_cli(["eval", "--dataset", "a2d", "--root", str(a2d_root), "--predictions",
                            str(a2d_predictions), "-o", str(out)], capsys)
    assert code == 5 and "--overwrite" in err

    # LBDT protocol: the GT round trip through 320x320 only grows the GT, so perfect masks score <= 1
    code, stdout, _ = run_cli(["eval", "--dataset", "a2d", "--root", str(a2d_root), "--predictions",
                               str(a2d_predictions), "--protocol", "lbdt", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["mean_iou"] <= 0.75 + 1e-9


def test_bad_inputs_give_one_line_errors(a2d_root, a2d_predictions, tmp_path, capsys):
    empty = tmp_path / "empty_pred"
    empty.mkdir()
    cases = [
        (["--dataset", "a2d", "--root", str(a2d_root), "--predictions", str(empty)], 3, "missing"),
        (["--dataset", "a2d", "--root", str(tmp_path / "nope"), "--predictions", str(empty)], 3, "does not exist"),
        (["--dataset", "kitti", "--root", str(a2d_root)], 2, "unknown --dataset"),
        (["--dataset", "a2d", "--root", str(a2d_root)], 2, "--checkpoint is required"),
        (["--dataset", "a2d", "--root", str(a2d_root), "--predictions", str(empty), "--limit", "0"], 2, "--limit"),
        (["--dataset", "davis"], 2, "--root is required"),
        (["--dataset", "a2d", "--root", str(a2d_root), "--checkpoint", str(tmp_path / "x.pt")], 4, "x.pt"),
        (["--dataset", "a2d", "--root", str(a2d_root), "--predictions", str(a2d_predictions),
          "--protocol", "coco"], 2, "--protocol"),
    ]
    for args, want_code, want_text in cases:
        code, _, err = run_cli(["eval", *args], capsys)
        assert code == want_code, (args, err)
        assert want_text in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    (a2d_root / "a2d_annotation.txt").rename(a2d_root / "moved.txt")
    try:
        code, _, err = run_cli(["eval", "--dataset", "a2d", "--root", str(a2d_root), "--check"], capsys)
        assert code == 3 and "a2d_annotation.txt" in err
    finally:
        (a2d_root / "moved.txt").rename(a2d_root / "a2d_annotation.txt")


def test_unusable_output_folder_fails_before_the_model_is_loaded(a2d_root, tmp_path, capsys):
    afile = tmp_path / "somefile.txt"
    afile.write_text("x")
    # the checkpoint does not exist: exit 5 (not 4) shows the output was checked before loading it
    base = ["eval", "--dataset", "a2d", "--root", str(a2d_root), "--checkpoint", str(tmp_path / "x.pt")]
    outs = [afile / "sub", afile]
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        outs.append(locked / "out")
    for out in outs:
        code, _, err = run_cli([*base, "-o", str(out)], capsys)
        assert code == 5 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not (afile.parent / "sub").exists()
    assert afile.read_text() == "x"


def test_write_outputs_renames_the_pair_only_after_both_are_written(a2d_root, a2d_predictions, tmp_path,
                                                                   monkeypatch):
    from lbdt_cli import evaluation as ev

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    (out / "samples.csv").write_text("old")
    result = ev.evaluate_predictions(open_dataset("a2d", a2d_root, "test"), a2d_predictions)
    monkeypatch.setattr(ev, "samples_csv", lambda result: None)  # writing samples.csv fails
    with pytest.raises(TypeError):
        ev.write_outputs(result, out, overwrite=True)
    assert (out / "metrics.json").read_text() == "old" and (out / "samples.csv").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "samples.csv"]  # no temporary left
    monkeypatch.undo()
    ev.write_outputs(result, out, overwrite=True)
    assert json.loads((out / "metrics.json").read_text())["metrics"]["num_samples"] == 4
    assert (out / "samples.csv").read_text().startswith("sample_id,")


def test_check_lists_dataset(a2d_root, capsys):
    code, stdout, _ = run_cli(["eval", "--dataset", "a2d", "--root", str(a2d_root), "--check", "--json"], capsys)
    rep = json.loads(stdout)
    assert code == 0 and (rep["videos"], rep["expressions"], rep["samples"]) == (2, 3, 4)


def test_end_to_end_shapes_tiny_model(shapes_root, tiny_checkpoint, tmp_path, capsys):
    masks, out = tmp_path / "masks", tmp_path / "out"
    base = ["eval", "--dataset", "shapes", "--root", str(shapes_root), "--device", "cpu"]
    code, stdout, err = run_cli([*base, "--checkpoint", str(tiny_checkpoint), "--json", "--save-masks", str(masks),
                                 "-o", str(out), "--batch-size", "16"], capsys)
    assert code == 0, err
    m = json.loads(stdout)
    assert set(m) >= {"P@0.5", "AP", "overall_iou", "mean_iou", "mAP_coco", "J", "F", "J&F"}
    assert all(0.0 <= m[k] <= 1.0 for k in m if k not in ("num_samples", "by_group"))
    ds = open_dataset("shapes", shapes_root)
    assert m["num_samples"] == len(ds)
    assert (masks / "scores.json").is_file()
    png = np.array(Image.open(masks / ds.mask_relpath(ds.samples[0])))
    assert png.dtype == np.uint8 and png.shape == (64, 64) and set(np.unique(png)) <= {0, 255}
    # the saved masks re-score to the same numbers (scores.json keeps the COCO confidences)
    code, stdout, _ = run_cli([*base, "--predictions", str(masks), "--json"], capsys)
    again = json.loads(stdout)
    groups, groups_again = m.pop("by_group"), again.pop("by_group")
    assert code == 0 and again == pytest.approx(m)
    assert groups_again.keys() == groups.keys()
    assert all(groups_again[k] == pytest.approx(groups[k]) for k in groups)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["checkpoint_config"] == "tiny" and saved["interval"] == 2
    # human-readable table
    code, stdout, _ = run_cli([*base, "--checkpoint", str(tiny_checkpoint), "--limit", "4", "--protocol", "lbdt"],
                              capsys)
    assert code == 0 and "mean IoU" in stdout and "J&F" in stdout and "LBDT protocol" in stdout.replace("\n", " ")


def test_end_to_end_a2d_mp4_tiny_model(a2d_root, tiny_checkpoint, capsys):
    code, stdout, err = run_cli(["eval", "--dataset", "a2d", "--root", str(a2d_root), "--checkpoint",
                                 str(tiny_checkpoint), "--device", "cpu", "--json", "--limit", "3"], capsys)
    assert code == 0, err
    m = json.loads(stdout)
    assert m["num_samples"] == 3 and "J" not in m


def test_torchrun_two_processes_match_one(shapes_root, tiny_checkpoint, tmp_path, capsys):
    """Samples sharded by rank (gloo on CPU), per-sample I/U gathered: identical numbers to one process."""
    args = ["eval", "--dataset", "shapes", "--root", str(shapes_root), "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--json"]
    code, one, err = run_cli(args, capsys)
    assert code == 0, err
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29561", "-m", "lbdt_cli", *args, "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    assert json.loads(two.stdout) == json.loads(one)
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["world_size"] == 2


def test_shapes_reports_appearance_and_motion_expressions_separately(shapes_root, tiny_checkpoint, capsys):
    index = json.loads((shapes_root / "expressions.json").read_text())
    frames = index["num_frames"]
    expected = {}
    for clip in index["clips"].values():
        for x in clip["expressions"]:
            kind = "motion" if x["needs_motion"] else "appearance"
            expected[kind] = expected.get(kind, 0) + frames
    code, stdout, err = run_cli(["eval", "--dataset", "shapes", "--root", str(shapes_root), "--checkpoint",
                                 str(tiny_checkpoint), "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    m = json.loads(stdout)
    groups = m["by_group"]
    assert {k: g["num_samples"] for k, g in groups.items()} == expected
    assert sum(expected.values()) == m["num_samples"]
    # the per-group mean IoUs recombine into the overall mean IoU
    recombined = sum(g["mean_iou"] * g["num_samples"] for g in groups.values()) / m["num_samples"]
    assert recombined == pytest.approx(m["mean_iou"], abs=1e-9)
    # generated test clip 2000000: expression 0 is resolvable by appearance, expression 1 needs motion
    code, stdout, err = run_cli(["eval", "--dataset", "shapes", "--num-clips", "1", "--limit", "48", "--checkpoint",
                                 str(tiny_checkpoint), "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    groups = json.loads(stdout)["by_group"]
    assert {k: g["num_samples"] for k, g in groups.items()} == {"appearance": 24, "motion": 24}
