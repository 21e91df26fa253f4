"""`lbdt segment` end to end with the tiny model: formats, argument split, every bad input."""

from __future__ import annotations

import json
import os

import h5py
import pytest

from lbdt_cli.cli import main
from lbdt_cli.runtime import dist_env, shard
from lbdt_cli.video.pipeline import split_inputs_and_expressions
from lbdt_cli.weights import default_checkpoint
from video_clips import H, N, W

EXPRS = ["the red circle", "a square moving left"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(capsys, *argv):
    """main() in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, expected_code, needle):
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle in lines[0], err


def leftovers(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_two_clips_every_format_json(capsys, clips, ckpt, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "segment", clips["mp4"], clips["folder"], *EXPRS, "--checkpoint", ckpt,
                            "-o", out, "--format", "all", "--palette", "--save-probs", "--json",
                            "--attention-maps", "2")
    assert code == 0, err
    doc = json.loads(stdout)
    assert [v["frames"] for v in doc["videos"]] == [N, N]
    assert sorted(p.name for p in out.iterdir()) == ["frames", "h264"]
    for clip in ("h264", "frames"):
        d = out / clip
        manifest = json.loads((d / "manifest.json").read_text())
        assert list(manifest["expressions"].values()) == EXPRS
        with h5py.File(d / "masks.h5") as h5:
            assert h5["masks"].shape == (2, N, H, W) and "probs" in h5
            assert h5.attrs["interval"] == 2 and h5.attrs["checkpoint"] == str(ckpt)
        for e in ("expr_00", "expr_01"):
            assert len(list((d / e / "masks").glob("*.png"))) == N
            assert (d / e / "mask.mp4").stat().st_size > 0
        assert (d / "overlay.mp4").stat().st_size > 0
        assert len(list((d / "palette").glob("*.png"))) == N
        assert sorted(p.name for p in (d / "attention").iterdir()) == ["000002_expr_00.png", "000002_expr_01.png"]
        summary = json.loads((d / "summary.json").read_text())
        assert summary["frames"] == N and len(summary["expressions"][1]["mask_area"]) == N
        assert set(summary["time_s"]) >= {"decode_s", "model_s", "encode_s", "total_s"}
        # start-up: the process's age at each milestone, as phases that add up to the first mask
        startup = summary["startup"]
        phases = startup["phases_s"]
        assert list(phases)[:2] == ["command_started", "modules_imported"] and "first_mask" in phases
        assert {"checkpoint_read", "model_built", "text_encoded"} <= set(phases) and min(phases.values()) >= 0
        assert abs(sum(phases.values()) - startup["time_to_first_mask_s"]) < 0.01
        assert summary["fps_measured"] > 0
    assert not [p for p in out.rglob(".*")]


def test_expression_flag_quiet_stride_rotated(capsys, clips, ckpt, tmp_path):
    out = tmp_path / "o"
    code, stdout, err = run(capsys, "segment", clips["rotated"], clips["odd"], "-e", "circle", "--checkpoint", ckpt,
                            "-o", out, "--format", "h5", "--stride", "3", "--start", "1", "--quiet")
    assert code == 0, err
    assert stdout.split() == [str(out / "rotated"), str(out / "odd")]
    with h5py.File(out / "rotated" / "masks.h5") as h5:
        assert h5["masks"].shape == (1, 3, W, H)  # rotated: 48 wide, 64 high
        assert h5["frame_indices"][:].tolist() == [1, 4, 7]
    with h5py.File(out / "odd" / "masks.h5") as h5:
        assert h5["masks"].shape[2:] == (47, 65)


def test_overwrite_and_unknown_words(capsys, clips, ckpt, tmp_path):
    out = tmp_path / "o"
    long = " ".join(["the red circle"] * 10)  # 30 tokens
    args = ["segment", clips["mkv"], "the zorblax circle", long, "--checkpoint", ckpt, "-o", out, "--format", "png",
            "-q"]
    code, _, err = run(capsys, *args)
    assert code == 0 and "expression 1: unknown word(s) zorblax" in err
    assert "expression 2: 30 tokens, only the first 25 are used" in err
    before = (out / "ffv1" / "summary.json").read_text()
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, 5, "exists already (use --overwrite")
    assert (out / "ffv1" / "summary.json").read_text() == before
    code, _, err = run(capsys, *args, "--overwrite")
    assert code == 0
    assert leftovers(out)[0] == "ffv1"


def test_argument_split_and_sharding(clips):
    mp4 = str(clips["mp4"])
    assert split_inputs_and_expressions([mp4, "a man", "b.mp4"]) == ([mp4], ["a man", "b.mp4"])
    assert split_inputs_and_expressions([mp4, "missing.mkv", "a dog"]) == ([mp4, "missing.mkv"], ["a dog"])
    assert split_inputs_and_expressions([mp4, "x"], ["e1"]) == ([mp4, "x"], ["e1"])
    env = dist_env({"WORLD_SIZE": "2", "RANK": "1"})
    assert (shard(list("abcde"), env), env.rank, env.world_size) == (["b", "d"], 1, 2)
    env = dist_env({})
    assert (shard(list("ab"), env), env.rank, env.world_size) == (["a", "b"], 0, 1)
    assert default_checkpoint() is None or default_checkpoint().name == "lbdt_shapes_demo.pt"


@pytest.mark.parametrize(
    "case, code, needle",
    [
        ("missing", 3, "does not exist"),
        ("not_video", 3, "is not a video file"),
        ("empty", 3, "is empty"),
        ("audio_only", 3, "has no video stream"),
        ("empty_folder", 3, "holds no frames"),
        ("zero_selected", 3, "zero frames"),
        ("zero_frames", 3, "has zero frames"),
        ("blank_expr", 2, "expression 2 is empty"),
        ("no_expr", 2, "at least one expression"),
        ("format", 2, "unknown --format gif"),
        ("ckpt_missing", 4, "checkpoint not found"),
        ("ckpt_garbage", 4, "is not a PyTorch checkpoint"),
        ("glove_missing", 3, "GloVe file not found"),
        ("out_unwritable", 5, "cannot create output folder"),
        ("bad_size", 2, "multiple of 32"),
        ("bad_stride", 2, "--stride must be >= 1"),
    ],
)
def test_bad_inputs_one_line_error(capsys, clips, ckpt, tmp_path, case, code, needle):
    out = tmp_path / "out"
    video, exprs, extra = clips["mp4"], ["a circle", "a square"], []
    checkpoint = ckpt
    if case in ("missing", "not_video", "empty", "audio_only", "empty_folder"):
        video = tmp_path / "gone.mp4" if case == "missing" else clips[case]
    elif case == "zero_selected":
        extra = ["--start", "100"]
    elif case == "zero_frames":  # a video stream whose file holds no frame: a Y4M header alone
        video = tmp_path / "zero.y4m"
        video.write_bytes(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n")
    elif case == "blank_expr":
        exprs = ["a circle", "   "]
    elif case == "no_expr":
        exprs = []
    elif case == "format":
        extra = ["--format", "h5,gif"]
    elif case == "ckpt_missing":
        checkpoint = tmp_path / "nothing.pt"
    elif case == "ckpt_garbage":
        checkpoint = tmp_path / "garbage.pt"
        checkpoint.write_text("not a checkpoint at all\n")
    elif case == "glove_missing":
        extra = ["--glove", tmp_path / "glove.840B.300d.txt"]
    elif case == "out_unwritable":
        (tmp_path / "afile").write_text("")
        out = tmp_path / "afile" / "out"
    elif case == "bad_size":
        extra = ["--size", "50"]
    elif case == "bad_stride":
        extra = ["--stride", "0"]
    before = set(os.listdir(tmp_path))
    got, _, err = run(capsys, "segment", video, *exprs, "--checkpoint", checkpoint, "-o", out, "--format",
                      "h5,png,mask-video,overlay", *extra) if case != "format" else run(
        capsys, "segment", video, *exprs, "--checkpoint", checkpoint, "-o", out, *extra)
    assert_one_line_error(got, err, code, needle)
    assert not out.exists()
    assert set(os.listdir(tmp_path)) == before


def test_benchmark_reports(capsys, clips, ckpt, tmp_path):
    code, stdout, err = run(capsys, "segment", clips["mp4"], "a circle", "--checkpoint", ckpt, "--benchmark",
                            "--benchmark-rounds", "2", "--json", "--end", "6", "-o", tmp_path / "o")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["frames"] == 6 and r["rounds"] == 2
    for k in ("end_to_end_fps", "model_only_fps", "naive_fps", "speedup_vs_naive", "pipeline_overhead"):
        assert r[k] == r[k]  # a number, not NaN
    assert r["end_to_end_fps"] > 0 and r["naive_fps"] > 0
    assert all(len(v) == 2 for v in r["samples_s"].values())
    assert len(r["speedup_by_round"]) == len(r["overhead_by_round"]) == 2
    for k in ("end_to_end", "model_only", "naive"):  # medians of the rounds
        assert abs(r[f"{k}_s"] - sum(r["samples_s"][k]) / 2) < 2e-3
    # the ceiling: the model's per-frame cost and the device's peak, both measured in this run
    assert r["gflop_per_frame"] > 0 and r["peak_gflops"] > 0
    assert abs(r["fps_at_peak"] - r["peak_gflops"] / r["gflop_per_frame"]) < 1e-6 * r["fps_at_peak"]
    assert abs(r["model_only_gflops"] - r["model_only_fps"] * r["gflop_per_frame"]) < 1e-6 * r["model_only_gflops"]
    # the same command in a fresh process, start-up included, against the naive loop
    assert len(r["samples_s"]["whole_command"]) == 2 and r["whole_command_s"] > 0
    assert abs(r["whole_command_vs_naive"] - r["naive_s"] / r["whole_command_s"]) < 1e-9
    assert 0 < r["time_to_first_mask_s"] < r["whole_command_s"] and "first_mask" in r["startup_phases_s"]
    assert not (tmp_path / "o").exists()  # the benchmark writes nothing


def test_benchmark_rounds_must_be_positive(capsys, clips, ckpt, tmp_path):
    code, stdout, err = run(capsys, "segment", clips["mp4"], "a circle", "--checkpoint", ckpt, "--benchmark",
                            "--benchmark-rounds", "0", "-o", tmp_path / "o")
    assert_one_line_error(code, err, 2, "--benchmark-rounds")


def test_interrupt_leaves_nothing(capsys, clips, ckpt, tmp_path, monkeypatch):
    from lbdt_cli.video import outputs

    real_write = outputs.VideoOutputs.write

    def write_then_interrupt(self, frame, probs):
        real_write(self, frame, probs)
        if frame.index == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(outputs.VideoOutputs, "write", write_then_interrupt)
    out = tmp_path / "out"
    code, _, err = run(capsys, "segment", clips["mp4"], "a circle", "--checkpoint", ckpt, "-o", out,
                       "--format", "all", "--palette", "-q")
    assert code == 130 and "Traceback" not in err
    assert leftovers(out) == []
