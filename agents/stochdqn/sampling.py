"""Candidate sets of stochastic maximization: the random subset ``R`` and its merge with the memory ``M``.

Stochastic Q-learning (Fourati, Aggarwal & Alouini, "Stochastic Q-learning for Large Discrete Action Spaces",
ICML 2024, https://arxiv.org/abs/2405.10310) replaces ``max`` / ``argmax`` over all ``n`` actions by ``stochmax`` /
``stoch_argmax`` over a candidate set ``C = R ∪ M`` (section "Stochastic Maximization"):

* ``R``: ``ceil(log2 n)`` actions drawn uniformly *without* replacement, fresh at every call
  (:func:`subset_size`, :func:`sample_distinct`, :meth:`SubsetSampler.sample`);
* ``M``: memory actions (the actions of the replay minibatch and recent argmax actions), merged into each row
  without duplicates by :meth:`SubsetSampler.candidates`.

The zoo runs this at ``n = 2**20`` actions and beyond, so nothing here allocates an array of size ``n``: each
row of ``R`` is drawn by Floyd's algorithm in O(k) time and memory, with membership kept in a hash table of
O(k) slots. ``stochmax`` itself runs in torch, in the agent.

Randomness comes from a xoshiro256** generator (Blackman & Vigna, 2018) whose four-word ``uint64`` state is
seeded from the agent's ``np.random.Generator`` and advanced in place inside numba, so a run is reproducible from
the agent's seed (numba's own ``np.random`` has a separate global state that the agent does not control).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

__all__ = ["SubsetSampler", "first_distinct", "next_u64", "sample_distinct", "seed_state", "subset_size"]

MAX_N = 2**63 - 1  # indices are int64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: splitmix64 increment and Fibonacci hashing
_EMPTY = -1  # free slot of a hash table (every stored value is a valid index, hence >= 0)


# ----------------------------------------------------------------------------------------------------------------
# PRNG: splitmix64 seeding, xoshiro256** steps, unbiased bounded integers
# ----------------------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _splitmix64_state(seed: np.uint64) -> np.ndarray:
    """Four splitmix64 outputs from ``seed``: the seeding Vigna recommends (never the all-zero state)."""
    state = np.empty(4, dtype=np.uint64)
    x = seed
    for i in range(4):
        x += _GOLDEN
        z = x
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        state[i] = z ^ (z >> np.uint64(31))
    return state


@numba.njit(cache=True)
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@numba.njit(cache=True)
def next_u64(state: np.ndarray) -> np.uint64:
    """One xoshiro256** output; advances the four-word ``uint64`` ``state`` in place."""
    result = _rotl(state[1] * np.uint64(5), 7) * np.uint64(9)
    t = state[1] << np.uint64(17)
    state[2] ^= state[0]
    state[3] ^= state[1]
    state[1] ^= state[2]
    state[0] ^= state[3]
    state[2] ^= t
    state[3] = _rotl(state[3], 45)
    return result


@numba.njit(cache=True)
def _uniform_upto(state: np.ndarray, hi: np.uint64) -> np.uint64:
    """Uniform integer in ``[0, hi]``: bitmask rejection, unbiased, fewer than two draws on average."""
    mask = hi
    for shift in (1, 2, 4, 8, 16, 32):
        mask |= mask >> np.uint64(shift)  # smallest 2**b - 1 >= hi
    while True:
        x = next_u64(state) & mask
        if x <= hi:
            return x


def seed_state(rng: np.random.Generator) -> np.ndarray:
    """A fresh xoshiro256** state drawn from ``rng`` (which advances by one 64-bit draw)."""
    return _splitmix64_state(rng.integers(0, 2**64, dtype=np.uint64))


# ----------------------------------------------------------------------------------------------------------------
# Small open-addressing set of int64 >= 0 (O(k) slots, reused row after row)
# ----------------------------------------------------------------------------------------------------------------
def _table_bits(size: int) -> int:
    """log2 of a power-of-two table with at least ``2 * size`` slots (load <= 1/2) and at least 4."""
    return max(2, (2 * size - 1).bit_length())


@numba.njit(cache=True)
def _insert(table: np.ndarray, shift: np.uint64, value: np.int64) -> bool:
    """Add ``value`` to the set; False when it was already there (Fibonacci hashing, linear probing)."""
    slot_mask = table.size - 1
    i = np.int64((np.uint64(value) * _GOLDEN) >> shift)
    while True:
        cur = table[i]
        if cur == _EMPTY:
            table[i] = value
            return True
        if cur == value:
            return False
        i = (i + 1) & slot_mask


# ----------------------------------------------------------------------------------------------------------------
# Hot loops
# ----------------------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _floyd_rows(n: np.int64, k: np.int64, batch: np.int64, state: np.ndarray, table_bits: np.int64) -> np.ndarray:
    """``batch`` rows of ``k`` distinct indices in ``[0, n)``, each a uniform k-subset (Floyd's algorithm)."""
    out = np.empty((batch, k), dtype=np.int64)
    table = np.empty(1 << table_bits, dtype=np.int64)
    shift = np.uint64(64 - table_bits)
    for r in range(batch):
        table[:] = _EMPTY
        i = 0
        for j in range(n - k, n):
            # Floyd: t ~ U{0..j}; if t was already chosen take j, which cannot be (all chosen values are < j).
            t = np.int64(_uniform_upto(state, np.uint64(j)))
            if not _insert(table, shift, t):
                t = j
                _insert(table, shift, t)
            out[r, i] = t
            i += 1
    return out


@numba.njit(cache=True)
def _merge_rows(
    subsets: np.ndarray, memory: np.ndarray, shared: bool, table_bits: np.int64
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the subset, then the memory actions not yet in the row (negatives skipped); pad with the first."""
    batch, k = subsets.shape
    width = k + memory.shape[1]
    cands = np.empty((batch, width), dtype=np.int64)
    mask = np.zeros((batch, width), dtype=np.bool_)
    table = np.empty(1 << table_bits, dtype=np.int64)
    shift = np.uint64(64 - table_bits)
    for r in range(batch):
        table[:] = _EMPTY
        m = 0 if shared else r
        count = 0
        for i in range(k):
            _insert(table, shift, subsets[r, i])  # already distinct
            cands[r, count] = subsets[r, i]
            count += 1
        for i in range(memory.shape[1]):
            a = memory[m, i]
            if a >= 0 and _insert(table, shift, a):
                cands[r, count] = a
                count += 1
        mask[r, :count] = True
        pad = cands[r, 0] if count > 0 else 0
        cands[r, count:] = pad
    return cands, mask


@numba.njit(cache=True)
def _candidate_rows(
    n: np.int64, k: np.int64, batch: np.int64, state: np.ndarray, memory: np.ndarray, shared: bool,
    subset_bits: np.int64, merge_bits: np.int64,
) -> tuple[np.ndarray, np.ndarray, np.int64]:
    """:func:`_floyd_rows` then :func:`_merge_rows` in one compiled call, after checking the memory: returns
    ``(cands, mask, -1)``, or ``(empty, empty, max(memory))`` without drawing anything when that is ``>= n``."""
    largest = np.int64(-1)
    for a in memory.ravel():
        largest = max(largest, a)
    if largest >= n:
        return np.empty((0, 0), dtype=np.int64), np.empty((0, 0), dtype=np.bool_), largest
    cands, mask = _merge_rows(_floyd_rows(n, k, batch, state, subset_bits), memory, shared, merge_bits)
    return cands, mask, np.int64(-1)


@numba.njit(cache=True)
def _first_distinct(values: np.ndarray, limit: np.int64, table_bits: np.int64) -> np.ndarray:
    """The first ``limit`` distinct values of ``values`` (int64 >= 0) in order of first appearance."""
    for value in values:
        if value < 0:  # refused by the caller (-1 marks a free slot of the table)
            return np.full(1, value)
    out = np.empty(min(limit, values.size), dtype=np.int64)
    table = np.full(1 << table_bits, _EMPTY, dtype=np.int64)
    shift = np.uint64(64 - table_bits)
    count = 0
    for i in range(values.size):
        if count == out.size:
            break
        if _insert(table, shift, values[i]):
            out[count] = values[i]
            count += 1
    return out[:count]


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------
def subset_size(n_actions: int) -> int:
    """``|R| = ceil(log2 n)`` in integer arithmetic (exact at powers of two), and at least 1."""
    n = int(n_actions)
    if not 1 <= n <= MAX_N:
        raise ValueError(f"n_actions must be in [1, 2**63 - 1], got {n_actions}")
    return max(1, (n - 1).bit_length())


_default_subset_size = subset_size  # SubsetSampler's argument of the same name shadows it


def first_distinct(values: np.ndarray, limit: int) -> np.ndarray:
    """``int64 [<= limit]``: the first ``limit`` distinct entries of the non-negative integers ``values``, in order
    of first appearance (``values[np.sort(np.unique(values, return_index=True)[1])][:limit]``, in O(len(values)))."""
    flat = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=np.int64)
    out = _first_distinct(flat, max(int(limit), 0), _table_bits(max(min(int(limit), flat.size), 1)))
    if out.size and out[0] < 0:
        raise ValueError(f"values must be non-negative integers, got {out[0]}")
    return out


def _check_state(state: np.ndarray) -> np.ndarray:
    if state.dtype != np.uint64 or state.shape != (4,) or not state.flags.c_contiguous or not state.flags.writeable:
        raise ValueError(
            f"a PRNG state must be a writable C-contiguous uint64 array of shape (4,), got {state.dtype} {state.shape}"
        )
    if not state.any():
        raise ValueError("a xoshiro256** state must not be all zeros")
    return state


def sample_distinct(n: int, k: int, batch: int, seed_or_state: np.random.Generator | int | np.ndarray) -> np.ndarray:
    """``int64 [batch, k]``: each row ``k`` distinct indices in ``[0, n)``, uniform over the k-subsets.

    O(k) time and memory per row whatever ``n`` (up to ``2**63 - 1``). Rows are sets in the order Floyd's algorithm
    draws them: the set is uniform, its order within the row is not a uniform permutation.

    ``seed_or_state``: a ``uint64 [4]`` xoshiro256** state, advanced in place; or a ``np.random.Generator``, from
    which a fresh state is drawn (advancing it); or an int seed of ``np.random.default_rng``.
    """
    n, k, batch = int(n), int(k), int(batch)
    if not 0 <= n <= MAX_N:
        raise ValueError(f"n must be in [0, 2**63 - 1], got {n}")
    if k < 0 or k > n:
        raise ValueError(f"cannot draw k={k} distinct indices from n={n}; k must be in [0, n]")
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    if isinstance(seed_or_state, np.ndarray):
        state = _check_state(seed_or_state)
    elif isinstance(seed_or_state, np.random.Generator):
        state = seed_state(seed_or_state)
    else:
        state = seed_state(np.random.default_rng(seed_or_state))
    return _floyd_rows(n, k, batch, state, _table_bits(k))


class SubsetSampler:
    """The random part ``R`` of ``C = R ∪ M`` (Fourati et al., 2024), reproducible from the agent's Generator.

    :param n_actions: size ``n`` of the discrete action space.
    :param subset_size: ``|R|``; ``ceil(log2 n)`` by default, as in the paper. Must be in ``[1, n]``.
    :param rng: the agent's generator; one 64-bit draw from it seeds this sampler's xoshiro256** state, which then
        advances on every call and is saved with :meth:`get_state` / restored with :meth:`set_state`.
        ``None``: an unseeded ``np.random.default_rng()``.
    """

    n_actions: int
    subset_size: int

    def __init__(self, n_actions: int, subset_size: int | None = None, rng: np.random.Generator | None = None) -> None:
        self.n_actions = int(n_actions)
        default = _default_subset_size(self.n_actions)  # also validates n_actions
        self.subset_size = default if subset_size is None else int(subset_size)
        if not 1 <= self.subset_size <= self.n_actions:
            raise ValueError(
                f"subset_size must be in [1, n_actions={self.n_actions}], got {subset_size} "
                f"(default ceil(log2 n_actions) = {default})"
            )
        self._state = seed_state(np.random.default_rng() if rng is None else rng)
        self._bits = _table_bits(self.subset_size)

    def sample(self, batch: int) -> np.ndarray:
        """``R`` for ``batch`` rows: ``int64 [batch, subset_size]``, distinct within each row, fresh each call."""
        return sample_distinct(self.n_actions, self.subset_size, batch, self._state)

    def candidates(self, batch: int, memory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``C = R ∪ M`` per row, as ``(cands int64 [batch, width], mask bool [batch, width])``.

        :param memory: ``M`` as ``int64 [m]`` shared by all rows, or ``[batch, m]`` per row. Negative entries are
            empty slots (a ring of recent argmax actions not yet full) and are skipped.
        :return: ``width = subset_size + m``. Each row holds its fresh random subset, then the memory actions not
            already in it; ``mask`` is True on these distinct candidates and False on the padding, which repeats
            the row's first candidate so that every entry is a valid action index.
        """
        mem = np.asarray(memory)
        if mem.ndim not in (1, 2) or (mem.size and mem.dtype.kind not in "iu"):
            raise ValueError(f"memory must be a 1-D or 2-D integer array, got {mem.dtype} of shape {mem.shape}")
        if mem.ndim == 2 and mem.shape[0] != batch:
            raise ValueError(f"per-row memory must have batch={batch} rows, got shape {mem.shape}")
        if batch < 0:
            raise ValueError(f"batch must be >= 0, got {batch}")
        if mem.dtype.kind == "u" and mem.size and mem.max() >= self.n_actions:  # before a cast could wrap it
            raise ValueError(f"memory actions must be < n_actions={self.n_actions}, got {mem.max()}")
        shared = mem.ndim == 1
        mem = np.ascontiguousarray(mem.reshape(1, -1) if shared else mem, dtype=np.int64)
        cands, mask, too_large = _candidate_rows(self.n_actions, self.subset_size, batch, self._state, mem, shared,
                                                 self._bits, _table_bits(self.subset_size + mem.shape[1]))
        if too_large >= 0:
            raise ValueError(f"memory actions must be < n_actions={self.n_actions}, got {too_large}")
        return cands, mask

    def get_state(self) -> list[int]:
        """The xoshiro256** state as four Python ints (JSON-safe), for checkpoints."""
        return [int(w) for w in self._state]

    def set_state(self, state: Sequence[int]) -> None:
        """Restore a state from :meth:`get_state`: four ints in ``[0, 2**64)``, not all zero."""
        words = [int(w) for w in state]
        if len(words) != 4 or not all(0 <= w < 2**64 for w in words):
            raise ValueError(f"state must be four ints in [0, 2**64), got {list(state)}")
        self._state = _check_state(np.array(words, dtype=np.uint64))
