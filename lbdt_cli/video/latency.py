"""Latency on a live source: which waiting frames to run now, which to skip, and the statistics.

A frame's latency is the time from its arrival (decoded frame read from ffmpeg) to its mask
(thresholded, before the writers). Frames waiting for the model are taken in arrival order,
as many as are waiting (up to the batch size): a batch is never held back to fill up, so when
the model keeps up, each frame runs alone as soon as it arrives.

With a bound (`--max-latency L`), `FrameScheduler.plan` skips a waiting frame when even a batch
of one would finish after its deadline (arrival + L), and shrinks the batch until its oldest
frame would finish in time. The cost of a batch of n frames is estimated as n times the slowest
per-frame cost of the last few batches (batches amortise fixed costs, so this errs on the safe
side), and the bound is aimed at with a 10% margin. When a batch still ends late (the machine's
load swings), the estimate is scaled up by 1.25 (at most 4×), and eased back by 2% per batch that
ends in time. Skipping a frame only skips its model run: it stays available as the previous
frame of the frame δ later (the caller keeps it).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["FrameScheduler", "LatencyStats"]


@dataclass
class LatencyStats:
    """Arrival -> mask latencies in seconds; `summary()` gives median, p95 and max."""

    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(float(seconds))

    def __len__(self) -> int:
        return len(self.values)

    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    def summary(self) -> dict:
        if not self.values:
            return {"frames": 0, "median_s": None, "p95_s": None, "max_s": None, "mean_s": None}
        v = np.asarray(self.values)
        return {
            "frames": int(v.size),
            "median_s": round(float(np.median(v)), 4),
            "p95_s": round(float(np.percentile(v, 95)), 4),
            "max_s": round(float(v.max()), 4),
            "mean_s": round(float(v.mean()), 4),
        }


class FrameScheduler:
    """Picks the next batch from the frames waiting; skips frames that cannot meet the bound."""

    def __init__(self, max_latency: float | None, batch_frames: int, history: int = 6, margin: float = 0.1) -> None:
        if max_latency is not None and max_latency <= 0:
            from lbdt_cli.errors import LbdtError

            raise LbdtError(f"--max-latency must be > 0 seconds, got {max_latency}")
        self.max_latency = max_latency
        self.batch_frames = max(1, int(batch_frames))
        self.margin = margin
        self._per_frame: collections.deque[float] = collections.deque(maxlen=history)
        self.safety = 1.0  # grows when batches end late anyway
        self.skipped = 0

    def observe(self, frames: int, seconds: float, late: int = 0) -> None:
        """A batch of `frames` took `seconds` from being picked to its masks being handed on;
        `late` of its frames ended over the bound."""
        if frames > 0:
            self._per_frame.append(seconds / frames)
        if self.max_latency is not None:
            self.safety = min(self.safety * 1.25, 4.0) if late else max(1.0, self.safety * 0.98)

    def cost(self, n: int) -> float:
        """Estimated seconds for a batch of n frames (0 before the first batch)."""
        return n * max(self._per_frame, default=0.0) * self.safety

    def plan(self, arrivals: Sequence[float], now: float) -> tuple[int, int]:
        """(skip, take): skip the `skip` oldest waiting frames, then run the next `take` frames
        (take is 0 when every waiting frame is late and the next arrival can still be on time)."""
        waiting = len(arrivals)
        if waiting == 0:
            return 0, 0
        if self.max_latency is None:
            return 0, min(waiting, self.batch_frames)
        bound = self.max_latency * (1.0 - self.margin)
        skip = 0
        while skip < waiting and now + self.cost(1) > arrivals[skip] + bound:
            skip += 1
        if skip == waiting:
            if self.cost(1) <= bound:  # all late: skip them and wait for the next frame
                self.skipped += skip
                return skip, 0
            # The model alone is slower than the bound: run the newest so the output keeps moving.
            self.skipped += skip - 1
            return skip - 1, 1
        take = min(waiting - skip, self.batch_frames)
        while take > 1 and now + self.cost(take) > arrivals[skip] + bound:
            take -= 1
        self.skipped += skip
        return skip, take
