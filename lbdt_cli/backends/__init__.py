"""Deployment runtimes behind the engine's model seam.

An export folder (written by `lbdt export`, see `lbdt_cli.backends.export`) holds the vision part
of LBDT as an ONNX, OpenVINO or TorchScript graph, plus the text side's weights in PyTorch.
`load_model(path)` gives either the PyTorch LBDT module or an `ExportedModel`; both answer the
calls `lbdt_cli.engine.Predictor` makes (`config`, `encode_text`, `forward_with_text`), so
`segment`, `eval` and the benchmarks run either through the same engine.
"""

from __future__ import annotations

import os
from pathlib import Path

from lbdt_cli.errors import LbdtError

__all__ = ["FORMATS", "EXTRAS", "MANIFEST", "is_export", "load_model", "require_runtime"]

FORMATS = ("onnx", "openvino", "torchscript")
MANIFEST = "export.json"
# The Python modules each format needs and the pip extra that brings them.
EXTRAS = {
    "onnx": (("onnx", "onnxscript", "onnxruntime"), "onnx"),
    "openvino": (("onnx", "onnxscript", "openvino"), "openvino"),
    "torchscript": ((), None),
}
INT8_MODULES = ("nncf", "onnxruntime")  # NNCF quantises the ONNX graph, collecting statistics with ONNX Runtime


def require_runtime(fmt: str, int8: bool = False, export: bool = True) -> None:
    """LbdtError naming the extra to install when a runtime this format needs is missing.

    `export=False` checks only what running an exported model needs (no exporter, no NNCF)."""
    import importlib.util

    if fmt not in FORMATS:
        raise LbdtError(f"unknown --format {fmt!r} (use {', '.join(FORMATS)})")
    modules, extra = EXTRAS[fmt]
    if not export:
        modules = {"onnx": ("onnxruntime",), "openvino": ("openvino",)}.get(fmt, ())
    if int8 and export:
        modules = (*modules, *INT8_MODULES)
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extra = extra or "onnx"
        raise LbdtError(f"--format {fmt}{' --int8' if int8 else ''} needs {', '.join(missing)}: "
                        f"pip install 'lbdt-cli[{extra}]'")


def is_export(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def load_model(path: str | os.PathLike, map_location: str = "cpu"):
    """The model a `--checkpoint` names: our/the authors' checkpoint file, or an export folder."""
    if is_export(path):
        from lbdt_cli.backends.runtime import ExportedModel

        return ExportedModel.load(path)
    from lbdt_cli.model import load_checkpoint

    return load_checkpoint(path, map_location=map_location)
