"""`lbdt train`: train LBDT with the paper's recipe (every part overridable)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lbdt_cli.errors import LbdtError

console = Console()


def _parse_overrides(items: list[str] | None) -> dict | None:
    if not items:
        return None
    out = {}
    for item in items:
        if "=" not in item:
            raise LbdtError(f"--set {item!r}: expected FIELD=VALUE (e.g. transfer_dim=128)")
        key, value = item.split("=", 1)
        if not key.strip():
            raise LbdtError(f"--set {item!r}: expected FIELD=VALUE (e.g. transfer_dim=128)")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        dataset: Optional[str] = typer.Option(None, "--dataset", help="shapes | a2d | ytvos | jhmdb | mevis (default shapes)."),
        root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (shapes: optional make-shapes folder)."),
        model: Optional[str] = typer.Option(None, "--model", help="Model config: lbdt1, lbdt4, small, tiny."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder (last.pt, best.pt, metrics)."),
        config: Optional[Path] = typer.Option(None, "--config", help="JSON (or YAML) file of training settings."),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Model config override FIELD=VALUE (repeatable)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (paper: 15)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch per process (paper: 8)."),
        lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate (paper: 1e-4)."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay (5e-4)."),
        milestones: Optional[str] = typer.Option(None, "--milestones", help="Epochs where lr is halved (10,12,14)."),
        gamma: Optional[float] = typer.Option(None, "--gamma", help="lr factor at each milestone (0.5)."),
        pos_weight: Optional[float] = typer.Option(None, "--pos-weight", help="BCE positive weight (1.5)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (3407)."),
        interval: Optional[int] = typer.Option(None, "--interval", help="Frame gap for the difference (model's)."),
        input_size: Optional[int] = typer.Option(None, "--input-size", help="Square input size (model's; 320)."),
        accumulate: Optional[int] = typer.Option(None, "--accumulate", help="Gradient accumulation steps."),
        workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes (2)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
        amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on GPU (on)."),
        save_every: Optional[int] = typer.Option(None, "--save-every", help="Steps between last.pt saves (0: epochs)."),
        log_every: Optional[int] = typer.Option(None, "--log-every", help="Steps between metric records (10)."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop (resumably) at this step."),
        epoch_samples: Optional[int] = typer.Option(None, "--epoch-samples", help="Samples drawn per epoch."),
        val_samples: Optional[int] = typer.Option(None, "--val-samples", help="Cap on validation samples."),
        backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights",
                                                        help="torchvision ResNet state dict for both encoders."),
        init_from: Optional[Path] = typer.Option(None, "--init-from",
                                                 help="Start from this checkpoint's weights and config."),
        glove: Optional[Path] = typer.Option(None, "--glove", help="GloVe text file (GloVe configs)."),
        shapes_clips: Optional[int] = typer.Option(None, "--shapes-clips", help="Generated shapes training clips."),
        shapes_val_clips: Optional[int] = typer.Option(None, "--shapes-val-clips", help="Generated validation clips."),
        shapes_size: Optional[int] = typer.Option(None, "--shapes-size", help="Generated shapes frame size (128)."),
        shapes_frames: Optional[int] = typer.Option(None, "--shapes-frames", help="Generated shapes frames (24)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from last.pt."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an --output that holds a run."),
        export: Optional[Path] = typer.Option(None, "--export", help="Also write best weights (fp16) here."),
    ) -> None:
        """Train LBDT: AdamW 1e-4, wd 5e-4, batch 8, 15 epochs, lr halved at 10/12/14, BCE+Dice, seed 3407."""
        from lbdt_cli.training import make_config, read_config_file, train

        file_values = read_config_file(config) if config else None
        ms = None
        if milestones is not None:
            try:
                ms = [int(x) for x in milestones.split(",") if x.strip()]
            except ValueError:
                raise LbdtError(f"--milestones {milestones!r}: expected comma-separated epochs like 10,12,14") from None
        overrides = _parse_overrides(set_)
        if overrides is not None and file_values and file_values.get("model_overrides"):
            overrides = {**file_values["model_overrides"], **overrides}
        cfg = make_config(
            file_values, dataset=dataset, root=str(root) if root else None, model=model,
            output=str(output) if output else None, model_overrides=overrides, epochs=epochs, batch_size=batch_size,
            lr=lr, weight_decay=weight_decay, milestones=ms, gamma=gamma, pos_weight=pos_weight, seed=seed,
            interval=interval, input_size=input_size, accumulate=accumulate, workers=workers, threads=threads, device=device, amp=amp,
            save_every=save_every, log_every=log_every, max_steps=max_steps, epoch_samples=epoch_samples,
            val_samples=val_samples, backbone_weights=str(backbone_weights) if backbone_weights else None,
            glove=str(glove) if glove else None, init_from=str(init_from) if init_from else None, shapes_train_clips=shapes_clips, shapes_val_clips=shapes_val_clips,
            shapes_size=shapes_size, shapes_frames=shapes_frames,
        )
        from lbdt_cli.commands._glove import prepare_glove

        prepare_glove(cfg.glove, os.environ.get("RANK", "0") == "0", Console(stderr=True))
        summary = train(cfg, resume=resume, overwrite=overwrite, console=console,
                        export=str(export) if export else None)
        out = Path(summary["output"])
        console.print(f"[green]done[/]: epoch {summary['epoch']}, step {summary['step']}, best val mean IoU "
                      f"{summary['best_mean_iou']:.4f}" + (" (stopped at --max-steps)" if summary["stopped_early"] else ""),
                      highlight=False)
        console.print(f"checkpoints: {out / 'last.pt'}, {out / 'best.pt'}; metrics: {out / 'metrics.jsonl'}, "
                      f"{out / 'metrics.png'}" + (f"; exported: {summary['export']}" if summary.get("export") else ""),
                      highlight=False)
