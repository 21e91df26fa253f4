"""Checkpoints: our self-describing format, and the authors' released LBDT-1 / LBDT-4 files.
Both formats, the key renames and the checks on load are written down in docs/checkpoints.md."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path

import torch

from lbdt_cli.errors import CheckpointError
from lbdt_cli.model.configs import CONFIGS, LBDTConfig, get_config
from lbdt_cli.model.encoders import RESNET_SPECS

FORMAT = "lbdt-cli/1"
TOKENIZER = "lbdt-regex-v1"  # the released code's tokenizer rules (docs/text.md)

# Authors' key -> ours, applied in order to the part after an optional "module." prefix.
_OFFICIAL_RENAMES = [
    (r"^conv1_1\.", "spatial_encoder.conv1."),
    (r"^bn1_1\.", "spatial_encoder.bn1."),
    (r"^conv1_2\.", "temporal_encoder.conv1."),
    (r"^bn1_2\.", "temporal_encoder.bn1."),
    (r"^res([2-5])_1\.", lambda m: f"spatial_encoder.layer{int(m.group(1)) - 1}."),
    (r"^res([2-5])_2\.", lambda m: f"temporal_encoder.layer{int(m.group(1)) - 1}."),
    (r"^conv_r([45])_1_(reduce|up)\.", r"transfer.stage\1.\2_spatial."),
    (r"^conv_r([45])_2_(reduce|up)\.", r"transfer.stage\1.\2_temporal."),
    (r"^transformer\.stage([45])\.layers\.", r"transfer.stage\1.layers."),
    (r"\.self_attn_words\.", ".words_self_attn."),
    (r"\.cross_attn_img\.", ".words_from_source."),
    (r"\.cross_attn_flo\.", ".target_from_words."),
    (r"\.norm_words_1\.", ".norm_words_self."),
    (r"\.norm_words_2\.", ".norm_words_source."),
    (r"\.norm_flo\.", ".norm_target."),
    (r"\.norm_flo2\.", ".norm_ffn."),
    (r"^decoder\.refine_spa\.", "decoder.refine_spatial."),
    (r"^decoder\.refine_tem\.", "decoder.refine_temporal."),
    (r"^decoder\.fusion\.img_flo_fc\.0\.", "decoder.bca.joint_fc."),
    (r"^decoder\.fusion\.img_txt_fc\.", "decoder.bca.spatial_language_fc."),
    (r"^decoder\.fusion\.flo_txt_fc\.", "decoder.bca.temporal_language_fc."),
    (r"^decoder\.fusion\.img_enhance_fc\.", "decoder.bca.spatial_consistency_fc."),
    (r"^decoder\.fusion\.flo_enhance_fc\.", "decoder.bca.temporal_consistency_fc."),
    (r"^decoder\.fusion\.fusion_cat_conv\.", "decoder.bca.fuse_conv."),
    (r"^decoder\.fuse_tower\.", "decoder.head."),
]
_OFFICIAL_RENAMES = [(re.compile(p), r) for p, r in _OFFICIAL_RENAMES]
# Trained but never used in the released forward pass; dropped knowingly.
OFFICIAL_UNUSED_PREFIXES = ("decoder.spa_tower.", "decoder.tem_tower.", "decoder.mask_head.")


def official_to_ours(key: str) -> str:
    for pattern, repl in _OFFICIAL_RENAMES:
        key = pattern.sub(repl, key)
    return key


def _atomic_save(obj, path: str | os.PathLike) -> None:
    from lbdt_cli.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path, model, provenance: dict | None = None, training_state: dict | None = None,
                    half: bool = False) -> None:
    """Write our format atomically: config, text settings, weights, provenance, optional
    training state (optimizer, scheduler, RNG, ...). `half` stores float weights as fp16."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    cfg = model.config
    _atomic_save({
        "format": FORMAT,
        "config": cfg.to_dict(),
        "text": {"tokenizer": TOKENIZER, "word_embedding": cfg.word_embedding, "max_words": cfg.max_words,
                 "word_dim": cfg.word_dim},
        "state_dict": state,
        "provenance": dict(provenance or {}),
        "training_state": training_state,
    }, path)


def _numpy_globals() -> list:
    """The numpy pieces a pickled RNG state needs (training checkpoints keep numpy's)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32, np.uint8, np.bool_)}
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def _torch_load(path: Path, map_location, mmap: bool = False):
    # Never fall back to full unpickling: a checkpoint from the internet could run code.
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    with safe_globals(_numpy_globals()) if safe_globals is not None else contextlib.nullcontext():
        if mmap:
            try:  # the weights stay in the file's pages: no read of the whole file up front
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "zipfile" not in str(exc):  # only the old (pre-1.6) format cannot be mapped
                    raise
        return torch.load(path, map_location=map_location, weights_only=True)


def _load_failure(path: Path, exc: Exception) -> str:
    """Why torch.load refused a file, in one short sentence (torch's own messages run to pages)."""
    import pickle
    import zipfile

    text = str(exc).strip()
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        return ("it holds Python objects besides tensors and plain data; they are not loaded, since "
                "unpickling them could run code")
    if "central directory" in text or "zip archive" in text or isinstance(exc, (EOFError, zipfile.BadZipFile)):
        return "damaged or cut short: not a complete zip archive"
    if not zipfile.is_zipfile(path):
        return "neither a zip archive nor a legacy torch file"
    first = text.splitlines()[0] if text else type(exc).__name__
    first = first.split(". ")[0]
    return first if len(first) <= 120 else first[:120].rsplit(" ", 1)[0] + " ..."


def read_checkpoint(path, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint file into a dict in our format (the authors' files are converted).
    `mmap` maps the file instead of reading it (inference: the weights are used as they are)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing: say it once, below
            warnings.simplefilter("ignore")
            obj = _torch_load(path, map_location, mmap)
    except Exception as exc:  # torch.load raises many types on foreign files
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({_load_failure(path, exc)})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj
    state = _find_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{path} holds no model weights (expected a state dict of tensors or an lbdt checkpoint)")
    return _convert_official(state, path)


def _find_state_dict(obj):
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return None


def _convert_official(state: dict, path: Path) -> dict:
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if "conv1_1.weight" not in state or not any(k.startswith("transformer.stage4.layers.") for k in state):
        sample = ", ".join(sorted(state)[:3])
        raise CheckpointError(
            f"{path} is not an LBDT checkpoint: missing 'conv1_1.weight' and 'transformer.stage4.layers.*' "
            f"(first keys: {sample})")
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"transformer\.stage4\.layers\.(\d+)\.", k)))
    blocks = [1 + max((int(m.group(1)) for k in state if (m := re.match(rf"res{s}_1\.(\d+)\.", k))), default=-1)
              for s in range(2, 6)]
    bottleneck = "res2_1.0.conv3.weight" in state
    backbone = next((name for name, (blk, n) in RESNET_SPECS.items()
                     if n == blocks and (blk.expansion == 4) == bottleneck), None)
    if backbone is None:
        raise CheckpointError(f"{path}: unsupported backbone layout (blocks per stage {blocks})")
    base = CONFIGS.get(f"lbdt{layers}", CONFIGS["lbdt1"])
    config = get_config(base, name=f"lbdt{layers}", transfer_layers=layers, backbone=backbone)
    ours = {official_to_ours(k): v for k, v in state.items() if not k.startswith(OFFICIAL_UNUSED_PREFIXES)}
    return {
        "format": FORMAT,
        "config": config.to_dict(),
        "text": {"tokenizer": TOKENIZER, "word_embedding": "glove", "glove": "glove.840B.300d",
                 "max_words": 25, "word_dim": 300},
        "state_dict": ours,
        "provenance": {"source": "authors' release (dzh19990407/LBDT)", "file": str(path),
                       "dropped_unused": list(OFFICIAL_UNUSED_PREFIXES), "training_data": "A2D Sentences",
                       "interval": 6},
        "training_state": None,
    }


def _describe(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_text_settings(text: dict, config: LBDTConfig, source: str) -> None:
    """The stored text settings must be the ones this version feeds the model: the same tokenizer,
    and the word embedding, sentence length and word size of the config."""
    problems = []
    if text.get("tokenizer", TOKENIZER) != TOKENIZER:
        problems.append(f"tokenizer {text['tokenizer']!r} (this version tokenizes as {TOKENIZER!r})")
    for key in ("word_embedding", "max_words", "word_dim"):
        if key in text and text[key] != getattr(config, key):
            problems.append(f"{key} {text[key]!r} but its model config has {getattr(config, key)!r}")
    if problems:
        raise CheckpointError(f"{source}: text settings do not match: " + "; ".join(problems))


def model_from_checkpoint(ckpt: dict, source: str = "checkpoint", skip_init: bool = False):
    """A ready LBDT module (eval mode) from a checkpoint dict (`read_checkpoint`), after strict
    checks: config, every weight's name and shape, and the text settings. CheckpointError with
    one line naming what does not match.

    `skip_init` builds the module on the meta device and takes the checkpoint's tensors as its
    weights, instead of initialising random weights the checkpoint then overwrites (0.7 s for
    LBDT-1 on this CPU). Training leaves it off, so its random number stream is as before."""
    from lbdt_cli.model.lbdt import LBDT

    try:
        config = LBDTConfig.from_dict(ckpt["config"])
        with torch.device("meta") if skip_init else contextlib.nullcontext():
            model = LBDT(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: invalid model config ({exc})") from None
    expected = model.state_dict()
    state = ckpt["state_dict"]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_describe(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_describe(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_describe(mismatched)})")
    if problems:
        raise CheckpointError(f"{source} does not match the {config.name} architecture: " + "; ".join(problems))
    _check_text_settings(ckpt.get("text") or {}, config, source)
    if skip_init:
        # the module's own dtypes (a half-precision file is widened), its tensors taken as they are
        state = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state.items()}
        model.load_state_dict(state, assign=True)
    else:
        model.load_state_dict(state)
    model.provenance = dict(ckpt.get("provenance") or {})
    model.text_settings = dict(ckpt.get("text") or {})
    return model.eval()


def load_checkpoint(path, map_location="cpu"):
    """A ready LBDT module (eval mode) from our format or the authors' LBDT-1/LBDT-4 files: the file
    memory-mapped, the module built without random initialisation around its tensors."""
    return model_from_checkpoint(read_checkpoint(path, map_location, mmap=True), source=str(path), skip_init=True)
