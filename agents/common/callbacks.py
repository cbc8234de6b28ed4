"""Callbacks every zoo agent trains with: periodic checkpoints (atomic, pruned) and evaluation."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.common.checkpoint import (
    CheckpointError,
    atomic_write_text,
    read_meta,
    remove_unfinished_saves,
    verify_checkpoint,
)
from agents.common.evaluation import EvalResult, evaluate, primary_score

STEP_DIR = re.compile(r"^step_(\d+)$")


class TrainingFault(RuntimeError):
    """A run stopped by a fault (a NaN, a disk that cannot take the final model): printed as one line naming the
    last good checkpoint, exit status 1."""


def checkpoint_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Periodic checkpoints of a run, oldest first (hidden temporary directories are not checkpoints)."""
    root = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run that is complete and untampered (older ones are tried in turn)."""
    for _, path in reversed(checkpoint_dirs(run_dir)):
        if verify_checkpoint(path):
            return path
    return None


def saves_between_rollouts(model: BaseAlgorithm) -> bool:
    """Whether ``model`` trains with SB3's own rollout loop (``OnPolicyAlgorithm``/``OffPolicyAlgorithm.learn``).

    That loop calls ``callback.on_step()`` after ``num_timesteps += n_envs`` but *before* the step's transition is
    stored (and, off-policy, before ``_on_step``: exploration schedule, target update) and before the ``train()``
    of the rollout; the next ``collect_rollouts`` starts with ``callback.on_rollout_start()``, after ``train()``.
    A model may say so itself with a ``checkpoint_between_rollouts`` attribute (an agent with its own loop that
    calls ``on_rollout_start`` after its updates).
    """
    declared = getattr(model, "checkpoint_between_rollouts", None)
    if declared is not None:
        return bool(declared)
    for cls in type(model).__mro__:
        if "learn" in vars(cls) and cls.__module__.startswith("stable_baselines3."):
            return issubclass(cls, OffPolicyAlgorithm | OnPolicyAlgorithm)
        if "learn" in vars(cls) and cls.__name__ != "ZooAlgorithm":
            return False  # an agent with its own loop: its callbacks see each step after its update
    return False


class CheckpointCallback(BaseCallback):
    """Save ``run_dir/checkpoints/step_<n>`` every ``save_freq`` env steps, keeping the ``keep`` newest.

    A checkpoint at step ``n`` holds everything up to and including step ``n``: its transition in the buffer and
    the updates it triggers. For algorithms on SB3's rollout loop (see :func:`saves_between_rollouts`) a save that
    falls due inside a rollout is therefore written at the start of the next rollout (after ``train()``), or when
    training ends; it is named by the step it holds. A resumed run then starts a rollout exactly where the
    interrupted one started it, and at most one save interval (rounded up to a rollout) of work is lost.

    A save that fails (disk full, read-only directory) is reported and training goes on: the previous checkpoint
    is left as it was, because a new checkpoint only replaces anything once it is complete. Temporary directories
    left by a process killed in the middle of a save are removed when training (re)starts.
    """

    def __init__(self, run_dir: str | Path, save_freq: int, keep: int = 2, replay_buffer: bool = True) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.save_freq = save_freq
        self.keep = keep
        self.replay_buffer = replay_buffer
        self._next_save = 0
        self._deferred = False  # save at the next rollout start (SB3's rollout loop)
        self._pending = False

    def _init_callback(self) -> None:
        self._next_save = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq
        self._deferred = saves_between_rollouts(self.model)
        self._pending = False
        remove_unfinished_saves(self.run_dir / "checkpoints", "step_*")

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next_save:
            self._next_save = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq
            if self._deferred:
                self._pending = True
            else:
                self.save_now()
        return True

    def _on_rollout_start(self) -> None:
        if self._pending:
            self._pending = False
            self.save_now()

    def _on_training_end(self) -> None:
        self._on_rollout_start()

    def save_now(self) -> Path | None:
        path = self.run_dir / "checkpoints" / f"step_{self.model.num_timesteps:010d}"
        try:
            self.model.save(path, replay_buffer=self.replay_buffer)
        except OSError as e:
            previous = latest_checkpoint(self.run_dir)
            kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            print(f"warning: checkpoint at step {self.model.num_timesteps} failed ({e}); {kept}", file=sys.stderr)
            return None
        for _, old in checkpoint_dirs(self.run_dir)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path


BEST_FILE = "best.json"  # beside run_dir/best: the step and evaluation of the model saved there
BEST_PENDING = "best.pending.json"  # the record of a best model being saved; promoted to BEST_FILE once it is there


def rank_key(result: EvalResult) -> tuple[float, float]:
    """What "best" means: the env's own score where it has one (success rate, human-normalized or Crafter score),
    then the mean return; the mean return alone elsewhere."""
    primary = primary_score(result.score)
    return (primary[1] if primary is not None else result.mean, result.mean)


class EvalCallback(BaseCallback):
    """Evaluate every ``eval_freq`` env steps; logs ``eval/mean_reward``, ``eval/std_reward``,
    ``eval/mean_ep_length`` and ``eval/score`` (the env's own score, where it has one). ``deterministic=None``
    acts as the agent's official test protocol does (argmax; DIAMOND and Δ-IRIS sample from the policy).

    With ``best_dir`` (SB3's ``best_model_save_path``, rl-zoo3's ``best_model``) a periodic evaluation that beats
    every earlier one of the run (:func:`rank_key`) saves the model there, without its replay buffer, and then
    records its step and evaluation in ``best.json`` beside it; a resumed run reads that record and keeps the bar.
    A save that fails is reported and training goes on: the earlier best model stays as it was. The record is
    written first as ``best.pending.json`` and renamed once the model is in place, so that a run killed between the
    two still finds the record of the model it holds (:meth:`_settle_record`).
    """

    def __init__(self, eval_env: VecEnv, env_cfg: dict[str, Any], eval_freq: int, n_episodes: int,
                 best_dir: str | Path | None = None, deterministic: bool | None = None) -> None:
        super().__init__()
        self.deterministic = deterministic  # None: the agent's official test protocol
        self.eval_env = eval_env
        self.env_cfg = env_cfg
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self.best_dir = Path(best_dir) if best_dir is not None else None
        self.best_key: tuple[float, float] | None = None
        self._next_eval = 0
        self.last_result: EvalResult | None = None
        self.last_eval_step = -1
        self.last_eval_updates: int | None = None  # the model's gradient updates when it was last evaluated

    def _init_callback(self) -> None:
        self._next_eval = (self.model.num_timesteps // self.eval_freq + 1) * self.eval_freq
        if self.best_dir is None:
            return
        remove_unfinished_saves(self.best_dir.parent, self.best_dir.name)
        self._settle_record()
        record = self.best_dir.parent / BEST_FILE
        if record.is_file() and self.best_dir.is_dir():  # a resumed run: keep its bar
            self.best_key = tuple(json.loads(record.read_text())["key"])  # type: ignore[assignment]

    def _settle_record(self) -> None:
        """After a kill during :meth:`save_best`: the pending record becomes the record if the best model saved is
        the one it describes (same step); otherwise the save never completed and the pending record is dropped."""
        assert self.best_dir is not None
        pending = self.best_dir.parent / BEST_PENDING
        if not pending.is_file():
            return
        try:
            step = json.loads(pending.read_text())["step"]
            saved = read_meta(self.best_dir)["num_timesteps"] if self.best_dir.is_dir() else None
        except (OSError, ValueError, KeyError, TypeError, CheckpointError):
            saved, step = None, -1
        if saved == step:
            os.replace(pending, self.best_dir.parent / BEST_FILE)
        else:
            pending.unlink()

    def is_current(self) -> bool:
        """Whether the last evaluation saw the model as it is now: same env step and no update since (SB3's
        off-policy agents train after the step's callbacks; DIAMOND and Δ-IRIS train final epochs after the last env
        step)."""
        return (self.last_result is not None and self.last_eval_step == self.model.num_timesteps
                and self.last_eval_updates == getattr(self.model, "_n_updates", None))

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next_eval:
            self._next_eval = (self.model.num_timesteps // self.eval_freq + 1) * self.eval_freq
            result = self.evaluate_now()
            key = rank_key(result)
            if self.best_dir is not None and (self.best_key is None or key > self.best_key):
                self.save_best(result, key)
        return True

    def save_best(self, result: EvalResult, key: tuple[float, float]) -> None:
        """Save the model as the run's best (atomically, see :func:`save_checkpoint`), then its record."""
        assert self.best_dir is not None
        step = self.model.num_timesteps
        record = {"step": step, "key": list(key), "wall_time_s": round(self.model.wall_time_s, 1),
                  "eval": result.as_dict()}
        pending = self.best_dir.parent / BEST_PENDING
        try:
            atomic_write_text(pending, json.dumps(record, indent=1))
            self.model.save(self.best_dir, replay_buffer=False)
            os.replace(pending, self.best_dir.parent / BEST_FILE)
        except OSError as e:
            with contextlib.suppress(OSError):  # on a read-only or full disk this may fail too; harmless then
                pending.unlink(missing_ok=True)
            print(f"warning: saving the best model at step {step} failed ({e}); the earlier one is kept",
                  file=sys.stderr)
            return
        self.best_key = key

    def evaluate_now(self) -> EvalResult:
        """Evaluate the model as it is now and log the result at its current step."""
        result = evaluate(self.model, self.eval_env, self.n_episodes, self.env_cfg, self.deterministic)
        self.last_result, self.last_eval_step = result, self.model.num_timesteps
        self.last_eval_updates = getattr(self.model, "_n_updates", None)
        self.logger.record("eval/mean_reward", result.mean)
        self.logger.record("eval/std_reward", result.std)
        self.logger.record("eval/mean_ep_length", float(sum(result.lengths) / len(result.lengths)))
        primary = primary_score(result.score)
        if primary is not None:
            self.logger.record("eval/score", primary[1])
        self.logger.dump(self.model.num_timesteps)
        return result
