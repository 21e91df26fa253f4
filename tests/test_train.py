"""lbdt train: loss, a short run, exact resume, DDP (gloo, 2 processes), export, bad inputs."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from lbdt_cli.errors import InputError, OutputError
from lbdt_cli.training import export_weights, make_config, train
from lbdt_cli.training.loss import dice_loss, lbdt_loss

TINY = dict(dataset="shapes", model="tiny", input_size=64, interval=2, batch_size=2, workers=0, threads=1,
            shapes_train_clips=1, shapes_val_clips=1, shapes_size=64, shapes_frames=4, val_samples=2, log_every=1)


def _cfg(tmp_path, name, **kw):
    return make_config(None, **{**TINY, "output": str(tmp_path / name), **kw})


def _losses(run_dir):
    recs = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if r["type"] == "train"]


def test_loss_matches_the_released_formula():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4).flatten(1)
    t = target.flatten(1)
    dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()
    assert torch.allclose(dice_loss(logits, target), dice)
    bce = -(1.5 * target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    assert torch.allclose(lbdt_loss(logits, target), 0.5 * bce.mean() + 0.5 * dice, atol=1e-6)


def test_two_step_run_writes_resumable_checkpoint_and_metrics(tmp_path):
    summary = train(_cfg(tmp_path, "run", max_steps=2))
    run = tmp_path / "run"
    assert summary["step"] == 2 and summary["stopped_early"]
    from lbdt_cli.model import read_checkpoint

    ckpt = read_checkpoint(run / "last.pt")
    ts = ckpt["training_state"]
    assert ts["step"] == 2 and ts["position"] == 2 and ts["epoch"] == 0
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(ts)
    assert [s for s, _ in _losses(run)] == [1, 2]
    assert all(torch.isfinite(torch.tensor(l)) for _, l in _losses(run))
    # an existing run is never overwritten by accident
    with pytest.raises(OutputError):
        train(_cfg(tmp_path, "run", max_steps=1))


def test_resume_matches_an_uninterrupted_run(tmp_path):
    # 2 epochs x 2 steps; the interrupted run stops mid-epoch 2 (after an epoch end, validation, lr step)
    common = dict(epochs=2, epoch_samples=4, milestones=[1], lr=1e-3)
    train(_cfg(tmp_path, "full", **common))
    train(_cfg(tmp_path, "cut", max_steps=3, **common))
    assert [s for s, _ in _losses(tmp_path / "cut")] == [1, 2, 3]
    train(_cfg(tmp_path, "cut", **common), resume=True)
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")
    from lbdt_cli.model import read_checkpoint

    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["training_state"]["step"] == b["training_state"]["step"] == 4
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_export_is_half_precision_and_loads_as_float32(tmp_path):
    train(_cfg(tmp_path, "run", epochs=1, epoch_samples=2))
    export_weights(tmp_path / "run" / "best.pt", tmp_path / "w.pt")
    from lbdt_cli.model import load_checkpoint, read_checkpoint

    raw = read_checkpoint(tmp_path / "w.pt")
    assert raw["training_state"] is None
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    model = load_checkpoint(tmp_path / "w.pt")
    assert next(model.parameters()).dtype == torch.float32
    assert model.provenance["dataset"] == "shapes"
    # fine-tuning from it at another input size keeps the weights
    train(_cfg(tmp_path, "ft", init_from=str(tmp_path / "w.pt"), input_size=96, max_steps=1, lr=1e-12,
               weight_decay=0.0))
    ft = read_checkpoint(tmp_path / "ft" / "last.pt")
    assert ft["config"]["input_size"] == 96 and ft["provenance"]["init_from"] == str(tmp_path / "w.pt")
    key = next(k for k, v in raw["state_dict"].items() if v.is_floating_point() and "weight" in k and "bn" not in k)
    assert torch.allclose(ft["state_dict"][key], raw["state_dict"][key].float(), atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    cfg = make_config(None, **{**TINY, "output": out, "max_steps": 2, "device": "cpu"})
    queue.put((rank, train(cfg)["step"]))


def test_ddp_gloo_two_processes(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    out = str(tmp_path / "ddp")
    mp.start_processes(_ddp_worker, args=(2, _free_port(), out, queue), nprocs=2, join=True, start_method="spawn")
    results = sorted(queue.get() for _ in range(2))
    assert results == [(0, 2), (1, 2)]
    from lbdt_cli.model import read_checkpoint

    ts = read_checkpoint(tmp_path / "ddp" / "last.pt")["training_state"]
    assert ts["world_size"] == 2 and ts["step"] == 2 and len(ts["rng"]) == 2


@pytest.mark.parametrize("argv, code, needle", [
    (["train", "--dataset", "kitti"], 2, "unknown dataset"),
    (["train", "--dataset", "a2d"], 2, "--root is required"),
    (["train", "--set", "foo"], 2, "expected FIELD=VALUE"),
    (["train", "--milestones", "1,x"], 2, "--milestones"),
    (["train", "--epochs", "0"], 2, "--epochs must be >= 1"),
    (["train", "--lr", "-1"], 2, "--lr must be > 0"),
    (["train", "--input-size", "50"], 2, "multiple of 32"),
    (["train", "--device", "tpu"], 2, "unknown device"),
    (["train", "--dataset", "a2d", "--root", "/nonexistent/a2d"], 3, "does not exist"),
    (["train", "--model", "tiny", "--config", "/nonexistent.json"], 3, "not found"),
])
def test_bad_inputs_give_one_line_errors(argv, code, needle, capsys):
    from lbdt_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == code
    assert needle in err and err.startswith("error:") and "Traceback" not in err


def test_init_from_and_resume_get_the_strict_checkpoint_checks(tmp_path):
    from lbdt_cli.errors import CheckpointError
    from lbdt_cli.model import build_model, read_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "w.pt", build_model("tiny"))
    ckpt = read_checkpoint(tmp_path / "w.pt")
    del ckpt["state_dict"][next(iter(ckpt["state_dict"]))]
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="1 missing keys"):
        train(_cfg(tmp_path, "ft", init_from=str(tmp_path / "bad.pt"), max_steps=1))
    (tmp_path / "run").mkdir()
    torch.save({**ckpt, "training_state": {"step": 1}}, tmp_path / "run" / "last.pt")
    with pytest.raises(CheckpointError, match="1 missing keys"):
        train(_cfg(tmp_path, "run", max_steps=1), resume=True)


def test_resume_without_a_run_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        train(_cfg(tmp_path, "none"), resume=True)


def test_shapes_eval_reports_appearance_and_motion():
    from lbdt_cli import evaluation as ev
    from lbdt_cli.data import open_dataset
    from lbdt_cli.engine import Predictor
    from lbdt_cli.model import build_model
    from lbdt_cli.model.text import TextEmbedder

    torch.manual_seed(0)
    model = build_model("tiny")
    ds = open_dataset("shapes", None, num_clips=2, size=64, num_frames=3, interval=model.config.interval)
    predictor = Predictor(model.eval(), device="cpu", embedder=TextEmbedder.for_model(model))
    res = ev.evaluate_model(ds, predictor).metrics
    groups = res["by_group"]
    assert groups["appearance"]["num_samples"] + groups.get("motion", {"num_samples": 0})["num_samples"] > 0
    for v in (groups["appearance"]["mean_iou"], res["mean_iou"]):
        assert 0.0 <= v <= 1.0


def test_trains_on_a_release_layout_dataset(tmp_path):
    from rvos_layouts import make_ytvos

    root = make_ytvos(tmp_path / "ytvos")
    cfg = make_config(None, **{**TINY, "dataset": "ytvos", "root": str(root), "output": str(tmp_path / "run"),
                               "max_steps": 1})
    assert train(cfg)["step"] == 1
    assert [s for s, _ in _losses(tmp_path / "run")] == [1]


def test_resume_drops_a_partial_last_metrics_line(tmp_path):
    train(_cfg(tmp_path, "run", max_steps=1, epoch_samples=4))
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as fh:
        fh.write('{"type": "train", "epoch": 1, "st')  # killed while appending
    assert train(_cfg(tmp_path, "run", max_steps=2, epoch_samples=4), resume=True)["step"] == 2
    assert [s for s, _ in _losses(tmp_path / "run")] == [1, 2]


def _cli(argv, capsys):
    from lbdt_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return exc.value.code, err


TINY_ARGV = ["train", "--model", "tiny", "--input-size", "64", "--interval", "2", "--batch-size", "2", "--workers",
             "0", "--threads", "1", "--shapes-clips", "1", "--shapes-val-clips", "1", "--shapes-size", "64",
             "--shapes-frames", "4", "--val-samples", "2", "--max-steps", "1"]


def test_bad_backbone_weights_fail_before_the_run_folder_is_made(tmp_path, capsys):
    bad = tmp_path / "resnet.pth"
    bad.write_text("not a state dict\n")
    out = tmp_path / "run"
    code, err = _cli(TINY_ARGV + ["--output", str(out), "--backbone-weights", str(bad)], capsys)
    assert code == 3 and "is not a torchvision ResNet state dict" in err
    assert not out.exists()
    # a state dict of the wrong network: same error, still before the folder exists
    torch.save({"layer9.weight": torch.zeros(1)}, bad)
    code, err = _cli(TINY_ARGV + ["--output", str(out), "--backbone-weights", str(bad)], capsys)
    assert code == 3 and "is not a torchvision ResNet state dict" in err
    assert not out.exists()


def test_existing_export_is_refused_before_training(tmp_path, capsys):
    export = tmp_path / "w.pt"
    export.write_bytes(b"keep me")
    out = tmp_path / "run"
    code, err = _cli(TINY_ARGV + ["--output", str(out), "--export", str(export)], capsys)
    assert code == 5 and "exists already" in err
    assert export.read_bytes() == b"keep me" and not out.exists()


def test_trains_on_mevis_train_and_validates_on_valid_u(tmp_path):
    from rvos_layouts import make_mevis

    root = make_mevis(make_mevis(tmp_path / "mevis", "train"), "valid_u")
    cfg = make_config(None, **{**TINY, "dataset": "mevis", "root": str(root), "output": str(tmp_path / "run"),
                               "epochs": 1, "epoch_samples": 2})
    assert train(cfg)["step"] == 1
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["type"] == "val" for r in recs)
