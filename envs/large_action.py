"""Large discrete action spaces for Stochastic Q-learning (Fourati et al., ICML 2024).

- :class:`Discretize` turns a Box action env into Discrete(L^d): L uniform levels per dimension,
  v_i = low + i / (L - 1) * (high - low), i = 0..L-1 (the official code's grid on [-1, 1], which are the MuJoCo
  bounds), actions ordered as ``itertools.product`` over the dimensions (first dimension most significant).
  Index <-> vector is computed arithmetically in O(d) per action (mixed-radix digits): no table of N entries,
  so N = 10^6 costs what N = 10 does.
- :class:`LargeActionTask` (``zoo/LargeAction-v0``): a synthetic task with N = 2^20 actions whose best action
  depends on the state and is known in closed form, where a full max over N per step is unaffordable.

Both give the agent their actions as vectors in [-1, 1] (``action_vectors``) and describe that representation
with ``action_representation()`` (a JSON dict, see ``agents.stochdqn.qnet.ActionEncoder``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

INT64_MAX = 2**63 - 1
LARGE_ACTION_ID = "zoo/LargeAction-v0"
LARGE_ACTION_STEPS = 50


def grid_size(levels: int, dims: int) -> int:
    """L^d actions of a grid of ``levels`` per dimension over ``dims`` dimensions, computed with Python ints and
    refused (ValueError) when L < 2 or when L^d does not fit an int64 action index."""
    if not isinstance(levels, int | np.integer) or isinstance(levels, bool) or levels < 2:
        raise ValueError(f"discretize levels={levels!r}: need an integer of at least 2 levels per dimension")
    n = int(levels) ** int(dims)
    if n > INT64_MAX:
        raise ValueError(
            f"discretization of {levels} levels x {dims} dims = {levels}^{dims} actions overflows int64 "
            "(max 2^63 - 1); use fewer levels"
        )
    return n


def _check_indices(indices: np.ndarray | int, n_actions: int) -> np.ndarray:
    """``indices`` as an int64 array, refused (ValueError) when one is outside [0, n_actions)."""
    array = np.asarray(indices)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"action indices must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    bad = array[(array < 0) | (array >= n_actions)]
    if bad.size:
        raise ValueError(f"action index {int(bad.flat[0])} is out of range; actions are 0..{n_actions - 1}")
    return array


class Discretize(gym.ActionWrapper):
    """Box(d) actions -> Discrete(L^d), as the official Stochastic Q-learning code discretizes MuJoCo.

    Index a has the digits (a_1, ..., a_d) in base L, first dimension most significant
    (a = sum_j a_j L^(d-j), the order of ``itertools.product``); dimension j takes the value
    low_j + a_j / (L - 1) * (high_j - low_j). E.g. L = 4, d = 2 on [-1, 1]^2: 0 -> (-1, -1), 1 -> (-1, -1/3),
    4 -> (-1/3, -1), 15 -> (1, 1).

    :param env: an env with a bounded Box action space
    :param levels: L, uniform levels per dimension (>= 2)
    """

    n_levels: int
    action_dim: int
    n_actions: int

    def __init__(self, env: gym.Env, levels: int) -> None:
        super().__init__(env)
        box = env.action_space
        if not isinstance(box, spaces.Box):
            name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
            raise ValueError(f"discretize needs a Box action space; env '{name}' has {box}")
        if not (np.all(np.isfinite(box.low)) and np.all(np.isfinite(box.high))):
            raise ValueError(f"discretize needs a bounded Box action space (finite low and high), got {box}")
        self.action_dim = int(np.prod(box.shape))
        self.n_actions = grid_size(levels, self.action_dim)
        self.n_levels = int(levels)
        self.low = box.low.reshape(-1).astype(np.float64)
        self.high = box.high.reshape(-1).astype(np.float64)
        self._box = box
        # place value of each dimension's digit, first dimension most significant: L^(d-1), ..., L, 1
        self.radix = np.array([self.n_levels ** (self.action_dim - 1 - j) for j in range(self.action_dim)], np.int64)
        self.action_space = spaces.Discrete(self.n_actions)

    def digits(self, indices: np.ndarray | int) -> np.ndarray:
        """The level a_j of each dimension: int64 indices [...] -> int64 [..., d]."""
        indices = _check_indices(indices, self.n_actions)
        return (indices[..., None] // self.radix) % self.n_levels

    def index_to_vector(self, indices: np.ndarray | int) -> np.ndarray:
        """The env's continuous actions of int64 indices [...]: float32 [..., d] in [low, high]."""
        fraction = self.digits(indices) / (self.n_levels - 1)
        return (self.low + fraction * (self.high - self.low)).astype(np.float32)

    def vector_to_index(self, vectors: np.ndarray) -> np.ndarray:
        """The index of the grid action nearest to continuous actions [..., d] (clipped to the box): int64 [...]."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.shape[-1:] != (self.action_dim,):
            raise ValueError(f"action vectors of shape {vectors.shape}; the last axis must be d={self.action_dim}")
        fraction = (vectors - self.low) / (self.high - self.low)
        digits = np.clip(np.rint(fraction * (self.n_levels - 1)), 0, self.n_levels - 1).astype(np.int64)
        return (digits * self.radix).sum(axis=-1)

    def action_vectors(self, indices: np.ndarray | int) -> np.ndarray:
        """The actions as the agent sees them, each dimension's level on [-1, 1] whatever the env's bounds:
        int64 indices [...] -> float32 [..., d]."""
        return (self.digits(indices) * (2.0 / (self.n_levels - 1)) - 1.0).astype(np.float32)

    def action(self, action: Any) -> np.ndarray:
        """The env's Box action for a discrete index."""
        return self.index_to_vector(int(action)).reshape(self._box.shape).astype(self._box.dtype)

    def action_representation(self) -> dict[str, Any]:
        """``action_vectors`` as an ``ActionEncoder`` spec: the L-level grid over d dimensions."""
        return {"type": "grid", "levels": self.n_levels, "dims": self.action_dim}


class LargeActionTask(gym.Env[np.ndarray, np.int64]):
    """A contextual task with N = 2^m actions whose best action depends on the state (``zoo/LargeAction-v0``).

    Each step shows a preference s ~ N(0, I_m), redrawn every step. Action a has the features
    f(a) = 2 bits(a) - 1 in {-1, +1}^m (f_j is bit j of the index, least significant first), computed from the
    index. The reward is the share of the preference's signs that the action matches:

        r(s, a) = <sign(s), f(a)> / m = (2 * matching bits - m) / m   in [-1, 1]   (sign(0) counted as -1)

    so the best action (bit j = 1 where s_j > 0, ``optimal_action``) scores 1, its bitwise complement -1, a
    uniformly random action 0 on average, and each matching bit earns 2/m: a Q(s, f(a)) network can improve bit
    by bit, while a full max over N = 2^20 actions per step is what Stochastic Q-learning avoids.
    Episodes are truncated after 50 steps by the registration's time limit (the env itself never ends one).

    :param n_actions: N, a power of two 2^m with 1 <= m <= 62 (default 2^20 = 1,048,576)
    :param render_mode: only None (nothing to render)
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, n_actions: int = 2**20, render_mode: str | None = None) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r}: {LARGE_ACTION_ID} has no rendering; use None")
        is_int = isinstance(n_actions, int | np.integer) and not isinstance(n_actions, bool)
        if not is_int or not 2 <= n_actions <= 2**62 or int(n_actions) & (int(n_actions) - 1):
            raise ValueError(f"n_actions={n_actions!r}: must be a power of two 2^m with 1 <= m <= 62")
        self.n_actions = int(n_actions)
        self.n_bits = self.n_actions.bit_length() - 1
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.n_bits,), np.float32)
        self.action_space = spaces.Discrete(self.n_actions)
        self._shifts = np.arange(self.n_bits, dtype=np.int64)
        self._state = np.zeros(self.n_bits, np.float32)

    def features(self, indices: np.ndarray | int) -> np.ndarray:
        """f(a) = 2 bits(a) - 1, bit j at position j (least significant first): int64 [...] -> float32 [..., m]."""
        bits = (_check_indices(indices, self.n_actions)[..., None] >> self._shifts) & 1
        return (2 * bits - 1).astype(np.float32)

    def action_vectors(self, indices: np.ndarray | int) -> np.ndarray:
        """The actions as the agent sees them, in [-1, 1]: the features f(a)."""
        return self.features(indices)

    def optimal_action(self, obs: np.ndarray) -> np.ndarray:
        """argmax_a r(s, a) in closed form, the index whose bit j is 1 where s_j > 0: float [..., m] -> int64 [...]."""
        return ((np.asarray(obs) > 0).astype(np.int64) << self._shifts).sum(axis=-1)

    def reward(self, obs: np.ndarray, indices: np.ndarray | int) -> np.ndarray:
        """r(s, a) = <sign(s), f(a)> / m for states [..., m] and actions [...] (broadcast): float [...]."""
        signs = np.where(np.asarray(obs) > 0, 1.0, -1.0)
        return (signs * self.features(indices)).mean(axis=-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._state = self.np_random.standard_normal(self.n_bits).astype(np.float32)
        return self._state.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(self.reward(self._state, int(action)))
        self._state = self.np_random.standard_normal(self.n_bits).astype(np.float32)
        return self._state.copy(), reward, False, False, {}

    def action_representation(self) -> dict[str, Any]:
        """``action_vectors`` as an ``ActionEncoder`` spec: the index's m bits as +-1."""
        return {"type": "bits", "bits": self.n_bits}


if LARGE_ACTION_ID not in gym.registry:  # idempotent: importing twice (or reloading) registers once
    gym.register(LARGE_ACTION_ID, entry_point=LargeActionTask, max_episode_steps=LARGE_ACTION_STEPS)
