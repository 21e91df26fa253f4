"""`lbdt eval`: score a checkpoint (or a folder of masks) on A2D / J-HMDB / Ref-YTVOS / Ref-DAVIS / shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from lbdt_cli.errors import LbdtError

console = Console()
err_console = Console(stderr=True)

LABELS = {"P@0.5": "P@0.5", "P@0.6": "P@0.6", "P@0.7": "P@0.7", "P@0.8": "P@0.8", "P@0.9": "P@0.9",
          "AP": "AP (LBDT, 0.5:0.95)", "overall_iou": "overall IoU", "mean_iou": "mean IoU",
          "mAP_coco": "mAP (COCO)", "J": "J", "F": "F", "J&F": "J&F"}


GROUP_LABELS = {"appearance": "resolvable by appearance", "motion": "need motion"}


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _render(result, reference: dict[str, dict]) -> None:
    from lbdt_cli.evaluation import EXTRA_KEYS, METRIC_KEYS

    m = result.metrics
    console.print(f"[bold]{result.dataset}[/] {result.split}: {m['num_samples']} samples, "
                  f"protocol {result.protocol}", highlight=False)
    table = Table()
    table.add_column("metric")
    table.add_column("ours (%)", justify="right")
    for name in reference:
        table.add_column(f"{name} (%)", justify="right")
    for key in METRIC_KEYS + EXTRA_KEYS:
        if key not in m:
            continue
        table.add_row(LABELS[key], _pct(m[key]),
                      *[(f"{ref[key]:.1f}" if key in ref else "-") for ref in reference.values()])
    console.print(table)
    groups = m.get("by_group")
    if groups:
        gt = Table(title="by annotation set" if result.protocol == "unsupervised" else "by expression kind")
        for col in ("expressions", "samples", "mean IoU (%)", "J (%)", "F (%)", "J&F (%)"):
            gt.add_column(col, justify="left" if col == "expressions" else "right")
        for name, g in groups.items():
            gt.add_row(GROUP_LABELS.get(name, name), str(g["num_samples"]), _pct(g.get("mean_iou")),
                       _pct(g.get("J")), _pct(g.get("F")), _pct(g.get("J&F")))
        console.print(gt)
    notes = [f"resolution: {result.resolution}"]
    if "P@0.5" in m:
        notes += [f"P@K and AP count IoU {'>' if result.accumulator.strict else '>='} K",
                  f"mAP (COCO) ranks masks by {result.meta.get('confidence', 'confidence')}"]
    if reference:
        notes.append("paper numbers: the authors' protocol (--protocol lbdt) on their own sample list")
    console.print("[dim]" + "; ".join(notes) + "[/]", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        dataset: str = typer.Option(..., "--dataset", "-d", help="a2d, jhmdb, ytvos, davis, mevis or shapes."),
        root: Optional[Path] = typer.Option(
            None, "--root", help="Dataset folder in its original release layout (see docs/eval.md). "
            "For shapes: a folder from `lbdt make-shapes`; without it, test clips are generated in-process."),
        checkpoint: Optional[Path] = typer.Option(
            None, "--checkpoint", "-c", help="Model checkpoint (ours or the authors' LBDT-1/4). "
            "Default for shapes: weights/lbdt_shapes_demo.pt."),
        glove: Optional[Path] = typer.Option(None, "--glove", help="GloVe 840B-300d file (models using GloVe)."),
        split: Optional[str] = typer.Option(
            None, "--split", help="a2d: test|train (default test); ytvos: train (default) or valid (with "
            "--submission); davis: val|train (default val); mevis: valid_u (default), train, or valid (with "
            "--submission); shapes: test|val|train (default test)."),
        protocol: str = typer.Option(
            "default", "--protocol", help="default: raw GT at original size (MTTR/ReferFormer); lbdt: GT "
            "round trip through the input size, as the authors' eval; unsupervised (davis): each annotation "
            "set's masks merged per frame and scored by the unsupervised DAVIS evaluation, as the papers do."),
        strict: bool = typer.Option(False, "--strict-precision", help="P@K and AP count IoU > K (MTTR) "
                                    "instead of IoU >= K (LBDT)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write metrics.json and samples.csv here."),
        save_masks: Optional[Path] = typer.Option(
            None, "--save-masks", help="Write 8-bit masks DIR/<video>/[<expression>/]<frame>.png (+ scores.json)."),
        predictions: Optional[Path] = typer.Option(
            None, "--predictions", help="Score a folder of masks laid out like --save-masks; no model is run."),
        submission: Optional[Path] = typer.Option(
            None, "--submission", help="Write the benchmark server's zip (ytvos valid, mevis valid) instead of "
            "scoring: one PNG per listed frame of every expression."),
        report: bool = typer.Option(False, "--report", help="Also write report.html into --output: metrics beside "
                                    "the paper's, P@K curve, IoU histogram, groups, worst and best samples."),
        check: bool = typer.Option(False, "--check", help="Only list what the dataset folder holds."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics object as JSON on stdout."),
        batch_size: int = typer.Option(8, "--batch-size", "-b", help="(frame, expression) pairs per forward pass."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N samples."),
        num_clips: int = typer.Option(20, "--num-clips", help="shapes without --root: clips to generate."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    ) -> None:
        """Evaluate referring segmentation: P@0.5..0.9, AP, overall/mean IoU, COCO mAP, J, F, J&F."""
        from lbdt_cli import evaluation as ev
        from lbdt_cli.data import dataset_class, open_dataset
        from lbdt_cli.utils.atomic import atomic_dir, check_writable_output

        reader = dataset_class(dataset, "--dataset")
        if protocol not in ev.PROTOCOLS:
            raise LbdtError(f"unknown --protocol {protocol!r} (use {' or '.join(ev.PROTOCOLS)})")
        if protocol == "unsupervised" and dataset != "davis":
            raise LbdtError("--protocol unsupervised is Ref-DAVIS17's (--dataset davis)")
        if protocol == "unsupervised" and limit is not None:
            raise LbdtError("--limit does not apply to --protocol unsupervised (it scores whole videos)")
        if root is None and reader.needs_root:
            raise LbdtError(f"--root is required for --dataset {dataset}")
        if limit is not None and limit < 1:
            raise LbdtError("--limit must be at least 1")
        if predictions is not None and save_masks is not None:
            raise LbdtError("--predictions scores existing masks; it cannot be combined with --save-masks")
        if report and output is None:
            raise LbdtError("--report writes report.html into the --output folder: give --output DIR")
        if submission is not None:
            if reader.submission_layout is None:
                raise LbdtError(f"--submission: {dataset} has no evaluation server (it is scored locally)")
            if predictions is not None or save_masks is not None or output is not None:
                raise LbdtError("--submission writes the server's zip; it cannot be combined with --predictions, "
                                "--save-masks or --output")
            if submission.suffix.lower() != ".zip":
                raise LbdtError(f"--submission {submission}: expected a .zip file name")
        split = split or reader.default_split
        kwargs = {"num_clips": num_clips} if dataset == "shapes" and root is None else {}

        if check:
            report = open_dataset(dataset, root, split, **kwargs).check()
            if as_json:
                typer.echo(json.dumps(report.as_dict(), indent=2))
                return
            console.print(f"[bold]{report.dataset}[/] {report.split} at {report.root}", highlight=False)
            for k in ("videos", "expressions", "annotated_frames", "samples"):
                console.print(f"  {k.replace('_', ' ')}: {getattr(report, k)}", highlight=False)
            for n in report.notes:
                console.print(f"  [dim]{n}[/]", highlight=False)
            return

        if output is not None:
            ev.check_output_dir(output, overwrite)
            if report:
                check_writable_output(output / "report.html", overwrite)
        if submission is not None:
            check_writable_output(submission, overwrite)
        if save_masks is not None:
            check_writable_output(save_masks, overwrite)

        from lbdt_cli.runtime import dist_env

        env = dist_env()
        world_size, rank = env.world_size, env.rank
        predictor = None
        if predictions is None:
            if checkpoint is None and dataset != "shapes":  # the demo checkpoint only knows shapes
                raise LbdtError("--checkpoint is required (or --predictions DIR to score saved masks)")
            from lbdt_cli.commands._glove import prepare_glove
            from lbdt_cli.engine import Predictor

            prepare_glove(glove, not as_json and rank == 0 and err_console.is_terminal, err_console)
            predictor = Predictor.from_checkpoint(checkpoint, glove=glove, device=device, batch_size=batch_size)
            checkpoint = predictor.checkpoint
            if dataset == "shapes":
                kwargs["interval"] = predictor.interval  # shapes follows the model's look-back
        ds = open_dataset(dataset, root, split, **kwargs)
        total = min(limit, len(ds)) if limit else len(ds)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=err_console, transient=True,
                            disable=rank != 0 or not err_console.is_terminal)
        with progress:
            task = progress.add_task(f"eval {dataset}", total=total)
            advance = lambda n: progress.advance(task, n)  # noqa: E731
            if submission is not None:
                if world_size > 1:
                    raise LbdtError("--submission is not supported with torchrun (several processes); run it once")
                info = ev.write_submission(ds, predictor, submission, limit=limit, overwrite=overwrite,
                                           progress=advance)
            elif predictions is not None:
                result = ev.evaluate_predictions(ds, predictions, protocol=protocol, strict=strict, limit=limit,
                                                 progress=advance)
            elif world_size > 1:
                if protocol == "unsupervised":
                    raise LbdtError("--protocol unsupervised is not supported with torchrun; run it once")
                if save_masks is not None:
                    raise LbdtError("--save-masks is not supported with torchrun (several processes); run it once")
                result = _distributed(ev, ds, predictor, protocol, strict, limit, advance, env)
            elif save_masks is not None:
                with atomic_dir(save_masks, overwrite=overwrite) as tmp:
                    result = ev.evaluate_model(ds, predictor, protocol=protocol, strict=strict, limit=limit,
                                               save_masks=tmp, progress=advance)
            else:
                result = ev.evaluate_model(ds, predictor, protocol=protocol, strict=strict, limit=limit,
                                           progress=advance)
        if submission is not None:
            if as_json:
                typer.echo(json.dumps(info, indent=2))
            else:
                console.print(f"[green]wrote[/] {submission}: {info['masks']} masks of {info['expressions']} "
                              f"expressions in {info['videos']} videos ({dataset} {split}, for the server)",
                              highlight=False)
            return
        if checkpoint is not None and predictions is None:
            result.meta["checkpoint"] = str(checkpoint)
        if rank != 0:
            return
        for warning in result.meta.get("warnings", []):
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if output is not None:
            ev.write_outputs(result, output, overwrite=overwrite)
        config_name = predictor.model.config.name if predictor is not None else None
        if report:
            from lbdt_cli import report as rp

            worst, best = rp.pick_examples(result)
            examples = ev.report_examples(ds, result, worst + best, predictor=predictor, predictions=predictions)
            ev.write_report(output, rp.render(result, ds, ev.paper_reference(reader, config_name), examples,
                                              worst, best))
        if as_json:
            typer.echo(json.dumps(result.metrics, indent=2))
            return
        _render(result, ev.paper_reference(reader, config_name))
        if output is not None:
            console.print(f"[green]wrote[/] {output / 'metrics.json'} and {output / 'samples.csv'}"
                          + (f" and {output / 'report.html'}" if report else ""), highlight=False)
        if save_masks is not None:
            console.print(f"[green]wrote[/] masks to {save_masks}/", highlight=False)


def _distributed(ev, ds, predictor, protocol, strict, limit, advance, env):
    """torchrun: each rank scores every world_size-th video; I/U per sample are gathered on all ranks."""
    from lbdt_cli.runtime import close_distributed, init_distributed

    init_distributed(predictor.device, env)
    try:
        part = ev.evaluate_model(ds, predictor, protocol=protocol, strict=strict, limit=limit, progress=advance,
                                 rank=env.rank, world_size=env.world_size)
        return ev.gather_result(part, ds)
    finally:
        close_distributed()
