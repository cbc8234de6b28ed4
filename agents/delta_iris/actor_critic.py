"""Δ-IRIS's actor-critic, trained in the imagination of its world model: CNN + LSTM on decoded frames, REINFORCE
with a baseline from an EMA target network, a two-hot (Crafter) or scalar (Atari) critic.

As ``src/models/actor_critic/{actor_critic.py, cnn_lstm_actor_critic.py, utils.py}`` of github.com/vmicheli/delta-iris
(Micheli, Alonso, Fleuret, ICML 2024), written anew:

- **Network** (:class:`CnnLstm`): ``FrameEncoder(3 -> 32 ch, mult [1, 1, 2, 2, 4], down [1, 0, 1, 1, 0], latent 16)``
  maps a 64x64 frame in [0, 1] to 8x8x16 = 1024 features (flattened as ``(h w c)``, as the official ``Rearrange``),
  an ``LSTMCell(1024, 512)`` (PyTorch's default initialization, as the official module), then ``actor_linear(512, A)``
  and ``critic_linear(512, 255)`` (logits of a two-hot over ``symlog`` buckets, Crafter) or ``(512, 1)`` (Atari);
  only the critic is zero-initialized.
- **Target network** (:class:`ActorCritic`): an EMA copy of the whole network, ``target = tau target + (1 - tau)
  model`` with ``tau`` 0.995, updated at every actor-critic step (official ``update_target``, called in
  ``compute_loss`` before the optimizer's step). It gives the baseline and the values the returns bootstrap on.
- **Imagination** (:func:`imagine`): a segment of ``burn_in + 1`` real frames starts the world model
  (``reset_from``); the policy's and the target's LSTMs read the first ``burn_in`` frames without gradient, then the
  policy acts ``horizon`` steps from the last real frame, sampling its actions; the target reads the same frames.
- **Loss** (:func:`actor_critic_loss`), with ``V'`` the target's values and ``v'_t = V'(s_{t+1})`` (the last one the
  target's value of the final frame)::

      G_t = r_t + gamma (1 - end_t) [(1 - lambda) v'_t + lambda G_{t+1}],     G_H := v'_{H-1}
      loss = mean_m[-log pi(a_t) (G_t - V'(s_t))] + CE(critic(s_t), two_hot(symlog G_t)) (or MSE) - w_H mean_m[H]

  over the steps ``m`` up to and including the first end of each trajectory (official
  ``compute_mask_after_first_done``); rewards are not clipped.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from agents.common.actor_critic import lambda_returns
from agents.common.convnet import FrameCnnConfig, FrameEncoder
from agents.common.two_hot import NUM_BUCKETS, decode, two_hot_loss

Hidden = tuple[torch.Tensor, torch.Tensor]


def _frame_encoder(latent_dim: int = 16, num_channels: int = 32) -> FrameCnnConfig:
    return FrameCnnConfig(image_channels=3, latent_dim=latent_dim, num_channels=num_channels, mult=[1, 1, 2, 2, 4],
                          down=[1, 0, 1, 1, 0])


@dataclass
class ActorCriticConfig:
    """``actor_critic.model`` of ``config/params/{crafter,atari}.yaml`` (``two_hot_rets``: 255 buckets or a scalar)."""

    num_actions: int
    frame_encoder: FrameCnnConfig = field(default_factory=_frame_encoder)
    image_size: int = 64
    lstm_dim: int = 512
    two_hot_returns: bool = True

    @classmethod
    def crafter(cls, num_actions: int) -> ActorCriticConfig:
        return cls(num_actions)

    @classmethod
    def atari(cls, num_actions: int) -> ActorCriticConfig:
        return cls(num_actions, two_hot_returns=False)

    @classmethod
    def tiny(cls, num_actions: int) -> ActorCriticConfig:
        return cls(num_actions, FrameCnnConfig(3, 4, 8, [1, 1], [1, 1]), lstm_dim=32)

    def __post_init__(self) -> None:
        if isinstance(self.frame_encoder, dict):  # from a JSON/YAML override
            self.frame_encoder = FrameCnnConfig(**self.frame_encoder)
        if self.frame_encoder.image_channels != 3:
            raise ValueError(f"frame_encoder.image_channels={self.frame_encoder.image_channels}; the actor-critic "
                             "reads RGB frames (3)")
        if self.image_size % self.frame_encoder.downsampling:
            raise ValueError(f"image_size={self.image_size} must be divisible by {self.frame_encoder.downsampling} "
                             f"(down={self.frame_encoder.down})")

    @property
    def num_features(self) -> int:
        """The LSTM's input: ``latent_dim * (image_size / 2^sum(down))^2`` (1024 at 64x64)."""
        side = self.image_size // self.frame_encoder.downsampling
        return self.frame_encoder.latent_dim * side * side


class StepOutput(NamedTuple):
    logits: torch.Tensor  # [B, A] policy logits
    value_logits: torch.Tensor  # [B, 255] two-hot logits, or [B, 1] the value itself
    hidden: Hidden  # ([B, lstm_dim], [B, lstm_dim])


class CnnLstm(nn.Module):
    """Policy and value of one frame ``[B, 3, H, W]`` in [0, 1] given the LSTM state (``CnnLstmActorCritic``)."""

    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg.frame_encoder)
        self.lstm = nn.LSTMCell(cfg.num_features, cfg.lstm_dim)
        self.actor_linear = nn.Linear(cfg.lstm_dim, cfg.num_actions)
        self.critic_linear = nn.Linear(cfg.lstm_dim, NUM_BUCKETS if cfg.two_hot_returns else 1)
        nn.init.zeros_(self.critic_linear.weight)
        nn.init.zeros_(self.critic_linear.bias)

    @property
    def device(self) -> torch.device:
        return self.lstm.weight_hh.device

    def initial_state(self, batch_size: int) -> Hidden:
        zeros = torch.zeros(batch_size, self.cfg.lstm_dim, device=self.device)
        return zeros, zeros.clone()

    def forward(self, frames: torch.Tensor, hidden: Hidden | None = None) -> StepOutput:
        hidden = hidden if hidden is not None else self.initial_state(frames.shape[0])
        features = self.encoder(frames).permute(0, 2, 3, 1).flatten(1)  # (h w c), as the official Rearrange
        hx, cx = self.lstm(features, hidden)
        return StepOutput(self.actor_linear(hx), self.critic_linear(hx), (hx, cx))

    def value(self, value_logits: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` critic outputs -> values ``[...]``: ``symexp`` of the bucket mean, or the scalar."""
        return decode(value_logits) if self.cfg.two_hot_returns else value_logits[..., 0]

    def burn_in(self, frames: torch.Tensor, hidden: Hidden | None = None) -> Hidden:
        """The LSTM state after reading ``frames [B, T, 3, H, W]`` in order (from ``hidden``, zeros by default)."""
        hidden = hidden if hidden is not None else self.initial_state(frames.shape[0])
        for t in range(frames.shape[1]):
            hidden = self(frames[:, t], hidden).hidden
        return hidden


class ActorCritic(nn.Module):
    """The trained network ``model`` and its EMA copy ``target_model`` (no gradient)."""

    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = CnnLstm(cfg)
        self.target_model = copy.deepcopy(self.model)
        self.target_model.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def update_target(self, tau: float = 0.995) -> None:
        """``target = tau target + (1 - tau) model``, parameter by parameter (official ``update_target``)."""
        for target, source in zip(self.target_model.parameters(), self.model.parameters(), strict=True):
            target.lerp_(source, 1.0 - tau)


class WorldModelEnv(Protocol):
    """What :func:`imagine` steps: :class:`world_models.delta_iris.world_model_env.DeltaIrisWorldModelEnv`."""

    def reset_from(self, frames: torch.Tensor, acts: torch.Tensor) -> torch.Tensor: ...

    def step(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...


class Imagined(NamedTuple):
    """``H`` imagined steps of ``B`` trajectories; ``logits``/``value_logits`` carry the gradient."""

    act: torch.Tensor  # [B, H]
    rew: torch.Tensor  # [B, H] float
    end: torch.Tensor  # [B, H] bool
    logits: torch.Tensor  # [B, H, A]
    value_logits: torch.Tensor  # [B, H, K]
    target_values: torch.Tensor  # [B, H] V'(s_t), no gradient
    bootstrap: torch.Tensor  # [B] V'(s_H) of the final frame, no gradient


def imagine(ac: ActorCritic, env: WorldModelEnv, frames: torch.Tensor, acts: torch.Tensor, horizon: int) -> Imagined:
    """``horizon`` steps of the policy in ``env`` from real ``frames [B, burn_in + 1, 3, H, W]`` and the actions
    ``acts [B, burn_in + 1]`` taken in them (the last one is not used), as the official ``ActorCritic.imagine``."""
    obs = env.reset_from(frames, acts)
    with torch.no_grad():
        hidden = ac.model.burn_in(frames[:, :-1])
        target_hidden = ac.target_model.burn_in(frames[:, :-1])
    steps = []
    for _ in range(horizon):
        out = ac.model(obs, hidden)
        hidden = out.hidden
        act = Categorical(logits=out.logits.detach()).sample()
        with torch.no_grad():
            target = ac.target_model(obs, target_hidden)
            target_hidden = target.hidden
        obs, rew, end, _ = env.step(act)
        steps.append((act, rew.float(), end.bool(), out.logits, out.value_logits,
                      ac.target_model.value(target.value_logits)))
    with torch.no_grad():
        bootstrap = ac.target_model.value(ac.target_model(obs, target_hidden).value_logits)
    act, rew, end, logits, value_logits, target_values = (torch.stack(c, dim=1) for c in zip(*steps, strict=True))
    return Imagined(act, rew, end, logits, value_logits, target_values.float(), bootstrap.float())


def mask_after_first_end(ends: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` True up to and including each row's first end (every step of a row without one)."""
    ends = ends.bool()
    before = ends.long().cumsum(1) - ends.long()  # ends strictly before t
    return before == 0


def actor_critic_loss(im: Imagined, gamma: float, lam: float, entropy_weight: float,
                      two_hot_returns: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """The official ``ActorCritic.compute_loss`` on an :class:`Imagined` batch (formula in the module docstring).
    Returns the loss and its terms; ``policy_entropy`` in bits, as DIAMOND logs it."""
    next_values = torch.cat([im.target_values[:, 1:], im.bootstrap[:, None]], dim=1)  # v'_t = V'(s_{t+1})
    returns = lambda_returns(im.rew, next_values, im.end, gamma, lam, sign_rewards=False)
    mask = mask_after_first_end(im.end)
    dist = Categorical(logits=im.logits.float())
    advantages = (returns - im.target_values)[mask]
    loss_actions = (-dist.log_prob(im.act)[mask] * advantages).mean()
    if two_hot_returns:
        loss_values = two_hot_loss(im.value_logits[mask], returns[mask])
    else:
        loss_values = F.mse_loss(im.value_logits[..., 0][mask].float(), returns[mask])
    entropy = dist.entropy()[mask].mean()
    loss_entropy = -entropy_weight * entropy
    loss = loss_actions + loss_values + loss_entropy
    logs = {"loss_actions": loss_actions.item(), "loss_values": loss_values.item(),
            "loss_entropy": loss_entropy.item(), "loss_total": loss.item(),
            "policy_entropy": entropy.item() / math.log(2), "lambda_return": returns[mask].mean().item(),
            "value": im.target_values[mask].mean().item()}
    return loss, logs
