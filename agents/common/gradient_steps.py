"""`GradientStepAlgorithm`: the SB3 algorithm of agents that learn from stored data (an offline dataset, demonstrations)
rather than from an env: ``learn(total_timesteps=n)`` takes ``n`` gradient steps.

DT/RADT (:mod:`agents.radt.agent`) and ACT (:mod:`agents.act.agent`) share it. A subclass provides:

- ``load_data()``: read its data (once; later calls return what was read) and check it against the env's spaces;
- ``train_step() -> dict[str, float]``: one gradient step on a batch it draws with ``self._sampler`` (a numpy
  Generator seeded with the algorithm's seed), returning the scalars to log as ``train/<name>``;
- ``data_info_attr``: the name of its JSON summary of the data (statistics that the policy needs, saved with
  every checkpoint).

The loop is SB3's: callbacks see one timestep per gradient step (so the eval and checkpoint callbacks, the progress
bar and ``num_timesteps`` mean gradient steps), the ``train/*`` means over ``log_interval`` steps, ``train/n_updates``
and ``time/fps`` (gradient steps per second) are dumped every ``log_interval`` steps, and the wall time accumulates
through :class:`~agents.common.persistence.ZooAlgorithm`. The sampler's state is saved with the checkpoint, so a
resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.common.persistence import ZooAlgorithm


class _GradientStepLoop:
    """SB3's ``learn`` for gradient steps (placed after :class:`ZooAlgorithm`, which times it)."""

    log_interval: int

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int | None = None,
        tb_log_name: str = "",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> Any:
        """Take ``total_timesteps`` gradient steps (the callbacks see one "timestep" per gradient step)."""
        self.load_data()  # type: ignore[attr-defined]
        total_timesteps, callback = self._setup_learn(  # type: ignore[attr-defined]
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        interval = log_interval or self.log_interval
        sums: dict[str, float] = {}
        started, done = time.time(), 0
        while self.num_timesteps < total_timesteps:  # type: ignore[attr-defined]
            train_stats = self.train_step()  # type: ignore[attr-defined]
            for key, value in train_stats.items():
                sums[key] = sums.get(key, 0.0) + value
            self.num_timesteps += 1  # type: ignore[attr-defined]
            done += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)  # type: ignore[attr-defined]
            if self.num_timesteps % interval == 0:  # type: ignore[attr-defined]
                logger = self.logger  # type: ignore[attr-defined]
                for key, value in sums.items():
                    logger.record(f"train/{key}", value / interval)
                logger.record("train/n_updates", self._n_updates)  # type: ignore[attr-defined]
                logger.record("time/fps", done / max(time.time() - started, 1e-9))  # gradient steps per second
                logger.dump(self.num_timesteps)  # type: ignore[attr-defined]
                sums = {}
            callback.update_locals(locals())  # the step's train_stats, for the NaN guard
            if not callback.on_step():
                break
        callback.on_training_end()
        return self


class GradientStepAlgorithm(ZooAlgorithm, _GradientStepLoop, BaseAlgorithm):
    """Base of the agents that learn from stored data; see the module docstring."""

    data_info_attr: ClassVar[str] = "data_info"
    _sampler: np.random.Generator

    def load_data(self) -> Any:
        raise NotImplementedError

    def train_step(self) -> dict[str, float]:
        raise NotImplementedError

    def _zoo_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        state = super()._zoo_state(tensors)
        state[self.data_info_attr] = getattr(self, self.data_info_attr)
        state["sampler"] = self._sampler.bit_generator.state
        return state

    def _zoo_set_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super()._zoo_set_state(state, tensors)
        setattr(self, self.data_info_attr, state.get(self.data_info_attr))
        self._sampler = np.random.default_rng()
        self._sampler.bit_generator.state = state["sampler"]
