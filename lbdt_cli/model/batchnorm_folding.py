"""Inference-time folding of BatchNorm into the convolution before it (not to be confused with the
decoder's fusion of the spatial and temporal streams, `decoder.BilateralChannelActivation`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

# Attribute pairs used by torchvision's ResNet, its blocks, and our encoders.
_NAMED_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fold_batchnorm(model: nn.Module, inplace: bool = False,
                   memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """A copy of an eval-mode model (or the model itself, `inplace`) in which every Conv2d
    followed by a BatchNorm2d (next in a Sequential, or a ResNet convN/bnN pair) is one Conv2d.
    Saves a full pass over each feature map; outputs change only by float rounding. The folded
    weights are written in `memory_format` (channels-last for the CPU engine), one pass each."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    if not inplace:
        model = copy.deepcopy(model)
    with torch.no_grad():
        for parent in model.modules():
            children = parent._modules
            pairs = list(zip(list(children), list(children)[1:])) if isinstance(parent, nn.Sequential) else []
            pairs += [p for p in _NAMED_PAIRS if p[0] in children and p[1] in children]
            for conv_name, bn_name in pairs:
                conv, bn = children[conv_name], children[bn_name]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    _fold_pair(conv, bn, memory_format)
                    children[bn_name] = nn.Identity()
    return model


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d, memory_format: torch.memory_format) -> None:
    """conv <- bn(conv): W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta. New
    tensors replace the convolution's own (which may be pages of a memory-mapped checkpoint)."""
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    weight = torch.empty_like(conv.weight, memory_format=memory_format)
    torch.mul(conv.weight, (bn.weight * inv_std).reshape(-1, *([1] * (conv.weight.dim() - 1))), out=weight)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter((bias - bn.running_mean) * inv_std * bn.weight + bn.bias, requires_grad=bias.requires_grad)
