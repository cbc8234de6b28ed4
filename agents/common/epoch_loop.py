"""The epoch loop of the world-model agents (DIAMOND, Δ-IRIS) as SB3's ``learn``: collect, train, report.

Both papers train in epochs (``Trainer.run`` of ``src/trainer.py`` in github.com/eloialonso/diamond and in
github.com/vmicheli/delta-iris): each epoch collects env steps into the episode buffer, then trains the world model
and the actor-critic; once the env-step budget is reached, ``num_final_epochs`` epochs train without collecting.
What differs between the agents is a hook of :class:`EpochLoop`:

- :meth:`EpochLoop._collect_epoch`: the env steps of the current epoch (DIAMOND: its random initial collection
  in epoch 0, then ``collect_steps`` with the policy; Δ-IRIS: ``num_steps_first_epoch`` random steps, then
  ``num_steps`` with the policy);
- :meth:`EpochLoop._train_epoch`: one epoch of updates, returning the means to log;
- :meth:`EpochLoop._collecting`: whether this epoch still collects (default: fewer than ``total_timesteps`` env
  steps so far);
- :meth:`EpochLoop._on_collect_step`: bookkeeping of one VecEnv step (DIAMOND counts reward signs, Δ-IRIS keeps
  the frames it burns its policy in on).

Shared rules:

- **Epochs are whole**: ``learn(n)`` ends at the first epoch end at or after ``n`` env steps (as PPO completes its
  rollout), so that ``learn(n); learn(m)`` runs the same schedule as ``learn(m)``; every ``learn`` call that
  collected ends with the final epochs.
- **Callbacks see epoch ends only**: the collection's env steps are reported to the callbacks (``on_step``, one call
  per VecEnv step, with that step's ``dones``/``infos`` and the epoch's training means ``train_stats`` in their
  locals) after the epoch's training, with ``num_timesteps`` at the epoch's end. A checkpoint
  (``CheckpointCallback``), an evaluation or a stop request thus always falls between two epochs: a resumed run
  never skips the training of the epoch it was saved in.
- **Collection** (:meth:`EpochLoop.collect`): ``ceil(n / n_envs)`` VecEnv steps into the episode buffer, each
  episode with its final observation (SB3's ``terminal_observation``); random actions, or the policy (its LSTM
  state carried in ``_collect_hidden``) with ``epsilon`` random actions.

Data-parallel training (:meth:`EpochLoop.distribute`, :mod:`agents.common.distributed`): every trained component
(a module of ``policy`` named by a key of ``optimizers``) is wrapped in DistributedDataParallel through a
:class:`TrainingPass`, and the agent runs each update's forward pass with :meth:`EpochLoop._pass`, so that DDP
averages its gradients over the ranks in ``backward`` (effective batch ``world_size x batch_size``). Every rank
collects into its own episode buffer from its own envs (rank ``r`` seeds them ``seed + r * n_envs``) and draws its own
segments: rank 0 with the algorithm's sampler and RNGs (saved in its checkpoints), rank ``r > 0`` with the numpy
generator and torch seed keyed by ``(seed, r, epoch)`` (:func:`~agents.common.distributed.rank_streams`; its random
actions too), set at the start of every epoch. ``num_timesteps`` and the budget count each rank's own env steps, so
the epochs, the updates per epoch and every counter and schedule are those of the one-process run, identical on all
ranks; what decides the loop from a rank's own data goes through :meth:`EpochLoop._all_true`. The epoch's means are
averaged over the ranks before they are logged and shown to the callbacks (the NaN guard sees every rank's values),
and a callback that stops the run on rank 0 stops every rank at the same epoch end.

The agent provides ``epoch``, ``final_epochs_done``, ``num_final_epochs``, ``log_interval``, ``epsilon``,
``episode_buffer``, ``optimizers`` (component name -> its optimizer), ``_sampler`` (a numpy Generator),
``_step_reports`` and ``_collect_hidden``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from agents.common.distributed import DistributedContext, data_parallel, rank_streams


class TrainingPass(nn.Module):
    """A component whose training pass is not its ``forward`` (a ``loss`` method, a rollout in imagination), as the
    module that DistributedDataParallel wraps: ``forward(fn, *args)`` runs ``fn(*args)``. DDP averages in ``backward``
    the gradients of what runs inside its wrapper's ``forward``; the component is a child, so its parameters and
    buffers are the wrapper's (and its own state dict keeps its names)."""

    def __init__(self, component: nn.Module) -> None:
        super().__init__()
        self.component = component

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


class EpochLoop:
    """``learn`` and collection of an epoch-based world-model agent, mixed in before SB3's ``BaseAlgorithm``."""

    supports_distributed: ClassVar[bool] = True
    optimizers: dict[str, torch.optim.Optimizer]
    _distributed: DistributedContext | None = None
    _distributed_seed: int = 0
    _ddp: dict[str, nn.Module]

    # ------------------------------------------------------------------ hooks
    def _collect_epoch(self) -> None:
        """The env steps of the current epoch (``self.epoch`` epochs are done)."""
        raise NotImplementedError

    def _train_epoch(self) -> dict[str, float]:
        """One epoch of updates (``self.epoch`` epochs are done); returns the values to log."""
        raise NotImplementedError

    def _collecting(self, total_timesteps: int) -> bool:
        """Whether the current epoch collects env steps (else it is a final epoch, or the loop ends)."""
        return self.num_timesteps < total_timesteps

    def _on_collect_step(self, frames: np.ndarray, act: np.ndarray, rew: np.ndarray, dones: np.ndarray) -> None:
        """After one VecEnv step: ``frames`` (uint8 HWC, the observations acted in), actions, rewards, dones."""

    # ------------------------------------------------------------------ loop
    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int | None = None,
              tb_log_name: str = "", reset_num_timesteps: bool = True, progress_bar: bool = False) -> Any:
        """Train until ``total_timesteps`` env steps (whole epochs), then the final epochs without collection."""
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                                      progress_bar)
        callback.on_training_start(locals(), globals())
        interval, started, start_steps = log_interval or self.log_interval, time.time(), self.num_timesteps
        ctx = self._distributed
        while True:
            self._rank_streams()
            if self._collecting(total_timesteps):
                self._collect_epoch()
                self.final_epochs_done = 0
            elif self.final_epochs_done < self.num_final_epochs:
                self.final_epochs_done += 1
            else:
                break
            logs = self._train_epoch()
            if ctx is not None:  # the same keys on every rank: the loop and the updates are the same
                logs = ctx.mean_scalars(logs)
            self.epoch += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if self.epoch % interval == 0:
                self._dump_logs(logs, (self.num_timesteps - start_steps) / max(time.time() - started, 1e-9))
            callback.update_locals({"train_stats": logs})  # the NaN guard checks them before any checkpoint
            if not self._all_true(self._report_steps(callback)):  # a stop on rank 0 stops every rank
                break
        callback.on_training_end()
        return self

    def _dump_logs(self, logs: dict[str, float], fps: float) -> None:
        for key, value in logs.items():
            self.logger.record(key, value)
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", float(np.mean([e["r"] for e in self.ep_info_buffer])))
            self.logger.record("rollout/ep_len_mean", float(np.mean([e["l"] for e in self.ep_info_buffer])))
        self.logger.record("time/fps", fps)
        self.logger.record("time/epochs", self.epoch)
        self.logger.record("train/n_updates", self._n_updates)
        self.logger.dump(self.num_timesteps)

    def _report_steps(self, callback: Any) -> bool:
        """The env steps collected since the last report, to ``callback`` (False when it asks to stop)."""
        reports, self._step_reports = self._step_reports, []
        for dones, infos in reports:
            callback.update_locals({"dones": dones, "infos": infos})
            if not callback.on_step():
                return False
        return True

    # ------------------------------------------------------------------ data parallel
    def distribute(self, ctx: DistributedContext, seed: int | None = None) -> None:
        """Train data-parallel in the process group of ``ctx`` (every rank calls it, after loading the model, before
        ``learn``; see the module docstring).

        Wraps every trained component in DDP (every rank continues from rank 0's weights), seeds the envs of rank
        ``r > 0`` with ``seed + r * n_envs`` (applied at the env reset of ``learn``) and keys its draws by
        ``(seed, r, epoch)``; ``seed``: the run's (None: the algorithm's, else a random one).
        """
        passes = {name: TrainingPass(getattr(self.policy, name)) for name in self.optimizers}  # type: ignore
        trained = [p for opt in self.optimizers.values() for group in opt.param_groups for p in group["params"]]
        self._ddp = data_parallel(ctx, passes, trained)
        seed = seed if seed is not None else self.seed  # type: ignore[attr-defined]
        seed = seed if seed is not None else np.random.SeedSequence().entropy % 2**32
        self._distributed_seed = int(ctx.broadcast_object(seed))
        self._distributed = ctx
        if ctx.rank > 0 and self.env is not None:  # type: ignore[attr-defined]
            self.env.seed(self._distributed_seed + ctx.rank * self.env.num_envs)  # type: ignore[attr-defined]

    def _pass(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, the training forward pass of component ``name``: through its DDP wrapper when
        distributed (DDP then averages the gradients of its ``backward`` over the ranks)."""
        if self._distributed is None:
            return fn(*args, **kwargs)
        return self._ddp[name](fn, *args, **kwargs)

    def _all_true(self, flag: bool) -> bool:
        """``flag`` in one process; distributed: whether it holds on every rank (a decision every rank takes alike)."""
        return flag if self._distributed is None else self._distributed.all_true(flag)

    def _rank_streams(self) -> None:
        """On a rank ``r > 0``: its own draws for the coming epoch, keyed by ``(seed, r, epoch)``: the sampler of
        segments and exploration, torch's generator (imagination, the policy's actions) and the random actions."""
        ctx = self._distributed
        if ctx is None or ctx.rank == 0:
            return
        self._sampler, noise_seed = rank_streams(self._distributed_seed, ctx.rank, self.epoch)
        torch.manual_seed(noise_seed)
        self.action_space.seed(noise_seed)

    # ------------------------------------------------------------------ collection
    def _hwc(self, obs: np.ndarray) -> np.ndarray:
        return np.moveaxis(obs, 1, -1) if obs.shape[1:] == self.observation_space.shape else obs

    def collect(self, n_steps: int, random: bool = False) -> None:
        """``n_steps`` env steps (``ceil(n / n_envs)`` VecEnv steps) into the episode buffer, each episode with its
        final observation (SB3's ``terminal_observation``); random actions, or the policy with ``epsilon``. The
        episodes still going on at the end are stored as they stand (open episodes, extended by the next
        collection), as the official collectors of DIAMOND and IRIS store incomplete episodes: long episodes
        (Boxing's 1,780 steps) are trained on from their first collection."""
        env, n = self.env, self.env.num_envs  # type: ignore[union-attr]
        for _ in range(-(-n_steps // n)):
            obs = self._last_obs
            for i in np.flatnonzero(self._last_episode_starts):  # an episode cut by an env reset (a resume) is kept
                self.episode_buffer.finish_episode(int(i))
            if random:
                act = np.array([self.action_space.sample() for _ in range(n)])
            else:
                act, self._collect_hidden = self.policy.predict(obs, self._collect_hidden, self._last_episode_starts)
                explore = self._sampler.random(n) < self.epsilon
                act = np.where(explore, self._sampler.integers(0, self.action_space.n, n), act)
            new_obs, rew, dones, infos = env.step(act)
            frames = self._hwc(obs)
            for i in range(n):
                done = bool(dones[i])
                trunc = done and bool(infos[i].get("TimeLimit.truncated", False))
                final = infos[i].get("terminal_observation") if done else None
                final = None if final is None else self._hwc(np.asarray(final)[None])[0]
                self.episode_buffer.add_step(i, frames[i], act[i], float(rew[i]), done and not trunc, trunc,
                                             final_obs=final)
            self._on_collect_step(frames, act, rew, dones)
            self.num_timesteps += n
            self._update_info_buffer(infos, dones)
            self._last_obs, self._last_episode_starts = new_obs, dones
            self._step_reports.append((dones, infos))
        self.episode_buffer.publish_pending()
