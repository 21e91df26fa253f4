"""Runs that survive real life: usage errors, signals, stale temporaries, permissions, terminal
safety, clear messages, and batch jobs (--keep-going, --skip-existing) over many clips."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbdt_cli.model import build_model, save_checkpoint
from video_clips import FPS, H, W, ffmpeg

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory):
    """A clip long enough to be caught mid-way by a signal (about 10 s with the tiny model)."""
    path = tmp_path_factory.mktemp("long") / "long.mkv"
    subprocess.run([ffmpeg(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate={FPS}",
                    "-frames:v", "600", "-c:v", "ffv1", str(path)], check=True)  # fmt: skip
    return path


def one_line_error(res, code, needle):
    assert res.code == code, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def everything(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


# ------------------------------------------------------------------------------------------ usage


@pytest.mark.parametrize("argv, needle", [
    (["segment", "clip.mp4", "x", "--bogus"], "No such option: --bogus"),
    (["segment"], "Missing argument"),
    (["check"], "No such command 'check'"),
    (["segment", "clip.mp4", "x", "--size", "abc"], "--size"),
])  # fmt: skip
def test_usage_errors_are_one_line_exit_2(run_cli, argv, needle):
    one_line_error(run_cli(*argv), 2, needle)


def test_double_dash_takes_expressions_starting_with_dash(run_cli, clips, ckpt, tmp_path):
    assert "--" in run_cli("segment", "--help").stdout  # the help says how
    res = run_cli("segment", clips["mp4"], "-o", tmp_path / "o", "-c", ckpt, "--end", "2", "-q", "--", "-a circle")
    assert res.code == 0, res.stderr
    manifest = json.loads((tmp_path / "o" / "h264" / "manifest.json").read_text())
    assert manifest["expressions"] == {"expr_00": "-a circle"}


# ------------------------------------------------------------------------- signals and temporaries


def _start_segment(clip, ckpt, out) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lbdt_cli", "segment", str(clip), "a circle", "-c", str(ckpt), "-o", str(out),
           "--format", "all", "--palette", "-q", "-b", "1"]  # fmt: skip
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_pngs(proc, out: Path, timeout=120.0) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        tmps = list(out.glob(".long.tmp-*")) if out.exists() else []
        if tmps and len(list(tmps[0].glob("expr_00/masks/*.png"))) >= 3:
            return tmps[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never got going")


def test_sigterm_cleans_up_and_exits_143(long_clip, ckpt, tmp_path):
    out = tmp_path / "out"
    proc = _start_segment(long_clip, ckpt, out)
    _wait_for_pngs(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)  # generous: the test machine is shared and often overloaded
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "error: terminated by SIGTERM" in err
    assert everything(out) == []  # the hidden temporary folder is gone


def test_sigkill_leftovers_removed_by_a_later_run(run_cli, long_clip, clips, ckpt, tmp_path):
    out = tmp_path / "out"
    proc = _start_segment(long_clip, ckpt, out)
    tmp = _wait_for_pngs(proc, out)
    proc.kill()  # SIGKILL: no cleanup possible
    proc.wait()
    assert tmp.exists()
    res = run_cli("segment", clips["mp4"], "a circle", "-c", ckpt, "-o", out, "--end", "2", "-q")
    assert res.code == 0, res.stderr
    assert not tmp.exists()  # the dead run's temporary folder was removed
    assert [p.name for p in out.iterdir()] == ["h264"]


def test_stale_temporaries_only_of_dead_owners(tmp_path):
    from lbdt_cli.utils import atomic

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live_tag = atomic.owner_tag(live.pid)
        host = live_tag.split("-")[2]
        start = int(live_tag.split("-")[1])
        names = {
            "dead": f".clip.tmp-{dead_pid}-12345-{host}-abcd",  # owner exited
            "reused": f".clip2.tmp-{live.pid}-{start + 1}-{host}-abcd",  # same pid, other process
            "dead_file": f".last.tmp-{dead_pid}-12345-{host}-abcd.pt",  # training's checkpoint temporary
            "live": f".clip3.tmp-{live_tag}abcd",
            "mine": f".clip4.tmp-{atomic.owner_tag()}abcd",
            "other_host": f".clip5.tmp-{dead_pid}-12345-00000000-abcd",
            "no_owner": ".clip6.tmp-k2j3h4",  # older name: owner unknown, never touched
        }
        for key, name in names.items():
            (tmp_path / name).mkdir() if "file" not in key else (tmp_path / name).write_bytes(b"x")
        removed = {p.name for p in atomic.remove_stale_temporaries(tmp_path)}
        assert removed == {names["dead"], names["reused"], names["dead_file"]}
        assert {p.name for p in tmp_path.iterdir()} == {names[k] for k in ("live", "mine", "other_host", "no_owner")}
    finally:
        live.kill()
        live.wait()


def test_training_checkpoint_temporary_swept(tmp_path):
    from lbdt_cli.utils import atomic

    atomic._swept.clear()
    stale = tmp_path / ".last.tmp-999999999-1-{}-zz.pt".format(atomic.owner_tag().split("-")[2])
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "last.pt", build_model("tiny"))
    assert not stale.exists() and (tmp_path / "last.pt").is_file()


# ------------------------------------------------------------------------------------ permissions


def test_output_folders_follow_umask(run_cli, clips, ckpt, tmp_path):
    old = os.umask(0o002)
    try:
        res = run_cli("segment", clips["mp4"], "a circle", "-c", ckpt, "-o", tmp_path / "seg", "--end", "2",
                      "-q", "-f", "png")  # fmt: skip
        assert res.code == 0, res.stderr
        res = run_cli("make-shapes", tmp_path / "shapes", "--clips", "1", "--frames", "4", "--size", "32", "-q")
        assert res.code == 0, res.stderr
        res = run_cli("eval", "--dataset", "shapes", "--root", tmp_path / "shapes", "--checkpoint", ckpt,
                      "--save-masks", tmp_path / "masks", "--limit", "1")  # fmt: skip
        assert res.code == 0, res.stderr
    finally:
        os.umask(old)
    for root in ("seg/h264", "shapes", "masks"):
        folders = [tmp_path / root] + [p for p in (tmp_path / root).rglob("*") if p.is_dir()]
        for d in folders:
            assert stat.S_IMODE(d.stat().st_mode) == 0o775, d


def test_output_under_sys_is_exit_5(run_cli, clips, ckpt):
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys here")
    one_line_error(run_cli("segment", clips["mp4"], "a circle", "-c", ckpt, "-o", "/sys/lbdt-test"), 5,
                   "cannot create output folder")
    one_line_error(run_cli("make-shapes", "/sys/lbdt-test", "--clips", "1"), 5, "cannot create output folder")


# ------------------------------------------------------------------------------ terminal, messages


def test_control_characters_are_escaped(run_cli, clips, ckpt, tmp_path):
    nasty = "the \x1b[2J circle [/] \u202e"
    res = run_cli("segment", clips["mp4"], nasty, "-c", ckpt, "-o", tmp_path / "o", "--end", "2")
    assert res.code == 0, res.stderr
    assert "\x1b" not in res.stderr + res.stdout and "\u202e" not in res.stderr + res.stdout
    assert "\\x1b[2J" in res.stderr and "[/]" in res.stderr and "\\u202e" in res.stderr
    res = run_cli("segment", tmp_path / "gone\x1b]0;x\x07.mp4", "a", "-c", ckpt, "-o", tmp_path / "o2")
    line = one_line_error(res, 3, "does not exist")
    assert "\\x1b]0;x\\x07" in line


@pytest.mark.parametrize("size", ["-32", "0", "33"])
def test_bad_size_exit_2(run_cli, clips, ckpt, tmp_path, size):
    one_line_error(run_cli("segment", clips["mp4"], "a", "-c", ckpt, "-o", tmp_path / "o", "--size", size), 2,
                   "--size must be a positive multiple of 32")
    assert not (tmp_path / "o").exists()


def test_unreadable_checkpoint_messages(run_cli, clips, tmp_path):
    import pickle

    import torch

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(print))
    torch.save({"a": torch.zeros(3)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    for name, needle in [("evil.pt", "could run code"), ("cut.pt", "cut short")]:
        res = run_cli("segment", clips["mp4"], "a", "-c", tmp_path / name, "-o", tmp_path / "o")
        line = one_line_error(res, 4, needle)
        assert "Re-running" not in line and "Warning" not in res.stderr


def test_unknown_config_named_clearly():
    from lbdt_cli.model import LBDTConfig

    with pytest.raises(ValueError, match="mapping of fields, not str 'abn'"):
        LBDTConfig.from_dict("abn")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) bogus \(known: "):
        LBDTConfig.from_dict({"bogus": 1})


def test_fifo_and_device_are_named(run_cli, ckpt, tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert "named pipe (FIFO)" in one_line_error(run_cli("segment", fifo, "a", "-c", ckpt), 3, "not a video file")
    if Path("/dev/zero").exists():
        one_line_error(run_cli("segment", "/dev/zero", "a", "-c", ckpt), 3, "is a character device")


def test_bad_split_is_exit_2(run_cli, tmp_path):
    one_line_error(run_cli("eval", "--dataset", "shapes", "--split", "banana"), 2, "--split")
    (tmp_path / "a2d").mkdir()
    one_line_error(run_cli("eval", "--dataset", "a2d", "--root", tmp_path / "a2d", "--predictions", tmp_path,
                           "--split", "banana"), 2, "--split")  # fmt: skip


def test_train_does_not_advise_resume_without_last_pt(run_cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    line = one_line_error(run_cli("train", "--dataset", "shapes", "--model", "tiny", "--output", run), 5,
                          "already holds a training run")
    assert "--resume to" not in line and "no last.pt" in line


# --------------------------------------------------------------------------------- batch jobs


def test_keep_going_reports_and_skips_failed_clips(run_cli, clips, ckpt, tmp_path):
    out = tmp_path / "out"
    res = run_cli("segment", clips["not_video"], clips["mp4"], clips["empty"], "-e", "a circle", "-c", ckpt,
                  "-o", out, "--end", "2", "--keep-going")  # fmt: skip
    assert res.code == 6, res.stderr
    assert "Traceback" not in res.stderr
    assert "2 of 3 clip(s) failed" in res.stderr
    assert (out / "h264" / "summary.json").is_file()
    doc = json.loads((out / "failures.json").read_text())
    assert [Path(f["source"]).name for f in doc["failed"]] == ["notes.mp4", "empty.mp4"]
    assert all(f["exit_code"] == 3 for f in doc["failed"]) and "empty" in doc["failed"][1]["error"]
    assert doc["done"] == [str(out / "h264")]
    # without --keep-going the first bad clip ends the run (before the model loads)
    one_line_error(run_cli("segment", clips["not_video"], clips["mp4"], "-e", "a", "-c", ckpt, "-o",
                           tmp_path / "o2"), 3, "notes.mp4")  # fmt: skip


def test_keep_going_all_good_is_exit_0_and_writes_an_empty_list(run_cli, clips, ckpt, tmp_path):
    res = run_cli("segment", clips["mp4"], "-e", "a", "-c", ckpt, "-o", tmp_path, "--end", "2", "--keep-going",
                  "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["failures"] == []
    assert json.loads((tmp_path / "failures.json").read_text())["failed"] == []


def test_skip_existing_resumes_exactly(run_cli, clips, ckpt, tmp_path):
    out = tmp_path / "out"
    base = ["segment", clips["mp4"], clips["mkv"], "-e", "a circle", "-c", ckpt, "-o", out, "--end", "3", "-q"]
    assert run_cli(*base).code == 0
    first = (out / "h264" / "summary.json").stat().st_mtime_ns
    from lbdt_cli.utils.atomic import remove_path

    remove_path(out / "ffv1")
    (out / ".ffv1.tmp-1-1-00000000-x").mkdir()  # an interrupted run's folder never counts
    res = run_cli(*base, "--skip-existing", "--json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["skipped"] == [str(out / "h264")] and [v["output"] for v in doc["videos"]] == [str(out / "ffv1")]
    assert (out / "h264" / "summary.json").stat().st_mtime_ns == first
    # another request (other expressions) does not match the completed folders
    res = run_cli(*base[:3], "-e", "a square", *base[5:], "--skip-existing")
    one_line_error(res, 5, "exists already")
    # nor does a folder that was not finished by lbdt (no marker)
    (out / "h264" / "complete.json").unlink()
    one_line_error(run_cli(*base, "--skip-existing"), 5, "h264 exists already")


def test_clips_are_probed_lazily(run_cli, clips, ckpt, tmp_path, monkeypatch):
    """Start-up work must not grow with the number of clips: only the first is probed before the model."""
    from lbdt_cli.video import pipeline, reader

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):
        os.symlink(clips["mp4"], folder / f"c{i:03d}.mp4")
    calls = []
    real_probe = reader.probe
    monkeypatch.setattr(reader, "probe", lambda *a, **k: calls.append(a[0]) or real_probe(*a, **k))

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop(len(calls))

    monkeypatch.setattr(pipeline.Segmenter, "__post_init__", stop)
    with pytest.raises(Stop) as info:
        from lbdt_cli.cli import main

        main(["segment", str(folder), "-e", "a", "-c", str(ckpt), "-o", str(tmp_path / "o")])
    assert info.value.args[0] == 1


def test_rank_shares_follow_the_same_rules(run_cli, clips, ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    out = tmp_path / "out"
    # rank 1 takes clips 1 and 3: the bad one and mkv
    res = run_cli("segment", clips["mp4"], clips["not_video"], clips["avi"], clips["mkv"], "-e", "a", "-c", ckpt,
                  "-o", out, "--end", "2", "--keep-going", "--device", "cpu")  # fmt: skip
    assert res.code == 6, res.stderr
    doc = json.loads((out / "failures-rank1.json").read_text())
    assert [Path(f["source"]).name for f in doc["failed"]] == ["notes.mp4"] and doc["rank"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["failures-rank1.json", "ffv1"]
    res = run_cli("segment", clips["mp4"], clips["not_video"], clips["avi"], clips["mkv"], "-e", "a", "-c", ckpt,
                  "-o", out, "--end", "2", "--keep-going", "--skip-existing", "--device", "cpu", "--json")  # fmt: skip
    assert json.loads(res.stdout)["skipped"] == [str(out / "ffv1")]


# ------------------------------------------------------------------------------- full disks


@pytest.mark.parametrize("fmt, limit", [("h5", 3000), ("h5", 40000), ("png", 300), ("overlay", 3000),
                                        ("mask-video", 1000)])  # fmt: skip
def test_file_size_limit_is_exit_5_and_nothing_left(long_clip, ckpt, tmp_path, fmt, limit):
    """EFBIG from RLIMIT_FSIZE, in a subprocess: one error line, exit 5, no crash, no leftovers
    (masks.h5 used to end in an h5py ref-count error and a segmentation fault)."""
    import resource

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lbdt_cli", "segment", str(long_clip), "a circle", "-c", str(ckpt), "-o", str(out),
           "-f", fmt, "--save-probs", "--end", "40", "-q"]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    assert proc.returncode == 5, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "File too large" in lines[0], proc.stderr
    assert everything(out) == []


@pytest.mark.parametrize("where", ["h5", "png", "summary"])
def test_no_space_left_is_exit_5_and_nothing_left(run_cli, clips, ckpt, tmp_path, monkeypatch, where):
    import errno
    import pathlib

    from lbdt_cli.video import writers

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "h5":  # the disk fills up under HDF5's own writes
        real_init = writers._GuardedFile.__init__

        def init(self, path):
            real_init(self, path)
            raw, budget = self.f, [4000]

            class Filling:
                def __getattr__(self, name):
                    return getattr(raw, name)

                def write(self, data):
                    budget[0] -= len(data)
                    if budget[0] < 0:
                        no_space()
                    return raw.write(data)

            self.f = Filling()

        monkeypatch.setattr(writers._GuardedFile, "__init__", init)
    elif where == "png":
        monkeypatch.setattr(writers.PngWriter, "write", no_space)
    else:
        monkeypatch.setattr(pathlib.Path, "write_text", no_space)
    out = tmp_path / "out"
    res = run_cli("segment", clips["mp4"], "a circle", "-c", ckpt, "-o", out, "-f", "h5,png", "--save-probs", "-q")
    one_line_error(res, 5, "No space left on device")
    assert everything(out) == []


@pytest.mark.parametrize("flag, value, needle", [
    ("--size", "50", "--size"), ("--batch-size", "0", "--batch-size"), ("--threshold", "2", "--threshold"),
    ("--threshold", "nan", "--threshold"), ("--device", "banana", "--device"), ("--precision", "fp64", "--precision"),
    ("--format", ",", "--format"), ("--interval", "0", "--interval"), ("--stride", "0", "--stride"),
])  # fmt: skip
def test_flags_checked_before_outputs_and_model(run_cli, clips, ckpt, tmp_path, monkeypatch, flag, value, needle):
    import lbdt_cli.model.checkpoint as checkpoint
    from lbdt_cli.video import reader

    def heavy(*a, **k):
        raise AssertionError("loaded or probed before the flags were checked")

    monkeypatch.setattr(checkpoint, "read_checkpoint", heavy)
    monkeypatch.setattr(reader, "probe", heavy)
    (tmp_path / "out" / "h264").mkdir(parents=True)  # an existing output: the flag is still what is reported
    one_line_error(run_cli("segment", clips["mp4"], "a", "-c", ckpt, "-o", tmp_path / "out", flag, value), 2, needle)


# ------------------------------------------------------------------------------ say what you skipped


def test_clip_ending_early_is_reported(run_cli, ckpt, tmp_path):
    full = tmp_path / "full.mkv"
    subprocess.run([ffmpeg(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate={FPS}",
                    "-frames:v", "40", "-c:v", "ffv1", str(full)], check=True)  # fmt: skip
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])  # the header still says 40 frames (4 s)
    res = run_cli("segment", cut, "a circle", "-c", ckpt, "-o", tmp_path / "o", "-q")
    assert res.code == 0, res.stderr
    summary = json.loads((tmp_path / "o" / "cut" / "summary.json").read_text())
    assert 0 < summary["frames"] < 39
    note = f"decoded {summary['frames']} of 40 expected frames"
    assert note in res.stderr and any(note in w for w in summary["warnings"])
    # a whole clip says nothing
    res = run_cli("segment", full, "a circle", "-c", ckpt, "-o", tmp_path / "o2", "-q", "--end", "3")
    assert res.code == 0 and "warning" not in res.stderr, res.stderr


def test_attention_frames_not_segmented_are_reported(run_cli, clips, ckpt, tmp_path):
    res = run_cli("segment", clips["mp4"], "a circle", "-c", ckpt, "-o", tmp_path / "o", "-q",
                  "--attention-maps", "2,3,500", "--stride", "2")  # fmt: skip
    assert res.code == 0, res.stderr
    assert "--attention-maps: frame(s) 3, 500 not segmented" in res.stderr
    assert sorted(p.name for p in (tmp_path / "o" / "h264" / "attention").iterdir()) == ["000002_expr_00.png"]


def test_nan_weights_are_reported(run_cli, clips, tmp_path):
    import torch

    model = build_model("tiny")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    bad = tmp_path / "nan.pt"
    save_checkpoint(bad, model)
    res = run_cli("segment", clips["mp4"], "a circle", "-c", bad, "-o", tmp_path / "o", "--end", "3", "-q")
    assert res.code == 0, res.stderr
    assert "1 weight(s) are NaN or infinite" in res.stderr
    assert "the model's output was NaN on 3 of 3 frames" in res.stderr


def test_legend_stays_small_on_a_small_frame():
    import numpy as np

    from lbdt_cli.video.draw import draw_overlay

    H_, W_ = 120, 160
    rgb = np.full((H_, W_, 3), 128, np.uint8)
    masks = np.zeros((12, H_, W_), np.uint8)
    exprs = [f"the very long description number {i} of something moving across the frame" for i in range(12)]
    out = draw_overlay(rgb, masks, exprs)
    changed = (out != rgb).any(axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.max() < H_ / 3 + 2 and cols.max() < 0.6 * W_ + 2  # a corner, not most of the frame
    assert changed.mean() < 0.2
    tiny = np.full((8, 8, 3), 128, np.uint8)
    assert (draw_overlay(tiny, np.zeros((3, 8, 8), np.uint8), exprs[:3]) == tiny).all()  # no room: no legend


def test_pixel_aspect_and_colour_tags_are_kept(run_cli, ckpt, tmp_path):
    from lbdt_cli.video.reader import probe

    src = tmp_path / "anamorphic.mp4"
    subprocess.run([ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=128x96:rate=10", "-frames:v", "6",
                    "-vf", "setsar=128/117,scale=out_color_matrix=bt709:out_range=tv", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_range", "tv", str(src)], check=True)  # fmt: skip
    info = probe(src)
    assert info.sar is not None and info.color and info.color.get("space") == "bt709"
    res = run_cli("segment", src, "a circle", "-c", ckpt, "-o", tmp_path / "o", "-f", "overlay,mask-video", "-q")
    assert res.code == 0, res.stderr
    overlay = probe(tmp_path / "o" / "anamorphic" / "overlay.mp4")
    mask = probe(tmp_path / "o" / "anamorphic" / "expr_00" / "mask.mp4")
    assert overlay.sar == info.sar and mask.sar == info.sar
    assert overlay.color == info.color
    # an HDR-tagged source (BT.2020 primaries, PQ transfer) keeps all four tags
    hdr = tmp_path / "hdr.mp4"
    subprocess.run([ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "4",
                    "-vf", ("scale=out_color_matrix=bt2020:out_range=tv,"
                            "setparams=colorspace=bt2020nc:range=tv:color_primaries=bt2020:color_trc=smpte2084"),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(hdr)], check=True)  # fmt: skip
    info = probe(hdr)
    assert info.color == {"range": "tv", "space": "bt2020nc", "primaries": "bt2020", "trc": "smpte2084"}
    assert run_cli("segment", hdr, "a circle", "-c", ckpt, "-o", tmp_path / "h", "-f", "overlay", "-q").code == 0
    assert probe(tmp_path / "h" / "hdr" / "overlay.mp4").color == info.color


def _frame_times(path) -> list[float]:
    """Presentation times of a video's frames, read by ffmpeg itself (not through lbdt)."""
    import re

    log = subprocess.run([ffmpeg(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-vf", "showinfo=checksum=0",
                          "-f", "null", "-"], capture_output=True, text=True, check=False).stderr  # fmt: skip
    return [float(t) for t in re.findall(r"pts_time:(\S+)", log)]


@pytest.fixture(scope="session")
def vfr_clip(tmp_path_factory):
    """24 frames whose spacing changes: 40 ms, then two gaps of 120 and 240 ms (a phone's clip
    that slowed down), with an audio track; the frames' true times are returned with it."""
    path = tmp_path_factory.mktemp("vfr") / "phone.mp4"
    times = [n * 0.04 + (0.08 if n >= 10 else 0) + (0.2 if n >= 17 else 0) for n in range(24)]
    subprocess.run([ffmpeg(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-frames:v", "24",
                    "-vf", "settb=1/1000,setpts='N*40+if(gte(N,10),80,0)+if(gte(N,17),200,0)'", "-fps_mode", "passthrough",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)  # fmt: skip
    assert _frame_times(path) == pytest.approx(times, abs=1e-4)  # the clip is what it should be
    return path, times


def test_variable_frame_rate_keeps_the_source_times(run_cli, ckpt, tmp_path, vfr_clip):
    import h5py

    src, times = vfr_clip
    res = run_cli("segment", src, "a circle", "-c", ckpt, "-o", tmp_path / "o", "-f", "h5,overlay,mask-video", "-q")
    assert res.code == 0, res.stderr
    out = tmp_path / "o" / "phone"
    with h5py.File(out / "masks.h5") as f:
        assert list(f["frame_indices"][:]) == list(range(24))
        assert f["timestamps"][:] == pytest.approx(times, abs=1e-6)  # not index / average fps
    for video in (out / "overlay.mp4", out / "expr_00" / "mask.mp4"):
        assert _frame_times(video) == pytest.approx(times, abs=1e-3), video.name
    # a selection: every second frame from frame 9; the overlay starts at 0 with the audio cut there
    res = run_cli("segment", src, "a circle", "-c", ckpt, "-o", tmp_path / "s", "-f", "h5,overlay", "-q",
                  "--start", "9", "--stride", "2")  # fmt: skip
    assert res.code == 0, res.stderr
    picked = times[9::2]
    with h5py.File(tmp_path / "s" / "phone" / "masks.h5") as f:
        assert f["timestamps"][:] == pytest.approx(picked, abs=1e-6)
    assert _frame_times(tmp_path / "s" / "phone" / "overlay.mp4") == pytest.approx(
        [t - picked[0] for t in picked], abs=1e-3)
