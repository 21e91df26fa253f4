"""Where the bundled demo checkpoint lives."""

from __future__ import annotations

from pathlib import Path

DEMO_CHECKPOINT = "lbdt_shapes_demo.pt"


def default_checkpoint() -> Path | None:
    """`weights/lbdt_shapes_demo.pt` of the repository this package runs from (an editable
    install), else of the current folder; None when neither exists."""
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        path = base / "weights" / DEMO_CHECKPOINT
        if path.is_file():
            return path
    return None
