"""DIAMOND's networks as one SB3 policy: the denoiser, the reward/end model and the actor-critic.

:class:`DiamondPolicy` holds the three models (so one state dict saves them all) and acts like a recurrent policy:
``predict(obs, state, episode_start)`` carries the actor-critic's LSTM state ``(h, c)`` (numpy ``[n_envs, lstm_dim]``
each) and zeroes it where an episode starts, as the official collector does for real episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import maybe_transpose

from agents.common.actor_critic import ActorCritic, ActorCriticConfig
from world_models.diamond import DenoiserConfig, RewEndConfig, RewEndModel, SamplerConfig, make_denoiser, make_sampler

SIZES = ("paper", "cpu", "tiny")


class DiamondPolicy(BasePolicy):
    """The world model (``denoiser``, ``rew_end_model``) and the ``actor_critic`` of DIAMOND.

    :param size: ``paper`` (the official architecture), ``cpu`` (``preset=cpu``: 2 CPU cores) or ``tiny``
        (seconds-long tests)
    :param num_denoising_steps: of the sampler in imagination (3)
    :param diffusion: ``edm`` or the ``ddpm`` baseline
    :param channels_last: keep the convolution weights, hence the activations, in the channels-last memory format
        (NHWC): the same numbers to float rounding, and on a 2-core CPU a denoiser step 10-15% faster, a reward/end
        step 25% and an actor-critic forward 40% (``world_models/diamond/benchmark.py``); checkpoints store the
        tensors contiguous either way
    :param compile_denoiser: ``torch.compile`` the denoiser's U-Net (inductor): the same numbers to float rounding, a
        denoiser step 8% and an imagined frame 12% faster on a 2-core CPU, after a compilation of minutes for every
        new batch size and for training and imagination apart (``world_models/diamond/benchmark.py``); off by default
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        lr_schedule: Any = None,
        size: str = "paper",
        num_denoising_steps: int = 3,
        diffusion: str = "edm",
        channels_last: bool = True,
        compile_denoiser: bool = False,
    ) -> None:
        super().__init__(observation_space, action_space)
        if size not in SIZES:
            raise ValueError(f"size={size!r} is not allowed; choose one of: {', '.join(SIZES)}")
        shape = observation_space.shape
        if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
            raise ValueError(f"DIAMOND needs square RGB frames (3, H, H); the observation space has shape {shape}")
        n, img = int(action_space.n), int(shape[1])
        self.denoiser = make_denoiser(getattr(DenoiserConfig, size)(n, diffusion=diffusion))
        self.rew_end_model = RewEndModel(getattr(RewEndConfig, size)(n, img_size=img) if size != "paper"
                                         else RewEndConfig(n, img_size=img))
        ac_cfg = getattr(ActorCriticConfig, size)(n)
        ac_cfg.img_size = img
        self.actor_critic = ActorCritic(ac_cfg)
        self.sampler = make_sampler(self.denoiser, SamplerConfig(num_steps=int(num_denoising_steps)))
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile_denoiser:  # the instance's forward, so that the state dict keeps its keys
            self.denoiser.unet.forward = torch.compile(self.denoiser.unet.forward)

    def frames(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (channels first or last) -> float ``[n, 3, H, W]`` in [-1, 1] on the policy's device."""
        obs = maybe_transpose(np.asarray(obs), self.observation_space)
        x = torch.as_tensor(obs, device=self.device).float()
        return (x / 255 * 2 - 1).reshape(-1, *self.observation_space.shape)

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        frames = observation if observation.dtype.is_floating_point else self.frames(observation)
        return self.act(frames, None, deterministic)[0]

    def act(self, frames: torch.Tensor, hidden: Any, deterministic: bool = False) -> tuple[torch.Tensor, Any]:
        """Actions ``[n]`` for frames ``[n, 3, H, W]`` in [-1, 1] and the new LSTM state (torch tensors)."""
        out = self.actor_critic(frames, hidden)
        act = out.logits.argmax(-1) if deterministic else torch.distributions.Categorical(logits=out.logits).sample()
        return act, out.hidden

    @torch.no_grad()
    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        self.set_training_mode(False)
        frames = self.frames(observation)  # type: ignore[arg-type]
        n, dim = frames.shape[0], self.actor_critic.cfg.lstm_dim
        if state is None:
            state = (np.zeros((n, dim), np.float32), np.zeros((n, dim), np.float32))
        keep = torch.ones(n, 1, device=self.device)
        if episode_start is not None:
            keep = 1 - torch.as_tensor(np.asarray(episode_start, np.float32).reshape(n, 1), device=self.device)
        hidden = tuple(torch.as_tensor(s, device=self.device) * keep for s in state)
        act, (hx, cx) = self.act(frames, hidden, deterministic)
        return act.cpu().numpy(), (hx.cpu().numpy(), cx.cpu().numpy())
