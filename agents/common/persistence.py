"""`ZooAlgorithm`: the zoo's save/load for any stable-baselines3 algorithm, without pickle.

SB3's own ``save`` writes a zip whose ``data`` entry is pickled, and ``load`` unpickles it: loading a
checkpoint someone else made could run their code. Every zoo agent mixes in :class:`ZooAlgorithm` instead, which
keeps SB3's names and life cycle (``model.save(path)``, ``Agent.load(path, env=...)``, ``_get_torch_save_params``)
but writes a checkpoint directory of safetensors + JSON (:mod:`agents.common.checkpoint`):

- every state dict that ``_get_torch_save_params`` names (policy, optimizers) and every saved torch variable;
- the counters training needs to continue: ``num_timesteps``, ``_n_updates``, ``_episode_num``, progress,
  exploration rate, the target-update counter, the episode-info window behind ``rollout/ep_rew_mean``;
- the RNG states (python, numpy, torch, the action space's sampler);
- optionally the replay buffer, as an .npz read back with ``allow_pickle=False``.

Usage::

    model = DQN("MlpPolicy", env, learning_rate=1e-3)
    model.learn(10_000)
    model.save("runs/dqn_cartpole")          # a directory
    model = DQN.load("runs/dqn_cartpole", env=env)
"""

from __future__ import annotations

import datetime as _dt
import platform
import random
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
import stable_baselines3
import torch

from agents.common.buffers import load_replay_buffer, save_replay_buffer
from agents.common.checkpoint import (
    CheckpointError,
    join_tensors,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    split_tensors,
)
from agents.common.episode_buffer import EpisodeBuffer
from agents.common.hyperparams import decode_hyperparams, encode_hyperparams
from agents.common.spaces import describe_space, space_from_json, space_to_json

REPLAY_FILE = "replay_buffer.npz"
EXPORT_HALF_MIN = 4096  # save(export=True): float tensors at least this large are stored in float16
EPISODE_BUFFER_FILE = "episode_buffer.npz"  # the EpisodeBuffer of world-model agents (attribute ``episode_buffer``)
# Arguments that describe where and how verbosely to run, not the agent: never stored as hyperparameters.
RUNTIME_ARGS = frozenset({"env", "device", "tensorboard_log", "verbose", "seed", "_init_setup_model"})
# Scalar attributes that training needs to continue exactly where it stopped (saved when the agent has them).
COUNTERS = (
    "num_timesteps",
    "_total_timesteps",
    "_n_updates",
    "_episode_num",
    "_current_progress_remaining",
    "_n_calls",
    "exploration_rate",
)


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
    }


class ZooAlgorithm:
    """Mixin for SB3 algorithms: hyperparameters recorded as JSON, pickle-free ``save``/``load``.

    Put it first in the bases: ``class DQN(ZooAlgorithm, stable_baselines3.DQN)``. Subclasses set ``agent_id``
    (the registry id) and may extend :meth:`_zoo_state` / :meth:`_zoo_set_state` for state of their own.

    :param policy: the policy class name (``MlpPolicy``, ``CnnPolicy``, ...)
    :param env: the environment (or None when loading)
    :param kwargs: the algorithm's constructor arguments; all but the runtime ones (``device``, ``verbose``,
        ``seed``, ``tensorboard_log``) are recorded in :attr:`hyperparams` and saved with every checkpoint.
    """

    agent_id: ClassVar[str] = ""
    hyperparams: dict[str, Any]
    zoo_config: dict[str, Any] | None
    train_wall_time_s: float = 0.0  # seconds spent in finished learn() calls, over every run that led here
    _learn_started: float | None = None

    def learn(self, *args: Any, **kwargs: Any) -> Any:
        """SB3's ``learn``, timed: the wall time of training accumulates across calls, saves and resumes."""
        self._learn_started = time.time()
        try:
            return super().learn(*args, **kwargs)  # type: ignore[misc]
        finally:
            self.train_wall_time_s += time.time() - self._learn_started
            self._learn_started = None

    @property
    def wall_time_s(self) -> float:
        """Seconds of training so far, including the ``learn`` call running now."""
        running = time.time() - self._learn_started if self._learn_started is not None else 0.0
        return self.train_wall_time_s + running

    def __init__(self, policy: Any, env: Any, **kwargs: Any) -> None:
        self.hyperparams = encode_hyperparams(
            {"policy": policy, **{k: v for k, v in kwargs.items() if k not in RUNTIME_ARGS}}
        )
        self.zoo_config = None
        super().__init__(policy, env, **decode_hyperparams(kwargs))  # type: ignore[call-arg]

    # ------------------------------------------------------------------ state beyond the tensors
    def _zoo_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        """JSON state of the algorithm; tensors go into ``tensors``. Extend in subclasses (call super)."""
        state: dict[str, Any] = {k: getattr(self, k) for k in COUNTERS if hasattr(self, k)}
        state = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in state.items()}
        state["ep_info_buffer"] = [
            {k: float(v) for k, v in info.items() if k in ("r", "l", "t")} for info in (self.ep_info_buffer or [])
        ]
        state["ep_success_buffer"] = [bool(x) for x in (self.ep_success_buffer or [])]
        state["train_wall_time_s"] = self.wall_time_s
        np_state = np.random.get_state()
        tensors["rng.numpy_keys"] = torch.from_numpy(np_state[1].astype(np.int64))
        tensors["rng.torch"] = torch.get_rng_state()
        py_state = random.getstate()
        state["rng"] = {
            "python": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "action_space": self.action_space.np_random.bit_generator.state,
        }
        return state

    def _zoo_set_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        for key in COUNTERS:
            if key in state:
                value = state[key]
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise TypeError(f"state.{key} is {type(value).__name__}; expected a number")
                setattr(self, key, value)
        self.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=self._stats_window_size)
        self.ep_success_buffer = deque(state["ep_success_buffer"], maxlen=self._stats_window_size)
        self.train_wall_time_s = float(state.get("train_wall_time_s", 0.0))
        rng = state["rng"]
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        kind, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((kind, tensors["rng.numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(tensors["rng.torch"].cpu())
        self.action_space.np_random.bit_generator.state = rng["action_space"]

    # ------------------------------------------------------------------ save
    def save(
        self, path: str | Path, exclude: Any = None, include: Any = None, *, replay_buffer: bool = False,
        export: bool = False,
    ) -> Path:
        """Write a checkpoint directory at ``path`` (atomically). ``replay_buffer=True`` adds the replay buffer.

        ``export=True`` writes a smaller checkpoint for the zoo: no optimizer state (loading it gives freshly
        initialized optimizers, so fine-tuning restarts the moments) and float tensors of at least
        ``EXPORT_HALF_MIN`` elements in float16 (loading casts them back to the model's dtype; small tensors such as
        normalization statistics stay exact). ``exclude``/``include`` are accepted for SB3 compatibility and
        ignored: the zoo format saves what training needs, nothing pickled.
        """
        tensors: dict[str, torch.Tensor] = {}
        state_dicts, variables = self._get_torch_save_params()
        if export:
            state_dicts = [n for n in state_dicts if not isinstance(self._attr(n), torch.optim.Optimizer)]
        objects = {name: split_tensors(self._attr(name).state_dict(), name, tensors) for name in state_dicts}
        for name in variables:
            tensors[name] = self._attr(name).detach().cpu().clone()
        if export:
            for key, value in tensors.items():
                if value.is_floating_point() and value.numel() >= EXPORT_HALF_MIN:
                    tensors[key] = value.to(torch.float16)
        state = self._zoo_state(tensors)
        state["objects"] = objects
        if export:
            state["export"] = {"optimizer": False, "float16_min_elements": EXPORT_HALF_MIN}
        state["variables"] = list(variables)
        meta = {
            "agent": self.agent_id,
            "class": type(self).__name__,
            "hyperparams": self.hyperparams,
            "config": self.zoo_config,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "num_timesteps": int(self.num_timesteps),
            "state": state,
            "versions": library_versions(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        writers = {}
        buffer = getattr(self, "replay_buffer", None)
        if replay_buffer and buffer is not None:
            writers[REPLAY_FILE] = lambda p: save_replay_buffer(buffer, p)
        episodes = getattr(self, "episode_buffer", None)
        if replay_buffer and episodes is not None:
            writers[EPISODE_BUFFER_FILE] = episodes.save
        return save_checkpoint(path, tensors, meta, writers)

    def save_replay_buffer(self, path: str | Path) -> None:
        """Save the replay buffer alone as .npz (SB3's version pickles it)."""
        save_replay_buffer(self.replay_buffer, path)  # type: ignore[attr-defined]

    def load_replay_buffer(self, path: str | Path, truncate_last_traj: bool = True) -> None:
        load_replay_buffer(self.replay_buffer, path)  # type: ignore[attr-defined]

    def _attr(self, dotted: str) -> Any:
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj

    # ------------------------------------------------------------------ load
    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: str | Path,
        env: Any = None,
        device: torch.device | str = "auto",
        custom_objects: Any = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> ZooAlgorithm:
        """Rebuild an agent from a checkpoint directory; verifies every file's sha256 first, unpickles nothing.

        Keyword arguments override stored hyperparameters (as in SB3). With ``env`` given, its spaces must match
        the checkpoint's; the replay buffer is restored when the checkpoint has one.
        """
        directory = resolve_checkpoint(path)  # <path>, or <path>.previous after a crash between two renames
        tensors, meta = load_checkpoint(directory)
        if cls.agent_id and meta["agent"] != cls.agent_id:
            raise CheckpointError(f"'{path}' holds a '{meta['agent']}' agent, not '{cls.agent_id}'")
        observation_space = space_from_json(meta["observation_space"])
        action_space = space_from_json(meta["action_space"])
        hyperparams = {**meta["hyperparams"], **kwargs}
        policy = hyperparams.pop("policy")
        if env is not None:
            env = cls._wrap_env(env, 0)  # type: ignore[attr-defined]
            if env.observation_space != observation_space or env.action_space != action_space:
                raise CheckpointError(
                    f"'{path}' was trained with observation space {describe_space(observation_space)} and action "
                    f"space {describe_space(action_space)}; the env has {describe_space(env.observation_space)} "
                    f"and {describe_space(env.action_space)}"
                )
        try:  # hyperparameters from a file: an unknown name or a wrong type is the file's fault, not a bug
            with warnings.catch_warnings():  # PPO warns when the env count of evaluation differs from training's
                warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
                model = cls(policy, env=env, device=device, _init_setup_model=False, **hyperparams)  # type: ignore
            model.observation_space = observation_space
            model.action_space = action_space
            if env is None:
                model.n_envs = 1
            model._setup_model()  # type: ignore[attr-defined]
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            detail = " ".join(str(e).split()) or type(e).__name__
            raise CheckpointError(f"'{path}': its hyperparameters do not build a {cls.__name__}: {detail}") from None
        model._zoo_load_tensors(tensors, meta, path)
        model.zoo_config = meta["config"]
        # Only a replay buffer that meta.json lists (so its sha256 was checked) is read.
        if REPLAY_FILE in meta["files"] and getattr(model, "replay_buffer", None) is not None:
            load_replay_buffer(model.replay_buffer, directory / REPLAY_FILE)  # type: ignore[attr-defined]
        if EPISODE_BUFFER_FILE in meta["files"] and hasattr(model, "episode_buffer"):
            model.episode_buffer = EpisodeBuffer.load(directory / EPISODE_BUFFER_FILE)
        return model

    def _zoo_load_tensors(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | Path) -> None:
        state = meta["state"]
        try:
            for name, tree in state["objects"].items():
                target = self._attr(name)
                target.load_state_dict(join_tensors(tree, tensors))
                if isinstance(target, torch.optim.Optimizer):
                    _check_optimizer_state_shapes(name, target)
            for name in state["variables"]:
                variable = self._attr(name)
                if tensors[name].shape != variable.shape:  # copy_ would broadcast a wrong shape silently
                    raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, expected {tuple(variable.shape)}")
                variable.data.copy_(tensors[name].to(self.device))
            self._zoo_set_state(state, tensors)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
            detail = " ".join(str(e).split()) or type(e).__name__  # load_state_dict puts the mismatch on line 2
            raise CheckpointError(
                f"'{path}' does not fit a {type(self).__name__} built from its config: {detail}"
            ) from None


def _check_optimizer_state_shapes(name: str, optimizer: torch.optim.Optimizer) -> None:
    """Refuse per-parameter optimizer state whose shape is not its parameter's.

    ``Optimizer.load_state_dict`` checks only the number of parameters, so a moment of the wrong shape would load
    and fail at the first update. The optimizers of the zoo (Adam, AdamW, AdEMAMix, RMSprop, SGD) keep elementwise
    state: every state tensor but the scalar step count has the shape of its parameter.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(
                    f"{name}.state.{index}.{key} has shape {tuple(value.shape)}; its parameter has shape "
                    f"{tuple(param.shape)}"
                )
