"""The DDPM baseline of DIAMOND's Sec. 5.1: the same U-Net trained to predict the noise (Ho et al. 2020).

Follows the ``ddpm`` branch of github.com/eloialonso/diamond (``src/models/diffusion/denoiser.py`` and
``diffusion_sampler.py``, which use ``diffusers.DDPMScheduler`` with its defaults), written anew without diffusers:

- **Schedule**: ``num_train_timesteps = 1000``; ``beta_schedule="linear"`` is ``linspace(1e-4, 0.02, 1000)``
  (diffusers' default, the branch's choice); ``"cosine"`` is Nichol & Dhariwal's ``alpha_bar(t) =
  cos^2((t + 0.008) / 1.008 * pi / 2)`` with betas capped at 0.999 (diffusers' ``squaredcos_cap_v2``), an option.
- **Training** (:meth:`DDPMDenoiser.loss`): ``t ~ U{0..999}``, ``eps = sigma_offset * eps_bc + eps_pixel`` (the offset
  noise, 0.3, is part of the target), ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, MSE between
  ``F(x_t, c_noise = (t + 1) / 1000, past frames, past actions)`` and ``eps`` on unpadded targets. The branch takes
  segments of exactly ``n + 1`` frames; longer ones are accepted here and their last ``n + 1`` frames used. Neither
  ``c_in`` nor the ``1 / sigma_data`` scaling of the past frames: the branch feeds both raw.
- **Sampling** (:class:`DDPMSampler`): from ``x ~ N(0, I)``; with one step, the branch's choice ``t = 500`` and
  ``x0 = (x - sqrt(1 - abar) eps) / sqrt(abar)`` (at ``t = 999`` the network learns the identity, paper Sec. 5.1);
  with ``N > 1`` steps, diffusers' "leading" spacing ``t = (N-1) r, ..., r, 0`` with ``r = 1000 // N`` and
  ``mode="ddpm"``: the strided ancestral step of ``DDPMScheduler.step`` (``x0`` clipped to [-1, 1], posterior mean,
  "fixed_small" variance, no noise at ``t = 0``), as the branch; or ``mode="ddim"``: deterministic DDIM (eta 0) on
  the same timesteps. The result is clamped and quantized to 256 levels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from world_models.diamond.batch import WorldModelBatch
from world_models.diamond.edm import DenoiserConfig, LossAndLogs, flatten_frames, quantize
from world_models.diamond.unet import UNet

BETA_SCHEDULES = ("linear", "cosine")
DDPM_MODES = ("ddpm", "ddim")


def ddpm_betas(num_train_timesteps: int, schedule: str) -> torch.Tensor:
    """The ``beta_t`` of ``t = 0 .. T - 1`` (float64)."""
    t = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(1e-4, 0.02, t, dtype=torch.float64)
    if schedule == "cosine":
        alpha_bar = [math.cos((i / t + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(t + 1)]
        return torch.tensor([min(1 - alpha_bar[i + 1] / alpha_bar[i], 0.999) for i in range(t)], dtype=torch.float64)
    raise ValueError(f"unknown beta_schedule '{schedule}'; choose one of: {', '.join(BETA_SCHEDULES)}")


class DDPMDenoiser(nn.Module):
    """Epsilon-predicting denoiser with the EDM denoiser's U-Net.

    :param cfg: :class:`~world_models.diamond.edm.DenoiserConfig` with ``diffusion="ddpm"``; ``num_train_timesteps``
        and ``beta_schedule`` are read, the EDM noise settings other than ``sigma_offset_noise`` are not
    """

    alphas_cumprod: torch.Tensor

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        if cfg.diffusion != "ddpm":
            raise ValueError(f"DDPMDenoiser needs diffusion='ddpm', got '{cfg.diffusion}'")
        self.cfg = cfg
        self.unet = UNet(cfg.unet)
        alphas_cumprod = torch.cumprod(1 - ddpm_betas(cfg.num_train_timesteps, cfg.beta_schedule), dim=0)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    def predict_noise(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, obs_cond: torch.Tensor, act_cond: torch.Tensor
    ) -> torch.Tensor:
        """``eps_theta(x_t, t | past frames [B, n, 3, H, W], past actions [B, n])`` for integer ``timesteps [B]``."""
        c_noise = (timesteps.float() + 1) / self.cfg.num_train_timesteps
        return self.unet(noisy, c_noise, flatten_frames(obs_cond), act_cond)

    def loss(self, batch: WorldModelBatch) -> LossAndLogs:
        """Noise-prediction MSE on the last frame of each segment given the ``n`` before it."""
        n = self.cfg.unet.num_steps_conditioning
        if batch.obs.shape[1] < n + 1:
            raise ValueError(f"segments of {batch.obs.shape[1]} frames; the denoiser needs at least n + 1 = {n + 1}")
        obs, act = batch.obs[:, -n - 1 : -1], batch.act[:, -n - 1 : -1]
        clean, mask = batch.obs[:, -1], batch.mask[:, -1]
        b, c = clean.shape[:2]
        noise = self.cfg.sigma_offset_noise * torch.randn(b, c, 1, 1, device=clean.device) + torch.randn_like(clean)
        t = torch.randint(0, self.cfg.num_train_timesteps, (b,), device=clean.device)
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * clean + (1 - abar).sqrt() * noise
        pred = self.predict_noise(noisy, t, obs, act)
        loss = F.mse_loss(pred[mask], noise[mask]) if mask.any() else pred.sum() * 0
        return loss, {"loss_denoising": loss.item()}


class DDPMSampler:
    """Next-frame sampler of a :class:`DDPMDenoiser` with ``num_steps`` network calls.

    :param denoiser: the trained :class:`DDPMDenoiser`
    :param num_steps: denoising steps (network calls) per frame
    :param mode: ``"ddpm"`` (strided ancestral steps, the official branch) or ``"ddim"`` (deterministic, eta 0)
    """

    def __init__(self, denoiser: DDPMDenoiser, num_steps: int = 3, mode: str = "ddpm") -> None:
        if mode not in DDPM_MODES:
            raise ValueError(f"unknown DDPM sampling mode '{mode}'; choose one of: {', '.join(DDPM_MODES)}")
        if not 1 <= num_steps <= denoiser.cfg.num_train_timesteps:
            raise ValueError(f"num_steps={num_steps}; expected 1 .. {denoiser.cfg.num_train_timesteps}")
        self.denoiser, self.num_steps, self.mode = denoiser, num_steps, mode
        stride = denoiser.cfg.num_train_timesteps // num_steps
        self.stride = stride
        self.timesteps = [i * stride for i in reversed(range(num_steps))]

    @torch.no_grad()
    def sample_next_obs(self, obs_cond: torch.Tensor, act_cond: torch.Tensor) -> torch.Tensor:
        """The next frame ``[B, 3, H, W]`` given ``obs_cond [B, n, 3, H, W]`` and ``act_cond [B, n]``."""
        d, abars = self.denoiser, self.denoiser.alphas_cumprod
        b, _, c, h, w = obs_cond.shape
        x = torch.randn(b, c, h, w, device=obs_cond.device)
        if self.num_steps == 1:  # the branch: t = T / 2, one x0 prediction
            t = d.cfg.num_train_timesteps // 2
            eps = d.predict_noise(x, torch.full((b,), t, device=x.device), obs_cond, act_cond)
            return quantize((x - (1 - abars[t]).sqrt() * eps) / abars[t].sqrt())
        for t in self.timesteps:
            eps = d.predict_noise(x, torch.full((b,), t, device=x.device), obs_cond, act_cond)
            abar_t = abars[t]
            abar_prev = abars[t - self.stride] if t - self.stride >= 0 else abars.new_ones(())
            x0 = ((x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1, 1)
            if self.mode == "ddim":
                eps = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()  # the noise consistent with the clipped x0
                x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
                continue
            alpha_t = abar_t / abar_prev  # the strided step's own alpha
            beta_t = 1 - alpha_t
            x = (abar_prev.sqrt() * beta_t * x0 + alpha_t.sqrt() * (1 - abar_prev) * x) / (1 - abar_t)
            if t > 0:
                variance = ((1 - abar_prev) / (1 - abar_t) * beta_t).clamp(min=1e-20)
                x = x + variance.sqrt() * torch.randn_like(x)
        return quantize(x)
