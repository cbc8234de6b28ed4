"""DIAMOND's actor-critic, trained in imagination: shared CNN + LSTM, REINFORCE with a value baseline on lambda-returns.

As ``src/models/actor_critic.py`` and ``src/coroutines/env_loop.py`` of github.com/eloialonso/diamond (Alonso et al.
2024, Sec. 3.3 and App. D), written anew, with nothing Atari- or DIAMOND-specific so Delta-IRIS can reuse it:

- **Network** (:class:`ActorCritic`): ``conv3x3(3 -> c_0)`` then, per stage ``i``, a small residual block
  (``GroupNorm -> SiLU -> conv3x3`` plus a 1x1 skip when the width changes) and a 2x2 max-pool where ``down[i]``;
  the flattened map (``64 * 4 * 4 = 1024`` at 64x64) feeds an ``LSTMCell(1024, 512)``; the policy logits and the
  value are linear heads of ``h``, both zero-initialized. LSTM init: input weights xavier, recurrent orthogonal,
  forget-gate bias 1 (official ``init_lstm``).
- **Lambda-returns** (:func:`lambda_returns`), with ``v'_t = V(s_{t+1})`` the bootstrap value of step ``t``::

      G_t = sign(r_t) + gamma (1 - end_t) [ (1 - trunc_t)(1 - lambda) + trunc_t ] v'_t
            + gamma lambda (1 - end_t)(1 - trunc_t) G_{t+1},        G_T := v'_{T-1}

  a termination stops the bootstrap and the recursion, a truncation (the imagination horizon) bootstraps fully on
  ``V`` of the final frame and stops the recursion. Rewards are sign-clipped as the official code does.
- **Loss** (:func:`actor_critic_loss`): ``-log pi(a_t) (G_t - V_t).detach()`` + ``w_v * MSE(V_t, G_t)`` ``- w_H * H``
  (means over batch and time; ``G`` carries no gradient; no target network, no return normalization).
- **Rollouts** (:class:`ImaginationLoop`): the official ``env_loop``: ``N`` parallel envs stepped ``num_steps`` at a
  time with the policy's LSTM state carried across calls; a dead env is reset by the env, its LSTM state zeroed and
  burned in on the new context's first frames; ``V`` of the final frame of a dead env is its bootstrap value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from world_models.diamond.blocks import conv1x1, conv3x3, group_norm

Hidden = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ActorCriticConfig:
    """``config/agent/default.yaml`` ``actor_critic``; the loss weights of ``trainer.yaml`` ``actor_critic_loss``."""

    num_actions: int
    img_channels: int = 3
    img_size: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    down: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    lstm_dim: int = 512

    @classmethod
    def paper(cls, num_actions: int) -> ActorCriticConfig:
        return cls(num_actions=num_actions)

    @classmethod
    def cpu(cls, num_actions: int) -> ActorCriticConfig:
        """DIAMOND's ``preset=cpu``: half the channels, LSTM 256."""
        return cls(num_actions, channels=[16, 16, 32, 32], lstm_dim=256)

    @classmethod
    def tiny(cls, num_actions: int) -> ActorCriticConfig:
        return cls(num_actions, channels=[8, 8, 8, 8], lstm_dim=32)

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.down):
            raise ValueError(f"channels {self.channels} and down {self.down}: one entry per encoder stage")
        if self.img_size % 2 ** sum(self.down):
            raise ValueError(f"img_size={self.img_size} must be divisible by 2^{sum(self.down)} (the max-pools)")


class SmallResBlock(nn.Module):
    """``x -> skip(x) + conv3x3(SiLU(GroupNorm(x)))`` (official ``blocks.SmallResBlock``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.f = nn.Sequential(group_norm(in_channels), nn.SiLU(), conv3x3(in_channels, out_channels))
        self.skip = nn.Identity() if in_channels == out_channels else conv1x1(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.f(x)


class ActorCriticOutput(NamedTuple):
    logits: torch.Tensor  # [B, A]
    value: torch.Tensor  # [B]
    hidden: Hidden  # ([B, lstm_dim], [B, lstm_dim])


class ActorCritic(nn.Module):
    """Policy and value of one frame ``[B, C, H, W]`` in [-1, 1] given the LSTM state (see the module docstring)."""

    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        layers: list[nn.Module] = [conv3x3(cfg.img_channels, ch[0])]
        for i, down in enumerate(cfg.down):
            layers.append(SmallResBlock(ch[max(0, i - 1)], ch[i]))
            if down:
                layers.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*layers)
        side = cfg.img_size // 2 ** sum(cfg.down)
        self.lstm = nn.LSTMCell(ch[-1] * side * side, cfg.lstm_dim)
        self.actor_linear = nn.Linear(cfg.lstm_dim, cfg.num_actions)
        self.critic_linear = nn.Linear(cfg.lstm_dim, 1)
        for head in (self.actor_linear, self.critic_linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        nn.init.xavier_uniform_(self.lstm.weight_ih)
        nn.init.orthogonal_(self.lstm.weight_hh)
        nn.init.zeros_(self.lstm.bias_ih)
        nn.init.zeros_(self.lstm.bias_hh)
        self.lstm.bias_ih.data[cfg.lstm_dim : 2 * cfg.lstm_dim] = 1.0  # forget gate (gates: input, forget, cell, out)

    @property
    def device(self) -> torch.device:
        return self.lstm.weight_hh.device

    def initial_state(self, batch_size: int) -> Hidden:
        zeros = torch.zeros(batch_size, self.cfg.lstm_dim, device=self.device)
        return zeros, zeros.clone()

    def forward(self, obs: torch.Tensor, hidden: Hidden | None = None) -> ActorCriticOutput:
        hidden = hidden if hidden is not None else self.initial_state(obs.shape[0])
        hx, cx = self.lstm(self.encoder(obs).flatten(1), hidden)
        return ActorCriticOutput(self.actor_linear(hx), self.critic_linear(hx).squeeze(1), (hx, cx))

    def burn_in(self, frames: torch.Tensor, hidden: Hidden | None = None) -> Hidden:
        """The LSTM state after reading ``frames [B, T, C, H, W]`` in order."""
        for t in range(frames.shape[1]):
            hidden = self(frames[:, t], hidden).hidden
        return hidden if hidden is not None else self.initial_state(frames.shape[0])


@torch.no_grad()
def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    ends: torch.Tensor,
    gamma: float,
    lam: float,
    truncs: torch.Tensor | None = None,
    sign_rewards: bool = True,
) -> torch.Tensor:
    """Lambda-returns ``[B, T]`` of ``rewards``, bootstrap ``values`` (``V(s_{t+1})``), ``ends`` and ``truncs``
    (all ``[B, T]``), as the official ``compute_lambda_returns`` (formula in the module docstring).

    ``sign_rewards``: clip the rewards to their sign (DIAMOND); Δ-IRIS uses them as they are
    (``src/models/actor_critic/utils.py`` of vmicheli/delta-iris: the same recursion, no truncation, no clipping)."""
    if rewards.ndim != 2 or not rewards.shape == values.shape == ends.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and ends "
                         f"{tuple(ends.shape)} must all be [B, T]")
    end = ends.float()
    trunc = torch.zeros_like(end) if truncs is None else truncs.float()
    not_end, not_trunc = 1 - end, 1 - trunc
    # the one-step part: r + gamma (1 - lambda) v' (full v' at a truncation, none after a termination)
    rew = rewards.sign() if sign_rewards else rewards.float()
    returns = rew + not_end * gamma * (not_trunc * (1 - lam) + trunc) * values
    last = values[:, -1]
    for t in reversed(range(rewards.shape[1])):  # G_t += gamma lambda G_{t+1} unless the episode stops at t
        returns[:, t] += not_end[:, t] * not_trunc[:, t] * gamma * lam * last
        last = returns[:, t]
    return returns


class Rollout(NamedTuple):
    """``T`` steps of ``B`` envs: each ``[B, T]`` (``logits [B, T, A]``); ``values`` carry the gradient,
    ``bootstrap`` (``V(s_{t+1})``, the final frame's value where the env died) does not."""

    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    logits: torch.Tensor
    values: torch.Tensor
    bootstrap: torch.Tensor


def actor_critic_loss(
    r: Rollout, gamma: float, lam: float, weight_value: float = 1.0, weight_entropy: float = 1e-3
) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE with the value baseline on lambda-returns, value MSE and the entropy bonus (official
    ``ActorCritic.forward``). Returns the loss and its terms (``policy_entropy`` in bits, as the official logs)."""
    dist = Categorical(logits=r.logits)
    entropy = dist.entropy().mean()
    returns = lambda_returns(r.rew, r.bootstrap, r.end, gamma, lam, r.trunc)
    advantages = (returns - r.values).detach()
    loss_actions = (-dist.log_prob(r.act) * advantages).mean()
    loss_values = weight_value * F.mse_loss(r.values, returns)
    loss_entropy = -weight_entropy * entropy
    loss = loss_actions + loss_values + loss_entropy
    logs = {"loss_actions": loss_actions.item(), "loss_values": loss_values.item(),
            "loss_entropy": loss_entropy.item(), "loss_total": loss.item(),
            "policy_entropy": entropy.item() / math.log(2), "lambda_return": returns.mean().item()}
    return loss, logs


class BatchedEnv(Protocol):
    """What :class:`ImaginationLoop` steps (e.g. :class:`world_models.imagination.WorldModelEnv`)."""

    num_envs: int

    def reset(self) -> torch.Tensor: ...  # first frames [N, C, H, W]

    def step(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def reset_dead(self, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...  # (frames, burn-in frames)


class ImaginationLoop:
    """The official ``env_loop``: :meth:`collect` steps ``env`` ``num_steps`` times with ``model`` (gradients on),
    continuing where the previous call stopped; returns a :class:`Rollout` for :func:`actor_critic_loss`."""

    def __init__(self, env: BatchedEnv, model: ActorCritic) -> None:
        self.env, self.model = env, model
        self.obs: torch.Tensor | None = None
        self.hidden: Hidden | None = None

    def collect(self, num_steps: int) -> Rollout:
        if self.obs is None:
            self.obs, self.hidden = self.env.reset(), self.model.initial_state(self.env.num_envs)
        hx, cx = (h.detach() for h in self.hidden)  # type: ignore[union-attr]
        obs, steps = self.obs, []
        for _ in range(num_steps):
            logits, value, (hx, cx) = self.model(obs, (hx, cx))
            act = Categorical(logits=logits.detach()).sample()
            next_obs, rew, end, trunc = self.env.step(act)
            dead = end | trunc
            bootstrap = torch.zeros_like(value)
            if dead.any():
                with torch.no_grad():  # V of the final frame, with the state before the reset
                    bootstrap[dead] = self.model(next_obs[dead], (hx[dead], cx[dead])).value
                new_obs, burnin = self.env.reset_dead(dead)
                next_obs = next_obs.clone()
                next_obs[dead] = new_obs
                keep = (~dead).float()[:, None]
                hx, cx = hx * keep, cx * keep
                h_dead = self.model.burn_in(burnin, (hx[dead], cx[dead]))
                hx, cx = hx.index_put((dead,), h_dead[0]), cx.index_put((dead,), h_dead[1])
            steps.append((act, rew, end, trunc, logits, value, bootstrap, dead))
            obs = next_obs
        with torch.no_grad():  # bootstrap of every step: V of the next frame, or of the final frame where dead
            last = self.model(obs, (hx, cx)).value
        boot = [s[5].detach() for s in steps[1:]] + [last]
        self.obs, self.hidden = obs, (hx, cx)
        cols = list(zip(*steps, strict=True))
        bootstrap = torch.stack([torch.where(d, b_dead, b) for d, b_dead, b in zip(cols[7], cols[6], boot,
                                                                                   strict=True)], dim=1)
        act, rew, end, trunc, logits, values = (torch.stack(c, dim=1) for c in cols[:6])
        return Rollout(act, rew, end, trunc, logits, values, bootstrap)
