"""`lbdt export`: a checkpoint to a deployable folder (ONNX, OpenVINO or TorchScript), with int8
quantisation (NNCF) and a parity report against the PyTorch model on real frames.

    OUT/
      export.json     format, precision, input size, config, text settings, provenance, files, versions
      model.onnx | model.xml + model.bin | model.ts     the vision graph (BatchNorm folded)
      text.pt         the text side's weights (LSTM, learned embedding), run in PyTorch
      parity.json     max|Δlogit|/max|logit| and mask IoU against the PyTorch fp32 model

The road: load the checkpoint, fold BatchNorm, export with torch's dynamo ONNX exporter (opset 18,
dynamic batch); int8: NNCF post-training quantisation of that ONNX graph on calibration frames,
with the layers named by `keep_fp` left in float; OpenVINO: `openvino.convert_model` of the ONNX
file; TorchScript: `torch.jit.trace`.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lbdt_cli.backends import FORMATS, MANIFEST, require_runtime
from lbdt_cli.backends.runtime import GRAPH_INPUTS, TEXT_FILE, ExportedModel, text_state
from lbdt_cli.errors import InputError, LbdtError
from lbdt_cli.model.lbdt import TextFeatures

__all__ = ["export_model", "CalibrationSet", "calibration_set", "parity", "DEFAULT_KEEP_FP", "onnx_nodes_for",
           "onnx_node_modules"]

EXPORT_FORMAT = "lbdt-export/1"
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.ts"}
# Modules left in float by --int8 unless --keep-fp says otherwise, chosen from the per-group
# sensitivity measured on the demo checkpoint (docs/export.md, scripts/int8_sensitivity.py): with
# every layer in int8, J on motion-needed expressions fell by 0.052; keeping only the stage-4
# transfer (the word/feature attention at 1/16) in float brought both groups within 0.004.
DEFAULT_KEEP_FP: tuple[str, ...] = ("transfer.stage4",)


class _Graph(nn.Module):
    """The vision part with the engine's inputs (text already encoded), one expression per row."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, image, frame_difference, words, sentence, padding):
        return self.m.forward_with_text(image, frame_difference, TextFeatures(words, sentence, padding))[0]


# ----------------------------------------------------------------------------------- data


@dataclass
class CalibrationSet:
    """Model inputs on real frames: normalised images and differences, the rows' text features."""

    images: torch.Tensor  # [K,3,S,S]
    diffs: torch.Tensor  # [K,3,S,S]
    text: TextFeatures  # K rows
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, lo: int, hi: int) -> dict:
        return ExportedModel.feeds(self.images[lo:hi], self.diffs[lo:hi],
                                   TextFeatures(self.text.words[lo:hi], self.text.sentence[lo:hi],
                                                self.text.padding[lo:hi]))  # fmt: skip


def _shapes_pairs(root: str | None, split: str, num_clips: int, interval: int, limit: int):
    """(frame, previous frame, expression) triples from shapes clips, spread over frames and clips."""
    from lbdt_cli.data.shapes_reader import ShapesEval

    ds = ShapesEval(root, split=split, interval=interval, num_clips=num_clips)
    samples = ds.samples
    step = max(1, len(samples) // limit)
    picked = samples[::step][:limit]
    out = []
    for s in picked:
        frames = ds.load_frames(s.video_id, [s.frame, s.prev_frame])
        out.append((frames[s.frame], frames[s.prev_frame], s.expression))
    return out, ds.source


def _clip_pairs(path: str, interval: int, expressions: Sequence[str], limit: int):
    from lbdt_cli.model.preprocess import previous_frame_index
    from lbdt_cli.video.reader import iter_frames

    if not expressions:
        raise LbdtError(f"--calibrate {path}: give the sentences to calibrate with (-e/--expression)")
    frames = [f.rgb for f in iter_frames(path)]
    if not frames:
        raise InputError(f"{path} has zero frames")
    step = max(1, len(frames) // max(1, limit // len(expressions)))
    out = []
    for t in range(0, len(frames), step):
        for e in expressions:
            out.append((frames[t], frames[previous_frame_index(t, interval, 0)], e))
    return out[:limit], path


def calibration_set(model: nn.Module, sources: Sequence[str], *, expressions: Sequence[str] = (),
                    glove: str | None = None, limit: int = 16, split: str = "val") -> CalibrationSet:  # fmt: skip
    """Inputs from clips, frame folders, `make-shapes` folders, or `shapes` (generated clips of
    `split`). Without sources: generated shapes clips of `split` (real frames of the demo data)."""
    from lbdt_cli.backends import is_export
    from lbdt_cli.model.preprocess import frame_difference, normalize_frames
    from lbdt_cli.model.text import TextEmbedder

    interval, size = model.config.interval, model.config.input_size
    sources = list(sources) or ["shapes"]
    per = max(1, -(-limit // len(sources)))
    triples, names = [], []
    for src in sources:
        if src == "shapes":
            got, name = _shapes_pairs(None, split, max(2, per // 8), interval, per)
        elif Path(src).is_dir() and (Path(src) / "expressions.json").is_file():
            got, name = _shapes_pairs(src, split, 0, interval, per)
        elif Path(src).exists() and not is_export(src):
            got, name = _clip_pairs(src, interval, expressions, per)
        else:
            raise InputError(f"--calibrate {src}: not a clip, frame folder, make-shapes folder or 'shapes'")
        triples += got
        names.append(name)
    triples = triples[:limit]

    def norm(rgb):
        return normalize_frames(torch.from_numpy(np.ascontiguousarray(rgb)), size)[0]

    images = torch.stack([norm(a) for a, _, _ in triples])
    diffs = frame_difference(images, torch.stack([norm(b) for _, b, _ in triples]))
    sentences = [e for _, _, e in triples]
    note = ""
    if model.config.word_embedding == "glove" and glove is None:
        # Without the GloVe file the text rows are random word vectors (seeded): the parity and the
        # int8 ranges then cover the vision graph on real frames, not real sentences.
        g = torch.Generator().manual_seed(0)
        vectors = torch.randn(len(sentences), model.config.max_words, model.config.word_dim, generator=g) * 0.4
        mask = torch.zeros(len(sentences), model.config.max_words)
        mask[:, :6] = 1
        note = " (random word vectors: no --glove)"
    else:
        vectors, mask, _ = TextEmbedder.for_model(model, glove).embed(sentences)
    with torch.inference_mode():
        text = model.encode_text(vectors, mask)
    text = TextFeatures(text.words.clone(), text.sentence.clone(), text.padding.clone())
    return CalibrationSet(images, diffs, text, "; ".join(names) + note)


# ----------------------------------------------------------------------------------- int8


def onnx_node_modules(onnx_path: Path) -> dict[str, str]:
    """ONNX node name -> the module path it came from (torch's exporter records each node's module
    scopes as metadata; nodes outside any module map to '')."""
    import ast

    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    out = {}
    for node in graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
        try:
            scopes = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            scopes = []
        paths = [sc[2:] for sc in scopes if isinstance(sc, str) and sc.startswith("m.")]
        out[node.name] = paths[-1] if paths else ""
    return out


def onnx_nodes_for(onnx_path: Path, patterns: Sequence[str]) -> list[str]:
    """ONNX node names inside a module matching one of the patterns (fnmatch on module paths such
    as `decoder.head*`, or a module path and everything under it, such as `transfer.stage4`)."""
    return [name for name, module in onnx_node_modules(onnx_path).items()
            if module and any(_matches(module, pat) for pat in patterns)]  # fmt: skip


def _matches(module: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(module, pattern) or module == pattern or module.startswith(pattern + ".")


def quantize_onnx(src: Path, dst: Path, calib: CalibrationSet, keep_fp: Sequence[str]) -> dict:
    """NNCF post-training int8 quantisation of an ONNX graph; returns what was kept in float."""
    import logging

    import nncf
    import onnx

    keep_nodes = onnx_nodes_for(src, keep_fp) if keep_fp else []
    model = onnx.load(str(src))
    data = nncf.Dataset([calib.batch(i, i + 1) for i in range(len(calib))])
    with _quiet():
        nncf.set_log_level(logging.ERROR)
        quantized = nncf.quantize(model, data, subset_size=len(calib),
                                  ignored_scope=nncf.IgnoredScope(names=keep_nodes, validate=False) if keep_nodes
                                  else None)  # fmt: skip
    onnx.save(quantized, str(dst))
    return {"keep_fp": list(keep_fp), "keep_fp_nodes": len(keep_nodes), "calibration_samples": len(calib),
            "calibration_source": calib.source, "tool": f"nncf {nncf.__version__}"}


# ----------------------------------------------------------------------------------- export


# Tracing is the slow step (tens of seconds even for the tiny model); exporting one checkpoint to
# several formats in one process traces it once. Keyed on the file's identity.
_ONNX_CACHE: dict[tuple, bytes] = {}


def _checkpoint_key(checkpoint) -> tuple:
    st = Path(checkpoint).stat()
    return (str(Path(checkpoint).resolve()), st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _quiet():
    """The exporters' and NNCF's chatter (progress bars, optimiser notes) off stdout and the console."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "nncf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    # torch's structured trace log sits at DEBUG; with a root handler listening (pytest's), every
    # traced op's payload would be built and formatted: minutes instead of seconds.
    trace = logging.getLogger("torch.__trace")
    trace_propagate, trace.propagate = trace.propagate, False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        trace.propagate = trace_propagate


def _export_onnx(graph: nn.Module, example: dict, path: Path, key: tuple | None = None) -> None:
    if key is not None and key in _ONNX_CACHE:
        path.write_bytes(_ONNX_CACHE[key])
        return
    batch = torch.export.Dim("batch", min=1, max=4096)
    args = tuple(torch.from_numpy(example[k]) for k in GRAPH_INPUTS)
    with _quiet():
        torch.onnx.export(graph, args, str(path), dynamo=True, opset_version=18, input_names=list(GRAPH_INPUTS),
                          output_names=["logits"], dynamic_shapes={k: {0: batch} for k in GRAPH_INPUTS},
                          external_data=False, verbose=False)  # fmt: skip
    if key is not None:
        _ONNX_CACHE.clear()  # one model's graph at a time
        _ONNX_CACHE[key] = path.read_bytes()


def parity(reference: nn.Module, exported: ExportedModel, calib: CalibrationSet, batch: int = 4) -> dict:
    """max|Δlogit| / max|logit| and mask IoU (logit > 0) of `exported` against `reference` (PyTorch fp32)."""
    ref, got = [], []
    with torch.inference_mode():
        for lo in range(0, len(calib), batch):
            hi = min(lo + batch, len(calib))
            text = TextFeatures(calib.text.words[lo:hi], calib.text.sentence[lo:hi], calib.text.padding[lo:hi])
            ref.append(reference.forward_with_text(calib.images[lo:hi], calib.diffs[lo:hi], text)[0].float())
            got.append(exported.forward_with_text(calib.images[lo:hi], calib.diffs[lo:hi], text)[0].float())
    ref_t, got_t = torch.cat(ref), torch.cat(got)
    a, b = ref_t > 0, got_t > 0
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return {
        "samples": len(calib), "frames": calib.source,
        "max_abs_logit_diff": float((ref_t - got_t).abs().max()), "max_abs_logit": float(ref_t.abs().max()),
        "relative_max_diff": float((ref_t - got_t).abs().max() / ref_t.abs().max().clamp(min=1e-12)),
        "mask_iou_mean": float(iou.mean()), "mask_iou_min": float(iou.min()),
        "mask_pixels_differing": float((a ^ b).float().mean()),
        "precision": exported.precision, "reference": "PyTorch fp32 (BatchNorm not folded)",
    }  # fmt: skip


def _versions(fmt: str, int8: bool) -> dict:
    import importlib.metadata as md

    names = ["torch"] + {"onnx": ["onnx", "onnxscript", "onnxruntime"], "openvino": ["onnx", "onnxscript", "openvino"],
                         "torchscript": []}[fmt] + (["nncf"] if int8 else [])  # fmt: skip
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def export_model(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *, precision: str = "fp32",
                 int8: bool = False, calibrate: Sequence[str] = (), expressions: Sequence[str] = (),
                 glove: str | None = None, keep_fp: Sequence[str] | None = None, calibration_samples: int = 16,
                 parity_samples: int = 16, overwrite: bool = False, say: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Write the export folder `out` atomically; returns its manifest (parity report included)."""
    from lbdt_cli.model import load_checkpoint
    from lbdt_cli.model.batchnorm_folding import fold_batchnorm
    from lbdt_cli.utils.atomic import atomic_dir, check_writable_output

    say = say or (lambda _m: None)
    if precision not in ("fp32", "bf16"):
        raise LbdtError(f"unknown --precision {precision!r} (use fp32 or bf16)")
    if precision == "bf16" and fmt != "openvino":
        raise LbdtError("--precision bf16 is for --format openvino (ONNX Runtime and TorchScript exports run fp32)")
    if int8 and fmt == "torchscript":
        raise LbdtError("--int8 is for --format onnx or openvino")
    if calibrate and not int8:
        raise LbdtError("--calibrate goes with --int8")
    if calibration_samples < 1 or parity_samples < 1:
        raise LbdtError("--calibration-samples and --parity-samples must be >= 1")
    require_runtime(fmt, int8)
    check_writable_output(out, overwrite)
    keep_fp = list(DEFAULT_KEEP_FP if keep_fp is None else keep_fp)

    say("loading the checkpoint")
    model = load_checkpoint(checkpoint, map_location="cpu")
    graph = _Graph(fold_batchnorm(model)).eval()
    say("reading calibration / parity frames")
    # Parity on generated val-split clips; int8 calibrates on the train split (or the user's data).
    parity_set = calibration_set(model, (), glove=glove, limit=parity_samples, split="val")
    calib = (calibration_set(model, calibrate, expressions=expressions, glove=glove, limit=calibration_samples,
                             split="train") if int8 else None)  # fmt: skip
    manifest = {
        "format": fmt, "export_format": EXPORT_FORMAT, "precision": precision, "int8": int8,
        "input_size": model.config.input_size, "interval": model.config.interval,
        "config": model.config.to_dict(), "text": dict(getattr(model, "text_settings", {}) or {}),
        "provenance": {**dict(model.provenance or {}), "exported_from": str(checkpoint),
                       "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "graph": {"inputs": list(GRAPH_INPUTS), "outputs": ["logits"], "batch": "dynamic",
                  "text_side": "PyTorch (text.pt): word embedding + LSTM, once per expression"},
        "versions": _versions(fmt, int8),
        "files": {"model": MODEL_FILES[fmt], "text": TEXT_FILE, "parity": "parity.json"},
    }  # fmt: skip
    with atomic_dir(out, overwrite=overwrite) as tmp:
        torch.save(text_state(model), tmp / TEXT_FILE)
        example = parity_set.batch(0, min(2, len(parity_set)))
        if fmt == "torchscript":
            say("tracing (TorchScript)")
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(graph, tuple(torch.from_numpy(example[k]) for k in GRAPH_INPUTS),
                                         check_trace=False)  # fmt: skip
                traced = torch.jit.freeze(traced)
            traced.save(str(tmp / MODEL_FILES[fmt]))
        else:
            say("exporting to ONNX (torch.onnx, dynamo, opset 18)")
            onnx_path = tmp / ("model.onnx" if fmt == "onnx" else "fp32.onnx")
            _export_onnx(graph, example, onnx_path, _checkpoint_key(checkpoint))
            if int8:
                say(f"quantising to int8 (NNCF, {len(calib)} calibration samples)")
                q_path = tmp / ("model.int8.onnx" if fmt == "onnx" else "int8.onnx")
                manifest["quantization"] = quantize_onnx(onnx_path, q_path, calib, keep_fp)
                os.replace(q_path, onnx_path)
            if fmt == "openvino":
                import openvino as ov

                say("converting to OpenVINO")
                ov.save_model(ov.convert_model(str(onnx_path)), str(tmp / "model.xml"), compress_to_fp16=False)
                onnx_path.unlink()
                manifest["files"]["weights"] = "model.bin"
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        say("parity against PyTorch")
        exported = ExportedModel.load(tmp)
        report = parity(model, exported, parity_set)
        report["format"], report["int8"] = fmt, int8
        del exported
        (tmp / "parity.json").write_text(json.dumps(report, indent=1))
    manifest["parity"] = report
    return manifest
