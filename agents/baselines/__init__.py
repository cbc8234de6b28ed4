"""SB3's own DQN, PPO and SAC, registered in the zoo as baselines (`dqn`, `ppo`, `sac`).

They are the SB3 classes unchanged but for :class:`~agents.common.persistence.ZooAlgorithm`, which gives them the
zoo's pickle-free checkpoints, so that every agent of the zoo is compared against them with the same runner,
logger, evaluation and checkpoint format.
"""

from __future__ import annotations

import inspect

import numpy as np
import stable_baselines3
import torch

from agents.common.grad_norm import log_grad_norm
from agents.common.persistence import ZooAlgorithm


class DQN(ZooAlgorithm, stable_baselines3.DQN):
    """Deep Q-Network (Mnih et al. 2015), SB3's implementation. See :class:`stable_baselines3.DQN`."""

    agent_id = "dqn"

    def _setup_model(self) -> None:
        super()._setup_model()
        log_grad_norm(self, self.policy.optimizer)


class PPO(ZooAlgorithm, stable_baselines3.PPO):
    """Proximal Policy Optimization (Schulman et al. 2017), SB3's implementation. See :class:`stable_baselines3.PPO`."""

    agent_id = "ppo"

    def _setup_model(self) -> None:
        super()._setup_model()
        log_grad_norm(self, self.policy.optimizer)


class SAC(ZooAlgorithm, stable_baselines3.SAC):
    """Soft Actor-Critic (Haarnoja et al. 2018), SB3's implementation. See :class:`stable_baselines3.SAC`."""

    agent_id = "sac"

    def _setup_model(self) -> None:
        if self.env is None and self.target_entropy == "auto":  # loaded without an env: use the stored space
            self.target_entropy = float(-np.prod(self.action_space.shape))
        super()._setup_model()
        self._match_ent_coef_optimizer()
        log_grad_norm(self, self.actor.optimizer, "train/actor_grad_norm")
        log_grad_norm(self, self.critic.optimizer, "train/critic_grad_norm")

    def _match_ent_coef_optimizer(self) -> None:
        """SB3 builds the temperature's optimizer as ``Adam`` whatever ``policy_kwargs.optimizer_class`` says; with
        ``optimizer=adamw|ademamix`` it is built with the actor's and critic's class and options instead, weight
        decay 0 (a decay of log(alpha) would pull the temperature to 1 whatever the target entropy asks)."""
        cls = self.policy.optimizer_class
        if self.ent_coef_optimizer is None or cls is torch.optim.Adam:
            return
        options = dict(self.policy.optimizer_kwargs)
        if "weight_decay" in inspect.signature(cls).parameters:
            options["weight_decay"] = 0.0
        self.ent_coef_optimizer = cls([self.log_ent_coef], lr=self.lr_schedule(1), **options)


__all__ = ["DQN", "PPO", "SAC"]
