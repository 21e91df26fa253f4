"""Live sources: frames as they arrive from loopback HTTP and pipes, the latency bound, --json-lines.

Every source is made here: ffmpeg serving a clip at real-time rate on 127.0.0.1, a Python HTTP
server trickling a file (and hanging up mid-way), a pipe standing in for standard input.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lbdt_cli.video.latency import FrameScheduler, LatencyStats
from lbdt_cli.video.live import LiveRun
from lbdt_cli.video.live_source import LiveSource, is_live_source, live_output_name
from lbdt_cli.video.mask_records import JsonLinesWriter, mask_record
from live_sources import TrickleServer, ffmpeg_http_server, live_clip

DEMO = Path(__file__).resolve().parents[1] / "weights" / "lbdt_shapes_demo.pt"
EXPRS = ["the shape moving right", "the still yellow circle"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return live_clip(tmp_path_factory.mktemp("live") / "shapes_live.mkv")


@pytest.fixture(scope="module")
def segmenter():
    from lbdt_cli.video.pipeline import Segmenter

    seg = Segmenter(DEMO, batch_size=1)
    seg.set_expressions(EXPRS)
    return seg


class Collect:
    """Stands in for the file outputs: keeps masks by frame and when each arrived."""

    def __init__(self) -> None:
        self.masks: dict[int, np.ndarray] = {}
        self.skipped: list[int] = []

    def write(self, frame, probs, masks) -> None:
        self.masks[frame.index] = masks

    def skip(self, frame) -> None:
        self.skipped.append(frame.index)

    def progress(self, result) -> None:
        pass


def live_run(seg, source, **kw) -> tuple[LiveRun, Collect]:
    out = Collect()
    source.open()
    run = LiveRun(seg.predictor, seg.text, len(seg.expressions), seg.threshold, source, outputs=out,
                  handle_signals=False, **kw)  # fmt: skip
    run.run()
    return run, out


# ---------------------------------------------------------------------------------------------


def test_source_names():
    for arg in ("-", "rtsp://cam/stream1", "http://127.0.0.1:8000/a.mkv", "srt://host:9000", "udp://@:1234",
                "/dev/video0", "RTMP://host/live/key"):  # fmt: skip
        assert is_live_source(arg), arg
    for arg in ("clip.mp4", "frames/", "the dog", "http-notes.mp4", "file:///x.mp4"):
        assert not is_live_source(arg), arg
    assert live_output_name("-") == "stdin"
    assert live_output_name("/dev/video2") == "video2"
    assert live_output_name("rtsp://cam.local:554/live/stream1?token=a") == "stream1"
    assert live_output_name("udp://@:1234") == "udp"


def test_scheduler_skips_only_what_would_be_late():
    s = FrameScheduler(None, batch_frames=4)
    assert s.plan([0.0] * 10, now=100.0) == (0, 4)  # no bound: everything runs, oldest first
    s = FrameScheduler(1.0, batch_frames=4)
    assert s.plan([0.0, 0.1], now=0.2) == (0, 2)  # no cost known yet
    s.observe(2, 0.5)  # 0.25 s per frame
    # bound 1.0 with a 10% margin: frame 0 cannot finish by 0.0 + 0.9 when now = 0.8; frame 0.5
    # can, in a batch of two (0.8 + 0.5 <= 1.4) but not of three (0.8 + 0.75 > 1.4)
    assert s.plan([0.0, 0.5, 0.55, 0.6], now=0.8) == (1, 2)
    assert s.plan([0.6], now=1.3) == (1, 0)  # all late: skip, wait for the next frame
    assert s.plan([1.0, 1.01, 1.02], now=1.05) == (0, 3)  # 1.05 + 0.75 <= 1.9
    assert s.skipped == 2
    s.observe(1, 0.25, late=1)  # a batch ended over the bound anyway: the estimate grows by 1.25
    assert s.cost(2) == pytest.approx(2 * 0.25 * 1.25)
    assert s.plan([1.8, 1.85], now=2.1) == (0, 1)  # 2.1 + 0.625 > 2.7 (was 0.5: two would run)
    slow = FrameScheduler(0.1, batch_frames=2)
    slow.observe(1, 0.5)  # the model alone is slower than the bound: the newest still runs
    assert slow.plan([0.0, 0.1, 0.2], now=0.3) == (2, 1)
    stats = LatencyStats()
    for v in (0.1, 0.2, 0.3, 0.4):
        stats.add(v)
    summary = stats.summary()
    assert summary["median_s"] == 0.25 and summary["max_s"] == 0.4 and summary["frames"] == 4


def test_mask_record_is_coco_rle():
    from pycocotools import mask as mask_utils

    masks = np.zeros((2, 48, 64), np.uint8)
    masks[0, 10:20, 5:30] = 1
    masks[0, 40, 63] = 1
    rec = mask_record(7, 0.7, masks, ["a", "b"], latency_s=0.0123)
    line = json.loads(json.dumps(rec))
    assert line["frame"] == 7 and line["timestamp"] == 0.7 and line["latency_s"] == 0.0123
    e0, e1 = line["expressions"]
    assert e0["area"] == 251 and e0["bbox"] == [5, 10, 59, 31]
    rle = {"size": e0["rle"]["size"], "counts": e0["rle"]["counts"].encode()}
    assert np.array_equal(mask_utils.decode(rle), masks[0])
    assert e1["area"] == 0 and e1["bbox"] is None and e1["text"] == "b"
    buf = io.StringIO()
    JsonLinesWriter(buf, ["a", "b"]).write(7, 0.7, masks)
    assert json.loads(buf.getvalue())["expressions"][0]["rle"] == e0["rle"]


def test_cli_http_real_time_source_gives_the_file_masks(clip, tmp_path, run_cli):
    """ffmpeg -re serving the clip on 127.0.0.1: every frame processed, masks equal the file's,
    one JSON line per frame with the source's timestamps, the summary says how it ended."""
    import h5py

    common = [*EXPRS, "--checkpoint", DEMO, "--batch-size", 1, "--overwrite"]
    r = run_cli("segment", clip, *common, "-o", tmp_path / "file", "-f", "h5", "--quiet", "--json-lines")
    assert r.code == 0, r.stderr
    from_file = [json.loads(ln) for ln in r.stdout.splitlines()]  # --json-lines works on files too
    url, server = ffmpeg_http_server(clip)
    try:
        r = run_cli("segment", url, *common, "-o", tmp_path / "live", "-f", "h5,png,overlay", "--json-lines")
    finally:
        server.kill()
        server.wait()
    assert r.code == 0, r.stderr
    live = tmp_path / "live" / clip.stem
    with h5py.File(tmp_path / "file" / clip.stem / "masks.h5") as f, h5py.File(live / "masks.h5") as g:
        assert g["masks"].shape == f["masks"].shape == (2, 30, 48, 64)
        assert np.array_equal(g["masks"][:], f["masks"][:])
        assert np.array_equal(g["frame_indices"][:], np.arange(30))
        assert np.allclose(g["timestamps"][:], np.arange(30) / 10)
    records = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [x["frame"] for x in records] == list(range(30))
    assert [x["timestamp"] for x in records] == pytest.approx([i / 10 for i in range(30)])
    assert [x["expressions"] for x in records] == [x["expressions"] for x in from_file]
    assert all("latency_s" in x for x in records) and not any("latency_s" in x for x in from_file)
    summary = json.loads((live / "summary.json").read_text())
    assert summary["in_progress"] is False and summary["ended"] == "end_of_stream"
    assert summary["frames"] == summary["frames_received"] == 30 and summary["skipped_frames"] == 0
    assert 0 < summary["latency_s"]["median_s"] <= summary["latency_s"]["p95_s"] <= summary["latency_s"]["max_s"]
    assert json.loads((live / "manifest.json").read_text())["in_progress"] is False
    assert frame_count(live / "overlay.mp4") == 30
    assert len(list((live / "expr_01" / "masks").glob("*.png"))) == 30
    assert not [p for p in live.rglob(".*")]  # no temporary files left


def frame_count(video: Path) -> int:
    from lbdt_cli.video.reader import count_frames

    return count_frames(video)


def test_pipe_source_and_max_latency_with_a_slow_model(segmenter, clip, monkeypatch):
    """A pipe fed at 10 fps; the model takes 0.15 s a frame. Unbounded, latency grows; with
    --max-latency 0.4, frames are skipped and p95 stays under 0.4 s."""
    data = clip.read_bytes()
    pred = segmenter.predictor
    real = pred.predict_batch

    def slow(batch, *a, **k):
        time.sleep(0.15 * len(batch))
        return real(batch, *a, **k)

    monkeypatch.setattr(pred, "predict_batch", slow)

    def feed(fd: int) -> None:  # ~3 s of clip, in 30 pieces
        step = -(-len(data) // 30)
        try:
            for k in range(0, len(data), step):
                os.write(fd, data[k : k + step])
                time.sleep(0.1)
        finally:
            os.close(fd)

    results = {}
    for bound in (None, 0.4):
        r, w = os.pipe()
        t = threading.Thread(target=feed, args=(w,), daemon=True)
        t.start()
        try:
            run, out = live_run(segmenter, LiveSource("-", stdin_fd=r), max_latency=bound)
        finally:
            t.join()
            os.close(r)
        results[bound] = (run.result, out)
    unbounded, _ = results[None]
    bounded, out = results[0.4]
    assert unbounded.skipped == 0 and unbounded.frames == 30
    assert unbounded.latency.summary()["p95_s"] > 0.8  # the bound below is not met by chance
    assert bounded.skipped > 0 and bounded.frames + bounded.skipped == 30
    assert bounded.latency.summary()["p95_s"] < 0.4, bounded.latency.values
    assert sorted(out.skipped) == sorted(set(range(30)) - set(out.masks))


def test_source_that_stops_mid_way_then_reconnects(segmenter, clip):
    data = clip.read_bytes()
    # hangs up after half the clip: without --reconnect that is the end of the stream
    with TrickleServer(data, seconds=1.0, stop_after=0.5) as server:
        run, out = live_run(segmenter, LiveSource(server.url))
    assert run.result.ended == "end_of_stream" and 5 < run.result.frames < 30
    # with --reconnect the second connection serves the whole clip; frames keep counting up
    with TrickleServer(data, seconds=1.0, stop_after=0.5) as server:
        t0 = time.monotonic()
        run, out = live_run(segmenter, LiveSource(server.url, reconnect_s=1.5))
        assert server.clients >= 3  # the third and later were refused
        assert time.monotonic() - t0 < 10
    res = run.result
    assert res.reconnects == 1 and res.frames > 30 and sorted(out.masks) == list(range(res.frames))
    # after the second connection the server refuses: retries for --reconnect seconds, then ends
    assert res.ended == "disconnected"


def test_cli_stdin_json_lines_while_sending_and_sigterm_finalises(clip, tmp_path):
    """`lbdt segment -` fed through a pipe at 10 fps: JSON lines come out while the source is still
    sending, the files are readable while they grow, and SIGTERM ends the run with every file
    finalised and the summary saying so."""
    import signal
    import subprocess
    import sys

    import h5py

    # a 30 s stream, fed at about its real rate; the test stops it long before its end
    data = live_clip(tmp_path / "long.mkv", frames=300).read_bytes()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbdt_cli", "segment", "-", *EXPRS, "--checkpoint", str(DEMO), "-o", str(out),
         "-f", "h5,mask-video,overlay", "--json-lines", "--quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    sent = {"last": None}

    def feed() -> None:
        step = -(-len(data) // 300)
        try:
            for k in range(0, len(data), step):
                proc.stdin.write(data[k : k + step])
                proc.stdin.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ValueError):
            pass
        sent["last"] = time.monotonic()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    lines = []
    while len(lines) < 15:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        lines.append((time.monotonic(), json.loads(line)))
    assert sent["last"] is None  # 15 masks out, the source still sending
    folder = out / "stdin"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["in_progress"] is True
    # readable while it grows; the writer thread trails the JSON lines, so wait for its first flush
    deadline, frames_on_disk = time.monotonic() + 20, 0
    while frames_on_disk < 1 and time.monotonic() < deadline:
        with h5py.File(folder / "masks.h5", "r", swmr=True) as f:
            assert f["masks"].shape[0] == 2
            frames_on_disk = f["masks"].shape[1]
        time.sleep(0.1)
    assert frames_on_disk >= 1
    assert sent["last"] is None  # still growing: the source is still sending
    proc.send_signal(signal.SIGTERM)
    # read through the same buffered reader as above: communicate() reads the raw pipe and
    # would lose lines readline() has already buffered
    rest = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    feeder.join(timeout=5)
    assert proc.returncode == 143, err.decode()
    records = [r for _, r in lines] + [json.loads(ln) for ln in rest.decode().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(records)))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["in_progress"] is False and summary["ended"] == "terminated"
    assert summary["frames"] == len(records) < 300
    with h5py.File(folder / "masks.h5") as f:
        assert f["masks"].shape[1] == len(records)
        assert np.array_equal(f["frame_indices"][:], np.arange(len(records)))
    assert frame_count(folder / "overlay.mp4") == len(records)
    assert frame_count(folder / "expr_00" / "mask.mp4") == len(records)


def test_cli_benchmark_on_a_live_source(clip, tmp_path, run_cli):
    with TrickleServer(clip.read_bytes(), seconds=1.0, max_clients=1) as server:
        r = run_cli("segment", server.url, EXPRS[0], "--checkpoint", DEMO, "--benchmark", "--json",
                    "-o", tmp_path / "out")  # fmt: skip
    assert r.code == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["frames"] == b["frames_received"] == 30 and b["ended"] == "end_of_stream"
    assert 0 < b["latency_s"]["median_s"] <= b["latency_s"]["max_s"]
    assert b["baseline_s"]["frames"] >= 3 and 0 < b["baseline_s"]["median_s"] <= b["baseline_s"]["max_s"]
    assert not (tmp_path / "out").exists()  # the benchmark writes nothing
