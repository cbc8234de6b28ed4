"""ResNet18 (He et al. 2016) as ACT's image backbone, written here: the trunk up to ``layer4``, no pooling, no head.

Layout of torchvision's ``resnet18``: a 7x7/2 stem convolution and a 3x3/2 max pool, then four stages of two
:class:`BasicBlock` each with 64, 128, 256, 512 channels (stages 2-4 start with stride 2 and a 1x1 projection
shortcut), so the feature map has stride 32 (224 px -> 7x7, 64 px -> 2x2). ``width`` scales every channel count
(``width=0.5``: 32-64-128-256), for the CPU budget. ``stride=16`` gives ``layer4`` stride 1 instead of 2 (its
weights are unchanged), so that small images keep a finer map (64 px -> 4x4 instead of 2x2; 224 px gives the paper
7x7 at stride 32). DETR's ``dilation`` option does the same for ResNet50, but torchvision's BasicBlock refuses
dilation, so ACT's ResNet18 never had it; this plain stride is the zoo's own choice for its 64 px preset.

Normalization: :class:`torch.nn.BatchNorm2d` with learned affine and running statistics. ACT (through DETR) uses
``FrozenBatchNorm2d`` because it starts from ImageNet weights; no pretrained weights are available here, and a
frozen norm with identity statistics would leave a network trained from scratch unnormalized, so the norm is
trained (the only difference in parameters: 2 x 4,800 BatchNorm scales and shifts at width 1, 9,600 in all).

Images enter as uint8 ``[B, H, W, 3]``; :func:`normalize_images` scales them to [0, 1] and applies the ImageNet
mean and std, as ACT's policy does before its backbone.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGE_CHANNELS = (64, 128, 256, 512)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float ``[..., 3, H, W]``: ``x / 255``, then ``(x - mean) / std`` (ImageNet)."""
    x = images.float().div(255.0).movedim(-1, -3)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
    return (x - mean) / std


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut (a 1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


STRIDES = (32, 16)


class ResNet18(nn.Module):
    """ResNet18 trunk: ``[B, 3, H, W]`` (normalized) -> ``[B, num_channels, ceil(H / s), ceil(W / s)]``.

    :param width: multiplier of the channel counts (1.0: the standard 64-128-256-512)
    :param stride: output stride, 32 (standard) or 16 (``layer4`` without its stride)
    """

    def __init__(self, width: float = 1.0, stride: int = 32) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"backbone_width={width}; expected a positive multiplier such as 1.0 or 0.5")
        if stride not in STRIDES:
            allowed = ", ".join(map(str, STRIDES))
            raise ValueError(f"backbone_stride={stride!r} is not allowed; choose one of: {allowed}")
        channels = [max(1, round(c * width)) for c in STAGE_CHANNELS]
        self.conv1 = nn.Conv2d(3, channels[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, in_channels = [], channels[0]
        for i, c in enumerate(channels):
            first_stride = 1 if i == 0 or (i == 3 and stride == 16) else 2
            stages.append(nn.Sequential(BasicBlock(in_channels, c, first_stride), BasicBlock(c, c)))
            in_channels = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_channels = channels[-1]
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
