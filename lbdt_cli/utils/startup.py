"""Start-up timing: time to first mask counts from the process's start (interpreter start-up and
imports included), not from `main()`.

    mark("checkpoint_loaded")        # at each milestone, in order
    report()                         # {"time_to_first_mask_s": ..., "phases_s": {...}}

Each mark stores the process's age at that moment; `report()` turns consecutive marks into
phase durations. Linux reads the start time from /proc (10 ms resolution); elsewhere the clock
starts when this module is first imported.
"""

from __future__ import annotations

import os
import time

__all__ = ["process_age_s", "mark", "marks", "report", "reset"]


def _age_from_proc() -> float | None:
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


_age_at_import = _age_from_proc()
_ORIGIN = time.perf_counter() - (_age_at_import or 0.0)  # perf_counter() at the process's start
_MARKS: dict[str, float] = {}


def process_age_s() -> float:
    """Seconds since this process started."""
    return time.perf_counter() - _ORIGIN


def mark(name: str) -> float:
    """Record that `name` was reached now (the first time only); returns the process's age."""
    return _MARKS.setdefault(name, process_age_s())


def marks() -> dict[str, float]:
    return dict(_MARKS)


def reset() -> None:
    _MARKS.clear()


def report() -> dict:
    """Phase durations between consecutive marks (the first from the process's start) and the age
    at the first mask, if reached."""
    phases, before = {}, 0.0
    for name, at in sorted(_MARKS.items(), key=lambda kv: kv[1]):
        phases[name] = round(at - before, 3)
        before = at
    first = _MARKS.get("first_mask")
    return {"time_to_first_mask_s": round(first, 3) if first is not None else None, "phases_s": phases,
            "clock": "process start" if _age_at_import is not None else "first lbdt import"}
