"""An exported LBDT: the text side in PyTorch, the vision graph in ONNX Runtime, OpenVINO or TorchScript.

The graph's inputs are the engine's: normalised frame and frame difference [B,3,S,S], the encoded
words [B,N,C], the sentence feature [B,C] and the padding mask [B,N] (bool); its output is the
mask logits [B,1,S,S]. The batch is dynamic, the input size is fixed at export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lbdt_cli.errors import CheckpointError, LbdtError
from lbdt_cli.model.configs import LBDTConfig
from lbdt_cli.model.lbdt import TextFeatures
from lbdt_cli.model.text import LSTMTextEncoder

__all__ = ["ExportedModel", "GRAPH_INPUTS", "TEXT_FILE", "text_state", "open_session"]

GRAPH_INPUTS = ("image", "frame_difference", "words", "sentence", "padding")
TEXT_FILE = "text.pt"
# OpenVINO's names for our precisions (its CPU plugin picks bf16 by itself where the CPU has it).
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def text_state(model: nn.Module) -> dict:
    """The weights the text side needs (LSTM, and the learned word embedding if any)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()
            if k.startswith(("text_encoder.", "word_embedding."))}  # fmt: skip


class _Session:
    """One compiled graph; `__call__(feeds: dict name -> ndarray) -> logits ndarray`."""

    precision = "fp32"  # what the runtime really computes in (int8 layers aside)


class _OnnxSession(_Session):
    def __init__(self, path: Path, precision: str) -> None:
        import onnxruntime as ort

        if precision != "fp32":
            raise CheckpointError(f"{path}: ONNX Runtime runs this export in fp32 only, not {precision}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.precision = "fp32"

    def __call__(self, feeds: dict) -> np.ndarray:
        return self.session.run(None, feeds)[0]


class _OpenVinoSession(_Session):
    def __init__(self, path: Path, precision: str) -> None:
        import openvino as ov

        core = ov.Core()
        # LATENCY: one stream over all cores runs the engine's batches. THROUGHPUT (parallel
        # requests over halves of a batch) measured within 1% of it on this 2-core CPU: not used.
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        # Read back: the plugin falls back to f32 where the CPU has no bf16 support.
        got = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.precision = "bf16" if ("bf16" in got or "bfloat16" in got) else "fp32"

    def __call__(self, feeds: dict) -> np.ndarray:
        out = self.request.infer(feeds, share_inputs=True)
        return np.array(out[self.compiled.output(0)], copy=True)


class _TorchScriptSession(_Session):
    def __init__(self, path: Path, precision: str) -> None:
        if precision != "fp32":
            raise CheckpointError(f"{path}: the TorchScript export runs in fp32 only, not {precision}")
        self.module = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.inference_mode()
    def __call__(self, feeds: dict) -> np.ndarray:
        args = [torch.from_numpy(np.asarray(feeds[k])) for k in GRAPH_INPUTS]
        return self.module(*args).numpy()


def open_session(fmt: str, path: Path, precision: str = "fp32") -> _Session:
    from lbdt_cli.backends import require_runtime

    require_runtime(fmt, export=False)
    if fmt == "onnx":
        return _OnnxSession(path, precision)
    if fmt == "openvino":
        return _OpenVinoSession(path, precision)
    return _TorchScriptSession(path, precision)


class ExportedModel(nn.Module):
    """The engine's model seam over an export folder (`config`, `encode_text`, `forward_with_text`).

    Runs on the CPU. The text side (word embedding, LSTM) stays in PyTorch fp32: it runs once per
    expression per clip, so exporting it would not be faster.
    """

    exported = True

    def __init__(self, folder: Path, manifest: dict, session: _Session, text: dict) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.manifest = manifest
        self.config = LBDTConfig.from_dict(manifest["config"])
        self.provenance = dict(manifest.get("provenance") or {})
        self.text_settings = dict(manifest.get("text") or {})
        self.format = manifest["format"]
        self.int8 = bool(manifest.get("int8"))
        self.session = session
        cfg = self.config
        self.word_embedding = (nn.Embedding(len(cfg.vocabulary) + 1, cfg.word_dim, padding_idx=0)
                               if cfg.word_embedding == "learned" else None)  # fmt: skip
        self.text_encoder = LSTMTextEncoder(cfg.word_dim, cfg.transfer_dim)
        self.load_state_dict(text)
        self.eval()

    @property
    def precision(self) -> str:
        """What the graph really computes in, e.g. 'int8+fp32' or 'bf16'."""
        return ("int8+" if self.int8 else "") + self.session.precision

    @property
    def backend_name(self) -> str:
        return f"{self.format} {self.precision}"

    @classmethod
    def load(cls, folder, precision: str | None = None) -> "ExportedModel":
        folder = Path(folder)
        from lbdt_cli.backends import FORMATS, MANIFEST

        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            fmt, model_file = manifest["format"], manifest["files"]["model"]
            LBDTConfig.from_dict(manifest["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{folder}/{MANIFEST} is not an lbdt export manifest ({exc})") from None
        if fmt not in FORMATS:
            raise CheckpointError(f"{folder}: unknown export format {fmt!r}")
        for name in (model_file, TEXT_FILE):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder} is missing {name}")
        try:
            text = torch.load(folder / TEXT_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - one line for any unreadable file
            raise CheckpointError(f"{folder / TEXT_FILE} is not readable ({str(exc).splitlines()[0][:120]})") from None
        session = open_session(fmt, folder / model_file, precision or manifest.get("precision", "fp32"))
        return cls(folder, manifest, session, text)

    # -------------------------------------------------------------- the engine's seam

    def embed_words(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.word_embedding is None:
            raise RuntimeError(f"config {self.config.name!r} takes GloVe vectors, not token ids")
        return self.word_embedding(token_ids)

    def encode_text(self, word_vectors: torch.Tensor, word_mask: torch.Tensor) -> TextFeatures:
        words = self.text_encoder(word_vectors.float().cpu())
        return TextFeatures(words, words.sum(dim=1), ~word_mask.cpu().bool())

    def forward_with_text(self, image: torch.Tensor, frame_diff: torch.Tensor, text: TextFeatures,
                          return_attention: bool = False, expressions_per_frame: int = 1):  # fmt: skip
        if return_attention:
            raise LbdtError("attention maps need the PyTorch checkpoint, not an exported model")
        if expressions_per_frame > 1:  # the graph takes one expression per row
            image = image.repeat_interleave(expressions_per_frame, dim=0)
            frame_diff = frame_diff.repeat_interleave(expressions_per_frame, dim=0)
        logits = self.session(self.feeds(image, frame_diff, text))
        return torch.from_numpy(logits), None

    @staticmethod
    def feeds(image, frame_diff, text: TextFeatures) -> dict:
        def arr(t, dtype=np.float32):
            return np.ascontiguousarray(t.detach().cpu().contiguous().numpy(), dtype=dtype)

        return {"image": arr(image.float()), "frame_difference": arr(frame_diff.float()), "words": arr(text.words),
                "sentence": arr(text.sentence), "padding": arr(text.padding, np.bool_)}  # fmt: skip
