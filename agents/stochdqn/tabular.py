"""Tabular Stochastic Q-learning (Fourati, Aggarwal & Alouini, ICML 2024, https://arxiv.org/abs/2405.10310, Alg. 1).

Q-learning with the max and argmax over all ``n`` actions replaced by ``stochmax`` / ``stoch_argmax`` over a
candidate set ``C = R ∪ M``: ``R`` holds ``ceil(log2 n)`` actions drawn uniformly without replacement at every call
(:class:`~agents.stochdqn.sampling.SubsetSampler`), ``M`` the actions recently exploited in that same state (the
paper's memory for discrete states: here the last ``memory_size`` distinct stoch_argmax results of each state).

- acting: epsilon-greedy with ``a = stoch_argmax_{b in C} Q(s, b)``;
- update: ``Q(s, a) <- Q(s, a) + alpha (r + gamma (1 - terminated) stochmax_{b in C'} Q(s', b) - Q(s, a))``;
- Stochastic Double Q-learning (``double=True``, van Hasselt 2010 with stochastic maximization): a coin picks the
  table to update, ``b* = stoch_argmax_{b in C'} Q_A(s', b)`` and the target uses ``Q_B(s', b*)``.

``stochmax <= max``; Theorem 6.2 gives convergence to the fixed point of the subset sampling distribution, which is
``Q*`` once the memory holds the greedy actions. ``stochastic=False`` is plain (Double) Q-learning, the baseline.

This module is the algorithm and its TD update; the tables, the candidate sets and ``stochmax`` are the policy's, in
:mod:`agents.stochdqn.tabular_policy` (``TabularQPolicy`` and ``stochmax`` are re-exported here).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback, Schedule
from stable_baselines3.common.utils import LinearSchedule, safe_mean

from agents.common.hyperparams import encode_hyperparams
from agents.common.persistence import ZooAlgorithm
from agents.common.spaces import describe_space
from agents.stochdqn.tabular_policy import TabularQPolicy, stochmax


def td_update(
    q: np.ndarray, state: int, action: int, reward: float, next_value: float, terminated: bool, alpha: float,
    gamma: float,
) -> float:
    """``Q(s, a) += alpha delta`` in place, ``delta = r + gamma (1 - terminated) next_value - Q(s, a)``; returns delta.

    ``next_value`` is ``stochmax_{b in C'} Q(s', b)`` (``max_b`` for Q-learning); unused when ``terminated``.
    """
    delta = reward + gamma * (1.0 - float(terminated)) * next_value - q[state, action]
    q[state, action] += alpha * delta
    return float(delta)


class StochQLearning(ZooAlgorithm, BaseAlgorithm):
    """Stochastic Q-learning (Fourati et al. 2024, Algorithm 1) for Discrete observation and action spaces.

    One env (a VecEnv of one, or a gymnasium env); the table and its updates live on the CPU.

    :param policy: ``TabularPolicy`` (``MlpPolicy`` is an alias, so ``policy: auto`` works)
    :param env: the environment, ``Discrete`` observations and actions
    :param learning_rate: step size alpha (a float, or a schedule of the remaining progress); 0.1 as in
        Sutton & Barto's tabular examples
    :param gamma: discount factor
    :param exploration_fraction: fraction of training over which epsilon decays linearly (as SB3's DQN)
    :param exploration_initial_eps: initial epsilon of epsilon-greedy
    :param exploration_final_eps: final epsilon
    :param stochastic: stochmax / stoch_argmax over ``C = R ∪ M`` (True), or the full max (Q-learning, False)
    :param subset_size: ``|R|``, None: ``ceil(log2 n_actions)``
    :param memory_size: ``|M|``, distinct recently exploited actions kept per state (1: the last one)
    :param double: Stochastic Double Q-learning (two tables, a fair coin picks the one to update)
    :param stats_window_size: episodes averaged in ``rollout/ep_rew_mean``
    :param tensorboard_log: TensorBoard folder (None: no logging unless a logger is set)
    :param seed: seed of python, numpy, torch, the action space and the subset sampler
    :param device: accepted for the zoo's common interface; the table always lives on the CPU
    :param verbose: 0 silent, 1 the logger's table on stdout
    :param _init_setup_model: build the table now (False when loading)
    """

    agent_id = "stochq"
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"TabularPolicy": TabularQPolicy,
                                                             "MlpPolicy": TabularQPolicy}
    policy: TabularQPolicy
    exploration_schedule: LinearSchedule

    def __init__(
        self,
        policy: str | type[TabularQPolicy],
        env: Any,
        learning_rate: float | Schedule = 0.1,
        gamma: float = 0.99,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        stochastic: bool = True,
        subset_size: int | None = None,
        memory_size: int = 1,
        double: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        seed: int | None = None,
        device: torch.device | str = "auto",
        verbose: int = 0,
        _init_setup_model: bool = True,
    ) -> None:
        n_envs = getattr(env, "num_envs", 1)
        if n_envs != 1:
            raise ValueError(f"{self.agent_id} runs one env; got a VecEnv of {n_envs} envs (use n_envs=1)")
        self.gamma = gamma
        self.exploration_fraction = exploration_fraction
        self.exploration_initial_eps = exploration_initial_eps
        self.exploration_final_eps = exploration_final_eps
        self.stochastic, self.subset_size, self.memory_size, self.double = stochastic, subset_size, memory_size, double
        super().__init__(policy, env, learning_rate=learning_rate, stats_window_size=stats_window_size,
                         tensorboard_log=tensorboard_log, seed=seed, device="cpu", verbose=verbose)
        self.hyperparams.update(encode_hyperparams({
            "gamma": gamma, "exploration_fraction": exploration_fraction,
            "exploration_initial_eps": exploration_initial_eps, "exploration_final_eps": exploration_final_eps,
            "stochastic": stochastic, "subset_size": subset_size, "memory_size": memory_size, "double": double,
        }))
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        for kind, space in (("observation", self.observation_space), ("action", self.action_space)):
            if not isinstance(space, spaces.Discrete) or space.start != 0:
                raise ValueError(f"{self.agent_id} needs a Discrete {kind} space starting at 0; got "
                                 f"{describe_space(space)}")
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, stochastic=self.stochastic,
            subset_size=self.subset_size, memory_size=self.memory_size, double=self.double, seed=self.seed,
        )
        self.exploration_schedule = LinearSchedule(
            self.exploration_initial_eps, self.exploration_final_eps, self.exploration_fraction
        )
        self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
        self._td_sum, self._td_count = 0.0, 0

    # ------------------------------------------------------------------ Algorithm 1
    def act(self, state: int) -> int:
        """Epsilon-greedy: a uniform action with probability epsilon, else ``stoch_argmax_{b in C} Q(s, b)``."""
        if np.random.rand() < self.exploration_rate:
            return int(self.action_space.sample())
        return int(self.policy.best(np.array([state]))[1][0])

    def train_step(self, state: int, action: int, reward: float, next_state: int, terminated: bool) -> float:
        """One update of Q (two with a coin for the table when ``double``); returns the TD error delta."""
        alpha = float(self.lr_schedule(self._current_progress_remaining))
        tables = self.policy.tables()
        if self.double and np.random.rand() < 0.5:
            tables = tables[::-1]  # update Q_B this time: its stoch_argmax is evaluated by Q_A
        next_value = 0.0
        if not terminated:  # a terminal state has value 0: no candidates drawn
            value, best = self.policy.best(np.array([next_state]), tables[:1])
            # Double: b* = stoch_argmax Q_A(s', .) is evaluated by Q_B; else stochmax Q(s', .) itself
            next_value = float(tables[1][next_state, best[0]] if self.double else value[0])
        self._n_updates += 1
        return td_update(tables[0], state, action, reward, next_value, terminated, alpha, self.gamma)

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "StochQ",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> StochQLearning:
        """Run Algorithm 1 for ``total_timesteps`` env steps, updating Q after every step.

        Callbacks see each step after its update, so a checkpoint at step n holds the n updates before it.

        :param log_interval: episodes between two dumps of the logger (``rollout/``, ``train/``, ``time/``)
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None and self._last_obs is not None
        while self.num_timesteps < total_timesteps:
            state = int(np.asarray(self._last_obs).reshape(-1)[0])
            action = self.act(state)
            new_obs, rewards, dones, infos = self.env.step(np.array([action]))
            self.num_timesteps += 1
            done = bool(dones[0])
            # at the end of an episode the VecEnv has reset: the true next state is the terminal observation
            next_state = int(np.asarray(infos[0]["terminal_observation"]).reshape(-1)[0]) if done else int(new_obs[0])
            terminated = done and not infos[0].get("TimeLimit.truncated", False)  # truncation bootstraps
            delta = self.train_step(state, action, float(rewards[0]), next_state, terminated)
            train_stats = {"td_error": delta}  # noqa: F841  (in the callbacks' locals: the NaN guard checks it)
            self._td_sum, self._td_count = self._td_sum + abs(delta), self._td_count + 1
            self._update_info_buffer(infos, dones)
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
            self._last_obs, self._last_episode_starts = new_obs, dones
            if done:
                self._episode_num += 1
                if log_interval and self._episode_num % log_interval == 0:
                    self.dump_logs()
            callback.update_locals(locals())
            if not callback.on_step():
                break
        callback.on_training_end()
        return self

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """stoch_argmax actions (epsilon-greedy unless ``deterministic``, as SB3's DQN)."""
        if not deterministic and np.random.rand() < self.exploration_rate:
            n = np.asarray(observation).size
            actions = np.array([self.action_space.sample() for _ in range(n)])
            return (actions if np.ndim(observation) else actions[0]), state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def dump_logs(self) -> None:
        """Write ``rollout/``, ``train/`` and ``time/`` scalars at the current step."""
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([info["r"] for info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([info["l"] for info in self.ep_info_buffer]))
        if self.ep_success_buffer:
            self.logger.record("rollout/success_rate", safe_mean(self.ep_success_buffer))
        self.logger.record("rollout/exploration_rate", self.exploration_rate)
        self.logger.record("train/learning_rate", float(self.lr_schedule(self._current_progress_remaining)))
        if self._td_count:
            self.logger.record("train/td_error", self._td_sum / self._td_count)  # mean |delta| since last dump
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("time/fps", int((self.num_timesteps - self._num_timesteps_at_start) / elapsed))
        self.logger.dump(step=self.num_timesteps)
        self._td_sum, self._td_count = 0.0, 0

    # ------------------------------------------------------------------ checkpoints: sampler state and memory M
    def _zoo_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        state = super()._zoo_state(tensors)
        state["sampler"] = self.policy.sampler.get_state()
        state["policy_rng"] = self.policy.rng.bit_generator.state
        tensors["stochq.memory"] = torch.from_numpy(self.policy.memory.copy())
        tensors["stochq.memory_pos"] = torch.from_numpy(self.policy.memory_pos.copy())
        return state

    def _zoo_set_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super()._zoo_set_state(state, tensors)
        memory = tensors["stochq.memory"].numpy().astype(np.int64)
        if memory.shape != self.policy.memory.shape:
            raise ValueError(f"stochq.memory has shape {tuple(memory.shape)}, expected {self.policy.memory.shape}")
        self.policy.memory = memory.copy()
        self.policy.memory_pos = tensors["stochq.memory_pos"].numpy().astype(np.int64).copy()
        self.policy.sampler.set_state(state["sampler"])
        self.policy.rng.bit_generator.state = state["policy_rng"]


__all__ = ["StochQLearning", "TabularQPolicy", "stochmax", "td_update"]
