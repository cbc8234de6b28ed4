"""Callbacks every zoo agent trains with: periodic checkpoints (atomic, pruned) and evaluation."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.common.checkpoint import verify_checkpoint
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


class CheckpointCallback(BaseCallback):
    """Save ``run_dir/checkpoints/step_<n>`` every ``save_freq`` env steps, keeping the ``keep`` newest.

    A save that fails (disk full, read-only directory) is reported and training goes on: the previous checkpoint
    is left as it was, because a new checkpoint only replaces anything once it is complete.
    """

    def __init__(self, run_dir: str | Path, save_freq: int, keep: int = 2, replay_buffer: bool = True) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.save_freq = save_freq
        self.keep = keep
        self.replay_buffer = replay_buffer
        self._next_save = 0

    def _init_callback(self) -> None:
        self._next_save = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next_save:
            self._next_save = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq
            self.save_now()
        return True

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


class EvalCallback(BaseCallback):
    """Evaluate every ``eval_freq`` env steps; logs ``eval/mean_reward``, ``eval/std_reward``,
    ``eval/mean_ep_length`` and ``eval/score`` (the env's own score, where it has one)."""

    def __init__(self, eval_env: VecEnv, env_cfg: dict[str, Any], eval_freq: int, n_episodes: int) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.env_cfg = env_cfg
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self._next_eval = 0
        self.last_result: EvalResult | None = None
        self.last_eval_step = -1

    def _init_callback(self) -> None:
        self._next_eval = (self.model.num_timesteps // self.eval_freq + 1) * self.eval_freq

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next_eval:
            self._next_eval = (self.model.num_timesteps // self.eval_freq + 1) * self.eval_freq
            self.evaluate_now()
        return True

    def evaluate_now(self) -> EvalResult:
        result = evaluate(self.model, self.eval_env, self.n_episodes, self.env_cfg)
        self.last_result, self.last_eval_step = result, self.model.num_timesteps
        self.logger.record("eval/mean_reward", result.mean)
        self.logger.record("eval/std_reward", result.std)
        self.logger.record("eval/mean_ep_length", float(sum(result.lengths) / len(result.lengths)))
        primary = primary_score(result.score)
        if primary is not None:
            self.logger.record("eval/score", primary[1])
        self.logger.dump(self.model.num_timesteps)
        return result
