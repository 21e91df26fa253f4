"""Multi-scale decoder with Bilateral Channel Activation (paper §3.4) and the mask head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def aligned_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample by an integer factor so that output pixel centres line up with the input grid
    the way strided convolutions sample it (the released code's upsampling)."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def conv3x3_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BilateralChannelActivation(nn.Module):
    """Fuse spatial and temporal decoder maps: the sentence denoises each stream's channels,
    and their joint global context keeps the two streams consistent."""

    def __init__(self, channels: int = 128, sentence_dim: int = 512):
        super().__init__()
        self.joint_fc = nn.Linear(2 * channels, channels)
        self.spatial_language_fc = nn.Linear(channels + sentence_dim, channels)
        self.temporal_language_fc = nn.Linear(channels + sentence_dim, channels)
        self.spatial_consistency_fc = nn.Linear(channels, channels)
        self.temporal_consistency_fc = nn.Linear(channels, channels)
        self.fuse_conv = conv3x3_bn_relu(2 * channels, channels)

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        s = spatial.mean(dim=(2, 3))
        t = temporal.mean(dim=(2, 3))
        joint = F.relu(self.joint_fc(torch.cat([s, t], dim=1)))
        s_lang = torch.sigmoid(self.spatial_language_fc(torch.cat([s, sentence], dim=1)))
        t_lang = torch.sigmoid(self.temporal_language_fc(torch.cat([t, sentence], dim=1)))
        s_cons = torch.sigmoid(self.spatial_consistency_fc(joint))
        t_cons = torch.sigmoid(self.temporal_consistency_fc(joint))
        spatial = spatial * (s_lang * s_cons)[:, :, None, None]
        temporal = temporal * (t_lang * t_cons)[:, :, None, None]
        return self.fuse_conv(torch.cat([spatial, temporal], dim=1))


class Decoder(nn.Module):
    """Refine each stage of both streams to `dim` channels at 1/4 scale, fuse with BCA,
    then a small conv tower predicts mask logits at input size."""

    def __init__(self, stage_channels=(256, 512, 1024, 2048), dim: int = 128, sentence_dim: int = 512,
                 head_depth: int = 4):
        super().__init__()
        self.refine_spatial = nn.ModuleList(conv3x3_bn_relu(c, dim) for c in stage_channels)
        self.refine_temporal = nn.ModuleList(conv3x3_bn_relu(c, dim) for c in stage_channels)
        self.bca = BilateralChannelActivation(dim, sentence_dim)
        self.head = nn.Sequential(*[conv3x3_bn_relu(dim, dim) for _ in range(head_depth)], nn.Conv2d(dim, 1, 1))

    @staticmethod
    def _merge(refine: nn.ModuleList, feats: list[torch.Tensor], batch: int) -> torch.Tensor:
        """Sum of the refined stages at 1/4 scale. A stage computed once per frame (batch smaller
        than `batch`, the number of (frame, expression) rows) is repeated after refining."""

        def refined(block, feat):
            out = block(feat)
            return out if out.shape[0] == batch else out.repeat_interleave(batch // out.shape[0], dim=0)

        out = refined(refine[0], feats[0])
        for block, feat in zip(refine[1:], feats[1:]):
            out = out + aligned_bilinear(refined(block, feat), out.shape[-1] // feat.shape[-1])
        return out

    def forward(self, spatial_feats, temporal_feats, sentence: torch.Tensor) -> torch.Tensor:
        batch = sentence.shape[0]
        fused = self.bca(
            self._merge(self.refine_spatial, spatial_feats, batch),
            self._merge(self.refine_temporal, temporal_feats, batch),
            sentence,
        )
        return aligned_bilinear(self.head(fused), 4)
