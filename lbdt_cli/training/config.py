"""Training settings: the paper's recipe as defaults, overridable by a JSON/YAML file and by flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lbdt_cli.data import TRAIN_DATASETS
from lbdt_cli.errors import InputError, LbdtError


@dataclass
class TrainConfig:
    dataset: str = "shapes"
    root: str | None = None  # dataset folder (shapes: optional, a `lbdt make-shapes` folder)
    model: str = "lbdt1"  # named model config
    model_overrides: dict = field(default_factory=dict)  # LBDTConfig fields, e.g. {"transfer_dim": 128}
    output: str = "runs/train"
    # The paper's recipe with the released code's details (docs/train.md, Recipe)
    epochs: int = 15
    batch_size: int = 8  # per process
    lr: float = 1e-4
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [10, 12, 14])  # epochs; lr x gamma at each
    gamma: float = 0.5
    pos_weight: float = 1.5
    bce_weight: float = 0.5
    dice_weight: float = 0.5
    seed: int = 3407
    interval: int | None = None  # frame gap; None = the model config's (6 for the paper configs)
    input_size: int | None = None  # None = the model config's (320 for the paper configs)
    # Engineering
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    amp: bool = True  # fp16 autocast + GradScaler on CUDA (ignored on CPU)
    workers: int = 2
    threads: int | None = None  # torch CPU threads (None = torch's default)
    device: str = "auto"
    save_every: int = 0  # optimizer steps between last.pt saves (0 = at epoch ends only)
    log_every: int = 10
    max_steps: int | None = None  # stop (after saving last.pt) at this optimizer step
    epoch_samples: int | None = None  # draw this many samples per epoch (seeded) instead of all
    val_samples: int | None = None  # cap on validation samples (a fixed seeded subset)
    backbone_weights: str | None = None  # torchvision ResNet state dict for both encoders
    init_from: str | None = None  # start from this checkpoint's weights and config (fine-tuning)
    glove: str | None = None  # GloVe text file for GloVe-embedding configs
    # Shapes generation (when --root is not given)
    shapes_train_clips: int = 400
    shapes_val_clips: int = 24
    shapes_size: int = 128
    shapes_frames: int = 24

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_config_file(path: str | Path) -> dict:
    """A JSON (or, if PyYAML is installed, YAML) mapping of TrainConfig fields."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"training config file not found: {p}")
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(f"{p}: YAML configs need PyYAML (pip install pyyaml), or use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a mapping of training settings")
    return data


def make_config(file_values: dict | None = None, **flags) -> TrainConfig:
    """Defaults < config file < flags (flags that are None are 'not given')."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict = {}
    for source in (file_values or {}, {k: v for k, v in flags.items() if v is not None}):
        unknown = sorted(set(source) - known)
        if unknown:
            raise LbdtError(f"unknown training setting(s): {', '.join(unknown)}")
        values.update(source)
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg: TrainConfig) -> None:
    """Settings (from flags or a config file) that are wrong in themselves exit 2 (LbdtError);
    missing files and folders exit 3 (InputError)."""
    if cfg.dataset not in TRAIN_DATASETS:
        raise LbdtError(f"--dataset: unknown dataset {cfg.dataset!r} (choose from {', '.join(TRAIN_DATASETS)})")
    from lbdt_cli.runtime import resolve_device

    resolve_device(cfg.device)  # LbdtError for an unknown device or a GPU that is not there
    for name in ("epochs", "batch_size", "accumulate", "log_every", "shapes_train_clips", "shapes_val_clips",
                 "shapes_frames", "shapes_size", "interval", "threads", "max_steps", "epoch_samples", "val_samples"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise LbdtError(f"{_flag(name)} must be >= 1, got {value}")
    for name in ("workers", "save_every", "weight_decay"):
        if getattr(cfg, name) < 0:
            raise LbdtError(f"{_flag(name)} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise LbdtError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.input_size is not None and (cfg.input_size < 32 or cfg.input_size % 32):
        raise LbdtError(f"--input-size must be a positive multiple of 32, got {cfg.input_size}")
    if cfg.dataset != "shapes" and not cfg.root:
        raise LbdtError(f"--root is required for --dataset {cfg.dataset}")
    if cfg.root and not Path(cfg.root).is_dir():
        raise InputError(f"dataset folder {cfg.root} does not exist")
    for name in ("backbone_weights", "glove", "init_from"):
        p = getattr(cfg, name)
        if p is not None and not Path(p).is_file():
            raise InputError(f"--{name.replace('_', '-')} file not found: {p}")
