"""Inference-time folding of BatchNorm into the convolution before it (not to be confused with the
decoder's fusion of the spatial and temporal streams, `decoder.BilateralChannelActivation`)."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Attribute pairs used by torchvision's ResNet, its blocks, and our encoders.
_NAMED_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode model in which every Conv2d followed by a BatchNorm2d (next in a
    Sequential, or a ResNet convN/bnN pair) is one Conv2d. Saves a full pass over each feature
    map; outputs change only by float rounding."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    model = copy.deepcopy(model)
    for parent in model.modules():
        children = parent._modules
        pairs = list(zip(list(children), list(children)[1:])) if isinstance(parent, nn.Sequential) else []
        pairs += [p for p in _NAMED_PAIRS if p[0] in children and p[1] in children]
        for conv_name, bn_name in pairs:
            conv, bn = children[conv_name], children[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                children[conv_name] = fuse_conv_bn_eval(conv, bn)
                children[bn_name] = nn.Identity()
    return model
