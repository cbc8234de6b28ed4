"""Residual CNNs that map a frame to a small latent grid and back, shared by the Δ-IRIS tokenizer, its world model's
frame embedding and its actor-critic.

The architecture of ``src/models/convnet.py`` of github.com/vmicheli/delta-iris (Micheli, Alonso, Fleuret,
ICML 2024), written anew. With ``c = num_channels`` and stages ``i = 0 .. n-1``:

- :class:`FrameEncoder`: ``conv3x3(image_channels -> c)``, then per stage ``ResidualBlock(-> mult[i] * c)``
  followed, where ``down[i]``, by a stride-2 ``conv2x2`` (halves the resolution), then
  ``GroupNorm -> SiLU -> conv3x3(-> latent_dim)``. ``[B, image_channels, H, W] -> [B, latent_dim, H / 2^d, W / 2^d]``
  with ``d = sum(down)``.
- :class:`FrameDecoder`: the mirror: ``conv3x3(latent_dim -> mult[-1] * c)``, then the stages in reverse order, each
  a nearest x2 upsampling followed by conv3x3 where ``down[i]``, then ``ResidualBlock(mult[i] * c -> mult[i-1] * c)``
  (``mult[-1]`` read as 1), then ``GroupNorm -> SiLU -> conv3x3(c -> image_channels)``.
  ``[B, latent_dim, h, w] -> [B, image_channels, h * 2^d, w * 2^d]``.
- :class:`ResidualBlock`: ``GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3`` plus the input, projected by a 1x1
  conv when the width changes.

Differences from the official module, none of them visible with the official configurations: the modules take
``[B, C, H, W]`` (the official ones fold a time axis ``[B, T, C, H, W]``); group norms use 32 groups as the official
ones where the width is a multiple of 32 and ``gcd(32, channels)`` groups otherwise, so that narrow test configs work.
Convolutions keep PyTorch's default initialization, as in the official code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GN_MAX_GROUPS = 32


@dataclass
class FrameCnnConfig:
    """A :class:`FrameEncoder` / :class:`FrameDecoder` (``FrameCnnConfig`` of the official ``convnet.py``).

    :param image_channels: channels of the image side (input of the encoder, output of the decoder).
    :param latent_dim: channels of the latent grid (output of the encoder, input of the decoder).
    :param num_channels: base width ``c``; stage ``i`` is ``mult[i] * c`` wide.
    :param mult: width multipliers, one per stage.
    :param down: 1 where a stage halves (encoder) / doubles (decoder) the resolution, 0 elsewhere.
    """

    image_channels: int
    latent_dim: int
    num_channels: int
    mult: list[int]
    down: list[int]

    def __post_init__(self) -> None:
        for name in ("image_channels", "latent_dim", "num_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FrameCnnConfig.{name}={value!r} must be an integer >= 1")
        self.mult, self.down = list(self.mult), list(self.down)
        if not self.mult or len(self.mult) != len(self.down):
            raise ValueError(f"FrameCnnConfig mult={self.mult} and down={self.down} must be non-empty and equally long")
        if any(not isinstance(m, int) or m < 1 for m in self.mult):
            raise ValueError(f"FrameCnnConfig.mult={self.mult} must hold integers >= 1")
        if any(d not in (0, 1) for d in self.down):
            raise ValueError(f"FrameCnnConfig.down={self.down} must hold 0 or 1 per stage")

    @property
    def downsampling(self) -> int:
        """The factor ``2^sum(down)`` between the image and the latent resolution."""
        return 2 ** sum(self.down)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (official), or ``gcd(32, channels)`` when ``channels`` is not a multiple of 32."""
    return nn.GroupNorm(math.gcd(GN_MAX_GROUPS, channels), channels)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


class ResidualBlock(nn.Module):
    """``x -> skip(x) + conv3x3(SiLU(GN(conv3x3(SiLU(GN(x))))))``, ``skip`` a 1x1 conv when the width changes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.f = nn.Sequential(
            group_norm(in_channels),
            nn.SiLU(),
            conv3x3(in_channels, out_channels),
            group_norm(out_channels),
            nn.SiLU(),
            conv3x3(out_channels, out_channels),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.f(x)


class Downsample(nn.Module):
    """Halves the resolution with a learned stride-2 2x2 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=2, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Doubles the resolution: nearest-neighbour x2, then conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class FrameEncoder(nn.Module):
    """``[B, image_channels, H, W] -> [B, latent_dim, H / 2^sum(down), W / 2^sum(down)]`` (see the module docstring)."""

    def __init__(self, cfg: FrameCnnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [conv3x3(cfg.image_channels, cfg.num_channels)]
        channels = cfg.num_channels
        for m, d in zip(cfg.mult, cfg.down, strict=True):
            layers.append(ResidualBlock(channels, m * cfg.num_channels))
            channels = m * cfg.num_channels
            if d:
                layers.append(Downsample(channels))
        layers += [group_norm(channels), nn.SiLU(), conv3x3(channels, cfg.latent_dim)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FrameDecoder(nn.Module):
    """``[B, latent_dim, h, w] -> [B, image_channels, h * 2^sum(down), w * 2^sum(down)]`` (see the module docstring)."""

    def __init__(self, cfg: FrameCnnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [m * cfg.num_channels for m in cfg.mult]
        layers: list[nn.Module] = [conv3x3(cfg.latent_dim, widths[-1])]
        for i in reversed(range(len(widths))):
            if cfg.down[i]:
                layers.append(Upsample(widths[i]))
            layers.append(ResidualBlock(widths[i], widths[i - 1] if i > 0 else cfg.num_channels))
        layers += [group_norm(cfg.num_channels), nn.SiLU(), conv3x3(cfg.num_channels, cfg.image_channels)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
