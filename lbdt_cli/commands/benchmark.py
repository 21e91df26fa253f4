"""`lbdt benchmark-flops`: multiply-adds, parameters and (with --speed) measured frames/s."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lbdt_cli.errors import CheckpointError, LbdtError

# Paper Table 8 (GFLOPs at 2×320×320, FPS on a GTX 1080Ti, batch 1).
PAPER = {"lbdt1": {"gflops": 32.51, "fps_1080ti": 19.2}, "lbdt4": {"gflops": 38.03, "fps_1080ti": 12.5}}


def register(app: typer.Typer) -> None:
    @app.command("benchmark-flops")
    def benchmark_flops(
        model: str = typer.Option(None, "--model", "-m", help="Named config: lbdt1, lbdt4, small, tiny."),
        checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="Measure this checkpoint's model instead."),
        frames: int = typer.Option(2, help="Input frames: 2 = one (frame, frame δ before) pair, the paper's setting."),
        size: int = typer.Option(None, help="Input side in pixels (default: the config's, 320 for lbdt1/lbdt4)."),
        speed: bool = typer.Option(False, "--speed", help="Also time the forward pass against a naive baseline."),
        device: str = typer.Option("auto", help="Device for --speed: auto, cpu, cuda, cuda:1, ..."),
        batch_sizes: str = typer.Option("1,4", help="Comma list of batch sizes for --speed."),
        precision: str = typer.Option("fp32", help="fp32, fp16 or bf16 (autocast) for the tuned runs."),
        channels_last: bool = typer.Option(False, help="channels_last memory format for the tuned runs."),
        compile: bool = typer.Option(False, "--compile", help="torch.compile the tuned forward."),
        fold_bn: bool = typer.Option(True, "--fold-bn/--no-fold-bn",
                                     help="Fold BatchNorm into the convolutions for the tuned runs (as segment does)."),
        repeats: int = typer.Option(3, help="Timed repeats per setting (the median is reported)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
        backends: str = typer.Option(None, "--backends", help="With --speed: comma list of export folders "
                                     "(`lbdt export` of the same model) timed on the same inputs."),
    ) -> None:
        """FLOPs (multiply-adds, fvcore's convention), parameters and measured speed."""
        from lbdt_cli.benchmark import measure_speed, peak_rate
        from lbdt_cli.flops import count_cost
        from lbdt_cli.model import build_model, list_configs, load_checkpoint
        from lbdt_cli.runtime import precision_dtype, resolve_device

        if (model is None) == (checkpoint is None):
            raise LbdtError("give exactly one of --model NAME or --checkpoint PATH")
        if model is not None and model not in list_configs():
            raise LbdtError(f"unknown model {model!r}; choose from {', '.join(list_configs())}")
        precision_dtype(precision)
        run_device = resolve_device(device) if speed else None
        try:
            sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        except ValueError:
            raise LbdtError(f"--batch-sizes must be a comma list of integers, got {batch_sizes!r}") from None
        if not sizes or min(sizes) < 1:
            raise LbdtError("--batch-sizes needs positive integers")
        backend_dirs = [b.strip() for b in (backends or "").split(",") if b.strip()]
        if backend_dirs and not speed:
            raise LbdtError("--backends goes with --speed")
        from lbdt_cli.backends import is_export

        for b in backend_dirs:
            if not is_export(b):
                raise CheckpointError(f"--backends {b}: not an export folder (no export.json; see lbdt export)")
        net = load_checkpoint(checkpoint) if checkpoint else build_model(model)
        size = size or net.config.input_size
        if size % 32 or size < 32:
            raise LbdtError(f"--size must be a positive multiple of 32, got {size}")
        if frames < 2 or frames % 2:
            raise LbdtError("--frames counts whole (frame, previous frame) pairs: 2, 4, ...")
        report = count_cost(net, frames, size)
        result = report.as_dict()
        ref = PAPER.get(net.config.name) if (frames, size) == (2, 320) else None
        if ref:
            result["paper_gflops"] = ref["gflops"]
            result["relative_to_paper"] = round(report.gmacs / ref["gflops"] - 1, 5)
        speed_rows = []
        if speed:
            from lbdt_cli.backends.runtime import ExportedModel

            exported = [ExportedModel.load(b) for b in backend_dirs]
            for b, e in zip(backend_dirs, exported):
                if e.config.input_size != size or e.config.name != net.config.name:
                    raise CheckpointError(f"--backends {b}: exported from another model or size "
                                          f"({e.config.name} @ {e.config.input_size})")
            speed_rows = measure_speed(net, size, run_device, sizes, precision, channels_last, compile,
                                       fold_bn=fold_bn, repeats=repeats, backends=exported)
            base = speed_rows[0].fps
            gflop_per_pair = 2 * report.gmacs / (frames // 2)
            peak = peak_rate(run_device, precision)
            result["peak_gflops"] = round(peak, 1)
            result["speed"] = [{"setting": r.label, "batch": r.batch, "fps": round(r.fps, 3),
                                "ms_per_frame": round(1000 / r.fps, 2), "speedup_vs_baseline": round(r.fps / base, 3),
                                "gflops": round(r.fps * gflop_per_pair, 1)}
                               for r in speed_rows]
            device = str(run_device)
            result["device"] = device
        if as_json:
            typer.echo(json.dumps(result))
            return
        console = Console()
        table = Table(title=f"{net.config.name}: {frames} frames of {size}×{size}")
        table.add_column("group")
        table.add_column("GFLOPs (MACs)", justify="right")
        table.add_column("params (M)", justify="right")
        for group, g in report.gmacs_by_group.items():
            table.add_row(group, f"{g:.3f}", f"{report.params_by_group.get(group, 0) / 1e6:.2f}")
        table.add_row("[bold]total[/]", f"[bold]{report.gmacs:.3f}[/]", f"[bold]{report.params / 1e6:.2f}[/]")
        if ref:
            table.add_row("paper (Table 8)", f"{ref['gflops']:.2f}", "",
                          end_section=False)
        console.print(table)
        if ref:
            console.print(f"measured / paper GFLOPs: {report.gmacs / ref['gflops']:.4f}")
        if speed_rows:
            st = Table(title=f"forward speed on {device} (median of {repeats})")
            for col in ("setting", "frames/s", "ms/frame", "vs baseline", "GFLOP/s", "of peak"):
                st.add_column(col, justify="left" if col == "setting" else "right")
            for r in speed_rows:
                rate = r.fps * gflop_per_pair
                st.add_row(r.label, f"{r.fps:.2f}", f"{1000 / r.fps:.1f}", f"{r.fps / speed_rows[0].fps:.2f}×",
                           f"{rate:.0f}", f"{100 * rate / peak:.0f}%")
            console.print(st)
            console.print(f"peak: {peak:.0f} GFLOP/s ({precision}), the faster of a large matmul and a ResNet-sized "
                          f"3×3 convolution on {device}, measured in this run", highlight=False)
            if ref:
                console.print(f"paper: {ref['fps_1080ti']} frames/s on a GTX 1080Ti (batch 1)")
