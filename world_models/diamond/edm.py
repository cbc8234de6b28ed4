"""DIAMOND's denoiser D_theta: the EDM-preconditioned U-Net that turns a noisy next frame into a clean one.

Karras et al. 2022 (EDM, arXiv 2206.00364, Table 1 / Eq. 7) as used by Alonso et al. 2024 (arXiv 2405.12399, Sec. 3,
Eq. 6-7) and implemented in ``src/models/diffusion/denoiser.py`` of github.com/eloialonso/diamond, written anew.
With ``sigma_data = 0.5`` and offset noise ``sigma_offset = 0.3`` (a constant per (sample, channel) added to the
noise at training, Guttenberg 2023), every coefficient uses the effective noise level
``sigma_eff = sqrt(sigma^2 + sigma_offset^2)`` -- so ``c_noise`` too (official ``compute_conditioners`` overwrites
``sigma`` by ``sigma_eff`` before computing all four)::

    c_in    = 1 / sqrt(sigma_eff^2 + sigma_data^2)
    c_skip  = sigma_data^2 / (sigma_eff^2 + sigma_data^2)
    c_out   = sigma_eff * sigma_data / sqrt(sigma_eff^2 + sigma_data^2)      (official: sigma_eff * sqrt(c_skip))
    c_noise = log(sigma_eff) / 4
    D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, past_obs / sigma_data, past_act)

The past frames are scaled by ``1 / sigma_data`` (not ``c_in``). Training: ``ln sigma ~ N(-0.4, 1.2^2)`` clipped to
``[2e-3, 20]``; ``x_noisy = x + sigma_offset * eps_bc + sigma * eps`` (the offset enters the input at training only;
the sampler adds none); target ``(x - c_skip x_noisy) / c_out``; MSE on the masked positions.

:meth:`Denoiser.loss` follows the official ``Denoiser.forward``: a segment of ``n + 1 + k`` frames (``n = 4``
conditioning frames, ``k = num_autoregressive_steps = 1``) gives ``k + 1`` targets, positions ``n .. n + k``; the
frame at position ``n + i`` is predicted from positions ``i .. n + i - 1``, where earlier targets have been replaced by
the (no-grad, quantized) one-step denoised prediction, so the model learns from its own outputs; a target whose
``mask`` is False (padding past the episode end) does not count; the loss is averaged over the ``k + 1`` targets.

Deviations, both harmless: quantization to 256 levels rounds (the official ``.byte()`` truncates, which shifts pixels
by half a level and sends a level computed as ``k - 1e-6`` to ``k - 1``); a target with no unpadded sample adds 0
where the official ``mse_loss`` of an empty tensor would make the loss NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from world_models.diamond.batch import WorldModelBatch
from world_models.diamond.unet import UNet, UNetConfig

DIFFUSIONS = ("edm", "ddpm")
LossAndLogs = tuple[torch.Tensor, dict[str, float]]


@dataclass
class DenoiserConfig:
    """The denoiser (``config/agent/default.yaml`` ``denoiser`` + ``trainer.yaml`` ``denoiser.sigma_distribution``).

    ``diffusion="ddpm"`` selects :class:`~world_models.diamond.ddpm.DDPMDenoiser` (same U-Net, epsilon prediction,
    ``num_train_timesteps``, ``beta_schedule``) for the paper's EDM-vs-DDPM comparison.
    """

    unet: UNetConfig
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3
    sigma_loc: float = -0.4
    sigma_scale: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 20.0
    num_autoregressive_steps: int = 1
    diffusion: str = "edm"
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"

    @classmethod
    def paper(cls, num_actions: int, diffusion: str = "edm") -> DenoiserConfig:
        return cls(UNetConfig.paper(num_actions), diffusion=diffusion)

    @classmethod
    def cpu(cls, num_actions: int, diffusion: str = "edm") -> DenoiserConfig:
        return cls(UNetConfig.cpu(num_actions), diffusion=diffusion)

    @classmethod
    def tiny(cls, num_actions: int, diffusion: str = "edm") -> DenoiserConfig:
        return cls(UNetConfig.tiny(num_actions), diffusion=diffusion)

    @property
    def seq_length(self) -> int:
        """Frames per training segment: ``n + 1 + num_autoregressive_steps`` (EDM), ``n + 1`` (DDPM branch)."""
        n = self.unet.num_steps_conditioning
        return n + 1 + (self.num_autoregressive_steps if self.diffusion == "edm" else 0)

    def __post_init__(self) -> None:
        if self.diffusion not in DIFFUSIONS:
            raise ValueError(f"unknown diffusion '{self.diffusion}'; choose one of: {', '.join(DIFFUSIONS)}")
        if self.sigma_data <= 0 or self.sigma_offset_noise < 0 or not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"sigma_data={self.sigma_data} must be > 0, sigma_offset_noise={self.sigma_offset_noise} >= 0 and "
                f"0 < sigma_min={self.sigma_min} < sigma_max={self.sigma_max}"
            )


class Conditioners(NamedTuple):
    """EDM coefficients, shaped ``[B, 1, 1, 1]`` (``c_noise``: ``[B]``)."""

    c_in: torch.Tensor
    c_out: torch.Tensor
    c_skip: torch.Tensor
    c_noise: torch.Tensor


def edm_conditioners(sigma: torch.Tensor, sigma_data: float, sigma_offset_noise: float) -> Conditioners:
    """The preconditioning of a batch of noise levels ``sigma [B]`` (see the module docstring)."""
    sigma_eff = (sigma**2 + sigma_offset_noise**2).sqrt()
    c_in = 1 / (sigma_eff**2 + sigma_data**2).sqrt()
    c_skip = sigma_data**2 / (sigma_eff**2 + sigma_data**2)
    c_out = sigma_eff * c_skip.sqrt()  # = sigma_eff * sigma_data / sqrt(sigma_eff^2 + sigma_data^2)
    c_noise = sigma_eff.log() / 4
    image = (-1, 1, 1, 1)
    return Conditioners(c_in.view(image), c_out.view(image), c_skip.view(image), c_noise)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and snap to the 256 levels of a uint8 frame (rounded; see the module docstring)."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


def flatten_frames(obs: torch.Tensor) -> torch.Tensor:
    """Past frames ``[B, n, C, H, W]`` -> ``[B, n * C, H, W]`` (already flat input passes through)."""
    return obs.flatten(1, 2) if obs.ndim == 5 else obs


class Denoiser(nn.Module):
    """EDM denoiser ``D(x; sigma | past frames, past actions)`` around a :class:`~world_models.diamond.unet.UNet`.

    :param cfg: :class:`DenoiserConfig` with ``diffusion="edm"``
    """

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        if cfg.diffusion != "edm":
            raise ValueError(f"Denoiser is the EDM denoiser; diffusion='{cfg.diffusion}' is built by make_denoiser")
        self.cfg = cfg
        self.unet = UNet(cfg.unet)

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    def conditioners(self, sigma: torch.Tensor | float, batch_size: int = 1) -> Conditioners:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=self.device)
        sigma = sigma.expand(batch_size) if sigma.ndim == 0 else sigma
        return edm_conditioners(sigma, self.cfg.sigma_data, self.cfg.sigma_offset_noise)

    def sample_sigma(self, n: int) -> torch.Tensor:
        """Training noise levels: ``exp(N(sigma_loc, sigma_scale^2))`` clipped to ``[sigma_min, sigma_max]``."""
        log_sigma = torch.randn(n, device=self.device) * self.cfg.sigma_scale + self.cfg.sigma_loc
        return log_sigma.exp().clip(self.cfg.sigma_min, self.cfg.sigma_max)

    def apply_noise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x + sigma_offset * eps_bc + sigma * eps``: offset noise is one value per (sample, channel)."""
        offset = self.cfg.sigma_offset_noise * torch.randn(*x.shape[:2], 1, 1, device=x.device)
        return x + offset + torch.randn_like(x) * sigma.view(-1, 1, 1, 1)

    def model_output(
        self, noisy: torch.Tensor, cs: Conditioners, obs_cond: torch.Tensor, act_cond: torch.Tensor
    ) -> torch.Tensor:
        """``F_theta(c_in x, c_noise, past frames / sigma_data, past actions)``."""
        return self.unet(noisy * cs.c_in, cs.c_noise, flatten_frames(obs_cond) / self.cfg.sigma_data, act_cond)

    @staticmethod
    def target(clean: torch.Tensor, noisy: torch.Tensor, cs: Conditioners) -> torch.Tensor:
        """What ``F`` is trained to output: ``(x_clean - c_skip x_noisy) / c_out``."""
        return (clean - cs.c_skip * noisy) / cs.c_out

    @staticmethod
    def wrap(noisy: torch.Tensor, output: torch.Tensor, cs: Conditioners) -> torch.Tensor:
        """The clean-frame estimate ``c_skip x_noisy + c_out F`` (the inverse of :meth:`target`)."""
        return cs.c_skip * noisy + cs.c_out * output

    @torch.no_grad()
    def denoise(
        self,
        noisy: torch.Tensor,
        sigma: torch.Tensor | float,
        obs_cond: torch.Tensor,
        act_cond: torch.Tensor,
        quantize_output: bool = True,
    ) -> torch.Tensor:
        """``D(noisy; sigma)``: the clean next frame ``[B, 3, H, W]`` estimated from ``noisy [B, 3, H, W]`` at noise
        level ``sigma`` (scalar or ``[B]``), past frames ``obs_cond [B, n, 3, H, W]`` and actions ``act_cond [B, n]``.
        Clamped to [-1, 1] and quantized to 256 levels as the official sampler does, unless ``quantize_output=False``.
        """
        cs = self.conditioners(sigma, noisy.shape[0])
        denoised = self.wrap(noisy, self.model_output(noisy, cs, obs_cond, act_cond), cs)
        return quantize(denoised) if quantize_output else denoised

    def loss(self, batch: WorldModelBatch) -> LossAndLogs:
        """Denoising loss of a batch of segments ``obs [B, L, 3, H, W]`` (``L >= n + 1``), as the official
        ``Denoiser.forward``: targets at positions ``n .. L - 1``, earlier targets fed back as their denoised
        estimate. Returns ``(loss, {"loss_denoising": value})``."""
        n = self.cfg.unet.num_steps_conditioning
        num_targets = batch.obs.shape[1] - n
        if num_targets < 1:
            raise ValueError(f"segments of {batch.obs.shape[1]} frames; the denoiser needs at least n + 1 = {n + 1}")
        all_obs = batch.obs.clone()
        loss = torch.zeros((), device=all_obs.device)
        for i in range(num_targets):
            obs, act = all_obs[:, i : n + i], batch.act[:, i : n + i]
            clean, mask = all_obs[:, n + i], batch.mask[:, n + i]
            sigma = self.sample_sigma(clean.shape[0])
            noisy = self.apply_noise(clean, sigma)
            cs = self.conditioners(sigma)
            output = self.model_output(noisy, cs, obs, act)
            target = self.target(clean, noisy, cs)
            loss = loss + (F.mse_loss(output[mask], target[mask]) if mask.any() else output.sum() * 0)
            all_obs[:, n + i] = quantize(self.wrap(noisy, output.detach(), cs))  # autoregressive feedback
        loss = loss / num_targets
        return loss, {"loss_denoising": loss.item()}

