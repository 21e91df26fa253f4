"""Language-Bridged Duplex Transfer (paper §3.3).

Spatial (appearance) and temporal (motion) features never attend to each other directly:
the words first gather what they need from one stream (the "medium"), then the other stream
reads the words. Cost is O(HW·N·C) instead of O((HW)²·C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lbdt_cli.model.positional import sine_encoding_1d, sine_encoding_2d


@dataclass
class TransferAttention:
    """Head-averaged attention of one transfer layer in one direction."""

    words_from_source: torch.Tensor  # [B, N, HW]: where each word looked in the source stream
    target_from_words: torch.Tensor  # [B, HW, N]: which words each target pixel read


class TransferLayer(nn.Module):
    """One transfer layer. A single weight set serves both directions (S→T and T→S)."""

    def __init__(self, dim: int = 512, num_heads: int = 8, ffn_dim: int = 512, dropout: float = 0.1):
        super().__init__()
        self.words_self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.words_from_source = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.target_from_words = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm_words_self = nn.LayerNorm(dim)
        self.norm_words_source = nn.LayerNorm(dim)
        self.norm_target = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout_words_self = nn.Dropout(dropout)
        self.dropout_words_source = nn.Dropout(dropout)
        self.dropout_target = nn.Dropout(dropout)
        self.dropout_ffn = nn.Dropout(dropout)

    def forward(
        self,
        source: torch.Tensor,  # [B, HW, C]
        target: torch.Tensor,  # [B, HW, C]
        words: torch.Tensor,  # [B, N, C] the LSTM word features (not carried between layers)
        pos_visual: torch.Tensor,  # [1, HW, C]
        pos_words: torch.Tensor,  # [1, N, C]
        word_padding: torch.Tensor,  # [B, N] bool, True = padding
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, TransferAttention | None]:
        q = words + pos_words
        attn, _ = self.words_self_attn(q, q, words, key_padding_mask=word_padding, need_weights=False)
        words = self.norm_words_self(words + self.dropout_words_self(attn))

        # The value carries the position encoding too, as in the released code.
        source_pos = source + pos_visual
        attn, w_source = self.words_from_source(words, source_pos, source_pos, need_weights=need_weights)
        words = self.norm_words_source(words + self.dropout_words_source(attn))

        attn, w_target = self.target_from_words(
            target + pos_visual, words, words, key_padding_mask=word_padding, need_weights=need_weights
        )
        target = self.norm_target(target + self.dropout_target(attn))

        ffn = self.linear2(self.dropout(F.relu(self.linear1(target))))
        target = self.norm_ffn(target + self.dropout_ffn(ffn))
        attention = TransferAttention(w_source, w_target) if need_weights else None
        return target, attention


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class LanguageBridgedTransfer(nn.Module):
    """Duplex transfer at one backbone stage: reduce both streams to `dim`, run L transfer
    layers in both directions, project back up and add residually."""

    def __init__(self, in_channels: int, dim: int = 512, num_layers: int = 1, num_heads: int = 8,
                 dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.reduce_spatial = conv_bn(in_channels, dim)
        self.reduce_temporal = conv_bn(in_channels, dim)
        self.layers = nn.ModuleList(
            TransferLayer(dim, num_heads, ffn_dim=dim, dropout=dropout) for _ in range(num_layers)
        )
        self.up_spatial = conv_bn(dim, in_channels)
        self.up_temporal = conv_bn(dim, in_channels)

    def forward(
        self,
        spatial: torch.Tensor,  # [B, C_in, H, W]
        temporal: torch.Tensor,
        words: torch.Tensor,  # [B, N, dim]
        word_padding: torch.Tensor,  # [B, N] bool
        need_weights: bool = False,
    ):
        b, _, h, w = spatial.shape
        s = self.reduce_spatial(spatial).flatten(2).transpose(1, 2)
        t = self.reduce_temporal(temporal).flatten(2).transpose(1, 2)
        pos_visual = sine_encoding_2d(self.dim, h, w, device=s.device, dtype=s.dtype).flatten(1).t().unsqueeze(0)
        pos_words = sine_encoding_1d(words.shape[1], self.dim, device=s.device, dtype=s.dtype).unsqueeze(0)

        attention: list[dict[str, TransferAttention]] = []
        for layer in self.layers:
            # Both directions read the same input states.
            t_new, a_t = layer(s, t, words, pos_visual, pos_words, word_padding, need_weights)
            s_new, a_s = layer(t, s, words, pos_visual, pos_words, word_padding, need_weights)
            s, t = s_new, t_new
            if need_weights:
                attention.append({"to_temporal": a_t, "to_spatial": a_s})

        s = s.transpose(1, 2).reshape(b, self.dim, h, w)
        t = t.transpose(1, 2).reshape(b, self.dim, h, w)
        spatial = F.relu(spatial + self.up_spatial(s))
        temporal = F.relu(temporal + self.up_temporal(t))
        return spatial, temporal, (attention if need_weights else None)
