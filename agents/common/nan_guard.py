"""`NanGuardCallback`: stop a run at the first NaN or inf, before it reaches a checkpoint.

A non-finite value in training spreads: one NaN loss makes every weight NaN after the next optimizer step, and a
checkpoint written after that is worthless. The guard checks, for every algorithm of the zoo:

- the observations of each env step (``new_obs`` of SB3's ``collect_rollouts``, and the ``terminal_observation`` of
  an episode that ended there), before the transition is stored
  in a replay buffer or a rollout buffer, and before any later callback (put the guard first in a CallbackList);
- the ``train/*`` scalars of the last update: SB3's ``train()`` records them in ``logger.name_to_value``, where
  they stay until the next dump; the guard reads them at the start of the next rollout and when training ends,
  which is before any checkpoint of the poisoned weights can be written;
- the scalars returned by ``train_step()`` of the gradient-step agents (dt, radt, act), after every step, the TD
  error of each update of tabular StochQ, and the means of each epoch's training of the world-model agents (DIAMOND,
  Δ-IRIS: world model and actor-critic losses, gradient norms), at the first env step reported after that epoch,
  before a checkpoint can be written; ``train_stats`` in the callback's locals, checked again when training ends
  (the final epochs train without env steps).

No algorithm of the zoo defines skipping a non-finite update (none trains under an fp16 GradScaler), so the guard
always stops the run: it raises :class:`NumericalFault` naming the step, what was not finite, and the last good
checkpoint of the run, which is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.common.callbacks import TrainingFault, latest_checkpoint


class NumericalFault(TrainingFault):
    """A NaN or inf in training: the run stops, its last good checkpoint is intact (printed as one line, exit 1)."""


def non_finite_observation(obs: Any) -> str | None:
    """The name of the first float array of ``obs`` (an array or a dict of arrays) holding a NaN or an inf."""
    arrays = obs.items() if isinstance(obs, Mapping) else [("observation", obs)]
    for name, arr in arrays:
        arr = np.asarray(arr)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            return str(name)
    return None


def non_finite_scalars(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``name=value`` of every float in ``values`` that is NaN or inf (only keys starting with ``prefix``)."""
    bad = []
    for key, value in values.items():
        if key.startswith(prefix) and isinstance(value, float | np.floating) and not math.isfinite(value):
            bad.append(f"{key}={value}")
    return bad


class NanGuardCallback(BaseCallback):
    """Stop training at the first non-finite observation or training scalar; see the module docstring.

    :param run_dir: the run directory, whose last complete checkpoint the message names
    """

    def __init__(self, run_dir: str | Path | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def _fault(self, what: str) -> NumericalFault:
        last = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
        kept = f"last good checkpoint: {last} (intact)" if last else "no checkpoint was written before it"
        return NumericalFault(f"nan_guard: {what} at step {self.model.num_timesteps}; the run stopped; {kept}")

    def _check_update(self) -> None:
        bad = non_finite_scalars(self.model.logger.name_to_value, "train/")
        if bad:
            raise self._fault(f"non-finite training value {', '.join(sorted(bad))}")
        self._check_train_stats()

    def _check_train_stats(self) -> None:
        stats = self.locals.get("train_stats")  # a gradient step, an update or an epoch of training
        if isinstance(stats, Mapping):
            bad = non_finite_scalars(stats)  # keys without a section are train/ values
            if bad:
                named = sorted(b if "/" in b.split("=", 1)[0] else f"train/{b}" for b in bad)
                raise self._fault(f"non-finite training value {', '.join(named)}")

    def _on_step(self) -> bool:
        if "new_obs" in self.locals:  # an env step of SB3's collect_rollouts
            # an episode that ended returns the next episode's first observation; its last one is in the infos
            infos = self.locals.get("infos", ())
            last = [info["terminal_observation"] for info in infos if "terminal_observation" in info]
            for obs in (self.locals["new_obs"], *last):
                name = non_finite_observation(obs)
                if name is not None:
                    raise self._fault(f"non-finite {name} from the env")
        self._check_train_stats()
        return True

    def _on_rollout_start(self) -> None:
        self._check_update()

    def _on_training_end(self) -> None:
        self._check_update()
