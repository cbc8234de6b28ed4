"""Batched rollouts of a policy inside a world model: DIAMOND's ``WorldModelEnv`` (``src/envs/world_model_env.py`` of
github.com/eloialonso/diamond, Alonso et al. 2024, Sec. 3.3), written anew.

:class:`WorldModelEnv` keeps, per env, the last ``n = 4`` frames and actions. :meth:`~WorldModelEnv.reset_from`
starts it from real contexts (frames ``[B, n, 3, H, W]`` in [-1, 1] and actions ``[B, n]`` from the buffer) and burns
the reward/end model's LSTM in on the ``n - 1`` real transitions of the context (official ``make_generator_init``).
:meth:`~WorldModelEnv.step` writes the action into the last slot, samples the next frame with the diffusion sampler,
draws the reward sign and the end from the reward/end model (one LSTM step), counts the episode length
(``trunc = length >= horizon``) and shifts the context. Nothing is reset inside ``step``: the frame it returns for a
dead env is the true final frame; :meth:`~WorldModelEnv.reset_dead` then draws new contexts from ``sample_contexts``
(official ``reset_dead``), returning their last frames and the frames before it for the policy's burn-in.

:func:`imagine` runs a policy for ``horizon`` steps (32 rollouts of 15 steps in DIAMOND) without gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

Contexts = tuple[torch.Tensor, torch.Tensor]  # frames [B, n, C, H, W] in [-1, 1], actions [B, n] int64


class NextFrameSampler(Protocol):
    def sample_next_obs(self, obs_cond: torch.Tensor, act_cond: torch.Tensor) -> torch.Tensor: ...


class WorldModelEnv:
    """``num_envs`` imagined envs of a next-frame sampler and a reward/end model (see the module docstring).

    :param sampler: ``sample_next_obs(obs [B, n, C, H, W], act [B, n]) -> [B, C, H, W]`` (a ``DiffusionSampler``)
    :param rew_end_model: ``forward(obs, act, next_obs, hidden)`` over sequences and ``predict`` for one step
        (a :class:`~world_models.diamond.reward_end.RewEndModel`)
    :param sample_contexts: ``n -> (frames, actions)`` of ``n`` real contexts; needed by :meth:`reset` and
        :meth:`reset_dead` only
    :param horizon: imagined episodes are truncated after this many steps (15)
    :param num_envs: rollouts in parallel (32)
    """

    def __init__(
        self,
        sampler: NextFrameSampler,
        rew_end_model: torch.nn.Module,
        sample_contexts: Callable[[int], Contexts] | None = None,
        horizon: int = 15,
        num_envs: int = 32,
    ) -> None:
        if int(horizon) < 1 or int(num_envs) < 1:
            raise ValueError(f"horizon={horizon} and num_envs={num_envs} must both be >= 1")
        self.sampler, self.rew_end_model = sampler, rew_end_model
        self.sample_contexts, self.horizon, self.num_envs = sample_contexts, int(horizon), int(num_envs)
        self.obs_buffer: torch.Tensor | None = None  # [B, n, C, H, W]

    def _contexts(self, n: int) -> Contexts:
        if self.sample_contexts is None:
            raise ValueError("this WorldModelEnv has no sample_contexts: start it with reset_from(frames, actions)")
        return self.sample_contexts(n)

    @torch.no_grad()
    def _burn_in(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward/end LSTM state after the ``n - 1`` real transitions of the contexts (``n >= 2``)."""
        *_, hidden = self.rew_end_model(obs[:, :-1], act[:, :-1], obs[:, 1:])
        return hidden

    def reset(self) -> torch.Tensor:
        """``num_envs`` new episodes from ``sample_contexts``; returns their last frames ``[B, C, H, W]``."""
        return self.reset_from(*self._contexts(self.num_envs))

    @torch.no_grad()
    def reset_from(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Start from real contexts ``obs [B, n, C, H, W]`` in [-1, 1] and ``act [B, n]``; returns ``obs[:, -1]``."""
        if obs.ndim != 5 or act.shape != obs.shape[:2] or obs.shape[1] < 2:
            raise ValueError(f"contexts: frames {tuple(obs.shape)} must be [B, n >= 2, C, H, W], actions "
                             f"{tuple(act.shape)} [B, n]")
        self.obs_buffer, self.act_buffer = obs.clone(), act.long().clone()
        self.hidden = self._burn_in(self.obs_buffer, self.act_buffer)
        self.num_envs = obs.shape[0]
        self.ep_len = torch.zeros(self.num_envs, dtype=torch.long, device=obs.device)
        return self.obs_buffer[:, -1]

    @torch.no_grad()
    def step(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One imagined step of every env: ``(next_obs [B, C, H, W] float in [-1, 1], rew [B] float in {-1, 0, 1},
        end [B] bool, trunc [B] bool)``."""
        if self.obs_buffer is None:
            raise RuntimeError("call reset() or reset_from(frames, actions) before step()")
        self.act_buffer[:, -1] = act
        next_obs = self.sampler.sample_next_obs(self.obs_buffer, self.act_buffer)
        logits_rew, logits_end, self.hidden = self.rew_end_model.predict(
            self.obs_buffer[:, -1], self.act_buffer[:, -1], next_obs, self.hidden
        )
        rew = torch.distributions.Categorical(logits=logits_rew).sample().float() - 1  # sign in {-1, 0, 1}
        end = torch.distributions.Categorical(logits=logits_end).sample().bool()
        self.ep_len += 1
        trunc = self.ep_len >= self.horizon
        self.obs_buffer = self.obs_buffer.roll(-1, dims=1)
        self.act_buffer = self.act_buffer.roll(-1, dims=1)
        self.obs_buffer[:, -1] = next_obs
        return next_obs, rew, end, trunc

    @torch.no_grad()
    def reset_dead(self, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New contexts for the envs where ``dead [B]``; returns their last frames ``[k, C, H, W]`` and the frames
        before ``[k, n - 1, C, H, W]`` (for the policy's burn-in)."""
        obs, act = self._contexts(int(dead.sum()))
        obs, act = obs.to(self.obs_buffer.device), act.to(self.obs_buffer.device).long()  # type: ignore[union-attr]
        self.obs_buffer[dead], self.act_buffer[dead] = obs, act  # type: ignore[index]
        hx, cx = self._burn_in(obs, act)
        self.hidden[0][:, dead], self.hidden[1][:, dead] = hx, cx
        self.ep_len[dead] = 0
        return obs[:, -1], obs[:, :-1]


class ImaginedRollout(NamedTuple):
    """``obs [B, T + 1, C, H, W]`` (the context's last frame, then ``T`` imagined frames), ``act [B, T]`` int64,
    ``rew [B, T]`` float, ``end [B, T]`` and ``trunc [B, T]`` bool."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor


@torch.no_grad()
def imagine(
    env: WorldModelEnv,
    contexts: Contexts,
    policy: Callable[[torch.Tensor], torch.Tensor],
    horizon: int | None = None,
) -> ImaginedRollout:
    """Roll ``policy`` (frames ``[B, C, H, W]`` -> actions ``[B]``, stateful if it wants) for ``horizon`` steps
    (default ``env.horizon``) from ``contexts``, without resetting dead envs (steps after an end are still
    imagined; mask them with ``end``)."""
    obs = env.reset_from(*contexts)
    frames, acts, rews, ends, truncs = [obs], [], [], [], []
    for _ in range(horizon or env.horizon):
        act = policy(obs)
        obs, rew, end, trunc = env.step(act)
        for store, x in zip((frames, acts, rews, ends, truncs), (obs, act, rew, end, trunc), strict=True):
            store.append(x)
    return ImaginedRollout(torch.stack(frames, 1), torch.stack(acts, 1).long(), torch.stack(rews, 1),
                           torch.stack(ends, 1), torch.stack(truncs, 1))
