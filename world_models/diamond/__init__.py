"""DIAMOND's world model (Alonso et al., NeurIPS 2024, arXiv 2405.12399): an EDM diffusion model of the next frame
given 4 past frames and actions, sampled in 3 Euler steps, and a separate reward/termination model.

- :mod:`~world_models.diamond.unet`: the U-Net ``F_theta`` (:class:`UNet`, :class:`UNetConfig`);
- :mod:`~world_models.diamond.edm`: EDM preconditioning and the denoising loss (:class:`Denoiser`,
  :class:`DenoiserConfig`);
- :mod:`~world_models.diamond.sampler`: Karras schedule, Euler/Heun (:class:`DiffusionSampler`,
  :class:`SamplerConfig`), :func:`make_denoiser` / :func:`make_sampler` (EDM or DDPM by ``DenoiserConfig.diffusion``);
- :mod:`~world_models.diamond.ddpm`: the DDPM baseline of the paper's Sec. 5.1;
- :mod:`~world_models.diamond.reward_end`: :class:`RewEndModel`, :class:`RewEndConfig`;
- :mod:`~world_models.diamond.batch`: :class:`WorldModelBatch` and the conversion of EpisodeBuffer segments;
- :mod:`~world_models.diamond.benchmark`: train-step and imagined-frame timings.
"""

from world_models.diamond.batch import WorldModelBatch, batch_from_segment, frames_to_tensor, tensor_to_frames
from world_models.diamond.ddpm import DDPMDenoiser, DDPMSampler, ddpm_betas
from world_models.diamond.edm import Conditioners, Denoiser, DenoiserConfig, edm_conditioners, quantize
from world_models.diamond.reward_end import RewEndConfig, RewEndModel, sample_rew_end
from world_models.diamond.sampler import DiffusionSampler, SamplerConfig, karras_sigmas, make_denoiser, make_sampler
from world_models.diamond.unet import UNet, UNetConfig

__all__ = [
    "Conditioners",
    "DDPMDenoiser",
    "DDPMSampler",
    "Denoiser",
    "DenoiserConfig",
    "DiffusionSampler",
    "RewEndConfig",
    "RewEndModel",
    "SamplerConfig",
    "UNet",
    "UNetConfig",
    "WorldModelBatch",
    "batch_from_segment",
    "ddpm_betas",
    "edm_conditioners",
    "frames_to_tensor",
    "karras_sigmas",
    "make_denoiser",
    "make_sampler",
    "quantize",
    "sample_rew_end",
    "tensor_to_frames",
]
