"""Named LBDT configurations and the one builder that makes any of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# The Moving Shapes sentences' vocabulary (docs/text.md); small configs learn embeddings for it.
SHAPES_VOCABULARY = (
    "the", "a", "red", "green", "blue", "yellow", "square", "circle", "triangle", "moving", "left",
    "right", "up", "down", "still", "that", "is", "not", "and", "object", "shape",
)


@dataclass(frozen=True)
class LBDTConfig:
    name: str = "lbdt1"
    backbone: str = "resnet50"
    transfer_layers: int = 1  # L: transfer layers at each of stage 4 and stage 5
    transfer_dim: int = 512  # also the LSTM hidden size: words are attention queries
    num_heads: int = 8
    dropout: float = 0.1
    decoder_dim: int = 128
    head_depth: int = 4
    word_dim: int = 300
    max_words: int = 25
    input_size: int = 320
    interval: int = 6  # frame gap δ used for the frame difference
    word_embedding: str = "glove"  # "glove" (vectors from a GloVe file) or "learned"
    vocabulary: tuple[str, ...] | None = None  # for word_embedding="learned"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["vocabulary"] = list(self.vocabulary) if self.vocabulary is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LBDTConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a model config is a mapping of fields, not {type(d).__name__} {d!r:.60}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(d) - known))
        if unknown:
            raise ValueError(f"unknown config field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        d = dict(d)
        if d.get("vocabulary") is not None:
            d["vocabulary"] = tuple(d["vocabulary"])
        return cls(**d)


CONFIGS: dict[str, LBDTConfig] = {
    "lbdt1": LBDTConfig(name="lbdt1", transfer_layers=1),
    "lbdt4": LBDTConfig(name="lbdt4", transfer_layers=4),
    # CPU-trainable config for the shapes demo (~11.7 M parameters: fits 25 MB in fp16).
    "small": LBDTConfig(name="small", backbone="resnet10", transfer_layers=1, transfer_dim=128, num_heads=4,
                        decoder_dim=64, head_depth=2, input_size=128, interval=2, word_embedding="learned",
                        vocabulary=SHAPES_VOCABULARY),
    # For tests: milliseconds per forward at 64×64.
    "tiny": LBDTConfig(name="tiny", backbone="resnet10", transfer_layers=1, transfer_dim=64, num_heads=4,
                       decoder_dim=32, head_depth=1, input_size=64, interval=2, word_embedding="learned",
                       vocabulary=SHAPES_VOCABULARY),
}


def list_configs() -> list[str]:
    return list(CONFIGS)


def get_config(name_or_config: str | LBDTConfig | dict, **overrides) -> LBDTConfig:
    if isinstance(name_or_config, LBDTConfig):
        cfg = name_or_config
    elif isinstance(name_or_config, dict):
        cfg = LBDTConfig.from_dict(name_or_config)
    else:
        if name_or_config not in CONFIGS:
            raise ValueError(f"unknown model config {name_or_config!r}; choose from {', '.join(CONFIGS)}")
        cfg = CONFIGS[name_or_config]
    if overrides:
        if "vocabulary" in overrides and overrides["vocabulary"] is not None:
            overrides["vocabulary"] = tuple(overrides["vocabulary"])
        cfg = dataclasses.replace(cfg, **overrides)
    validate_config(cfg)
    return cfg


def validate_config(cfg: LBDTConfig) -> None:
    from lbdt_cli.model.encoders import RESNET_SPECS

    if cfg.backbone not in RESNET_SPECS:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose from {sorted(RESNET_SPECS)}")
    if cfg.transfer_dim % 4 or cfg.transfer_dim % cfg.num_heads:
        raise ValueError("transfer_dim must be divisible by 4 and by num_heads")
    if cfg.input_size % 32:
        raise ValueError(f"input_size must be a multiple of 32 (the backbone stride), got {cfg.input_size}")
    if cfg.word_embedding not in ("glove", "learned"):
        raise ValueError("word_embedding must be 'glove' or 'learned'")
    if cfg.word_embedding == "learned" and not cfg.vocabulary:
        raise ValueError("a learned word embedding needs a vocabulary")
    if cfg.interval < 1:
        raise ValueError("interval must be >= 1")
