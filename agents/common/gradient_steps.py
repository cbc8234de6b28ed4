"""`GradientStepAlgorithm`: the SB3 algorithm of agents that learn from stored data (an offline dataset, demonstrations)
rather than from an env: ``learn(total_timesteps=n)`` takes ``n`` gradient steps.

DT/RADT (:mod:`agents.radt.agent`) and ACT (:mod:`agents.act.agent`) share it. A subclass provides:

- ``load_data()``: read its data (once; later calls return what was read) and check it against the env's spaces;
- ``sample_batch(n)``: ``n`` samples drawn with ``self._sampler`` (a numpy Generator seeded with the algorithm's
  seed), and ``train_on_batch(batch) -> dict[str, float]``: one gradient step on them, returning the scalars to log
  as ``train/<name>`` (``train_step()`` does both with ``self.batch_size``; a subclass may override it instead);
- ``data_info_attr``: the name of its JSON summary of the data (statistics that the policy needs, saved with
  every checkpoint).

The loop is SB3's: callbacks see one timestep per gradient step (so the eval and checkpoint callbacks, the progress
bar and ``num_timesteps`` mean gradient steps), the ``train/*`` means over ``log_interval`` steps, ``train/n_updates``
and ``time/fps`` (gradient steps per second) are dumped every ``log_interval`` steps, and the wall time accumulates
through :class:`~agents.common.persistence.ZooAlgorithm`. The sampler's state is saved with the checkpoint, so a
resumed run draws the same batches as an uninterrupted one.

Data-parallel training (:meth:`GradientStepAlgorithm.distribute`, :mod:`agents.common.distributed`): the modules named
by ``distributed_modules`` are wrapped in DistributedDataParallel, and ``train_on_batch`` calls
``self.ddp(module)(...)`` for its forward pass and :meth:`~GradientStepAlgorithm.batch_mean` for a mean over a
variable number of elements. Rank 0 draws with the algorithm's sampler (saved in its checkpoints), rank ``r > 0``
with a numpy generator and a torch seed keyed by ``(seed, r, step)`` before every step; the ``train/*`` means are
averaged over the ranks; a callback that stops training on one rank stops every rank at the same step.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from agents.common.distributed import DistributedContext, data_parallel, rank_streams
from agents.common.persistence import ZooAlgorithm


class _GradientStepLoop:
    """SB3's ``learn`` for gradient steps (placed after :class:`ZooAlgorithm`, which times it)."""

    log_interval: int
    _distributed: DistributedContext | None

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
        ctx = self._distributed
        sums: dict[str, float] = {}
        started, done = time.time(), 0
        while self.num_timesteps < total_timesteps:  # type: ignore[attr-defined]
            if ctx is not None and ctx.rank > 0:  # this rank's own draws, keyed by the step (see the docstring)
                step = self.num_timesteps  # type: ignore[attr-defined]
                self._sampler, noise_seed = rank_streams(self._distributed_seed, ctx.rank, step)  # type: ignore
                torch.manual_seed(noise_seed)  # dropout and other noise of the forward pass
            train_stats = self.train_step()  # type: ignore[attr-defined]
            for key, value in train_stats.items():
                sums[key] = sums.get(key, 0.0) + value
            self.num_timesteps += 1  # type: ignore[attr-defined]
            done += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)  # type: ignore[attr-defined]
            if self.num_timesteps % interval == 0:  # type: ignore[attr-defined]
                means = {key: value / interval for key, value in sums.items()}
                if ctx is not None:
                    means = ctx.mean_scalars(means)
                logger = self.logger  # type: ignore[attr-defined]
                for key, value in means.items():
                    logger.record(f"train/{key}", value)
                logger.record("train/n_updates", self._n_updates)  # type: ignore[attr-defined]
                logger.record("time/fps", done / max(time.time() - started, 1e-9))  # gradient steps per second
                logger.dump(self.num_timesteps)  # type: ignore[attr-defined]
                sums = {}
            callback.update_locals(locals())  # the step's train_stats, for the NaN guard
            keep_going = callback.on_step()
            if ctx is not None:
                keep_going = ctx.all_true(keep_going)
            if not keep_going:
                break
        callback.on_training_end()
        return self


class GradientStepAlgorithm(ZooAlgorithm, _GradientStepLoop, BaseAlgorithm):
    """Base of the agents that learn from stored data; see the module docstring.

    ``distributed_modules``: dotted names of the modules whose forward pass ``train_on_batch`` runs through
    :meth:`ddp`; together they must hold every parameter the optimizers update.
    """

    data_info_attr: ClassVar[str] = "data_info"
    supports_distributed: ClassVar[bool] = True
    distributed_modules: ClassVar[tuple[str, ...]] = ("policy.model",)
    batch_size: int
    _sampler: np.random.Generator
    _distributed: DistributedContext | None = None
    _distributed_seed: int = 0
    _ddp: dict[int, nn.Module]

    def load_data(self) -> Any:
        raise NotImplementedError

    def sample_batch(self, batch_size: int) -> Any:
        raise NotImplementedError

    def train_on_batch(self, batch: Any) -> dict[str, float]:
        raise NotImplementedError

    def train_step(self) -> dict[str, float]:
        """One gradient step on ``batch_size`` fresh samples."""
        return self.train_on_batch(self.sample_batch(self.batch_size))

    # ------------------------------------------------------------------ data parallel
    def distribute(self, ctx: DistributedContext, seed: int | None = None) -> None:
        """Train data-parallel in the process group of ``ctx`` (every rank calls it, after loading the model).

        Wraps ``distributed_modules`` in DDP (every rank continues from rank 0's weights) and keys the draws of rank
        ``r > 0`` by ``(seed, r, step)``; ``seed``: the run's (a loaded model has none of its own; None: the
        algorithm's seed, else a random one). Raises ValueError when an optimized parameter lies outside those modules.
        """
        modules = {name: self._attr(name) for name in self.distributed_modules}
        optimizers = [self._attr(n) for n in self._get_torch_save_params()[0]]
        trained = [p for o in optimizers if isinstance(o, torch.optim.Optimizer)
                   for g in o.param_groups for p in g["params"]]
        wrapped = data_parallel(ctx, modules, trained)
        self._ddp = {id(modules[name]): wrapped[name] for name in modules}
        seed = seed if seed is not None else self.seed  # type: ignore[attr-defined]
        seed = seed if seed is not None else np.random.SeedSequence().entropy % 2**32
        self._distributed_seed = int(ctx.broadcast_object(seed))
        self._distributed = ctx

    def ddp(self, module: nn.Module) -> nn.Module:
        """The module to run the training forward pass through: its DDP wrapper when distributed, else itself."""
        return self._ddp.get(id(module), module) if self._distributed is not None else module

    def batch_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over the whole step's batch, whose count of elements may differ between ranks.

        One process: ``values.mean()``. Distributed: the local sum times ``world_size / (elements on all ranks)``;
        DDP's average of these gradients is then the gradient of the mean over every rank's elements (a plain local
        mean would weight an element of a rank with fewer elements more).
        """
        ctx = self._distributed
        if ctx is None or ctx.world_size == 1:
            return values.mean()
        return values.sum() * (ctx.world_size / ctx.all_sum(values.numel()))

    # ------------------------------------------------------------------ state
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
