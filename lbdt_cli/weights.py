"""The bundled demo checkpoint: the one place that knows where it lives and when it is the default."""

from __future__ import annotations

import os
from pathlib import Path

from lbdt_cli.errors import CheckpointError

DEMO_CHECKPOINT = "lbdt_shapes_demo.pt"


def default_checkpoint() -> Path | None:
    """`weights/lbdt_shapes_demo.pt` of the repository this package runs from (an editable
    install), else of the current folder; None when neither exists."""
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        path = base / "weights" / DEMO_CHECKPOINT
        if path.is_file():
            return path
    return None


def checkpoint_or_default(path: str | os.PathLike | None) -> Path:
    """`path`, or the demo checkpoint when none is given (it was trained on Moving Shapes, so it is
    the default of `segment` and of `eval --dataset shapes`). CheckpointError when there is none."""
    if path is not None:
        return Path(path)
    demo = default_checkpoint()
    if demo is None:
        raise CheckpointError(f"no --checkpoint given and the demo checkpoint weights/{DEMO_CHECKPOINT} "
                              "is not there; pass --checkpoint PATH")
    return demo
