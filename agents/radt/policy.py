"""The SB3 policy of DT and RADT: a sequence model acting on a window of the episode so far.

Observations are return-conditioned (:mod:`envs.return_to_go`): ``{"observation": s_t, "return_to_go": [R_t]}``.
The recurrent ``state`` that ``predict`` takes and returns (as SB3's recurrent policies do) is the context: the last
``K`` normalized states, actions, scaled returns-to-go and timesteps of every env, right-aligned (the newest step
last) and left-padded, with the number of steps taken so far. ``episode_start`` clears an env's context, so
``evaluate_policy`` drives it like any recurrent policy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from agents.radt.models import DecisionTransformer, ReturnAlignedDT, SequenceModel
from envs.return_to_go import OBS_KEY, RTG_KEY

MODELS: dict[str, type[SequenceModel]] = {"dt": DecisionTransformer, "radt": ReturnAlignedDT}


class Context(NamedTuple):
    """Per-env windows of the last ``K`` steps: ``states [n, K, ds]``, ``actions [n, K, da]`` (in [-1, 1]),
    ``returns_to_go [n, K, 1]`` (scaled), ``timesteps [n, K]``, ``valid [n, K]`` and ``steps [n]`` taken so far."""

    states: np.ndarray
    actions: np.ndarray
    returns_to_go: np.ndarray
    timesteps: np.ndarray
    valid: np.ndarray
    steps: np.ndarray


class SequencePolicy(BasePolicy):
    """A :class:`~agents.radt.models.SequenceModel` with the dataset's state normalization and return scale.

    :param model: ``dt`` or ``radt``
    :param model_kwargs: keyword arguments of the model (width, layers, heads, context, aligners, norm, CLA)
    :param return_scale: returns-to-go are divided by this before embedding (1000 in DT and RADT)
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Any,
        model: str = "radt",
        model_kwargs: dict[str, Any] | None = None,
        return_scale: float = 1000.0,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs or {})
        if model not in MODELS:
            raise ValueError(f"model={model!r} is not allowed; choose one of: {', '.join(MODELS)}")
        state_dim = observation_space[OBS_KEY].shape[0]
        act_dim = action_space.shape[0]
        self.model_name, self.model_kwargs, self.return_scale = model, dict(model_kwargs or {}), float(return_scale)
        self.model = MODELS[model](state_dim, act_dim, **self.model_kwargs)
        self.context = self.model.context
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("action_low", torch.as_tensor(action_space.low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_space.high, dtype=torch.float32))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, model_kwargs=self.model_kwargs, return_scale=self.return_scale)
        return data

    # --- conversions ---------------------------------------------------------------------------------------------
    def normalize_states(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.state_mean) / self.state_std

    def to_unit_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Env actions -> [-1, 1] (the tanh range of the action head)."""
        return 2 * (actions - self.action_low) / (self.action_high - self.action_low) - 1

    def from_unit_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.action_low + (actions + 1) * (self.action_high - self.action_low) / 2

    # --- acting --------------------------------------------------------------------------------------------------
    def empty_context(self, n_envs: int) -> Context:
        k, ds, da = self.context, self.model.state_dim, self.model.act_dim
        return Context(
            np.zeros((n_envs, k, ds), np.float32), np.zeros((n_envs, k, da), np.float32),
            np.zeros((n_envs, k, 1), np.float32), np.zeros((n_envs, k), np.int64), np.zeros((n_envs, k), bool),
            np.zeros(n_envs, np.int64),
        )

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError("SequencePolicy acts on a context: call predict(obs, state, episode_start)")

    def predict(  # type: ignore[override]
        self,
        observation: dict[str, np.ndarray],
        state: Context | tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Context]:
        """Append this step to each env's context, predict the action from its state token, record the action.

        The model is deterministic (tanh of a regression), so ``deterministic`` changes nothing.
        """
        if not isinstance(observation, dict) or OBS_KEY not in observation or RTG_KEY not in observation:
            raise ValueError(
                "a return-conditioned policy needs observations {'observation', 'return_to_go'}: wrap the env with "
                "envs.return_to_go.ReturnToGoVecEnv(env, target_return=...)"
            )
        obs = np.asarray(observation[OBS_KEY], np.float32).reshape(-1, self.model.state_dim)
        rtg = np.asarray(observation[RTG_KEY], np.float32).reshape(-1, 1)
        n = len(obs)
        ctx = self.empty_context(n) if state is None else Context(*(np.array(a, copy=True) for a in state))
        if len(ctx.steps) != n:
            raise ValueError(f"the context holds {len(ctx.steps)} envs; the observation has {n}")
        if episode_start is not None:
            for i in np.flatnonzero(np.asarray(episode_start, bool)):
                for arr in ctx:
                    arr[i] = 0
        for arr in ctx[:-1]:  # shift every window left by one step; the new step goes last
            arr[:, :-1] = arr[:, 1:].copy()
        with torch.no_grad():
            states = self.normalize_states(torch.as_tensor(obs, device=self.device)).cpu().numpy()
        ctx.states[:, -1] = states
        ctx.returns_to_go[:, -1] = rtg / self.return_scale
        ctx.timesteps[:, -1] = np.minimum(ctx.steps, self.model.max_ep_len - 1)
        ctx.actions[:, -1] = 0.0  # unknown yet; the state token does not attend to it
        ctx.valid[:, -1] = True
        self.set_training_mode(False)
        with torch.no_grad():
            tensors = [torch.as_tensor(a, device=self.device) for a in ctx[:-1]]
            unit = self.model(*tensors)[:, -1]
        ctx.actions[:, -1] = unit.cpu().numpy()
        ctx.steps[:] += 1
        actions = self.from_unit_actions(unit).cpu().numpy()
        return np.clip(actions, self.action_space.low, self.action_space.high), ctx
