"""The policy of tabular Stochastic Q-learning (Fourati, Aggarwal & Alouini, ICML 2024,
https://arxiv.org/abs/2405.10310, Alg. 1): Q table(s), the candidate sets ``C = R ∪ M`` and ``stochmax``.

``R`` holds ``ceil(log2 n)`` actions drawn uniformly without replacement at every call
(:class:`~agents.stochdqn.sampling.SubsetSampler`), ``M`` the actions recently exploited in that same state (the
paper's memory for discrete states: here the last ``memory_size`` distinct stoch_argmax results of each state).
The algorithm that updates the tables is :class:`~agents.stochdqn.tabular.StochQLearning`.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule

from agents.stochdqn.sampling import SubsetSampler

__all__ = ["TabularQPolicy", "stochmax"]


def stochmax(q: np.ndarray, cands: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(stochmax, stoch_argmax)`` of each row of ``q [B, N]`` over its candidates ``cands [B, W]`` where ``mask``.

    Ties go to the first candidate in row order (the random subset comes first, in random order).
    """
    values = np.where(mask, np.take_along_axis(q, cands, axis=1), -np.inf)
    best = values.argmax(axis=1)
    rows = np.arange(q.shape[0])
    return values[rows, best], cands[rows, best]


class TabularQPolicy(BasePolicy):
    """Q table(s) and the candidate sets of Stochastic Q-learning; acts by stoch_argmax (argmax if not stochastic).

    The tables are ``float64 [n_states, n_actions]`` parameters without gradient (saved as safetensors); the
    per-state memory ``M`` and the sampler's state are saved by the algorithm.

    :param observation_space: ``Discrete(n_states)``
    :param action_space: ``Discrete(n_actions)``
    :param lr_schedule: unused (the step size is the algorithm's); kept for SB3's policy signature
    :param stochastic: stoch_argmax over ``C = R ∪ M`` (True) or argmax over all actions (False)
    :param subset_size: ``|R|``; None: ``ceil(log2 n_actions)``, the paper's choice
    :param memory_size: ``|M|`` per state: how many distinct recently exploited actions each state keeps (0: none)
    :param double: keep a second table (Stochastic Double Q-learning); acting uses the sum of both
    :param seed: seed of the subset sampler
    """

    q_table: torch.nn.Parameter
    memory: np.ndarray

    def __init__(
        self,
        observation_space: spaces.Discrete,
        action_space: spaces.Discrete,
        lr_schedule: Schedule | None = None,
        stochastic: bool = True,
        subset_size: int | None = None,
        memory_size: int = 1,
        double: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(observation_space, action_space)
        if memory_size < 0:
            raise ValueError(f"memory_size={memory_size} must be >= 0")
        self.n_states, self.n_actions = int(observation_space.n), int(action_space.n)
        self.stochastic, self.double = stochastic, double
        shape = (self.n_states, self.n_actions)
        self.q_table = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64), requires_grad=False)
        if double:
            self.q_table_b = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64), requires_grad=False)
        self.rng = np.random.default_rng(seed)  # seeds the sampler; breaks ties of the full argmax
        self.sampler = SubsetSampler(self.n_actions, subset_size, self.rng)
        self.memory = np.full((self.n_states, memory_size), -1, dtype=np.int64)  # -1: empty slot
        self.memory_pos = np.zeros(self.n_states, dtype=np.int64)  # next slot to overwrite, per state

    def tables(self) -> tuple[np.ndarray, ...]:
        """The Q tables as numpy views (on the CPU) that updates write through."""
        return (self.q_table.data.numpy(),) + ((self.q_table_b.data.numpy(),) if self.double else ())

    def remember(self, states: np.ndarray, actions: np.ndarray) -> None:
        """Add each exploited action to its state's memory, unless already there (oldest slot is overwritten)."""
        if self.memory.shape[1] == 0:
            return
        for s, a in zip(states.tolist(), actions.tolist(), strict=True):
            if a not in self.memory[s]:
                self.memory[s, self.memory_pos[s]] = a
                self.memory_pos[s] = (self.memory_pos[s] + 1) % self.memory.shape[1]

    def best(self, states: np.ndarray, tables: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(stochmax, stoch_argmax)`` of ``sum(tables)[s]`` for each state (max / argmax if not stochastic).

        The stoch_argmax actions are remembered in ``M``. ``tables``: default all of them (acting).
        """
        rows = sum(table[states] for table in (tables or self.tables()))
        if not self.stochastic:  # ties broken uniformly at random (Sutton & Barto), not towards action 0
            ties = rows == rows.max(axis=1, keepdims=True)
            actions = np.where(ties, self.rng.random(rows.shape), -1.0).argmax(axis=1)
            return rows[np.arange(len(states)), actions], actions
        cands, mask = self.sampler.candidates(len(states), self.memory[states])
        values, actions = stochmax(rows, cands, mask)
        self.remember(states, actions)
        return values, actions

    def _predict(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        states = observation.cpu().numpy().astype(np.int64).reshape(-1)
        return torch.as_tensor(self.best(states)[1])
