"""The spatial / temporal visual encoders: torchvision ResNets cut into the stages LBDT taps."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# name -> (block, blocks per stage)
RESNET_SPECS = {
    "resnet10": (BasicBlock, [1, 1, 1, 1]),
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}


def stage_channels(backbone: str) -> tuple[int, int, int, int]:
    """Output channels of layer1..layer4."""
    block, _ = RESNET_SPECS[backbone]
    e = block.expansion
    return (64 * e, 128 * e, 256 * e, 512 * e)


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its classifier; stages are run one at a time by LBDT
    because the transfer layers rewrite the layer3 output before layer4 sees it."""

    def __init__(self, backbone: str = "resnet50"):
        super().__init__()
        if backbone not in RESNET_SPECS:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(RESNET_SPECS)}")
        block, layers = RESNET_SPECS[backbone]
        net = ResNet(block, layers)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = stage_channels(backbone)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def load_torchvision_weights(self, state_dict: dict) -> None:
        """Load an ImageNet torchvision ResNet state dict (the `fc.*` classifier is dropped)."""
        own = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"backbone weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
