"""An independent, purely functional LBDT forward pass over a state dict in the AUTHORS' key
layout, written from the paper's description of the model and the released key layout
(docs/checkpoints.md). It shares no code with lbdt_cli.model, so
agreement between the two is evidence that our modules compute what the released model does."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=1e-5)


def bottleneck(x, sd, p, stride):
    out = F.relu(bn(F.conv2d(x, sd[p + "conv1.weight"]), sd, p + "bn1."))
    out = F.relu(bn(F.conv2d(out, sd[p + "conv2.weight"], stride=stride, padding=1), sd, p + "bn2."))
    out = bn(F.conv2d(out, sd[p + "conv3.weight"]), sd, p + "bn3.")
    if p + "downsample.0.weight" in sd:
        x = bn(F.conv2d(x, sd[p + "downsample.0.weight"], stride=stride), sd, p + "downsample.1.")
    return F.relu(out + x)


def res_stage(x, sd, name, stride):
    i = 0
    while f"{name}.{i}.conv1.weight" in sd:
        x = bottleneck(x, sd, f"{name}.{i}.", stride if i == 0 else 1)
        i += 1
    return x


def pos1d(n, d):
    pe = torch.zeros(n, d)
    for pos in range(n):
        for i in range(0, d, 2):
            angle = pos / (10000 ** (i / d))
            pe[pos, i] = math.sin(angle)
            pe[pos, i + 1] = math.cos(angle)
    return pe


def pos2d(d, h, w):
    half = d // 2
    pe = torch.zeros(d, h, w)
    for i in range(0, half, 2):
        freq = 1.0 / (10000 ** (i / half))
        for x in range(w):
            pe[i, :, x] = math.sin(x * freq)
            pe[i + 1, :, x] = math.cos(x * freq)
        for y in range(h):
            pe[half + i, y, :] = math.sin(y * freq)
            pe[half + i + 1, y, :] = math.cos(y * freq)
    return pe


def mha(q, k, v, sd, p, heads, key_padding=None):
    """q [B,Lq,C], k/v [B,Lk,C]; nn.MultiheadAttention's packed in_proj layout."""
    w, b = sd[p + "in_proj_weight"], sd[p + "in_proj_bias"]
    c = q.shape[-1]
    qp = q @ w[:c].t() + b[:c]
    kp = k @ w[c:2 * c].t() + b[c:2 * c]
    vp = v @ w[2 * c:].t() + b[2 * c:]
    B, Lq, Lk, hd = q.shape[0], q.shape[1], k.shape[1], c // heads
    qp = qp.view(B, Lq, heads, hd).transpose(1, 2)
    kp = kp.view(B, Lk, heads, hd).transpose(1, 2)
    vp = vp.view(B, Lk, heads, hd).transpose(1, 2)
    scores = qp @ kp.transpose(-1, -2) / math.sqrt(hd)
    if key_padding is not None:
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ vp).transpose(1, 2).reshape(B, Lq, c)
    return out @ sd[p + "out_proj.weight"].t() + sd[p + "out_proj.bias"]


def ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + "weight"], sd[p + "bias"], eps=1e-5)


def transfer_layer(source, target, words, pv, pw, pad, sd, p, heads):
    q = words + pw
    words = ln(words + mha(q, q, words, sd, p + "self_attn_words.", heads, pad), sd, p + "norm_words_1.")
    src = source + pv
    words = ln(words + mha(words, src, src, sd, p + "cross_attn_img.", heads), sd, p + "norm_words_2.")
    target = ln(target + mha(target + pv, words, words, sd, p + "cross_attn_flo.", heads, pad), sd, p + "norm_flo.")
    h = F.relu(target @ sd[p + "linear1.weight"].t() + sd[p + "linear1.bias"])
    h = h @ sd[p + "linear2.weight"].t() + sd[p + "linear2.bias"]
    return ln(target + h, sd, p + "norm_flo2.")


def conv_bn(x, sd, p):
    return bn(F.conv2d(x, sd[p + "0.weight"]), sd, p + "1.")


def stage_transfer(r_s, r_t, words, pad, sd, stage, heads=8):
    s_red = conv_bn(r_s, sd, f"conv_r{stage}_1_reduce.")
    t_red = conv_bn(r_t, sd, f"conv_r{stage}_2_reduce.")
    B, C, H, W = s_red.shape
    pv = pos2d(C, H, W).flatten(1).t()[None]
    pw = pos1d(words.shape[1], C)[None]
    s = s_red.flatten(2).transpose(1, 2)
    t = t_red.flatten(2).transpose(1, 2)
    i = 0
    while f"transformer.stage{stage}.layers.{i}.linear1.weight" in sd:
        p = f"transformer.stage{stage}.layers.{i}."
        s, t = (transfer_layer(t, s, words, pv, pw, pad, sd, p, heads),
                transfer_layer(s, t, words, pv, pw, pad, sd, p, heads))
        i += 1
    s = s.transpose(1, 2).reshape(B, C, H, W)
    t = t.transpose(1, 2).reshape(B, C, H, W)
    return (F.relu(r_s + conv_bn(s, sd, f"conv_r{stage}_1_up.")),
            F.relu(r_t + conv_bn(t, sd, f"conv_r{stage}_2_up.")))


def upsample_aligned(x, f):
    """Sample the input at x_in = clamp((i - f//2) / f, 0, n-1), bilinearly (an independent
    statement of the released `aligned_bilinear`)."""
    if f == 1:
        return x
    B, C, h, w = x.shape

    def coords(n):
        c = ((torch.arange(f * n, dtype=torch.float64) - f // 2) / f).clamp(0, n - 1)
        lo = c.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        return lo, hi, (c - lo).float()

    ylo, yhi, wy = coords(h)
    xlo, xhi, wx = coords(w)
    top = x[:, :, ylo][:, :, :, xlo] * (1 - wx) + x[:, :, ylo][:, :, :, xhi] * wx
    bot = x[:, :, yhi][:, :, :, xlo] * (1 - wx) + x[:, :, yhi][:, :, :, xhi] * wx
    return top * (1 - wy)[:, None] + bot * wy[:, None]


def conv3_bn_relu(x, sd, p):
    return F.relu(bn(F.conv2d(x, sd[p + "0.weight"], padding=1), sd, p + "1."))


def lin(x, sd, p):
    return x @ sd[p + "weight"].t() + sd[p + "bias"]


def lstm(x, sd, p):
    """One LSTM layer, gates in PyTorch's (input, forget, cell, output) order."""
    w_ih, w_hh = sd[p + "weight_ih_l0"], sd[p + "weight_hh_l0"]
    b = sd[p + "bias_ih_l0"] + sd[p + "bias_hh_l0"]
    hidden = w_hh.shape[1]
    h = x.new_zeros(x.shape[0], hidden)
    c = x.new_zeros(x.shape[0], hidden)
    outs = []
    for step in range(x.shape[1]):
        gates = x[:, step] @ w_ih.t() + h @ w_hh.t() + b
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=1)


def reference_forward(sd, image, diff, word_vectors, word_mask, heads=8):
    """Mask logits [B,1,H,W] of the released LBDT for an authors'-layout state dict."""
    words = lstm(word_vectors, sd, "text_encoder.lstm.")
    sent = words.sum(1)
    pad = ~word_mask.bool()

    def stem(x, k):
        x = F.relu(bn(F.conv2d(x, sd[f"conv1_{k}.weight"], stride=2, padding=3), sd, f"bn1_{k}."))
        return F.max_pool2d(x, 3, 2, 1)

    s2, t2 = res_stage(stem(image, 1), sd, "res2_1", 1), res_stage(stem(diff, 2), sd, "res2_2", 1)
    s3, t3 = res_stage(s2, sd, "res3_1", 2), res_stage(t2, sd, "res3_2", 2)
    s4, t4 = stage_transfer(res_stage(s3, sd, "res4_1", 2), res_stage(t3, sd, "res4_2", 2), words, pad, sd, 4, heads)
    s5, t5 = stage_transfer(res_stage(s4, sd, "res5_1", 2), res_stage(t4, sd, "res5_2", 2), words, pad, sd, 5, heads)

    def merge(feats, name):
        acc = conv3_bn_relu(feats[0], sd, f"decoder.{name}.0.")
        for i in range(1, 4):
            acc = acc + upsample_aligned(conv3_bn_relu(feats[i], sd, f"decoder.{name}.{i}."), 2 ** i)
        return acc

    ds, dt = merge([s2, s3, s4, s5], "refine_spa"), merge([t2, t3, t4, t5], "refine_tem")
    s, t = ds.mean((2, 3)), dt.mean((2, 3))
    p = "decoder.fusion."
    f = F.relu(lin(torch.cat([s, t], 1), sd, p + "img_flo_fc.0."))
    s_r = torch.sigmoid(lin(torch.cat([s, sent], 1), sd, p + "img_txt_fc."))
    t_r = torch.sigmoid(lin(torch.cat([t, sent], 1), sd, p + "flo_txt_fc."))
    f_s = torch.sigmoid(lin(f, sd, p + "img_enhance_fc."))
    f_t = torch.sigmoid(lin(f, sd, p + "flo_enhance_fc."))
    ds = ds * s_r[:, :, None, None] * f_s[:, :, None, None]
    dt = dt * t_r[:, :, None, None] * f_t[:, :, None, None]
    z = conv3_bn_relu(torch.cat([ds, dt], 1), sd, p + "fusion_cat_conv.")
    for i in range(4):
        z = conv3_bn_relu(z, sd, f"decoder.fuse_tower.{i}.")
    z = F.conv2d(z, sd["decoder.fuse_tower.4.weight"], sd["decoder.fuse_tower.4.bias"])
    return upsample_aligned(z, 4)
