"""`lbdt export`: a checkpoint to an ONNX / OpenVINO / TorchScript folder that `segment` and `eval`
run with `--checkpoint OUT` (see docs/export.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from lbdt_cli.errors import LbdtError

err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command("export", epilog="Exit codes: 0 ok, 2 bad argument or missing runtime, 3 bad calibration "
                                  "input, 4 bad checkpoint, 5 output exists/unwritable.")  # fmt: skip
    def export(
        checkpoint: Path = typer.Argument(..., help="Checkpoint to export (ours or the authors' LBDT-1/4)."),
        fmt: str = typer.Option(..., "--format", help="onnx, openvino or torchscript."),
        output: Path = typer.Option(..., "--output", "-o", help="Export folder to write."),
        int8: bool = typer.Option(False, "--int8", help="Quantise to int8 with NNCF (onnx, openvino)."),
        calibrate: Optional[List[str]] = typer.Option(None, "--calibrate", help="Calibration data for --int8 "
            "(repeatable): a clip, a frame folder, a make-shapes folder, or 'shapes' (generated clips). "
            "Default: generated shapes clips of the train split."),
        expression: Optional[List[str]] = typer.Option(None, "--expression", "-e",
            help="Sentences for calibration clips (repeatable)."),
        keep_fp: Optional[str] = typer.Option(None, "--keep-fp", help="With --int8: comma list of module "
            "paths (fnmatch patterns) left in float; default: the measured choice in docs/export.md; '' for none."),
        calibration_samples: int = typer.Option(16, "--calibration-samples", help="(frame, expression) pairs "
            "for int8 calibration."),
        parity_samples: int = typer.Option(16, "--parity-samples", help="(frame, expression) pairs of generated "
            "shapes clips (val split) for the parity report."),
        precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 (OpenVINO: inference precision "
            "hint; on CPUs with bf16 OpenVINO would pick bf16 by itself, so fp32 is asked for explicitly)."),
        glove: Optional[Path] = typer.Option(None, "--glove", help="GloVe file (GloVe models: real sentences for "
            "calibration and parity; without it random word vectors are used)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    ) -> None:  # fmt: skip
        """Export a checkpoint to a folder `segment`/`eval` run with --checkpoint OUT."""
        from lbdt_cli.backends import require_runtime

        require_runtime(fmt, int8)  # before anything loads: one line naming the extra to install
        from lbdt_cli.backends.export import export_model

        keep = None if keep_fp is None else [p.strip() for p in keep_fp.split(",") if p.strip()]
        with err_console.status("exporting...", spinner="dots") as status:  # transient: errors stay one line
            manifest = export_model(
                checkpoint, fmt, output, precision=precision, int8=int8, calibrate=calibrate or (),
                expressions=expression or (), glove=str(glove) if glove else None, keep_fp=keep,
                calibration_samples=calibration_samples, parity_samples=parity_samples, overwrite=overwrite,
                say=lambda m: status.update(f"{m}..."),
            )  # fmt: skip
        if as_json:
            sys.stdout.write(json.dumps(manifest, indent=1) + "\n")
            return
        p = manifest["parity"]
        err_console.print(
            f"[green]wrote[/] {output}/  {fmt}, runs at {p['precision']}; parity on {p['samples']} real frames: "
            f"max|Δlogit|/max|logit| = {p['relative_max_diff']:.2e}, mask IoU mean {p['mask_iou_mean']:.4f} "
            f"(min {p['mask_iou_min']:.4f})", highlight=False, soft_wrap=True)  # fmt: skip
