"""The zoo's one env factory: every agent, runner and test builds its envs here, from an env config.

An env config is the flat mapping of ``runners/configs/env/<name>.yaml``:

- ``name``: the config's name ("cartpole"); ``family``: one of ``FAMILIES``; ``id``: gymnasium id or game;
- ``kwargs``: passed to ``gym.make`` (classic, gym, mujoco) or to ``CrafterEnv`` (crafter); may be missing;
- ``max_episode_steps``: optional time limit in agent steps (null keeps the env's own);
- ``discretize``: optional, L levels per action dimension: a Box action env becomes Discrete(L^d)
  (``envs.large_action.Discretize``; classic, gym and mujoco families);
- atari only: ``preprocessing`` ("atari100k" | "sb3"), ``frame_size``, ``noop_max``, ``frame_skip``,
  ``max_episode_frames``, ``frame_stack`` (see ``envs.atari.make_atari``).

Every env is wrapped in SB3's ``Monitor`` below any reward clipping or episode splitting, so ``info["episode"]``
is the true return of a whole episode.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack

from envs.atari import atari_game, human_normalized_score, make_atari
from envs.crafter import ENV_ID as CRAFTER_ID
from envs.crafter import achievement_success_rates, crafter_score
from envs.large_action import Discretize
from envs.mujoco import make_mujoco

FAMILIES = ("classic", "atari", "crafter", "mujoco", "gym")
DISCRETIZE_FAMILIES = ("classic", "gym", "mujoco")
VEC_ENVS = ("dummy", "subproc")
ATARI_KEYS = ("preprocessing", "frame_size", "noop_max", "frame_skip", "max_episode_frames", "frame_stack")


def _plain(value: Any) -> Any:
    """A Hydra/OmegaConf config (or any mapping/sequence) as plain dicts and lists, picklable and mutable."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _check_cfg(env_cfg: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(env_cfg, Mapping):
        raise ValueError(f"env config must be a mapping with keys name, family, id, ...; got {type(env_cfg).__name__}")
    cfg = _plain(env_cfg)
    family = cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(
            f"unknown env family '{family}' (env '{cfg.get('name')}'); choose one of: {', '.join(FAMILIES)}"
        )
    if family != "crafter" and not cfg.get("id"):
        raise ValueError(
            f"env '{cfg.get('name')}' of family '{family}' needs an id, e.g. env.id=CartPole-v1; got {cfg.get('id')!r}"
        )
    kwargs = cfg.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"env.kwargs must be a mapping of keyword arguments; got {kwargs!r}")
    cfg["kwargs"] = kwargs
    levels = cfg.get("discretize")
    if levels is not None and (not isinstance(levels, int) or isinstance(levels, bool) or levels < 2):
        raise ValueError(f"env.discretize={levels!r} must be an integer >= 2 (levels per action dimension) or null")
    if levels is not None and family not in DISCRETIZE_FAMILIES:
        raise ValueError(
            f"env.discretize={levels} applies to Box-action envs of families {', '.join(DISCRETIZE_FAMILIES)}; "
            f"env '{cfg.get('name')}' is {family}"
        )
    steps = cfg.get("max_episode_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"env.max_episode_steps={steps!r} must be a positive integer or null")
    return cfg


def _check_gym_id(env_id: str) -> None:
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown env '{env_id}'; {hint}use an id registered with gymnasium (gymnasium.registry)")


def _make_gym(
    env_id: str, seed: int, render_mode: str | None, kwargs: dict[str, Any], max_episode_steps: int | None
) -> gym.Env:
    _check_gym_id(env_id)
    if max_episode_steps is not None:
        kwargs = {**kwargs, "max_episode_steps": max_episode_steps}
    try:
        env = gym.make(env_id, render_mode=render_mode, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ValueError(f"env '{env_id}' needs a package that is not installed here: {e}") from None
    except TypeError as e:  # a keyword its constructor does not take (e.g. a preset's env.kwargs meant for another env)
        if "keyword argument" not in str(e):
            raise
        raise ValueError(f"env '{env_id}' does not take env.kwargs {sorted(kwargs)}: {e}") from None
    env = Monitor(env)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def _make_atari(cfg: dict[str, Any], seed: int, training: bool, render_mode: str | None) -> gym.Env:
    if cfg["kwargs"]:
        raise ValueError(f"env.kwargs {cfg['kwargs']} is not used by Atari envs; set {', '.join(ATARI_KEYS)}")
    options = {k: cfg[k] for k in ATARI_KEYS if cfg.get(k) is not None}
    if cfg.get("max_episode_steps") is not None:  # agent steps -> emulator frames
        frames = cfg["max_episode_steps"] * options.get("frame_skip", 4)
        options["max_episode_frames"] = min(options.get("max_episode_frames", 108_000), frames)
    return make_atari(cfg["id"], training=training, seed=seed, render_mode=render_mode, **options)


def _make_crafter(cfg: dict[str, Any], seed: int, render_mode: str | None) -> gym.Env:
    if cfg.get("id") not in (None, "crafter", CRAFTER_ID):
        raise ValueError(f"unknown Crafter env '{cfg['id']}'; use id '{CRAFTER_ID}' (or 'crafter')")
    kwargs = dict(cfg["kwargs"])
    if cfg.get("max_episode_steps") is not None:
        kwargs["length"] = min(kwargs.get("length", 10_000), cfg["max_episode_steps"])
    env = Monitor(gym.make(CRAFTER_ID, render_mode=render_mode, **kwargs))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def make_env(
    env_cfg: Mapping[str, Any], *, seed: int, training: bool = True, render_mode: str | None = None
) -> gym.Env:
    """One Monitor-wrapped env from an env config, reset once with ``seed`` (its action space seeded too).

    :param env_cfg: the env config (see the module docstring).
    :param seed: seed of the env's first ``reset`` and of its action space.
    :param training: training envs may differ from evaluation envs: Atari ends episodes on life loss (and the
        "sb3" preset clips rewards) only when training.
    :param render_mode: gymnasium's render mode ("rgb_array" for videos).
    """
    cfg = _check_cfg(env_cfg)
    family = cfg["family"]
    if family == "atari":
        return _make_atari(cfg, seed, training, render_mode)
    if family == "crafter":
        return _make_crafter(cfg, seed, render_mode)
    if family == "mujoco":
        kwargs = dict(cfg["kwargs"])
        if cfg.get("max_episode_steps") is not None:
            kwargs["max_episode_steps"] = cfg["max_episode_steps"]
        env = make_mujoco(cfg["id"], seed, render_mode=render_mode, **kwargs)
    else:
        env = _make_gym(cfg["id"], seed, render_mode, cfg["kwargs"], cfg.get("max_episode_steps"))
    if cfg.get("discretize") is not None:  # Box actions -> Discrete(L^d), for Stochastic Q-learning
        env = Discretize(env, cfg["discretize"])
        env.action_space.seed(seed)
    return env


def make_vec_env(
    env_cfg: Mapping[str, Any],
    *,
    n_envs: int = 1,
    seed: int = 0,
    training: bool = True,
    vec_env: str = "dummy",
    render_mode: str | None = None,
) -> VecEnv:
    """``n_envs`` envs from ``make_env`` in an SB3 VecEnv; sub-env ``i`` is seeded with ``seed + i``.

    :param vec_env: "dummy" (``DummyVecEnv``, one process) or "subproc" (``SubprocVecEnv``, one process per env).
    :param render_mode: gymnasium's render mode of every sub-env ("rgb_array" for ``VecEnv.render()`` videos).
    Atari envs with the "sb3" preprocessing are stacked by ``VecFrameStack(frame_stack)`` (channels last).
    """
    if vec_env not in VEC_ENVS:
        raise ValueError(f"unknown vec_env '{vec_env}'; choose one of: {', '.join(VEC_ENVS)}")
    if not isinstance(n_envs, int) or isinstance(n_envs, bool) or n_envs < 1:
        raise ValueError(f"n_envs={n_envs!r} must be a positive integer")
    cfg = _check_cfg(env_cfg)
    fns = [
        functools.partial(make_env, cfg, seed=seed + i, training=training, render_mode=render_mode)
        for i in range(n_envs)
    ]
    env: VecEnv = DummyVecEnv(fns) if vec_env == "dummy" else SubprocVecEnv(fns)
    env.seed(seed)  # the first VecEnv reset is reset(seed=seed + i) in sub-env i
    if cfg["family"] == "atari" and cfg.get("preprocessing") == "sb3":
        env = VecFrameStack(env, n_stack=cfg.get("frame_stack") or 4)
    return env


def env_score(
    env_cfg: Mapping[str, Any], episode_returns: Sequence[float], episode_infos: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """The env's own evaluation score, beside the mean return; {} for envs without one (or without episodes).

    - atari: ``{"human_normalized_score": mean HNS}`` of the (true, unclipped) episode returns;
    - crafter: ``{"crafter_score": ..., "achievement/<name>": success rate in percent, ...}``;
    - any env whose final infos carry ``is_success``: ``{"success_rate": fraction in [0, 1]}`` (as SB3's
      ``EvalCallback`` logs it).

    :param episode_returns: one return per episode.
    :param episode_infos: the info at the last step of each episode, in the same order.
    """
    if len(episode_returns) != len(episode_infos):
        raise ValueError(
            f"env_score got {len(episode_returns)} episode returns but {len(episode_infos)} infos; "
            "pass one final info per episode"
        )
    if not episode_returns:
        return {}
    cfg = _check_cfg(env_cfg)
    if cfg["family"] == "atari":
        game = atari_game(cfg["id"])
        return {"human_normalized_score": float(np.mean([human_normalized_score(game, r) for r in episode_returns]))}
    if cfg["family"] == "crafter":
        rates = achievement_success_rates([info.get("achievements", {}) for info in episode_infos])
        return {"crafter_score": crafter_score(rates), **{f"achievement/{k}": v for k, v in rates.items()}}
    if any("is_success" in info for info in episode_infos):
        return {"success_rate": float(np.mean([bool(info.get("is_success", False)) for info in episode_infos]))}
    return {}
