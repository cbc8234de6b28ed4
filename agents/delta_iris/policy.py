"""Δ-IRIS's networks as one SB3 policy: the tokenizer, the transformer world model and the actor-critic.

:class:`DeltaIrisPolicy` holds the three models (so one state dict saves them all, the actor-critic's EMA target
included; official ``src/agent.py``) and acts like a recurrent policy: ``predict(obs, state, episode_start)`` carries
the LSTM state ``(h, c)`` (numpy ``[n_envs, lstm_dim]`` each) and zeroes it where an episode starts; it samples from
``softmax(logits / temperature)`` (the official collector's ``should_sample``, ``temperature`` 1) or takes the
argmax when ``deterministic``.

Networks: ``size`` picks the official configurations (``crafter``: ``config/params/crafter.yaml``; ``atari``:
``config/params/atari.yaml``) or ``tiny`` (seconds-long tests); ``tokenizer``, ``world_model`` and ``actor_critic``
override fields of the chosen configs (nested dicts for their CNNs), e.g. ``{world_model: {layers: 2}}``. The world
model's ``max_blocks`` is its training sequence length, as the official config ties them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import maybe_transpose

from agents.delta_iris.actor_critic import ActorCritic, ActorCriticConfig
from world_models.delta_iris.tokenizer import Tokenizer, TokenizerConfig
from world_models.delta_iris.world_model import WorldModel, WorldModelConfig

SIZES = ("crafter", "atari", "tiny")


def configure(cfg: Any, overrides: dict[str, Any] | None, where: str) -> Any:
    """``cfg`` (a dataclass) with the fields of ``overrides`` replaced; a dict value updates a nested dataclass.
    An unknown field is a ValueError naming it and the allowed ones."""
    if not overrides:
        return cfg
    if not isinstance(overrides, dict):
        raise ValueError(f"{where}={overrides!r}; expected a dict of {type(cfg).__name__} fields")
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"unknown key '{where}.{key}'; allowed: {', '.join(names)}")
        current = getattr(cfg, key)
        changes[key] = configure(current, value, f"{where}.{key}") if dataclasses.is_dataclass(current) else value
    return dataclasses.replace(cfg, **changes)


class DeltaIrisPolicy(BasePolicy):
    """The ``tokenizer``, the ``world_model`` and the ``actor_critic`` of Δ-IRIS (see the module docstring).

    :param size: ``crafter``, ``atari`` (the official configurations) or ``tiny``
    :param sequence_length: the world model's training segments (its ``max_blocks``; 21 Crafter, 26 Atari)
    :param tokenizer, world_model, actor_critic: field overrides of the configs (None: as ``size`` gives them)
    :param temperature: of the sampled actions (1.0)
    :param channels_last: keep the convolution weights, hence the activations, in the channels-last memory format
        (as DIAMOND's policy; the same numbers, faster oneDNN convolutions on CPU: results/benchmarks/delta_iris.md)
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        lr_schedule: Any = None,
        size: str = "crafter",
        sequence_length: int = 21,
        tokenizer: dict[str, Any] | None = None,
        world_model: dict[str, Any] | None = None,
        actor_critic: dict[str, Any] | None = None,
        temperature: float = 1.0,
        channels_last: bool = True,
    ) -> None:
        super().__init__(observation_space, action_space)
        if size not in SIZES:
            raise ValueError(f"size={size!r} is not allowed; choose one of: {', '.join(SIZES)}")
        shape = observation_space.shape
        if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
            raise ValueError(f"Δ-IRIS needs square RGB frames (3, H, H); the observation space has shape {shape}")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature}; expected a number > 0")
        n, img = int(action_space.n), int(shape[1])
        self.temperature = float(temperature)
        tk_cfg = getattr(TokenizerConfig, size)(n)
        wm_cfg = getattr(WorldModelConfig, size)(n)
        ac_cfg = getattr(ActorCriticConfig, size)(n)
        tk_cfg = configure(dataclasses.replace(tk_cfg, image_size=img), tokenizer, "tokenizer")
        wm_cfg = configure(dataclasses.replace(wm_cfg, image_size=img, max_blocks=int(sequence_length)), world_model,
                           "world_model")
        ac_cfg = configure(dataclasses.replace(ac_cfg, image_size=img), actor_critic, "actor_critic")
        self.tokenizer = Tokenizer(tk_cfg)
        self.world_model = WorldModel(wm_cfg)
        self.actor_critic = ActorCritic(ac_cfg)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def frames(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (channels first or last) -> float ``[n, 3, H, W]`` in [0, 1] on the policy's device."""
        obs = maybe_transpose(np.asarray(obs), self.observation_space)
        x = torch.as_tensor(obs, device=self.device).float()
        return (x / 255).reshape(-1, *self.observation_space.shape)

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        frames = observation if observation.dtype.is_floating_point else self.frames(observation)
        return self.act(frames, None, deterministic)[0]

    def act(self, frames: torch.Tensor, hidden: Any, deterministic: bool = False) -> tuple[torch.Tensor, Any]:
        """Actions ``[n]`` for frames ``[n, 3, H, W]`` in [0, 1] and the new LSTM state (torch tensors)."""
        out = self.actor_critic.model(frames, hidden)
        if deterministic:
            return out.logits.argmax(-1), out.hidden
        return torch.distributions.Categorical(logits=out.logits / self.temperature).sample(), out.hidden

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
