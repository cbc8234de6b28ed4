"""MuJoCo locomotion and control envs (gymnasium's v5), by id or by short name, wrapped in SB3's ``Monitor``."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import mujoco
from stable_baselines3.common.monitor import Monitor

_ENTRY_POINT_PREFIX = "gymnasium.envs.mujoco"


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def mujoco_ids() -> dict[str, str]:
    """Short name ("hopper", "halfcheetah", "inverted_pendulum" without separators) -> gymnasium's v5 id."""
    ids = [
        k
        for k, spec in gym.registry.items()
        if k.endswith("-v5") and str(spec.entry_point).startswith(_ENTRY_POINT_PREFIX)
    ]
    return {_key(k[: -len("-v5")]): k for k in sorted(ids)}


def mujoco_env_id(env_id: str) -> str:
    """Gymnasium's id for ``env_id``: a registered MuJoCo id stays as is ("Hopper-v4"); a short name
    ("hopper", "half_cheetah", "InvertedPendulum") maps to its v5 id; anything else raises ValueError."""
    spec = gym.registry.get(env_id) if isinstance(env_id, str) else None
    if spec is not None and str(spec.entry_point).startswith(_ENTRY_POINT_PREFIX):
        return env_id
    ids = mujoco_ids()
    key = _key(env_id) if isinstance(env_id, str) else ""
    if key not in ids:
        raise ValueError(
            f"unknown MuJoCo env '{env_id}'; choose one of: {', '.join(ids)} (or their ids, "
            f"e.g. {', '.join(list(ids.values())[:3])})"
        )
    return ids[key]


def _route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings (e.g. HalfCheetah's deprecated ``settotalmass``) to the "mujoco" logger rather than
    to a MUJOCO_LOG.TXT in the working directory; a handler installed by someone else is left alone."""
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(logging.getLogger("mujoco").warning)


def make_mujoco(env_id: str, seed: int, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """A Monitor-wrapped MuJoCo env, seeded with ``reset(seed=seed)``; ``kwargs`` go to ``gym.make``
    (e.g. ``max_episode_steps``, ``terminate_when_unhealthy``, ``width``/``height`` for rendering)."""
    _route_mujoco_warnings()
    env = gym.make(mujoco_env_id(env_id), render_mode=render_mode, **kwargs)
    env = Monitor(env)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env
