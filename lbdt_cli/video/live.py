"""Segmenting a live source as it arrives, with bounded latency.

    source thread: ffmpeg ──► every frame, as it arrives, with its previous frame (t - δ) attached
        ──► backlog ──► main thread: FrameScheduler picks what runs now (skips late frames with
        --max-latency) ──► model ──► masks ──► --json-lines at once ──► writer thread: files

The source is drained continuously, so a frame's arrival time is when it really reached us,
however slow the model is. Each frame takes a reference to its previous frame when it arrives,
so skipping a frame never takes away the frame difference of a later one. Without a latency
bound the backlog holds at most `backlog_frames` frames (then the source is made to wait, and
latency grows); with a bound, frames beyond it are skipped.

The run ends when the source ends (after `--reconnect` attempts), on Ctrl-C or SIGTERM (a second
Ctrl-C stops at once), or on an error; the outputs are finalised in every case, and
`LiveResult.ended` says which.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lbdt_cli.model.preprocess import previous_frame_index
from lbdt_cli.video.latency import FrameScheduler, LatencyStats
from lbdt_cli.video.live_source import RECONNECTED, LiveFrame, LiveSource

__all__ = ["LiveResult", "LiveRun", "DEFAULT_BACKLOG_BYTES"]

DEFAULT_BACKLOG_BYTES = 512 * 2**20  # raw frames waiting for the model, when nothing is skipped
_END = object()


@dataclass
class LiveResult:
    ended: str = "end_of_stream"  # end_of_stream, disconnected, source_error, interrupted, terminated, hangup, error
    ended_detail: str = ""
    frames_received: int = 0
    frames: int = 0  # processed
    skipped: int = 0
    reconnects: int = 0
    latency: LatencyStats = field(default_factory=LatencyStats)
    time_s: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "ended": self.ended, "ended_detail": self.ended_detail, "frames_received": self.frames_received,
            "frames_processed": self.frames, "skipped_frames": self.skipped, "reconnects": self.reconnects,
            "latency_s": self.latency.summary(),
        }  # fmt: skip


class _Backlog(threading.Thread):
    """Reads the source without pause; queues (frame, previous frame) pairs for the model."""

    def __init__(self, source: LiveSource, interval: int, max_frames: int, drop_oldest: bool) -> None:
        super().__init__(daemon=True, name="lbdt-live-source")
        self.source, self.interval = source, interval
        self.max_frames, self.drop_oldest = max(1, max_frames), drop_oldest
        self.items: collections.deque[tuple[LiveFrame, LiveFrame]] = collections.deque()
        self.cond = threading.Condition()
        self.done = False
        self.dropped = 0  # frames dropped because the backlog was full (counted as skipped)
        self.error: BaseException | None = None
        self.discard = False

    def run(self) -> None:
        window: collections.OrderedDict[int, LiveFrame] = collections.OrderedDict()
        first = None
        try:
            for frame in self.source.frames():
                if frame is RECONNECTED:  # no frame difference across the gap
                    window.clear()
                    first = None
                    continue
                if first is None:
                    first = frame.index
                window[frame.index] = frame
                while next(iter(window)) < frame.index - self.interval:
                    window.popitem(last=False)
                prev = window.get(previous_frame_index(frame.index, self.interval, first))
                if prev is None:
                    prev = next(iter(window.values()))  # oldest kept
                with self.cond:
                    while len(self.items) >= self.max_frames and not self.discard:
                        if self.drop_oldest:
                            self.items.popleft()
                            self.dropped += 1
                        else:
                            self.cond.wait(0.1)  # the model is behind: the source waits
                    self.items.append((frame, prev))
                    self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()


class LiveRun:
    """One live source through a Predictor into `outputs` (and `json_lines`), until it ends.

    `outputs` takes `write(frame, probs, masks)`, `skip(frame)` and `progress(result)` (called on
    the writer thread, in frame order); `json_lines.write(index, timestamp, masks, latency)` runs
    on the main thread as soon as a frame's masks exist.
    """

    def __init__(self, predictor, text, num_expressions: int, threshold: float, source: LiveSource, *,
                 max_latency: float | None = None, json_lines=None, outputs=None,
                 on_frame: Callable[[LiveResult], None] | None = None,
                 backlog_bytes: int = DEFAULT_BACKLOG_BYTES, handle_signals: bool = True) -> None:  # fmt: skip
        self.predictor, self.text = predictor, text
        self.num_expr, self.threshold = num_expressions, threshold
        self.source = source
        self.json_lines, self.outputs = json_lines, outputs
        self.on_frame = on_frame
        self.frames_per_batch = max(1, -(-predictor.batch_size // num_expressions))
        self.scheduler = FrameScheduler(max_latency, self.frames_per_batch)
        self.max_latency = max_latency
        self.backlog_bytes = backlog_bytes
        self.handle_signals = handle_signals
        self.result = LiveResult()
        self._stop_reason: str | None = None

    # ------------------------------------------------------------------ signals

    def stop(self, reason: str = "interrupted") -> None:
        self._stop_reason = self._stop_reason or reason
        self.source.stop(reason)

    @contextlib.contextmanager
    def _signals(self):
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        reasons = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
        if hasattr(signal, "SIGHUP"):
            reasons[signal.SIGHUP] = "hangup"

        def handler(signum, _frame) -> None:
            if signum == signal.SIGINT and self._stop_reason is not None:
                raise KeyboardInterrupt  # second Ctrl-C: stop now
            self.stop(reasons[signum])

        old = {s: signal.signal(s, handler) for s in reasons}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ run

    def run(self) -> LiveResult:
        info = self.source.info
        assert info is not None, "open the source first"
        frame_bytes = max(1, info.width * info.height * 3)
        backlog = _Backlog(self.source, self.predictor.interval,
                           max(4 * self.frames_per_batch, self.backlog_bytes // frame_bytes),
                           drop_oldest=self.max_latency is not None)  # fmt: skip
        res = self.result
        writes: queue.Queue = queue.Queue(maxsize=16)
        errors: list[BaseException] = []
        encode_s = [0.0]

        def write_loop() -> None:
            while True:
                item = writes.get()
                if item is _END:
                    return
                if errors or self.outputs is None:
                    continue
                t0 = time.perf_counter()
                try:
                    if item[0] == "frame":
                        self.outputs.write(item[1], item[2], item[3])
                    else:
                        self.outputs.skip(item[1])
                    self.outputs.progress(res.as_dict)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                    errors.append(exc)
                    self.stop("error")
                encode_s[0] += time.perf_counter() - t0

        writer = threading.Thread(target=write_loop, daemon=True, name="lbdt-live-writer")
        t_start = time.perf_counter()
        model_s = 0.0
        cache: collections.OrderedDict[int, object] = collections.OrderedDict()  # index -> preprocessed

        def prepared(frame: LiveFrame):
            x = cache.get(frame.index)
            if x is None:
                x = cache[frame.index] = self.predictor.preprocess(frame.rgb)
                while len(cache) > 2 * (self.predictor.interval + self.frames_per_batch):
                    cache.popitem(last=False)
            return x

        with self._signals():
            writer.start()
            backlog.start()
            try:
                while not errors:
                    with backlog.cond:
                        while not backlog.items and not backlog.done:
                            backlog.cond.wait(0.1)
                        if self._stop_reason is not None:
                            backlog.discard = True
                            backlog.items.clear()
                            backlog.cond.notify_all()
                        if not backlog.items:
                            if backlog.done:
                                break
                            continue
                        skip, take = self.scheduler.plan([f.arrival for f, _ in backlog.items], time.perf_counter())
                        skipped = [backlog.items.popleft()[0] for _ in range(skip)]
                        batch = [backlog.items.popleft() for _ in range(take)]
                        backlog.cond.notify_all()
                    res.skipped += len(skipped)
                    for f in skipped:
                        writes.put(("skip", f))
                    if not batch:
                        continue
                    t0 = time.perf_counter()
                    preds = self.predictor.predict_batch([(f, prepared(f), prepared(p)) for f, p in batch], self.text)
                    model_s += time.perf_counter() - t0
                    late = 0
                    for pred in preds:
                        masks = (pred.probs > self.threshold).astype(np.uint8)
                        latency = time.perf_counter() - pred.frame.arrival
                        late += self.max_latency is not None and latency > self.max_latency
                        res.latency.add(latency)
                        res.frames += 1
                        if self.json_lines is not None:
                            self.json_lines.write(pred.frame.index, pred.frame.timestamp_s, masks, latency)
                        writes.put(("frame", pred.frame, pred.probs, masks))
                        if self.on_frame is not None:
                            self.on_frame(res)
                    self.scheduler.observe(len(batch), time.perf_counter() - t0, late)
            except BaseException:
                self.stop("error")
                raise
            finally:
                if not backlog.done:
                    self.source.stop(self._stop_reason or "stopped")
                with backlog.cond:
                    backlog.discard = True
                    backlog.cond.notify_all()
                backlog.join(timeout=10)
                writes.put(_END)
                writer.join()
                res.skipped += backlog.dropped
                res.frames_received = self.source.frames_read
                res.reconnects = self.source.reconnects
                res.ended = self._stop_reason or self.source.ended or "end_of_stream"
                res.ended_detail = self.source.ended_detail if res.ended in ("source_error", "disconnected") else ""
                res.time_s = {"model_s": round(model_s, 4), "encode_s": round(encode_s[0], 4),
                              "total_s": round(time.perf_counter() - t_start, 4)}  # fmt: skip
        if errors:
            raise errors[0]
        if backlog.error is not None and not isinstance(backlog.error, (KeyboardInterrupt,)):
            raise backlog.error
        return res
