"""Sampling the next frame: EDM's deterministic sampler on the Karras noise schedule (DIAMOND's default).

Karras et al. 2022 (arXiv 2206.00364, Eq. 5 and Algorithm 1) as in ``src/models/diffusion/diffusion_sampler.py`` of
github.com/eloialonso/diamond, written anew:

- :func:`karras_sigmas`: ``sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
  for ``i = 0 .. N - 1``, then a final 0: ``N + 1`` levels (the official ``build_sigmas``).
- :class:`DiffusionSampler`: ``x ~ N(0, I)`` -- not scaled by ``sigma_max``, as the official code -- then for each
  pair ``(sigma, sigma_next)``: ``d = (x - D(x; sigma)) / sigma``, Euler ``x <- x + (sigma_next - sigma) d``; with
  ``order=2`` (Heun) the step is corrected by ``d'`` at ``(x_next, sigma_next)`` except into ``sigma_next = 0``. DIAMOND
  samples with 3 Euler steps (3 network calls). The official default ``s_churn = 0`` makes the stochastic "churn" of
  Algorithm 2 a no-op; it is not implemented. With Euler every ``D`` output is quantized to 256 levels, as the
  official sampler (the last step, into sigma = 0, returns ``D`` itself). With Heun only the final frame is: the
  official Heun also quantizes ``D`` at ``sigma_next = sigma_min = 2e-3``, where ``(x - D) / sigma_next`` turns a
  half-level rounding error (0.004) into a slope of 2 and the frame into noise (MSE 0.5 against 0.002 for Euler
  in our tests on Breakout).

:func:`make_denoiser` and :func:`make_sampler` pick EDM or the DDPM baseline from ``DenoiserConfig.diffusion``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from world_models.diamond.ddpm import DDPM_MODES, DDPMDenoiser, DDPMSampler
from world_models.diamond.edm import Denoiser, DenoiserConfig, quantize

ORDERS = (1, 2)


@dataclass
class SamplerConfig:
    """``trainer.yaml`` ``world_model_env.diffusion_sampler``; ``ddpm_mode`` only for the DDPM baseline."""

    num_steps: int = 3
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    order: int = 1
    ddpm_mode: str = "ddpm"

    @classmethod
    def paper(cls) -> SamplerConfig:
        return cls()

    @classmethod
    def tiny(cls) -> SamplerConfig:
        return cls()

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"sampler order={self.order}; choose 1 (Euler) or 2 (Heun)")
        if self.num_steps < 1 or not 0 < self.sigma_min < self.sigma_max or self.rho <= 0:
            raise ValueError(
                f"num_steps={self.num_steps} must be >= 1, 0 < sigma_min={self.sigma_min} < sigma_max="
                f"{self.sigma_max} and rho={self.rho} > 0"
            )
        if self.ddpm_mode not in DDPM_MODES:
            raise ValueError(f"unknown ddpm_mode '{self.ddpm_mode}'; choose one of: {', '.join(DDPM_MODES)}")


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """``num_steps`` decreasing noise levels from ``sigma_max`` to ``sigma_min``, then 0: ``[num_steps + 1]``."""
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat((sigmas, sigmas.new_zeros(1))).float()


class DiffusionSampler:
    """Euler (or Heun) sampling of the next frame with an EDM :class:`~world_models.diamond.edm.Denoiser`.

    :param denoiser: anything with ``denoise(noisy, sigma, obs_cond, act_cond)`` returning the clean estimate
    :param cfg: :class:`SamplerConfig`
    """

    def __init__(self, denoiser: Denoiser, cfg: SamplerConfig | None = None) -> None:
        self.denoiser = denoiser
        self.cfg = cfg or SamplerConfig()
        self.sigmas = karras_sigmas(self.cfg.num_steps, self.cfg.sigma_min, self.cfg.sigma_max, self.cfg.rho)

    @torch.no_grad()
    def sample_trajectory(self, obs_cond: torch.Tensor, act_cond: torch.Tensor) -> list[torch.Tensor]:
        """``[x_0 ~ N(0, I), x_1, ..., x_N]``: the iterate after each step; the last is the next frame."""
        b, _, c, h, w = obs_cond.shape
        obs_cond = obs_cond.flatten(1, 2)  # once, not at every network call
        x = torch.randn(b, c, h, w, device=obs_cond.device, dtype=obs_cond.dtype)
        trajectory = [x]
        sigmas = self.sigmas.tolist()
        heun = self.cfg.order == 2
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            d = (x - self.denoiser.denoise(x, sigma, obs_cond, act_cond, not heun)) / sigma
            x_next = x + (sigma_next - sigma) * d  # Euler
            if heun and sigma_next > 0:  # Heun: average the slopes at both ends
                d_next = (x_next - self.denoiser.denoise(x_next, sigma_next, obs_cond, act_cond, False)) / sigma_next
                x_next = x + (sigma_next - sigma) * (d + d_next) / 2
            x = x_next
            trajectory.append(x)
        if heun:
            trajectory[-1] = quantize(x)
        return trajectory

    def sample_next_obs(self, obs_cond: torch.Tensor, act_cond: torch.Tensor) -> torch.Tensor:
        """The next frame ``[B, 3, H, W]`` in [-1, 1] given ``obs_cond [B, n, 3, H, W]`` and ``act_cond [B, n]``."""
        return self.sample_trajectory(obs_cond, act_cond)[-1]


def make_denoiser(cfg: DenoiserConfig) -> Denoiser | DDPMDenoiser:
    """The EDM :class:`Denoiser` or the :class:`DDPMDenoiser`, as ``cfg.diffusion`` says."""
    return Denoiser(cfg) if cfg.diffusion == "edm" else DDPMDenoiser(cfg)


def make_sampler(
    denoiser: Denoiser | DDPMDenoiser, cfg: SamplerConfig | None = None
) -> DiffusionSampler | DDPMSampler:
    """The sampler matching ``denoiser``; both have ``sample_next_obs(obs_cond, act_cond)``."""
    cfg = cfg or SamplerConfig()
    if isinstance(denoiser, DDPMDenoiser):
        return DDPMSampler(denoiser, cfg.num_steps, cfg.ddpm_mode)
    return DiffusionSampler(denoiser, cfg)
