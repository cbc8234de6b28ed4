"""DIAMOND's training loop (``Trainer.run`` and ``collect_initial_dataset`` of ``src/trainer.py``,
github.com/eloialonso/diamond), as the ``learn`` of :class:`~agents.diamond.agent.Diamond`: the hooks of the shared
:class:`~agents.common.epoch_loop.EpochLoop` (whole epochs, callbacks at epoch ends, collection).

- **Initial collection** (epoch 0, random actions): ``initial_collect_steps`` (5000), then ``collect_steps`` (100)
  more at a time while fewer than ``threshold_rew`` (10) steps carry a *minority* reward sign (the counts of the
  signs {-1, 0, 1} but the largest, official ``sum(sorted(counts_rew)[:-1])``) and fewer than
  ``initial_collect_max_steps`` (10000) steps are collected (``config/trainer.yaml`` ``collection.train.first_epoch``);
  in data-parallel training every rank collects until every rank has its ``threshold_rew`` steps.
- **Epochs** (1, 2, ...): collect ``collect_steps`` with the policy, then train the three models, the first epoch
  with ``first_epoch_train_steps``.
- **Final epochs**: once the budget is reached, ``num_final_epochs`` (50) epochs train all three models
  ``train_steps`` each without collecting (``training.num_final_epochs``).
"""

from __future__ import annotations

import numpy as np

from agents.common.epoch_loop import EpochLoop


class DiamondLoop(EpochLoop):
    """DIAMOND's epochs, mixed into :class:`~agents.diamond.agent.Diamond` (see the module)."""

    def _collect_epoch(self) -> None:
        if self.epoch == 0:
            self.collect_initial()
        self.collect(self.collect_steps)

    def _train_epoch(self) -> dict[str, float]:
        return self.train(tuple(self.first_epoch_train_steps if self.epoch == 0 else self.train_steps))

    def _on_collect_step(self, frames: np.ndarray, act: np.ndarray, rew: np.ndarray, dones: np.ndarray) -> None:
        for r in rew:
            self.reward_counts[int(np.sign(r)) + 1] += 1

    @property
    def minority_rewards(self) -> int:
        """Collected steps whose reward sign is not the most frequent one (official ``threshold_rew`` rule)."""
        return int(np.sort(self.reward_counts)[:-1].sum())

    def collect_initial(self) -> None:
        """Epoch 0's random collection with the ``threshold_rew`` rule (see the module docstring)."""
        self.collect(self.initial_collect_steps, random=True)
        cap = self.initial_collect_max_steps
        # distributed: every rank goes on until every rank has its minority rewards (the ranks stay in step)
        while (cap is None or self.num_timesteps < cap) and not self._all_true(
                self.minority_rewards >= self.threshold_rew):
            self.collect(self.collect_steps, random=True)
