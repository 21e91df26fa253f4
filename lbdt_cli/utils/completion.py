"""The completion marker of an output folder, for `--skip-existing`.

The marker is the last file written into the temporary folder before it is renamed into place, and
it records what was asked (inputs, expressions, formats, options). A folder counts as done only
when its marker is there and matches the request exactly: a folder from an interrupted run never
has one (it never got its final name), and one made with other settings does not match.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["MARKER", "write_marker", "is_complete"]

MARKER = "complete.json"


def _canonical(request: dict) -> dict:
    return json.loads(json.dumps(request, sort_keys=True, default=str))


def write_marker(folder: str | os.PathLike, request: dict) -> None:
    with open(Path(folder) / MARKER, "w") as f:
        json.dump(_canonical(request), f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def is_complete(folder: str | os.PathLike, request: dict) -> bool:
    """True when `folder` holds a marker equal to `request`."""
    try:
        with open(Path(folder) / MARKER) as f:
            return json.load(f) == _canonical(request)
    except (OSError, ValueError):
        return False
