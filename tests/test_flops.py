import json
import pytest

from lbdt_cli.flops import count_cost, example_inputs
from lbdt_cli.model import build_model


@pytest.mark.parametrize("name,paper", [("lbdt1", 32.51), ("lbdt4", 38.03)])
def test_paper_configs_within_one_percent_of_table_8(name, paper):
    report = count_cost(build_model(name), frames=2, size=320)
    assert abs(report.gmacs / paper - 1) < 0.01
    # the released architecture without its two unused towers (1.18 M parameters)
    assert report.params == {"lbdt1": 72_319_105, "lbdt4": 94_406_785}[name]
    assert abs(sum(report.gmacs_by_group.values()) - report.gmacs) < 1e-6


def test_counter_agrees_with_fvcore_on_the_same_model():
    from fvcore.nn import FlopCountAnalysis

    model = build_model("tiny").eval()
    ours = count_cost(model, frames=2, size=64)
    fv = FlopCountAnalysis(model, example_inputs(model, 1, 64))
    fv.unsupported_ops_warnings(False)
    fv.uncalled_modules_warnings(False)
    # fvcore's tracer skips fused scaled-dot-product attention; everything else must match.
    attention = sum(v for k, v in ours.gmacs_by_operator.items() if "attention" in k)
    assert attention > 0
    assert ours.gmacs - attention == pytest.approx(fv.total() / 1e9, rel=1e-6)
    assert ours.gmacs_by_operator["convolution"] == pytest.approx(fv.by_operator()["conv"] / 1e9, rel=1e-9)


def test_more_frames_cost_proportionally_more():
    model = build_model("tiny")
    two, four = count_cost(model, 2, 64), count_cost(model, 4, 64)
    assert four.gmacs == pytest.approx(2 * two.gmacs, rel=1e-6)


def test_cli_json_reports_gflops_params_and_speed(run_cli):
    out = run_cli("benchmark-flops", "--model", "tiny", "--json", "--speed", "--batch-sizes", "2",
                "--repeats", "1", "--device", "cpu")
    assert out.code == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["params"] == sum(p.numel() for p in build_model("tiny").parameters())
    assert result["gflops"] == pytest.approx(count_cost(build_model("tiny"), 2, 64).gmacs, rel=1e-3)
    assert [r["batch"] for r in result["speed"]] == [1, 2]
    assert result["speed"][0]["setting"].startswith("baseline") and result["speed"][0]["fps"] > 0
    assert result["peak_gflops"] > 0
    for r in result["speed"]:  # GFLOP/s = frames/s x the counted cost of one pair
        assert r["gflops"] == pytest.approx(r["fps"] * 2 * result["gflops"], rel=2e-2, abs=0.1)


def test_cli_checkpoint_and_bad_input(tmp_path, run_cli):
    from lbdt_cli.model import save_checkpoint

    save_checkpoint(tmp_path / "t.pt", build_model("tiny"))
    out = run_cli("benchmark-flops", "--checkpoint", str(tmp_path / "t.pt"), "--json")
    assert out.code == 0 and json.loads(out.stdout)["model"] == "tiny"
    for args, needle in [(["--model", "nope"], "unknown model"), (["--model", "tiny", "--size", "50"], "multiple of 32"),
                         (["--checkpoint", str(tmp_path / "missing.pt")], "not found"), ([], "exactly one"),
                         (["--model", "tiny", "--speed", "--device", "foo"], "unknown --device")]:
        out = run_cli("benchmark-flops", *args)
        assert out.code != 0 and needle in out.stderr and "Traceback" not in out.stderr


def test_frame_gflop_counts_shared_layers_once():
    from lbdt_cli.flops import count_cost, frame_gflop

    m = build_model("tiny")
    one, two = frame_gflop(m, 64, 1), frame_gflop(m, 64, 2)
    assert abs(one - 2 * count_cost(m, 2, 64).gmacs) < 1e-9 * one  # same count, engine-style call
    assert one < two < 2 * one  # the second expression reuses the sentence-independent layers
