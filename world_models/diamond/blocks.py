"""Building blocks shared by DIAMOND's denoiser U-Net and its reward/termination encoder.

The architecture of ``src/models/blocks.py`` of github.com/eloialonso/diamond (Alonso et al. 2024), written anew:

- :class:`AdaGroupNorm`: group norm (groups of 32 channels, at least one group) without affine parameters, then
  ``x * (1 + scale) + shift`` with ``(scale, shift) = Linear(cond)``; this is how the noise level and the actions
  enter every residual block.
- :class:`ResBlock`: ``AdaGN -> SiLU -> conv3x3 -> AdaGN -> SiLU -> conv3x3`` (the second conv zero-initialized, so
  a block starts as its skip path) plus a 1x1 projection of the input when the width changes, then optional
  self-attention.
- :class:`SelfAttention2d`: multi-head attention over the ``h * w`` positions, heads of 8 channels, pre-norm, the
  output projection zero-initialized (identity at initialization).
- :class:`FourierFeatures`: ``[cos(2 pi c w), sin(2 pi c w)]`` of a scalar ``c`` with fixed random gaussian ``w``
  (a buffer: saved with the model, never trained).
- :class:`Downsample` (stride-2 conv3x3, orthogonal init) and :class:`Upsample` (nearest x2 then conv3x3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GN_GROUP_SIZE = 32
GN_EPS = 1e-5
ATTN_HEAD_DIM = 8


def num_groups(channels: int) -> int:
    """Groups of ``GN_GROUP_SIZE`` channels, at least one (the official ``max(1, c // 32)``)."""
    return max(1, channels // GN_GROUP_SIZE)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=GN_EPS)


class AdaGroupNorm(nn.Module):
    """Adaptive group norm: ``GN(x) * (1 + scale(cond)) + shift(cond)``, per channel."""

    def __init__(self, in_channels: int, cond_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.groups = num_groups(in_channels)
        self.linear = nn.Linear(cond_channels, 2 * in_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.groups, eps=GN_EPS)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift in one pass over x


class SelfAttention2d(nn.Module):
    """Pre-norm multi-head self-attention over the pixels of a feature map, added to the normalized input."""

    def __init__(self, in_channels: int, head_dim: int = ATTN_HEAD_DIM) -> None:
        super().__init__()
        self.n_head = max(1, in_channels // head_dim)
        if in_channels % self.n_head:
            raise ValueError(f"attention over {in_channels} channels cannot be split in {self.n_head} heads")
        self.norm = group_norm(in_channels)
        self.qkv_proj = conv1x1(in_channels, 3 * in_channels)
        self.out_proj = conv1x1(in_channels, in_channels)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = self.norm(x)
        # [n, 3 * heads, c / heads, h * w] -> q, k, v of [n, heads, h * w, c / heads]
        qkv = self.qkv_proj(x).reshape(n, 3 * self.n_head, c // self.n_head, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        y = y.transpose(2, 3).reshape(n, c, h, w)
        return x + self.out_proj(y)  # the residual is the normalized input, as in the official block


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar per sample: ``[B] -> [B, cond_channels]``."""

    def __init__(self, cond_channels: int) -> None:
        super().__init__()
        if cond_channels % 2:
            raise ValueError(f"FourierFeatures needs an even number of channels, got {cond_channels}")
        self.register_buffer("weight", torch.randn(1, cond_channels // 2))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * c.reshape(-1, 1) @ self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block conditioned by adaptive group norm, optionally followed by self-attention."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        self.proj = conv1x1(in_channels, out_channels) if in_channels != out_channels else nn.Identity()
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        nn.init.zeros_(self.conv2.weight)
        self.attn = SelfAttention2d(out_channels) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        r = self.proj(x)
        x = self.conv1(F.silu(self.norm1(x, cond)))
        x = self.conv2(F.silu(self.norm2(x, cond)))
        return self.attn(x + r)


class ResBlocks(nn.Module):
    """A stage of residual blocks; on the way up each block first concatenates its skip tensor."""

    def __init__(self, in_channels: list[int], out_channels: list[int], cond_channels: int, attn: bool) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError(f"{len(in_channels)} input widths for {len(out_channels)} output widths")
        self.resblocks = nn.ModuleList(
            [ResBlock(i, o, cond_channels, attn) for i, o in zip(in_channels, out_channels, strict=True)]
        )

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, to_cat: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = []
        for i, block in enumerate(self.resblocks):
            if to_cat is not None:
                x = torch.cat((x, to_cat[i]), dim=1)
            x = block(x, cond)
            outputs.append(x)
        return x, outputs
