"""DIAMOND's training loop (``Trainer.run`` and ``collect_initial_dataset`` of ``src/trainer.py``,
github.com/eloialonso/diamond), as the ``learn`` of :class:`~agents.diamond.agent.Diamond`.

- **Initial collection** (epoch 0, random actions): ``initial_collect_steps`` (5000), then ``collect_steps`` (100)
  more at a time while fewer than ``threshold_rew`` (10) steps carry a *minority* reward sign (the counts of the
  signs {-1, 0, 1} but the largest, official ``sum(sorted(counts_rew)[:-1])``) and fewer than
  ``initial_collect_max_steps`` (10000) steps are collected (``config/trainer.yaml`` ``collection.train.first_epoch``).
- **Epochs** (1, 2, ...): collect ``collect_steps`` with the policy, then train the three models, the first epoch
  with ``first_epoch_train_steps``. Epochs are whole: ``learn(n)`` ends at the first epoch end at or after ``n`` env
  steps (as PPO completes its rollout), so that ``learn(n); learn(m)`` runs the same schedule as ``learn(m)``.
- **Final epochs**: once the budget is reached, ``num_final_epochs`` (50) epochs train all three models
  ``train_steps`` each without collecting (``training.num_final_epochs``); every ``learn`` call that collected ends
  with them.
- **Callbacks see epoch ends only**: the collection's env steps are reported to the callbacks (``on_step``, one call
  per VecEnv step, with that step's ``dones``/``infos`` in their locals) after the epoch's training, with
  ``num_timesteps`` at the epoch's end. A checkpoint (``CheckpointCallback``), an evaluation or a stop request thus
  always falls between two epochs: a resumed run never skips the training of the epoch it was saved in.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class EpochLoop:
    """DIAMOND's ``learn`` and collection, mixed into :class:`~agents.diamond.agent.Diamond` (see the module)."""

    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int | None = None,
              tb_log_name: str = "", reset_num_timesteps: bool = True, progress_bar: bool = False) -> Any:
        """Train until ``total_timesteps`` env steps (whole epochs), then the final epochs without collection."""
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                                      progress_bar)
        callback.on_training_start(locals(), globals())
        interval, started, start_steps = log_interval or self.log_interval, time.time(), self.num_timesteps
        while True:
            if self.num_timesteps < total_timesteps:
                if self.epoch == 0:
                    self.collect_initial()
                self.collect(self.collect_steps)
                self.final_epochs_done = 0
            elif self.final_epochs_done < self.num_final_epochs:
                self.final_epochs_done += 1
            else:
                break
            logs = self.train(tuple(self.first_epoch_train_steps) if self.epoch == 0 else (self.train_steps,) * 3)
            self.epoch += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if self.epoch % interval == 0:
                self._dump_logs(logs, (self.num_timesteps - start_steps) / max(time.time() - started, 1e-9))
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

    @property
    def minority_rewards(self) -> int:
        """Collected steps whose reward sign is not the most frequent one (official ``threshold_rew`` rule)."""
        return int(np.sort(self.reward_counts)[:-1].sum())

    def collect_initial(self) -> None:
        """Epoch 0's random collection with the ``threshold_rew`` rule (see the module docstring)."""
        self.collect(self.initial_collect_steps, random=True)
        cap = self.initial_collect_max_steps
        while self.minority_rewards < self.threshold_rew and (cap is None or self.num_timesteps < cap):
            self.collect(self.collect_steps, random=True)

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
                self.reward_counts[int(np.sign(rew[i])) + 1] += 1
            self.num_timesteps += n
            self._update_info_buffer(infos, dones)
            self._last_obs, self._last_episode_starts = new_obs, dones
            self._step_reports.append((dones, infos))
