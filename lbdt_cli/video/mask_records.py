"""`--json-lines`: one JSON object per processed frame, written to a stream as soon as its masks exist.

    {"frame": 12, "timestamp": 0.48, "latency_s": 0.061,
     "expressions": [{"index": 0, "text": "the dog", "area": 5120, "bbox": [x, y, w, h],
                      "rle": {"size": [H, W], "counts": "..."}}]}

`bbox` is COCO's [x, y, width, height] in pixels of the frame (null when the mask is empty);
`rle` is COCO's compressed run-length encoding (column-major), as `pycocotools.mask.encode`
writes it, with `counts` as an ASCII string: `pycocotools.mask.decode` gives the mask back.
"""

from __future__ import annotations

import json
import threading
from typing import IO, Sequence

import numpy as np

__all__ = ["mask_record", "JsonLinesWriter"]


def mask_record(index: int, timestamp: float, masks: np.ndarray, expressions: Sequence[str],
                latency_s: float | None = None) -> dict:  # fmt: skip
    """The JSON object of one frame: masks uint8 0/1 [E, H, W]."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    out = []
    for e, text in enumerate(expressions):
        area = int(areas[e])
        out.append({
            "index": e, "text": text, "area": area,
            "bbox": [int(v) for v in boxes[e]] if area else None,
            "rle": {"size": [int(s) for s in rles[e]["size"]], "counts": rles[e]["counts"].decode("ascii")},
        })  # fmt: skip
    record = {"frame": int(index), "timestamp": round(float(timestamp), 6)}
    if latency_s is not None:
        record["latency_s"] = round(float(latency_s), 4)
    record["expressions"] = out
    return record


class JsonLinesWriter:
    """Writes records to a text stream, one line each, flushed at once (thread-safe)."""

    def __init__(self, stream: IO[str], expressions: Sequence[str]) -> None:
        self.stream = stream
        self.expressions = list(expressions)
        self.lines = 0
        self._lock = threading.Lock()

    def write(self, index: int, timestamp: float, masks: np.ndarray, latency_s: float | None = None) -> None:
        line = json.dumps(mask_record(index, timestamp, masks, self.expressions, latency_s), separators=(",", ":"))
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except BrokenPipeError:
                from lbdt_cli.errors import OutputError

                raise OutputError("--json-lines: the program reading standard output went away") from None
            self.lines += 1
