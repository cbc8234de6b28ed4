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

The agent provides ``epoch``, ``final_epochs_done``, ``num_final_epochs``, ``log_interval``, ``epsilon``,
``episode_buffer``, ``_sampler`` (a numpy Generator), ``_step_reports`` and ``_collect_hidden``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class EpochLoop:
    """``learn`` and collection of an epoch-based world-model agent, mixed in before SB3's ``BaseAlgorithm``."""

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
        while True:
            if self._collecting(total_timesteps):
                self._collect_epoch()
                self.final_epochs_done = 0
            elif self.final_epochs_done < self.num_final_epochs:
                self.final_epochs_done += 1
            else:
                break
            logs = self._train_epoch()
            self.epoch += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if self.epoch % interval == 0:
                self._dump_logs(logs, (self.num_timesteps - start_steps) / max(time.time() - started, 1e-9))
            callback.update_locals({"train_stats": logs})  # the NaN guard checks them before any checkpoint
            if not self._report_steps(callback):
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

    # ------------------------------------------------------------------ collection
    def _hwc(self, obs: np.ndarray) -> np.ndarray:
        return np.moveaxis(obs, 1, -1) if obs.shape[1:] == self.observation_space.shape else obs

    def collect(self, n_steps: int, random: bool = False) -> None:
        """``n_steps`` env steps (``ceil(n / n_envs)`` VecEnv steps) into the episode buffer, each episode with its
        final observation (SB3's ``terminal_observation``); random actions, or the policy with ``epsilon``."""
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
