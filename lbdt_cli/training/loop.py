"""The training loop: AdamW + MultiStepLR, BCE+Dice, AMP on GPU, gradient accumulation, DDP, per-epoch
validation, atomic step-level checkpoints with everything needed to resume exactly."""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from lbdt_cli.errors import CheckpointError, InputError, LbdtError, OutputError
from lbdt_cli.metrics import MetricAccumulator, sample_iou
from lbdt_cli.runtime import autocast, close_distributed, dist_env, init_distributed, resolve_device
from lbdt_cli.training.config import TrainConfig
from lbdt_cli.training.data import ResumableSampler, build_datasets, collate, prepare_batch
from lbdt_cli.training.loss import lbdt_loss

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "metrics.png", "train_config.json")


# ----------------------------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Dist:
    """This process in a torchrun launch (one process when RANK / WORLD_SIZE are unset): its
    device, and the process group when there are several."""

    def __init__(self, device_pref: str):
        env = dist_env()
        self.world, self.rank, self.local_rank = env.world_size, env.rank, env.local_rank
        dev = resolve_device(device_pref, env)
        if dev.type == "cuda" and dev.index is None:  # DDP and pinned memory want the GPU's number
            dev = torch.device("cuda", env.local_rank)
        self.device = dev
        self.started = init_distributed(dev, env)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.started:
            close_distributed()


class TrainModule(torch.nn.Module):
    """Word embedding (learned configs) + LBDT in one forward, so DDP sees every parameter in one call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, diff, words, word_mask):
        if words.dtype == torch.long:
            words = self.model.embed_words(words)
        return self.model(image, diff, words, word_mask)


def batch_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of (logits > 0) vs target; empty vs empty counts 1 (as LBDT/MTTR)."""
    pred = (logits > 0).flatten(1)
    gt = target.bool().flatten(1)
    return sample_iou((pred & gt).sum(1).float(), (pred | gt).sum(1).float())


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records a killed run wrote after its last checkpoint."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            rec = json.loads(ln)
        except ValueError:  # blank, or a partial last line of a run killed while appending
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            keep.append(ln)
    path.write_text("".join(ln + "\n" for ln in keep))


def _read_backbone(path: str) -> dict:
    """A torchvision ResNet state dict (optionally under "state_dict"); InputError for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not state or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise ValueError("not a mapping of parameter names to tensors")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        # torch.load of a non-checkpoint raises terse errors (KeyError '105'): name what failed.
        detail = first if type(exc) is ValueError and first else \
            f"not a readable torch file: {type(exc).__name__}" + (f" {first}" if first else "")
        raise InputError(f"--backbone-weights {path} is not a torchvision ResNet state dict ({detail})") from None
    return state


# ----------------------------------------------------------------------------------------------- model


def _build(cfg: TrainConfig, resume_ckpt: dict | None, backbone: dict | None = None):
    """The model to train: the run's own (--resume) or a checkpoint's (--init-from, with --interval /
    --input-size applied), both through `model_from_checkpoint`'s strict checks as inference has
    them; else a fresh one (with ImageNet backbones if given). Weights are initialised randomly once."""
    from lbdt_cli.model import build_model, get_config, read_checkpoint
    from lbdt_cli.model.checkpoint import model_from_checkpoint

    if resume_ckpt is not None:
        return model_from_checkpoint(resume_ckpt, source=str(Path(cfg.output) / "last.pt")).train()
    overrides = dict(cfg.model_overrides or {})
    if cfg.interval is not None:
        overrides["interval"] = cfg.interval
    if cfg.input_size is not None:
        overrides["input_size"] = cfg.input_size
    init = read_checkpoint(cfg.init_from) if cfg.init_from else None
    try:
        config = get_config(init["config"] if init is not None else cfg.model, **overrides)
    except (KeyError, ValueError, TypeError) as exc:
        raise LbdtError(f"model config: {exc}") from None
    if init is not None:
        return model_from_checkpoint({**init, "config": config.to_dict()}, source=f"--init-from {cfg.init_from}").train()
    model = build_model(config)
    if cfg.backbone_weights:
        state = backbone if backbone is not None else _read_backbone(cfg.backbone_weights)
        try:
            model.spatial_encoder.load_torchvision_weights(state)
            model.temporal_encoder.load_torchvision_weights(state)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"--backbone-weights {cfg.backbone_weights} is not a torchvision ResNet state dict "
                             f"({str(exc).splitlines()[0]})") from None
    return model


class _Words:
    """Sentences -> model word inputs: token ids (learned embeddings, trained) or GloVe vectors."""

    def __init__(self, model, glove: str | None):
        from lbdt_cli.model.text import TextEmbedder

        self.learned = model.config.word_embedding == "learned"
        self.embedder = TextEmbedder.for_model(model, glove_path=None if self.learned else glove)

    def __call__(self, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.learned:
            ids, mask, _ = self.embedder.token_ids(texts)
        else:
            ids, mask, _ = self.embedder.embed(texts)
        return ids.to(device), mask.to(device)


# ----------------------------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model, loader, words: _Words, size: int, device, amp: bool) -> dict:
    """Mean / overall IoU at the model input size (lbdt_cli.metrics); per group where the data names
    groups (shapes: appearance / motion)."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    for batch in loader:
        image, diff, target = prepare_batch(batch, size, device)
        w, m = words(batch["text"], device)
        with _autocast(device, amp):
            logits = TrainModule(model)(image, diff, w, m)
        pred, gt = (logits[:, 0] > 0).cpu().numpy(), target[:, 0].bool().cpu().numpy()
        for p, g, group in zip(pred, gt, batch["group"]):
            acc.add(str(len(acc)), p, g, group=group)
    model.train(was_training)
    if not len(acc):
        return {}
    summary = acc.summary()
    out = {"mean_iou": summary["mean_iou"], "overall_iou": summary["overall_iou"], "samples": len(acc)}
    groups = summary.get("by_group", {})
    for group, key in (("motion", "mean_iou_needs_motion"), ("appearance", "mean_iou_appearance")):
        if group in groups:
            out[key] = groups[group]["mean_iou"]
    return out


def _autocast(device: torch.device, amp: bool):
    return autocast(device, "fp16" if amp and device.type == "cuda" else "fp32")


# ----------------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, console=None,
          export: str | None = None) -> dict:
    """Run (or resume) a training run into cfg.output; returns a summary dict."""
    from rich.console import Console

    from lbdt_cli.model import read_checkpoint, save_checkpoint

    console = console or Console()
    out = Path(cfg.output)
    last_path, best_path = out / "last.pt", out / "best.pt"
    metrics_path = out / "metrics.jsonl"
    ddp = Dist(cfg.device)
    try:
        resume_ckpt = None
        if resume:
            if not last_path.is_file():
                raise InputError(f"--resume: no {last_path} to resume from")
            resume_ckpt = read_checkpoint(last_path)
            if not resume_ckpt.get("training_state"):
                raise CheckpointError(f"{last_path} holds no training state to resume from")
        elif ddp.main:
            existing = [f for f in RUN_FILES if (out / f).exists()]
            if existing and not overwrite:
                hint = "use --resume to continue it or " if last_path.is_file() else "it has no last.pt to resume; use "
                raise OutputError(f"{out} already holds a training run ({existing[0]}); {hint}--overwrite to start "
                                  "over (or another --output)")
        if export and ddp.main:
            from lbdt_cli.utils.atomic import check_writable_output

            check_writable_output(export, overwrite)
        # Every input (weights, text, data) is read before the run folder is touched, so a bad one
        # leaves no half-made run behind.
        backbone = None
        if resume_ckpt is None and cfg.backbone_weights and not cfg.init_from:
            backbone = _read_backbone(cfg.backbone_weights)

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        model = _build(cfg, resume_ckpt, backbone).to(ddp.device)
        del backbone
        mcfg = model.config
        size, interval = mcfg.input_size, mcfg.interval
        words = _Words(model, cfg.glove)
        train_set, val_set = build_datasets(cfg, interval)
        if len(train_set) == 0:
            raise InputError(f"no training samples found for --dataset {cfg.dataset}")

        if ddp.main:
            if not resume:
                for f in RUN_FILES:
                    if (out / f).exists():
                        (out / f).unlink()
            out.mkdir(parents=True, exist_ok=True)
        ddp.barrier()

        sampler = ResumableSampler(train_set, ddp.world, ddp.rank, shuffle=True, seed=cfg.seed,
                                   epoch_samples=cfg.epoch_samples)
        val_idx = list(range(len(val_set)))
        if cfg.val_samples and cfg.val_samples < len(val_idx):
            g = torch.Generator().manual_seed(cfg.seed)
            val_idx = sorted(torch.randperm(len(val_set), generator=g)[: cfg.val_samples].tolist())
        loader_kw = dict(batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=collate,
                         pin_memory=ddp.device.type == "cuda")
        # Own generator: creating an iterator must not consume the global RNG (dropout), or resume drifts.
        val_loader = DataLoader(torch.utils.data.Subset(val_set, val_idx), shuffle=False,
                                generator=torch.Generator().manual_seed(0), **loader_kw)

        train_module = TrainModule(model)
        if ddp.world > 1:
            train_module = torch.nn.parallel.DistributedDataParallel(
                train_module, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones),
                                                         gamma=cfg.gamma)
        use_amp = cfg.amp and ddp.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

        epoch, step, position, best = 0, 0, 0, -1.0
        if resume_ckpt is not None:
            ts = resume_ckpt["training_state"]
            if ts.get("world_size", 1) != ddp.world or ts.get("batch_size") != cfg.batch_size:
                raise LbdtError(f"--resume: {last_path} was written with {ts.get('world_size')} process(es) x "
                                 f"batch {ts.get('batch_size')}; run with the same to resume exactly")
            optimizer.load_state_dict(ts["optimizer"])
            scheduler.load_state_dict(ts["scheduler"])
            scaler.load_state_dict(ts["scaler"])
            epoch, step, position, best = ts["epoch"], ts["step"], ts["position"], ts.get("best", -1.0)
            states = ts["rng"]
            set_rng_state(states[ddp.rank] if isinstance(states, list) else states)
            if ddp.main:
                _truncate_metrics(metrics_path, step)
        if ddp.main:
            (out / "train_config.json").write_text(json.dumps(
                {**cfg.to_dict(), "model_config": mcfg.to_dict(), "world_size": ddp.world}, indent=1))

        def save_last(epoch_: int, position_: int) -> None:
            rng = rng_state()
            if ddp.world > 1:
                gathered = [None] * ddp.world
                dist.all_gather_object(gathered, rng)
                rng = gathered
            if ddp.main:
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict(), "rng": rng, "epoch": epoch_, "step": step,
                         "position": position_, "best": best, "world_size": ddp.world,
                         "batch_size": cfg.batch_size, "train_config": cfg.to_dict()}
                save_checkpoint(last_path, model, _provenance(cfg, epoch_, step, None), state)

        header = (f"training {mcfg.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params) on "
                  f"{cfg.dataset}: {len(train_set)} train / {len(val_idx)} val samples, input {size}, interval "
                  f"{interval}, batch {cfg.batch_size} x {ddp.world} process(es) x accumulate {cfg.accumulate}, "
                  f"{ddp.device}")
        if ddp.main:
            console.print(header + (f", resuming at epoch {epoch + 1} step {step}" if resume else ""), highlight=False)

        stopped = False
        progress = _progress(console, enabled=ddp.main)
        with progress:
            while epoch < cfg.epochs and not stopped:
                sampler.set_epoch(epoch)
                sampler.set_start(position * cfg.batch_size)
                loader = DataLoader(train_set, sampler=sampler, generator=torch.Generator().manual_seed(epoch),
                                    **loader_kw)
                total_batches = position + len(loader)
                task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=total_batches, completed=position,
                                         stats="")
                model.train()
                t0, seen, run_loss, run_iou, pending = time.time(), 0, None, None, 0
                optimizer.zero_grad(set_to_none=True)
                for batch in loader:
                    image, diff, target = prepare_batch(batch, size, ddp.device)
                    w, m = words(batch["text"], ddp.device)
                    pending += 1
                    final = pending == cfg.accumulate or position + 1 == total_batches
                    sync = nullcontext() if (final or ddp.world == 1) else train_module.no_sync()
                    with sync:
                        with _autocast(ddp.device, use_amp):
                            logits = train_module(image, diff, w, m)
                        loss = lbdt_loss(logits, target, cfg.pos_weight, cfg.bce_weight, cfg.dice_weight)
                        scaler.scale(loss / cfg.accumulate).backward()
                    position += 1
                    seen += image.shape[0]
                    lv, iv = float(loss.detach()), float(batch_iou(logits.detach(), target).mean())
                    run_loss = lv if run_loss is None else 0.9 * run_loss + 0.1 * lv
                    run_iou = iv if run_iou is None else 0.9 * run_iou + 0.1 * iv
                    if not final:
                        continue
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    pending = 0
                    step += 1
                    rate = seen * ddp.world / max(time.time() - t0, 1e-6)
                    lr = optimizer.param_groups[0]["lr"]
                    if ddp.main:
                        progress.update(task, completed=position, stats=(
                            f"loss {run_loss:.4f}  IoU {run_iou:.3f}  lr {lr:.2e}  {rate:.1f} samples/s"))
                        if step % cfg.log_every == 0 or step == 1:
                            _append_jsonl(metrics_path, {"type": "train", "epoch": epoch + 1, "step": step,
                                                         "loss": lv, "loss_avg": run_loss, "iou": iv,
                                                         "iou_avg": run_iou, "lr": lr, "samples_per_s": rate,
                                                         "time": time.time()})
                            if not console.is_terminal:
                                console.print(f"epoch {epoch + 1} step {step}: loss {run_loss:.4f} IoU "
                                              f"{run_iou:.3f} lr {lr:.2e} {rate:.1f} samples/s", highlight=False)
                    if cfg.max_steps is not None and step >= cfg.max_steps:
                        save_last(epoch, position)
                        stopped = True
                        break
                    if cfg.save_every and step % cfg.save_every == 0:
                        save_last(epoch, position)
                progress.remove_task(task)
                if stopped:
                    break
                scheduler.step()
                epoch += 1
                position = 0
                if ddp.main:
                    val = validate(model, val_loader, words, size, ddp.device, use_amp)
                    _append_jsonl(metrics_path, {"type": "val", "epoch": epoch, "step": step, **val,
                                                 "time": time.time()})
                    console.print(f"epoch {epoch}: validation " + "  ".join(
                        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in val.items()),
                        highlight=False)
                    score = val.get("mean_iou", -1.0)
                    if score > best:
                        best = score
                        save_checkpoint(best_path, model, _provenance(cfg, epoch, step, val))
                    _plot(metrics_path)
                ddp.barrier()
                save_last(epoch, 0)
        summary = {"epoch": epoch, "step": step, "best_mean_iou": best, "stopped_early": stopped,
                   "output": str(out)}
        if ddp.main:
            _plot(metrics_path)
            if export and best_path.is_file():
                export_weights(best_path, export)
                summary["export"] = export
        return summary
    finally:
        ddp.close()


def _provenance(cfg: TrainConfig, epoch: int, step: int, val: dict | None) -> dict:
    import lbdt_cli

    p = {"source": "lbdt train", "version": lbdt_cli.__version__, "dataset": cfg.dataset, "root": cfg.root,
         "init_from": cfg.init_from,
         "epoch": epoch, "step": step, "seed": cfg.seed, "train_config": cfg.to_dict()}
    if val is not None:
        p["validation"] = val
    return p


def export_weights(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True) -> None:
    """Copy a checkpoint's weights (fp16 by default; loading restores fp32) without training state."""
    from lbdt_cli.model import read_checkpoint, save_checkpoint
    from lbdt_cli.model.checkpoint import model_from_checkpoint

    ckpt = read_checkpoint(src)
    model = model_from_checkpoint(ckpt, source=str(src))
    save_checkpoint(dst, model, {**ckpt.get("provenance", {}), "exported_from": str(src),
                                 "stored_dtype": "float16" if half else "float32"}, None, half=half)


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                    console=console, disable=not enabled or not console.is_terminal, transient=True)


def _plot(metrics_path: Path) -> None:
    from lbdt_cli.training.plot import plot_metrics

    try:
        plot_metrics(metrics_path, metrics_path.with_suffix(".png"))
    except Exception:  # a plot is a convenience; never fail a run for it
        pass
