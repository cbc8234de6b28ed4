"""DIAMOND's denoising network F_theta: a U-Net conditioned on past frames, past actions and the noise level.

As in ``src/models/diffusion/inner_model.py`` and ``UNet`` of ``src/models/blocks.py`` of
github.com/eloialonso/diamond (Alonso et al. 2024, "Diffusion for World Modeling: Visual Details Matter in Atari",
Sec. 3 and App. D), written anew:

- **Frames** enter by channel concatenation: the ``n = num_steps_conditioning`` (4) past frames, already scaled by
  the denoiser, then the scaled noisy next frame: ``(n + 1) * 3`` channels into a conv3x3.
- **Noise level and actions** enter through adaptive group norm in every residual block:
  ``cond = MLP(FourierFeatures(c_noise) + concat_t Embedding(a_t))``; each of the ``n`` actions has an embedding of
  ``cond_channels / n`` dims and their concatenation is summed with the noise features.
- **U-Net**: ``len(channels)`` stages with ``depths[i]`` residual blocks each (stride-2 conv between stages), a middle
  stage of two blocks with self-attention, and the mirrored up path whose stages take one more block (it consumes the
  stage's input as well as each block's output as skip tensors). Attention elsewhere only where ``attn_depths[i]``.
- **Output**: GroupNorm -> SiLU -> conv3x3 (zero-initialized: the network starts by predicting 0) to 3 channels.

At the paper's configuration (channels [64]*4, depths [2]*4, cond 256, 4 actions) it has 4,405,955 parameters, the
count of the official denoiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from world_models.diamond.blocks import Downsample, FourierFeatures, ResBlocks, Upsample, conv3x3, group_norm


@dataclass
class UNetConfig:
    """Widths of DIAMOND's denoiser U-Net (``config/agent/default.yaml``, ``denoiser.inner_model``)."""

    num_actions: int
    img_channels: int = 3
    num_steps_conditioning: int = 4
    cond_channels: int = 256
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])

    @classmethod
    def paper(cls, num_actions: int) -> UNetConfig:
        return cls(num_actions=num_actions)

    @classmethod
    def cpu(cls, num_actions: int) -> UNetConfig:
        """``preset=cpu`` (2 CPU cores): 4 stages of one block, channels [16, 16, 32, 32], cond 64 (366k parameters
        with 4 actions, 12 times fewer than the paper's)."""
        return cls(num_actions, cond_channels=64, depths=[1, 1, 1, 1], channels=[16, 16, 32, 32])

    @classmethod
    def tiny(cls, num_actions: int) -> UNetConfig:
        """Seconds-long tests on a CPU: 16 channels, 3 stages of one block, cond 32."""
        return cls(num_actions, cond_channels=32, depths=[1, 1, 1], channels=[16, 16, 16], attn_depths=[False] * 3)

    def __post_init__(self) -> None:
        if not len(self.depths) == len(self.channels) == len(self.attn_depths):
            raise ValueError(
                f"depths {self.depths}, channels {self.channels} and attn_depths {self.attn_depths} must have one "
                "entry per U-Net stage"
            )
        if self.cond_channels % self.num_steps_conditioning or self.cond_channels % 2:
            raise ValueError(
                f"cond_channels={self.cond_channels} must be even and divisible by "
                f"num_steps_conditioning={self.num_steps_conditioning} (one action embedding per past step)"
            )


class UNet(nn.Module):
    """``F_theta(c_in x_noisy, c_noise, past frames / sigma_data, past actions)`` -> ``[B, 3, H, W]``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, cond = cfg.num_steps_conditioning, cfg.cond_channels
        self.noise_emb = FourierFeatures(cond)
        self.act_emb = nn.Embedding(cfg.num_actions, cond // n)
        self.cond_proj = nn.Sequential(nn.Linear(cond, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.conv_in = conv3x3((n + 1) * cfg.img_channels, cfg.channels[0])

        down, up = [], []
        for i, depth in enumerate(cfg.depths):
            c1, c2 = cfg.channels[max(0, i - 1)], cfg.channels[i]
            down.append(ResBlocks([c1] + [c2] * (depth - 1), [c2] * depth, cond, cfg.attn_depths[i]))
            # up stage i: ``depth`` blocks take (x, block output) and a last one takes (x, stage input)
            up.append(ResBlocks([2 * c2] * depth + [c1 + c2], [c2] * depth + [c1], cond, cfg.attn_depths[i]))
        self.d_blocks = nn.ModuleList(down)
        self.u_blocks = nn.ModuleList(reversed(up))
        self.mid_blocks = ResBlocks([cfg.channels[-1]] * 2, [cfg.channels[-1]] * 2, cond, attn=True)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in cfg.channels[:-1]])
        self.upsamples = nn.ModuleList([nn.Identity()] + [Upsample(c) for c in reversed(cfg.channels[:-1])])

        self.norm_out = group_norm(cfg.channels[0])
        self.conv_out = conv3x3(cfg.channels[0], cfg.img_channels)
        nn.init.zeros_(self.conv_out.weight)

    def condition(self, c_noise: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``cond [B, cond_channels]`` from ``c_noise [B]`` and the past actions ``act [B, n]`` (int64)."""
        return self.cond_proj(self.noise_emb(c_noise) + self.act_emb(act).flatten(1))

    def forward(
        self, noisy_next_obs: torch.Tensor, c_noise: torch.Tensor, obs: torch.Tensor, act: torch.Tensor
    ) -> torch.Tensor:
        """``noisy_next_obs [B, 3, H, W]`` (already times c_in), ``c_noise [B]``, ``obs [B, n * 3, H, W]`` (already
        scaled), ``act [B, n]`` -> the network output ``[B, 3, H, W]``."""
        cond = self.condition(c_noise, act)
        x = self.conv_in(torch.cat((obs, noisy_next_obs), dim=1))
        h, w = x.shape[-2:]
        k = 2 ** (len(self.cfg.channels) - 1)  # pad so that every downsample halves an even size
        if h % k or w % k:  # (F.pad copies even when it pads nothing)
            x = F.pad(x, (0, math.ceil(w / k) * k - w, 0, math.ceil(h / k) * k - h))

        skips = []
        for block, down in zip(self.d_blocks, self.downsamples, strict=True):
            x_down = down(x)
            x, outputs = block(x_down, cond)
            skips.append([x_down, *outputs])
        x, _ = self.mid_blocks(x, cond)
        for block, up, skip in zip(self.u_blocks, self.upsamples, reversed(skips), strict=True):
            x, _ = block(up(x), cond, skip[::-1])  # the deepest skip tensor first

        x = x[..., :h, :w]
        return self.conv_out(F.silu(self.norm_out(x)))
