"""lbdt_cli.engine: previous-frame rule, batching invariance, stride, pair API, threading errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from lbdt_cli.engine import Predictor, Timings
from lbdt_cli.errors import LbdtError
from lbdt_cli.model import build_model
from lbdt_cli.model.lbdt import TextFeatures
from lbdt_cli.model.text import TextEmbedder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class _Cfg:
    input_size: int = 32
    interval: int = 3
    name: str = "probe"


@dataclass
class _Frame:
    index: int
    rgb: np.ndarray
    timestamp_s: float = 0.0


class DiffProbe(nn.Module):
    """Logits = mean |frame difference| + 2 x expression id, so the test can read back what it saw."""

    def __init__(self):
        super().__init__()
        self.config = _Cfg()
        self.w = nn.Parameter(torch.zeros(1))

    def encode_text(self, vectors, mask):
        e = vectors.shape[0]
        return TextFeatures(torch.arange(e, dtype=torch.float32)[:, None, None].expand(e, 1, 1), torch.zeros(e, 1),
                            torch.zeros(e, 1, dtype=torch.bool))

    def forward_with_text(self, image, diff, text, return_attention=False, expressions_per_frame=1):
        diff = diff.repeat_interleave(expressions_per_frame, dim=0)  # frame-major, like LBDT
        v = diff.mean(dim=(1, 2, 3)) + 2 * text.words[:, 0, 0]
        return v[:, None, None, None].expand(-1, 1, *image.shape[-2:]) + self.w, None


def _frames(n, h=20, w=30):
    # frame i is a flat grey of value 10*i: |diff| between i and j is proportional to |i - j|
    return [_Frame(i, np.full((h, w, 3), 10 * i, np.uint8)) for i in range(n)]


def _seen(pred):
    """(difference seen, expression id) per frame and expression from the probe's probabilities."""
    logit = np.log(pred.probs[:, 0, 0] / (1 - pred.probs[:, 0, 0]))
    return logit


def test_previous_frame_rule_and_resolution():
    p = Predictor(DiffProbe(), device="cpu", batch_size=4)
    text = p.encode_text(torch.zeros(2, 1, 1), torch.ones(2, 1))
    preds = list(p.predict_stream(_frames(10), text))
    assert [q.frame.index for q in preds] == list(range(10))
    assert preds[0].probs.shape == (2, 20, 30) and preds[0].probs.dtype == np.float32
    diffs = np.array([_seen(q)[0] for q in preds])
    # frames 0..3 pair with frame 0 (clamped): difference t steps; frames >= 3 pair with t - 3.
    expect = np.array([min(t, 3) for t in range(10)], np.float32)
    np.testing.assert_allclose(diffs / diffs[3], expect / 3, rtol=1e-4)
    assert diffs[0] == pytest.approx(0, abs=1e-5) and diffs[3] > 0
    np.testing.assert_allclose(_seen(preds[4])[1] - _seen(preds[4])[0], 2, rtol=1e-3)  # expression 1 row


def test_batching_and_threads_do_not_change_results():
    model = build_model("tiny").eval()
    vectors, mask, _ = TextEmbedder.for_model(model).embed(["the red circle", "a square moving left"])
    rng = np.random.default_rng(0)
    frames = [_Frame(i, rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for i in range(7)]
    outs = []
    for bs in (1, 3, 8):
        p = Predictor(model, device="cpu", batch_size=bs)
        got = []
        p.run(frames, p.encode_text(vectors, mask), got.append)
        outs.append(np.stack([g.probs for g in got]))
    assert outs[0].shape == (7, 2, 40, 50)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
    # the pair API gives the same numbers for the same (frame, previous frame, expression)
    p = Predictor(model, device="cpu", batch_size=4)
    text = p.encode_text(vectors, mask)
    d = model.config.interval
    t = 5
    pair = p.predict_pairs([frames[t].rgb], [frames[t - d].rgb], [1], text)
    np.testing.assert_allclose(pair[0], outs[0][t, 1], atol=1e-5)


def test_stride_keeps_lookback_frames():
    p = Predictor(DiffProbe(), device="cpu", batch_size=2)
    text = p.encode_text(torch.zeros(1, 1, 1), torch.ones(1, 1))
    preds = list(p.predict_stream(_frames(10), text, select=lambda f: f.index % 4 == 0))
    assert [q.frame.index for q in preds] == [0, 4, 8]
    full = {q.frame.index: _seen(q)[0] for q in p.predict_stream(_frames(10), text)}
    for q in preds:  # same previous frame as without the stride
        assert _seen(q)[0] == pytest.approx(full[q.frame.index], rel=1e-5, abs=1e-6)


def test_pairs_at_each_frames_own_size():
    model = build_model("tiny").eval()
    vectors, mask, _ = TextEmbedder.for_model(model).embed(["a circle"])
    p = Predictor(model, device="cpu", batch_size=2)
    text = p.encode_text(vectors, mask)
    sizes = [(47, 65), (30, 40), (64, 64)]
    frames = [np.zeros((h, w, 3), np.uint8) for h, w in sizes]
    out = p.predict_pairs(frames, frames, [0, 0, 0], text)
    assert [o.shape for o in out] == sizes and all(o.dtype == np.float32 for o in out)
    assert all(((o >= 0) & (o <= 1)).all() for o in out)


def test_sink_error_and_reader_error_propagate():
    p = Predictor(DiffProbe(), device="cpu", batch_size=2)
    text = p.encode_text(torch.zeros(1, 1, 1), torch.ones(1, 1))

    def bad_sink(_pred):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        p.run(_frames(6), text, bad_sink)

    def bad_frames():
        yield from _frames(2)
        raise ValueError("decode failed")

    with pytest.raises(ValueError, match="decode failed"):
        p.run(bad_frames(), text, lambda _p: None)
    t = p.run(_frames(5), text, lambda _p: None)
    assert isinstance(t, Timings) and t.frames == 5 and t.total_s > 0


def test_bad_settings():
    with pytest.raises(LbdtError, match="precision"):
        Predictor(DiffProbe(), device="cpu", precision="fp8")
    with pytest.raises(LbdtError, match="multiple of 32"):
        Predictor(DiffProbe(), device="cpu", input_size=50)
    if not torch.cuda.is_available():
        with pytest.raises(LbdtError, match="CUDA"):
            Predictor(DiffProbe(), device="cuda")
        with pytest.raises(LbdtError, match="fp16"):
            Predictor(DiffProbe(), device="cpu", precision="fp16")
