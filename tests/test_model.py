import math

import pytest
import torch

from lbdt_cli.errors import CheckpointError
from lbdt_cli.model import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from lbdt_cli.model.checkpoint import official_to_ours
from lbdt_cli.model.decoder import BilateralChannelActivation, aligned_bilinear
from lbdt_cli.model.positional import sine_encoding_1d, sine_encoding_2d
from lbdt_cli.model.transfer import TransferLayer

from official_layout import official_keys, random_official_state_dict
from reference_lbdt import pos1d, pos2d, reference_forward, transfer_layer, upsample_aligned

torch.set_num_threads(2)


def _inputs(batch, size, seed=1, real_words=(4, 9)):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, size, size, generator=g)
    prev = torch.randn(batch, 3, size, size, generator=g)
    words = torch.randn(batch, 25, 300, generator=g) * 0.3
    mask = torch.zeros(batch, 25)
    for b in range(batch):
        n = real_words[b % len(real_words)]
        mask[b, :n] = 1
        words[b, n:] = 0  # padding tokens are zero vectors
    return image, (image - prev).abs(), words, mask


def test_position_encodings_match_the_direct_formula():
    assert torch.allclose(sine_encoding_1d(25, 512), pos1d(25, 512), atol=1e-5)
    assert torch.allclose(sine_encoding_2d(512, 10, 7), pos2d(512, 10, 7), atol=1e-5)
    # the x half varies along width only, the y half along height only
    pe = sine_encoding_2d(64, 5, 6)
    assert torch.equal(pe[:32, 0], pe[:32, 4]) and torch.equal(pe[32:, :, 0], pe[32:, :, 5])


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_aligned_bilinear_matches_independent_sampling(factor):
    x = torch.randn(2, 3, 5, 7)
    ours = aligned_bilinear(x, factor)
    assert ours.shape == (2, 3, 5 * factor, 7 * factor)
    assert torch.allclose(ours, upsample_aligned(x, factor), atol=1e-5)


def test_transfer_layer_matches_direct_formula():
    torch.manual_seed(0)
    layer = TransferLayer(dim=64, num_heads=4, ffn_dim=64).eval()
    src, tgt = torch.randn(2, 12, 64), torch.randn(2, 12, 64)
    words = torch.randn(2, 6, 64)
    pad = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    pv, pw = torch.randn(1, 12, 64), torch.randn(1, 6, 64)
    ours, _ = layer(src, tgt, words, pv, pw, pad)
    sd = {official: v for official, v in _as_official(layer.state_dict(), "").items()}
    ref = transfer_layer(src, tgt, words, pv, pw, pad, sd, "", 4)
    assert torch.allclose(ours, ref, atol=1e-5)


def _as_official(state, prefix):
    names = {"words_self_attn": "self_attn_words", "words_from_source": "cross_attn_img",
             "target_from_words": "cross_attn_flo", "norm_words_self": "norm_words_1",
             "norm_words_source": "norm_words_2", "norm_target": "norm_flo", "norm_ffn": "norm_flo2"}
    out = {}
    for k, v in state.items():
        head, rest = k.split(".", 1)
        out[prefix + names.get(head, head) + "." + rest] = v
    return out


def test_bilateral_channel_activation_matches_formula():
    torch.manual_seed(0)
    bca = BilateralChannelActivation(channels=8, sentence_dim=16).eval()
    ds, dt, sent = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5), torch.randn(2, 16)
    s, t = ds.mean((2, 3)), dt.mean((2, 3))
    f = torch.relu(bca.joint_fc(torch.cat([s, t], 1)))
    s_r = torch.sigmoid(bca.spatial_language_fc(torch.cat([s, sent], 1)))
    t_r = torch.sigmoid(bca.temporal_language_fc(torch.cat([t, sent], 1)))
    f_s, f_t = torch.sigmoid(bca.spatial_consistency_fc(f)), torch.sigmoid(bca.temporal_consistency_fc(f))
    expected = bca.fuse_conv(torch.cat([ds * (s_r * f_s)[..., None, None], dt * (t_r * f_t)[..., None, None]], 1))
    assert torch.allclose(bca(ds, dt, sent), expected, atol=1e-6)


def test_every_official_key_maps_onto_our_model():
    for layers in (1, 4):
        ours = set(build_model(f"lbdt{layers}").state_dict())
        mapped = {official_to_ours(k) for k, _, _ in official_keys(layers)
                  if not k.startswith(("decoder.spa_tower", "decoder.tem_tower", "decoder.mask_head"))}
        assert mapped == ours


@pytest.mark.parametrize("layers,size,prefix", [(1, 320, "module."), (4, 160, "")])
def test_equivalence_with_released_model_on_official_layout(tmp_path, layers, size, prefix):
    sd = random_official_state_dict(layers, seed=layers, prefix=prefix)
    path = tmp_path / f"lbdt{layers}.pth"
    torch.save(sd, path)
    model = load_checkpoint(path)
    assert model.config.transfer_layers == layers and not model.training
    image, diff, words, mask = _inputs(2, size)
    with torch.no_grad():
        ours = model(image, diff, words, mask)
        plain = {k[len(prefix):]: v for k, v in sd.items()}
        ref = reference_forward(plain, image, diff, words, mask)
    assert ours.shape == ref.shape == (2, 1, size, size)
    scale = ref.abs().max().item()
    assert scale > 1e-3 and math.isfinite(scale)
    assert (ours - ref).abs().max().item() <= 1e-4 * scale
    # the two samples differ (different sentences), so the check is not trivially satisfied
    assert (ref[0] - ref[1]).abs().max() > 1e-3 * scale


def test_our_format_round_trip_restores_config_and_outputs(tmp_path):
    model = build_model("tiny").eval()
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, provenance={"note": "test"})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.provenance == {"note": "test"}
    image, diff, _, mask = _inputs(2, 64)
    ids = torch.tensor([[1, 3, 8] + [0] * 22, [2, 4, 7, 9] + [0] * 21])
    with torch.no_grad():
        a = model(image, diff, model.embed_words(ids), mask)
        b = loaded(image, diff, loaded.embed_words(ids), mask)
    assert torch.equal(a, b)


def test_half_precision_checkpoint_loads_as_fp32(tmp_path):
    model = build_model("tiny").eval()
    save_checkpoint(tmp_path / "h.pt", model, half=True)
    loaded = load_checkpoint(tmp_path / "h.pt")
    p = next(loaded.parameters())
    assert p.dtype == torch.float32
    ref = next(model.parameters())
    assert torch.allclose(p, ref, atol=1e-2) and not torch.equal(p, ref)


def test_stored_text_settings_are_checked_on_load(tmp_path):
    from lbdt_cli.model.checkpoint import model_from_checkpoint, read_checkpoint

    save_checkpoint(tmp_path / "t.pt", build_model("tiny"))
    ckpt = read_checkpoint(tmp_path / "t.pt")
    assert model_from_checkpoint(ckpt).text_settings["tokenizer"] == ckpt["text"]["tokenizer"]
    for key, value, needle in (("tokenizer", "whitespace-v0", "tokenizer 'whitespace-v0'"),
                               ("word_embedding", "glove", "word_embedding 'glove' but its model config has "
                                                           "'learned'"),
                               ("max_words", 30, "max_words 30")):
        bad = {**ckpt, "text": {**ckpt["text"], key: value}}
        with pytest.raises(CheckpointError, match=needle):
            model_from_checkpoint(bad, source="t.pt")


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)


def test_other_architecture_names_what_is_missing(tmp_path):
    import torchvision

    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(CheckpointError, match="not an LBDT checkpoint: missing 'conv1_1.weight'"):
        load_checkpoint(path)


def test_damaged_official_checkpoint_lists_a_few_keys(tmp_path):
    sd = random_official_state_dict(1)
    removed = [k for k in sd if k.startswith("decoder.fusion.")]
    for k in removed:
        del sd[k]
    sd["decoder.refine_spa.0.0.weight"] = torch.zeros(64, 256, 3, 3)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "broken.pth")
    msg = str(info.value)
    assert f"{len(removed)} missing keys" in msg and "decoder.bca." in msg and "more" in msg
    assert "1 shape mismatches" in msg and "(64, 256, 3, 3) vs (128, 256, 3, 3)" in msg
    assert "\n" not in msg and len(msg) < 600


def test_read_checkpoint_reports_layer_count_from_keys(tmp_path):
    torch.save(random_official_state_dict(4), tmp_path / "l4.pth")
    ckpt = read_checkpoint(tmp_path / "l4.pth")
    assert ckpt["config"]["transfer_layers"] == 4 and ckpt["config"]["name"] == "lbdt4"
    assert ckpt["config"]["word_embedding"] == "glove"


def test_folding_batchnorm_keeps_outputs_and_leaves_no_batchnorm():
    from lbdt_cli.model.batchnorm_folding import fold_batchnorm

    sd = random_official_state_dict(1, seed=3)
    from lbdt_cli.model.checkpoint import _convert_official, model_from_checkpoint
    from pathlib import Path

    model = model_from_checkpoint(_convert_official(sd, Path("x")))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    image, diff, words, mask = _inputs(2, 96)
    with torch.no_grad():
        a, b = model(image, diff, words, mask), folded(image, diff, words, mask)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model("tiny"))
    same = fold_batchnorm(model, inplace=True)  # the inference road folds its own model in place
    assert same is model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(image, diff, words, mask), b)


def test_resnet_is_torchvisions():
    """Our ResNet (written out to spare start-up the torchvision import) has torchvision's weight
    keys, the same initial weights from the same seed (and leaves the random stream where
    torchvision does), and the same outputs."""
    import torchvision.models.resnet as tv

    from lbdt_cli.model import encoders

    for (theirs, ours), layers in (((tv.Bottleneck, encoders.Bottleneck), [3, 4, 6, 3]),
                                   ((tv.BasicBlock, encoders.BasicBlock), [1, 1, 1, 1])):  # fmt: skip
        torch.manual_seed(0)
        a, after_a = tv.ResNet(theirs, layers).eval(), torch.rand(3)
        torch.manual_seed(0)
        b, after_b = encoders.ResNet(ours, layers).eval(), torch.rand(3)
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert torch.equal(after_a, after_b)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(a(x), b(x))


def test_inference_loading_maps_the_file_and_skips_random_init(tmp_path, monkeypatch):
    """load_checkpoint memory-maps the file and builds the module around its tensors (no random
    initialisation): same weights and outputs as building, initialising and loading; a
    half-precision file is widened to float32."""
    from lbdt_cli.model.checkpoint import model_from_checkpoint

    import sys

    before = set(sys.modules)
    sd = random_official_state_dict(1, seed=5, prefix="module.")
    torch.save(sd, tmp_path / "l1.pth")
    inits = []
    real = torch.nn.init.kaiming_normal_
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_",
                        lambda t, *a, **k: (inits.append(t.is_meta), real(t, *a, **k))[1])  # fmt: skip
    fast = load_checkpoint(tmp_path / "l1.pth")
    assert all(inits)  # no initialiser ran on a real tensor: no random numbers drawn
    inits.clear()
    slow = model_from_checkpoint(read_checkpoint(tmp_path / "l1.pth"))
    assert inits and not any(inits)
    fs, ss = fast.state_dict(), slow.state_dict()
    assert list(fs) == list(ss) and all(torch.equal(fs[k], ss[k]) and fs[k].dtype == ss[k].dtype for k in fs)
    assert not any(t.is_meta for t in list(fast.parameters()) + list(fast.buffers()))
    assert "torch._dynamo" not in sys.modules or "torch._dynamo" in before  # meta init imports no compiler
    image, diff, words, mask = _inputs(1, 64)
    with torch.no_grad():
        assert torch.equal(fast(image, diff, words, mask), slow(image, diff, words, mask))
    save_checkpoint(tmp_path / "half.pt", slow, half=True)
    half = load_checkpoint(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in half.parameters())


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_frame_shared_layers_give_the_same_logits_as_repeating_each_frame():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    image, diff = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64).abs()
    ids = torch.randint(1, 20, (2, 25))
    mask = torch.zeros(2, 25)
    mask[0, :3], mask[1, :6] = 1, 1
    with torch.no_grad():
        text = model.encode_text(model.embed_words(ids), mask).index([0, 1] * 3)
        shared, _ = model.forward_with_text(image, diff, text, expressions_per_frame=2)
        repeated, _ = model.forward_with_text(image.repeat_interleave(2, 0), diff.repeat_interleave(2, 0), text)
    assert shared.shape == (6, 1, 64, 64)
    assert torch.allclose(shared, repeated, atol=1e-6)
    assert (shared[0] - shared[1]).abs().max() > 1e-4  # the two expressions do differ
    with pytest.raises(ValueError, match="need 6 text rows"):
        model.forward_with_text(image, diff, text.index([0, 1, 0]), expressions_per_frame=2)
