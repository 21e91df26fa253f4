"""Batched LBDT inference over a stream of frames, shared by `segment` and `eval`.

The road a frame takes:

    reader thread: decode ──► bounded queue ──► main thread: look-back window (δ frames)
        ──► preprocess (resize, normalise, |difference|) ──► batch of (frame, expression) pairs
        ──► model (each expression's text encoded once) ──► logits upsampled to the clip's size,
        sigmoid ──► bounded queue ──► writer thread: threshold, encode, write

Decode, model and encode overlap, and every queue is bounded, so memory stays flat however
long the clip is: at most `interval + 1` decoded frames are kept for the frame difference.

Previous-frame rule: frame t is paired with frame max(t - δ, first), where `first` is the first
frame read (frame `start` of the clip), so the first δ frames see a zero difference.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lbdt_cli.errors import InputError, LbdtError
from lbdt_cli.model.preprocess import frame_difference, normalize_frames, previous_frame_index
from lbdt_cli.runtime import autocast, dist_env, precision_dtype, resolve_device
from lbdt_cli.utils.startup import mark

__all__ = ["Predictor", "FramePrediction", "Timings"]

_END = object()


@dataclass
class Timings:
    """Seconds spent in each stage (threads overlap, so the parts can sum to more than total)."""

    decode_s: float = 0.0
    model_s: float = 0.0
    encode_s: float = 0.0
    total_s: float = 0.0
    frames: int = 0

    def as_dict(self) -> dict:
        d = {k: round(v, 4) for k, v in self.__dict__.items() if k.endswith("_s")}
        d["frames"] = self.frames
        return d


@dataclass
class FramePrediction:
    frame: object  # lbdt_cli.video.Frame (index, timestamp_s, rgb uint8 [H, W, 3])
    probs: np.ndarray  # float32 [E, H, W] at the clip's own resolution
    attention: dict | None = None  # per expression: {"words": [...], "frame": [N,h,w], "difference": [N,h,w]}
    extra: dict = field(default_factory=dict)


class _Reader(threading.Thread):
    """Pulls frames from an iterator into a bounded queue, timing the decode; re-raises its errors."""

    def __init__(self, frames: Iterable, maxsize: int, timings: Timings) -> None:
        super().__init__(daemon=True)
        self.frames, self.timings = frames, timings
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        it = iter(self.frames)
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                self.timings.decode_s += time.perf_counter() - t0
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.error = exc
        finally:
            if hasattr(it, "close"):
                with contextlib.suppress(Exception):
                    it.close()  # stops ffmpeg
            while True:  # the end marker must get through even if the queue is full
                try:
                    self.queue.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if self.stop.is_set():
                        with contextlib.suppress(queue.Empty):
                            self.queue.get_nowait()

    def __iter__(self) -> Iterator:
        while True:
            item = self.queue.get()
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        self.join(timeout=10)


def _check_settings(device: torch.device, precision: str, batch_size: int, input_size: int | None,
                    interval: int | None) -> None:
    """The inference flags that need no model, checked before one is loaded."""
    precision_dtype(precision, device)  # the name, and fp16 only on CUDA
    if batch_size < 1:
        raise LbdtError(f"--batch-size must be >= 1, got {batch_size}")
    if input_size is not None and (input_size < 32 or input_size % 32):
        raise LbdtError(f"--size must be a positive multiple of 32, got {input_size}")
    if interval is not None and interval < 1:
        raise LbdtError(f"--interval must be >= 1, got {interval}")


class Predictor:
    """Runs an LBDT model on frames, in batches, with the text side encoded once per expression.

        predictor = Predictor.from_checkpoint("LBDT_4.pth", glove="glove.840B.300d.txt", device="auto")
        vectors, mask, reports = predictor.embedder.embed(["the man in red"])
        text = predictor.encode_text(vectors, mask)                 # [E, 25, 300], [E, 25]
        for pred in predictor.predict_stream(iter_frames(path), text):
            pred.probs                                               # float32 [E, H, W]

    `batch_size` counts model inputs, i.e. (frame, expression) pairs: with E expressions a batch
    holds ceil(batch_size / E) frames.
    """

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, *, glove: str | os.PathLike | None = None,
                        device: str | torch.device = "auto", precision: str = "fp32", batch_size: int = 8,
                        input_size: int | None = None, interval: int | None = None,
                        **options) -> "Predictor":  # fmt: skip
        """The one road from a checkpoint file to a model ready for inference, used by segment and
        eval: every flag is checked first, then the checkpoint is loaded with its strict checks
        (`read_checkpoint`, `model_from_checkpoint`), its text embedder made (GloVe for GloVe models), and the model moved
        to the device in inference form. `path` None means the bundled demo checkpoint.
        Under torchrun, `device="auto"` is this process's GPU."""
        from lbdt_cli.backends import is_export, load_model
        from lbdt_cli.model.batchnorm_folding import fold_batchnorm
        from lbdt_cli.model.checkpoint import model_from_checkpoint, read_checkpoint
        from lbdt_cli.model.text import TextEmbedder
        from lbdt_cli.weights import checkpoint_or_default

        path = checkpoint_or_default(path)
        exported = is_export(path)
        if exported and str(device) in ("auto", "", "None"):
            device = "cpu"  # exported models run on the CPU
        dev = cls.check_flags(device, precision, batch_size, input_size, interval, glove)
        mark("ready_to_load")
        fold = options.pop("fold_batchnorm", True)
        if exported:
            model = load_model(path, map_location="cpu")  # an `lbdt export` folder
            mark("checkpoint_read")
        else:
            # Start-up is most of a short clip's run: the file is memory-mapped, the module built
            # around its tensors without random initialisation, BatchNorm folded in place (this
            # model is ours alone).
            ckpt = read_checkpoint(path, map_location="cpu", mmap=True)
            mark("checkpoint_read")
            model = model_from_checkpoint(ckpt, source=str(path), skip_init=True)
            del ckpt
            if fold:  # in the engine's layout, so moving it costs no copy
                layout = torch.channels_last if options.get("channels_last", True) else torch.contiguous_format
                fold_batchnorm(model, inplace=True, memory_format=layout)
        mark("model_built")
        embedder = TextEmbedder.for_model(model, glove)
        predictor = cls(model, dev, precision, batch_size, input_size, interval, embedder=embedder,
                        fold_batchnorm=False, **options)  # fmt: skip
        predictor.checkpoint = Path(path)
        mark("model_on_device")
        return predictor

    @staticmethod
    def check_flags(device: str | torch.device = "auto", precision: str = "fp32", batch_size: int = 8,
                    input_size: int | None = None, interval: int | None = None,
                    glove: str | os.PathLike | None = None) -> torch.device:  # fmt: skip
        """Every inference flag, checked without loading anything (commands call it before their
        output checks too); returns the device. LbdtError / InputError for a bad one."""
        dev = resolve_device(device, dist_env())
        _check_settings(dev, precision, batch_size, input_size, interval)
        if glove is not None and not Path(glove).is_file():
            raise InputError(f"GloVe file not found: {glove}")
        return dev

    def non_finite_weights(self) -> int:
        """How many weights and buffers of the model are NaN or infinite (0 for a sound checkpoint)."""
        with torch.no_grad():
            tensors = list(self.model.parameters()) + list(self.model.buffers())
            return int(sum((~torch.isfinite(t)).sum().item() for t in tensors if t.is_floating_point()))

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "auto", precision: str = "fp32",
                 batch_size: int = 8, input_size: int | None = None, interval: int | None = None,
                 channels_last: bool = True, fold_batchnorm: bool = True, embedder=None) -> None:  # fmt: skip
        # An exported model (lbdt_cli.backends) runs in its own runtime on the CPU, at the precision
        # it was exported for; the engine hands it CPU tensors through the same calls.
        self.exported = bool(getattr(model, "exported", False))
        if self.exported:
            if str(device) not in ("auto", "cpu"):
                raise LbdtError(f"--device {device}: an exported model runs on the CPU (use the checkpoint for GPUs)")
            if precision not in ("fp32", model.precision.split("+")[-1]):
                raise LbdtError(f"--precision {precision}: this export runs at {model.precision}; "
                                "export again with --precision to change it")
            device = "cpu"
        self.device = resolve_device(device)
        _check_settings(self.device, precision, batch_size, input_size, interval)
        self.precision = model.precision if self.exported else precision
        self.batch_size = batch_size
        self.input_size = int(model.config.input_size if input_size is None else input_size)
        self.interval = int(model.config.interval if interval is None else interval)
        self.embedder = embedder  # TextEmbedder for this model (from_checkpoint makes it)
        self.checkpoint: Path | None = None
        # NHWC convolutions are ~25% faster with oneDNN on the CPU here, and suit tensor cores on GPUs.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.eval()
        if fold_batchnorm and not self.exported:
            # Inference only: a folded copy skips one pass over every feature map (~5% on CPU).
            from lbdt_cli.model.batchnorm_folding import fold_batchnorm as fold

            model = fold(model)
        self.model = model.to(self.device, memory_format=self.memory_format)

    # ------------------------------------------------------------------ text

    @torch.inference_mode()
    def encode_text(self, word_vectors: torch.Tensor, word_mask: torch.Tensor):
        """Encode E expressions once: TextFeatures with batch E, on the model's device."""
        return self.model.encode_text(word_vectors.to(self.device), word_mask.to(self.device))

    # ------------------------------------------------------------------ model

    def _autocast(self):
        if self.exported:  # the runtime applies the export's own precision
            return contextlib.nullcontext()
        return autocast(self.device, self.precision)

    def _preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device, non_blocking=True)
        return normalize_frames(x, self.input_size)[0]

    @torch.inference_mode()
    def _forward(self, images: torch.Tensor, prevs: torch.Tensor, text, text_index: torch.Tensor,
                 return_attention: bool = False, expressions_per_frame: int = 1):  # fmt: skip
        """images, prevs: normalised [B,3,S,S]; `text_index` picks E = `expressions_per_frame`
        expressions per frame (frame-major). Logits float32 [B·E,1,S,S]."""
        images = images.contiguous(memory_format=self.memory_format)
        prevs = prevs.contiguous(memory_format=self.memory_format)
        diff = frame_difference(images, prevs)
        with self._autocast():
            logits, attn = self.model.forward_with_text(images, diff, text.index(text_index), return_attention,
                                                        expressions_per_frame)
        return logits.float(), attn

    @torch.inference_mode()
    def _run_batch(self, batch: list, text, num_expr: int, attention_frames: set[int] | None):
        """batch: [(frame, x_t, x_prev, prev_rgb or None)] -> list[FramePrediction]."""
        n = len(batch)
        images = torch.stack([b[1] for b in batch])
        prevs = torch.stack([b[2] for b in batch])
        text_index = torch.arange(num_expr, device=self.device).repeat(n)  # frame-major rows
        want_attn = bool(attention_frames) and any(b[0].index in attention_frames for b in batch)
        # The sentence-independent layers run once per frame, not once per (frame, expression).
        logits, attn = self._forward(images, prevs, text, text_index, want_attn, num_expr)
        out = []
        for i, (frame, _, _, prev_rgb) in enumerate(batch):
            h, w = frame.rgb.shape[:2]
            lg = logits[i * num_expr : (i + 1) * num_expr]
            probs = torch.sigmoid(F.interpolate(lg, size=(h, w), mode="bilinear", align_corners=False))[:, 0]
            pred = FramePrediction(frame, probs.cpu().numpy())
            if want_attn and frame.index in attention_frames:
                pred.attention = self._attention_maps(attn, i, num_expr)
                pred.extra["prev_rgb"] = prev_rgb
            out.append(pred)
        return out

    def _attention_maps(self, attn: dict, row: int, num_expr: int) -> list[dict]:
        """Per expression of frame `row`: per-word maps over the frame and the frame difference
        (stage 4, last transfer layer, heads averaged), like the paper's Fig. 6."""
        layer = attn["stage4"][-1]
        side = self.input_size // 16
        maps = []
        for e in range(num_expr):
            r = row * num_expr + e
            on_frame = layer["to_temporal"].words_from_source[r]  # words gathered from the spatial stream
            on_diff = layer["to_spatial"].words_from_source[r]  # ... and from the temporal stream
            maps.append({
                "frame": on_frame.float().reshape(-1, side, side).cpu().numpy(),
                "difference": on_diff.float().reshape(-1, side, side).cpu().numpy(),
            })  # fmt: skip
        return maps

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> normalised [3, S, S] on the device, for callers that batch themselves."""
        return self._preprocess(rgb)

    def predict_batch(self, batch: Sequence, text) -> list[FramePrediction]:
        """One batch the caller picked (the live loop): [(frame, x, x_prev)] with x, x_prev from
        `preprocess`; every expression of `text` for each frame."""
        return self._run_batch([(f, x, p, None) for f, x, p in batch], text, int(text.words.shape[0]), None)

    # ------------------------------------------------------------------ streams

    def predict_stream(self, frames: Iterable, text, *, select: Callable[[object], bool] | None = None,
                       timings: Timings | None = None, attention_frames: Sequence[int] | None = None,
                       first_index: int | None = None) -> Iterator[FramePrediction]:  # fmt: skip
        """Probabilities for every frame of `frames` (objects with .index and .rgb, in order).

        Frames for which `select(frame)` is False are only kept as possible previous frames (for
        --stride); the previous frame of frame t is max(t - interval, first_index or the first
        frame's index). Decoding runs on a reader thread.
        """
        timings = timings if timings is not None else Timings()
        num_expr = int(text.words.shape[0])
        frames_per_batch = max(1, -(-self.batch_size // num_expr))
        batch_frames = 1  # the first batch holds one frame, so the first mask comes early
        attention_frames = set(attention_frames or ())
        reader = _Reader(frames, maxsize=2 * frames_per_batch + 2, timings=timings)
        reader.start()
        window: collections.OrderedDict[int, list] = collections.OrderedDict()  # index -> [rgb, x or None]
        first = first_index
        batch: list = []
        try:
            for frame in reader:
                if first is None:
                    first = frame.index
                window[frame.index] = [frame.rgb, None]
                while next(iter(window)) < frame.index - self.interval:
                    window.popitem(last=False)
                if select is not None and not select(frame):
                    continue
                t0 = time.perf_counter()
                prev = previous_frame_index(frame.index, self.interval, first)
                if prev not in window:  # a gap in the indices: fall back to the oldest frame kept
                    prev = next(iter(window))
                for k in {frame.index, prev}:
                    if window[k][1] is None:
                        window[k][1] = self._preprocess(window[k][0])
                batch.append((frame, window[frame.index][1], window[prev][1],
                              window[prev][0] if frame.index in attention_frames else None))
                timings.model_s += time.perf_counter() - t0
                if len(batch) == batch_frames:
                    yield from self._timed_batch(batch, text, num_expr, attention_frames, timings)
                    batch, batch_frames = [], frames_per_batch
            if batch:
                yield from self._timed_batch(batch, text, num_expr, attention_frames, timings)
        finally:
            reader.close()

    def _timed_batch(self, batch, text, num_expr, attention_frames, timings):
        t0 = time.perf_counter()
        preds = self._run_batch(batch, text, num_expr, attention_frames)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings.model_s += time.perf_counter() - t0
        if not timings.frames:
            mark("first_mask")
        timings.frames += len(preds)
        yield from preds

    def run(self, frames: Iterable, text, sink: Callable[[FramePrediction], None], *,
            select: Callable[[object], bool] | None = None, attention_frames: Sequence[int] | None = None,
            first_index: int | None = None, on_frame: Callable[[FramePrediction], None] | None = None,
            queue_size: int = 8) -> Timings:  # fmt: skip
        """predict_stream with `sink(pred)` (the writers) called on a writer thread; returns Timings.

        `on_frame(pred)` is called on the calling thread after each frame (progress bars).
        An exception in the sink stops the run and is re-raised here.
        """
        timings = Timings()
        out: queue.Queue = queue.Queue(maxsize=queue_size)
        errors: list[BaseException] = []

        def write_loop() -> None:
            while True:
                item = out.get()
                if item is _END:
                    return
                if errors:
                    continue  # drain after a failure
                t0 = time.perf_counter()
                try:
                    sink(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                    errors.append(exc)
                timings.encode_s += time.perf_counter() - t0

        writer = threading.Thread(target=write_loop, daemon=True)
        writer.start()
        t_start = time.perf_counter()
        try:
            stream = self.predict_stream(frames, text, select=select, timings=timings,
                                         attention_frames=attention_frames, first_index=first_index)  # fmt: skip
            try:
                for pred in stream:
                    if errors:
                        break
                    out.put(pred)
                    if on_frame is not None:
                        on_frame(pred)
            finally:
                stream.close()
        finally:
            out.put(_END)
            writer.join()
        timings.total_s = time.perf_counter() - t_start
        if errors:
            raise errors[0]
        return timings

    # ------------------------------------------------------------------ pairs (eval)

    @torch.inference_mode()
    def predict_pairs(self, frames: Sequence[np.ndarray], prev_frames: Sequence[np.ndarray],
                      text_index_per_pair: Sequence[int], text, native: bool = False) -> list[np.ndarray]:  # fmt: skip
        """Probabilities float32 [H, W] for each (frame, previous frame, expression index) triple,
        at each frame's own size (at the model's input size with `native`, as the authors'
        evaluation scored them). Frames are uint8 [H, W, 3] RGB; sizes may differ between pairs."""
        results: list[np.ndarray] = []
        for lo in range(0, len(frames), self.batch_size):
            hi = min(lo + self.batch_size, len(frames))
            images = torch.stack([self._preprocess(f) for f in frames[lo:hi]])
            prevs = torch.stack([self._preprocess(f) for f in prev_frames[lo:hi]])
            idx = torch.as_tensor(list(text_index_per_pair[lo:hi]), device=self.device, dtype=torch.long)
            logits, _ = self._forward(images, prevs, text, idx)
            if native:
                results.extend(torch.sigmoid(logits[:, 0]).cpu().numpy())
                continue
            for k, f in enumerate(frames[lo:hi]):
                up = F.interpolate(logits[k : k + 1], size=f.shape[:2], mode="bilinear", align_corners=False)
                results.append(torch.sigmoid(up)[0, 0].cpu().numpy())
        return results
