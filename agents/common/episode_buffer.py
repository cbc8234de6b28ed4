"""The zoo's episode storage: whole episodes stored once, sampled as fixed-length segments.

:class:`EpisodeBuffer` stores episodes as growing contiguous step arrays plus episode offsets, and samples
fixed-length segments exactly like DIAMOND's ``BatchSampler``
(https://github.com/eloialonso/diamond/blob/main/src/data/batch_sampler.py), with DIAMOND's chunked recency
weights or Delta-IRIS's count-based episode weights (``src/data/episode_count.py`` of vmicheli/delta-iris).
World-model (DIAMOND, Delta-IRIS), sequence (DT, RADT) and imitation (ACT) agents all use it.

Step ``t`` of an episode holds the observation the action was taken in, the action, the reward that followed and
whether the episode terminated (``end``) or was truncated (``trunc``) with it; the two are never merged. An episode
may also keep its ``final_obs``: the observation after its last action (SB3's ``terminal_observation`` info), which
no step holds; DIAMOND's reward/end model sees it after a termination (official ``Episode.info["final_observation"]``).

Two companion modules keep this one to storage and segments: :mod:`agents.common.episode_sampling` (pure functions:
episode weights, DIAMOND's window rules) and :mod:`agents.common.episode_io` (the .npz file and the D4RL layout,
which :meth:`EpisodeBuffer.save`, :meth:`~EpisodeBuffer.load`, :meth:`~EpisodeBuffer.to_d4rl_dict` and
:meth:`~EpisodeBuffer.from_d4rl_dict` delegate to; it imports this module, so they import it when called).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.buffers import Shape
from agents.common.episode_sampling import RECENCY_WEIGHTS, draw_segment_starts, episode_probabilities

__all__ = ["RECENCY_WEIGHTS", "Episode", "EpisodeBuffer", "EpisodeBuilder", "Segment"]

CORE_FIELDS = ("obs", "act", "rew", "end", "trunc")
EXTRA_PREFIX = "extra."


# ----------------------------------------------------------------------------------------------------------------
# Episodes and segments
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Episode:
    """One whole episode: per-step arrays of equal length ``T`` (``obs[t]`` is what ``act[t]`` was taken in)."""

    obs: np.ndarray  # [T, *obs_shape]
    act: np.ndarray  # [T, *act_shape]
    rew: np.ndarray  # [T] float32
    end: np.ndarray  # [T] bool, termination
    trunc: np.ndarray  # [T] bool, truncation
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [T, ...]
    final_obs: np.ndarray | None = None  # [*obs_shape], the observation after the last action, when known

    def __len__(self) -> int:
        return len(self.rew)


@dataclass
class Segment:
    """A batch of ``B`` windows of ``L`` steps; padded positions are zeros/False with ``mask`` False."""

    obs: np.ndarray  # [B, L, *obs_shape]
    act: np.ndarray  # [B, L, *act_shape]
    rew: np.ndarray  # [B, L]
    end: np.ndarray  # [B, L]
    trunc: np.ndarray  # [B, L]
    mask: np.ndarray  # [B, L] bool, False where padded
    episode_ids: np.ndarray  # [B] index of the episode in the buffer
    starts: np.ndarray  # [B] first timestep of the window, negative when left-padded
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [B, L, ...]
    final_obs: np.ndarray | None = None  # [B, *obs_shape] each window's episode's final_obs, zeros where it has none
    has_final_obs: np.ndarray | None = None  # [B] bool


def coerce_array(name: str, value: Any, shape: Shape, dtype: np.dtype) -> np.ndarray:
    """``value`` as an array of ``shape`` and ``dtype``; refuses object arrays and casts that change the kind."""
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ValueError(f"'{name}' is an object array; expected dtype {dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"'{name}' has shape {arr.shape}; expected {tuple(shape)}")
    if dtype == np.bool_ and arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"'{name}' must hold booleans (0 or 1); found values {np.unique(arr)[:5].tolist()}")
    elif not np.can_cast(arr.dtype, dtype, "same_kind"):
        raise ValueError(f"'{name}' has dtype {arr.dtype}, which cannot be stored as {dtype} without changing kind")
    return arr.astype(dtype, copy=False)


class EpisodeBuilder:
    """Collects one episode step by step; keep one per env of a VecEnv (``EpisodeBuffer.add_step`` does)."""

    def __init__(self) -> None:
        self._steps: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._steps.get("rew", ()))

    def add(
        self, obs: Any, act: Any, rew: float, end: bool, trunc: bool, extras: Mapping[str, Any] | None = None
    ) -> None:
        """Append one step: the observation acted in, the action, and what followed it."""
        step = {"obs": obs, "act": act, "rew": rew, "end": end, "trunc": trunc, **(extras or {})}
        for key, value in step.items():
            self._steps.setdefault(key, []).append(np.asarray(value))

    def build(self, final_obs: Any = None, keep: bool = False) -> Episode:
        """Stack the collected steps into an :class:`Episode` (with ``final_obs`` when given) and start a new one
        (``keep=True``: go on collecting this one, e.g. to store it as it stands)."""
        if len(self) == 0:
            raise ValueError("cannot build an episode from 0 steps")
        stacked = {key: np.stack(values) for key, values in self._steps.items()}
        if not keep:
            self._steps = {}
        core = {key: stacked.pop(key) for key in CORE_FIELDS}
        return Episode(**core, extras=stacked, final_obs=None if final_obs is None else np.asarray(final_obs))


# ----------------------------------------------------------------------------------------------------------------
# The episode buffer
# ----------------------------------------------------------------------------------------------------------------
class EpisodeBuffer:
    """Whole episodes stored once, sampled as fixed-length segments (DIAMOND, Delta-IRIS, DT/RADT, ACT).

    Steps live in contiguous arrays that grow by doubling; ``episode_starts``/``lengths`` index them. Episode ids
    are positions among the episodes currently held (0 is the oldest), as in DIAMOND's ``Dataset``.

    Episodes collected step by step (:meth:`add_step`) are stored when they end; :meth:`publish_pending` also stores
    the ones still going on as they stand (*open* episodes, sampled like any other), as the official DIAMOND and
    IRIS collectors store incomplete episodes at the end of each collection: an open episode is replaced by its
    longer self at the next publication or at its end, keeping its sampling counts. The replacement is the newest
    episode then (with one env it already was; the official dataset keeps its id).

    :param obs_shape: shape of one observation (frames keep their layout, e.g. ``(3, 64, 64)``)
    :param obs_dtype: dtype of the observations; uint8 frames stay uint8
    :param act_shape: shape of one action: ``()`` for a discrete action, ``(d,)`` for a vector
    :param act_dtype: int64 for discrete actions, float32 for vectors
    :param capacity_steps: keep at most this many steps by evicting whole oldest episodes first (FIFO); the newest
        episode is always kept, even when it alone is longer. ``None`` keeps everything.
    :param extras: optional per-step arrays by name, ``{"qpos": ((7,), np.float32)}``; every episode carries them
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        obs_dtype: Any,
        act_shape: Sequence[int],
        act_dtype: Any,
        capacity_steps: int | None = None,
        extras: Mapping[str, tuple[Sequence[int], Any]] | None = None,
    ) -> None:
        if capacity_steps is not None and (isinstance(capacity_steps, bool) or not int(capacity_steps) >= 1):
            raise ValueError(f"capacity_steps={capacity_steps!r}; expected a positive int or None (unbounded)")
        self.capacity_steps = None if capacity_steps is None else int(capacity_steps)
        self.spec: dict[str, tuple[Shape, np.dtype]] = {
            "obs": (tuple(obs_shape), np.dtype(obs_dtype)),
            "act": (tuple(act_shape), np.dtype(act_dtype)),
            "rew": ((), np.dtype(np.float32)),
            "end": ((), np.dtype(np.bool_)),
            "trunc": ((), np.dtype(np.bool_)),
        }
        for name, (shape, dtype) in (extras or {}).items():
            if not name.isidentifier():
                raise ValueError(f"extra name {name!r} is not allowed; use a Python identifier such as 'qpos'")
            self.spec[EXTRA_PREFIX + name] = (tuple(shape), np.dtype(dtype))
        for key, (_, dtype) in self.spec.items():
            if dtype.kind not in "biuf":
                raise ValueError(f"dtype {dtype} of '{key}' is not allowed; use a bool, integer or float dtype")
        self._data = {key: np.zeros((0, *shape), dtype) for key, (shape, dtype) in self.spec.items()}
        self._head = self._tail = 0  # live steps are self._data[key][self._head:self._tail]
        self._starts = np.zeros(0, np.int64)  # offset of each live episode in the arrays
        self._lengths = np.zeros(0, np.int64)
        self._final: list[np.ndarray | None] = []  # per live episode: its final_obs or None
        self._counts: dict[str, np.ndarray] = {}  # counter key -> times each episode was sampled (Delta-IRIS)
        self._builders: dict[int, EpisodeBuilder] = {}
        self._open: dict[int, int] = {}  # env index -> id of its stored open episode (see publish_pending)
        self.num_evicted = 0

    # --- size ------------------------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return len(self._lengths)

    @property
    def num_steps(self) -> int:
        return self._tail - self._head

    @property
    def lengths(self) -> np.ndarray:
        return self._lengths.copy()

    @property
    def extra_names(self) -> list[str]:
        return [key[len(EXTRA_PREFIX) :] for key in self.spec if key.startswith(EXTRA_PREFIX)]

    def counts(self, counter_key: str = "default") -> np.ndarray:
        """How many times each episode was drawn by the sampler named ``counter_key``."""
        return self._counter(counter_key).copy()

    def count_draws(self, episode_ids: Sequence[int], counter_key: str = "default") -> None:
        """Add one to the count of ``counter_key`` for every id in ``episode_ids`` (repeats count repeatedly)."""
        ids = np.asarray(episode_ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_episodes):
            raise ValueError(f"episode ids {ids.tolist()} out of range; the buffer holds {self.num_episodes}")
        np.add.at(self._counter(counter_key), ids, 1)

    # --- adding ----------------------------------------------------------------------------------------------
    def add_episode(self, episode: Episode) -> int:
        """Append a whole episode, evict the oldest ones beyond ``capacity_steps``, and return the new id."""
        n = np.shape(episode.rew)[0] if np.ndim(episode.rew) == 1 else 0
        if n < 1:
            raise ValueError(f"episode rewards have shape {np.shape(episode.rew)}; expected (T,) with T >= 1")
        if sorted(episode.extras) != sorted(self.extra_names):
            raise ValueError(f"episode extras {sorted(episode.extras)}; this buffer stores {sorted(self.extra_names)}")
        values = {name: getattr(episode, name) for name in CORE_FIELDS}
        values.update({EXTRA_PREFIX + name: value for name, value in episode.extras.items()})
        arrays = {key: coerce_array(key, values[key], (n, *shape), dtype) for key, (shape, dtype) in self.spec.items()}
        obs_shape, obs_dtype = self.spec["obs"]
        final = episode.final_obs
        final = None if final is None else coerce_array("final_obs", final, obs_shape, obs_dtype)
        self._reserve(n)
        for key, arr in arrays.items():
            self._data[key][self._tail : self._tail + n] = arr
        self._starts = np.append(self._starts, self._tail)
        self._lengths = np.append(self._lengths, n)
        self._final.append(None if final is None else final.copy())
        self._counts = {key: np.append(c, 0) for key, c in self._counts.items()}
        self._tail += n
        self._evict()
        return self.num_episodes - 1

    def add_step(
        self,
        env_index: int,
        obs: Any,
        act: Any,
        rew: float,
        end: bool,
        trunc: bool,
        extras: Mapping | None = None,
        final_obs: Any = None,
    ) -> int | None:
        """Record one step of env ``env_index`` of a VecEnv; when it ends or is truncated, store the episode, with
        ``final_obs`` (the observation after this last action, e.g. ``info["terminal_observation"]``) when given.

        :return: the id of the stored episode, or None while the episode goes on
        """
        builder = self._builders.setdefault(env_index, EpisodeBuilder())
        builder.add(obs, act, rew, end, trunc, extras)
        return self._store(env_index, builder.build(final_obs)) if bool(end) or bool(trunc) else None

    def finish_episode(self, env_index: int, final_obs: Any = None) -> int | None:
        """Store the steps recorded so far for ``env_index`` as a finished episode (e.g. cut by an env reset)."""
        builder = self._builders.get(env_index)
        return self._store(env_index, builder.build(final_obs)) if builder is not None and len(builder) > 0 else None

    def publish_pending(self) -> list[int]:
        """Store every episode still being collected as it stands (an open episode: replaced by its longer self at
        the next call or at its end); returns their ids."""
        for env_index, builder in sorted(self._builders.items()):
            if len(builder) > 0:
                self._open[env_index] = self._store(env_index, builder.build(keep=True))
        return sorted(self._open.values())

    @property
    def open_episodes(self) -> dict[int, int]:
        """Env index -> id of its open episode (stored by :meth:`publish_pending`, still being collected)."""
        return dict(self._open)

    def _store(self, env_index: int, episode: Episode) -> int:
        """Add ``episode`` of ``env_index`` in place of its open episode, if any, whose sampling counts it keeps."""
        counts = {}
        if (old := self._open.pop(env_index, None)) is not None:
            counts = self._remove(old)
        new = self.add_episode(episode)
        for key, count in counts.items():
            self._counter(key)[new] += count
        return new

    def _remove(self, i: int) -> dict[str, int]:
        """Delete episode ``i``, moving the later steps down over it; returns its sampling counts."""
        start, n = int(self._starts[i]), int(self._lengths[i])
        for arr in self._data.values():
            arr[start : self._tail - n] = arr[start + n : self._tail]  # numpy copies overlapping ranges safely
        self._tail -= n
        self._starts = np.delete(self._starts, i)
        self._starts[i:] -= n
        self._lengths = np.delete(self._lengths, i)
        self._final.pop(i)
        counts = {key: int(c[i]) for key, c in self._counts.items()}
        self._counts = {key: np.delete(c, i) for key, c in self._counts.items()}
        self._open = {e: j - (j > i) for e, j in self._open.items()}
        return counts

    @property
    def pending_steps(self) -> dict[int, int]:
        """Steps recorded by :meth:`add_step` per env index whose episode has not ended yet (published or not)."""
        return {i: len(b) for i, b in self._builders.items() if len(b) > 0}

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more steps: compact the live steps to the front, doubling the capacity if needed."""
        capacity = len(self._data["rew"])
        if self._tail + n <= capacity:
            return
        live, required = self.num_steps, self.num_steps + n
        new_capacity = max(capacity, 2 * required)  # next compaction >= `live` steps away
        for key, arr in self._data.items():
            dest = arr if new_capacity == capacity else np.zeros((new_capacity, *arr.shape[1:]), arr.dtype)
            dest[:live] = arr[self._head : self._tail]  # numpy buffers overlapping copies
            self._data[key] = dest
        self._starts -= self._head
        self._head, self._tail = 0, live

    def _evict(self) -> None:
        """Drop whole oldest episodes while more than ``capacity_steps`` steps are held (the newest stays)."""
        if self.capacity_steps is None:
            return
        k, total = 0, self.num_steps
        while k < self.num_episodes - 1 and total > self.capacity_steps:
            total -= int(self._lengths[k])
            k += 1
        if k > 0:
            self._head = int(self._starts[k])
            self._starts, self._lengths, self._final = self._starts[k:], self._lengths[k:], self._final[k:]
            self._counts = {key: c[k:] for key, c in self._counts.items()}
            self._open = {e: j - k for e, j in self._open.items() if j >= k}
            self.num_evicted += k

    # --- reading ---------------------------------------------------------------------------------------------
    def _index(self, i: int) -> int:
        if not -self.num_episodes <= i < self.num_episodes:
            raise ValueError(f"episode id {i} is out of range; the buffer holds {self.num_episodes} episodes")
        return int(i) % self.num_episodes

    def episode(self, i: int) -> Episode:
        """A copy of episode ``i`` (0 is the oldest held, -1 the newest)."""
        i = self._index(i)
        start, stop = self._starts[i], self._starts[i] + self._lengths[i]
        steps = {key: arr[start:stop].copy() for key, arr in self._data.items()}
        extras = {key[len(EXTRA_PREFIX) :]: steps.pop(key) for key in list(steps) if key.startswith(EXTRA_PREFIX)}
        final = self._final[i]
        return Episode(**steps, extras=extras, final_obs=None if final is None else final.copy())

    # --- sampling --------------------------------------------------------------------------------------------
    def _counter(self, counter_key: str) -> np.ndarray:
        if not isinstance(counter_key, str) or not counter_key.isidentifier():
            raise ValueError(f"counter_key {counter_key!r} is not allowed; use a Python identifier such as 'tokenizer'")
        return self._counts.setdefault(counter_key, np.zeros(self.num_episodes, np.int64))

    def probabilities(
        self, weights: str | Sequence[float] | None = None, counter_key: str = "default", count_alpha: float = 5.0
    ) -> np.ndarray:
        """Probability of drawing each episode under ``weights``, oldest first (see
        :func:`~agents.common.episode_sampling.episode_probabilities`).

        ``None``/``"uniform"``, ``"length"`` (DIAMOND's default), ``"recency"`` (DIAMOND's chunks,
        ``RECENCY_WEIGHTS``) or a list of chunk weights summing to 1, or ``"count"``: Delta-IRIS,
        ``p_i ∝ (1 / (1 + count_i)) ** count_alpha`` with the draws of ``counter_key``.
        """
        if self.num_episodes == 0:
            raise ValueError("the EpisodeBuffer holds no episodes yet; add one before sampling")
        counts = self._counter(counter_key) if isinstance(weights, str) and weights == "count" else None
        return episode_probabilities(weights, self._lengths, counts, count_alpha)

    def sample_segments(
        self,
        batch_size: int,
        seq_len: int,
        rng: np.random.Generator,
        can_sample_beyond_end: bool = False,
        weights: str | Sequence[float] | None = None,
        counter_key: str = "default",
        count_alpha: float = 5.0,
        extra: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> Segment:
        """Draw ``batch_size`` windows of ``seq_len`` steps as DIAMOND's ``BatchSampler.sample`` does.

        Episodes are drawn by :meth:`probabilities`, windows placed by DIAMOND's padding rules
        (:func:`~agents.common.episode_sampling.draw_segment_starts`: both sides with ``can_sample_beyond_end``,
        else the left only). ``extra(rng)``, drawn after them, gives more windows (episode ids, starts) to append,
        such as DIAMOND's windows around rare events. Every draw is added to the counts of ``counter_key``
        afterwards.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}")
        if int(batch_size) < (0 if extra is not None else 1) or int(seq_len) < 1:  # extra may give every window
            raise ValueError(f"batch_size={batch_size}, seq_len={seq_len}; both must be >= 1 (batch_size >= 0 "
                             "with extra)")
        p = self.probabilities(weights, counter_key, count_alpha)
        episode_ids, starts = draw_segment_starts(self._lengths, p, batch_size, seq_len, rng, can_sample_beyond_end)
        if extra is not None:
            more_ids, more_starts = extra(rng)
            episode_ids, starts = np.concatenate((episode_ids, more_ids)), np.concatenate((starts, more_starts))
        self.count_draws(episode_ids, counter_key)
        return self.get_segments(episode_ids, starts, seq_len)

    def get_segments(self, episode_ids: Sequence[int], starts: Sequence[int], seq_len: int) -> Segment:
        """Windows ``[start, start + seq_len)`` of the given episodes, zero-padded outside the episode, with each
        episode's ``final_obs`` (zeros and ``has_final_obs`` False where it has none)."""
        ids, starts = np.asarray(episode_ids, np.int64), np.asarray(starts, np.int64)
        if ids.ndim != 1 or ids.shape != starts.shape:
            raise ValueError(f"episode_ids {ids.shape} and starts {starts.shape} must be 1-D of the same length")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_episodes):
            raise ValueError(f"episode ids {ids.tolist()} out of range; the buffer holds {self.num_episodes}")
        lengths = self._lengths[ids][:, None]
        t = starts[:, None] + np.arange(seq_len)  # [B, L] timesteps inside each episode
        mask = (t >= 0) & (t < lengths)
        index = self._starts[ids][:, None] + np.clip(t, 0, lengths - 1)
        out = {}
        for key, arr in self._data.items():
            out[key] = arr[index]
            out[key][~mask] = 0
        extras = {key[len(EXTRA_PREFIX) :]: out.pop(key) for key in list(out) if key.startswith(EXTRA_PREFIX)}
        obs_shape, obs_dtype = self.spec["obs"]
        final_obs, has_final = np.zeros((len(ids), *obs_shape), obs_dtype), np.zeros(len(ids), np.bool_)
        for row, i in enumerate(ids):
            if (final := self._final[i]) is not None:
                final_obs[row], has_final[row] = final, True
        return Segment(**out, mask=mask, episode_ids=ids, starts=starts, extras=extras, final_obs=final_obs,
                       has_final_obs=has_final)

    def sample_steps(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(episode_ids, timesteps)`` of ``batch_size`` steps drawn uniformly over all held steps."""
        if self.num_steps == 0:
            raise ValueError("the EpisodeBuffer holds no episodes yet; add one before sampling")
        return self._locate(rng.integers(0, self.num_steps, batch_size))

    def find_steps(self, key: str, predicate: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(episode_ids, timesteps)`` of the held steps whose ``key`` (``"rew"``, ``"end"``, ...) satisfies
        ``predicate``, a function of the array of all held values returning a boolean array, oldest first."""
        if key not in self._data:
            raise ValueError(f"key {key!r} is not a field of this buffer; fields: {', '.join(self._data)}")
        return self._locate(np.flatnonzero(predicate(self._data[key][self._head : self._tail])))

    def _locate(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Episode ids and timesteps of offsets into the held steps (episodes are stored contiguously, in order)."""
        offsets = self._starts - self._head
        ids = np.searchsorted(offsets, flat, side="right") - 1
        return ids, flat - offsets[ids]

    # --- persistence and offline datasets (agents.common.episode_io) ---------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write every held episode and the sampling counts to one .npz, atomically (steps still being collected
        with :meth:`add_step` are not saved)."""
        from agents.common.episode_io import save_episode_buffer

        save_episode_buffer(self, path)

    @classmethod
    def load(cls, path: str | Path) -> EpisodeBuffer:
        """Read a file written by :meth:`save`; anything inconsistent is refused with a ValueError naming it."""
        from agents.common.episode_io import load_episode_buffer

        return load_episode_buffer(cls, path)

    def to_d4rl_dict(self) -> dict[str, np.ndarray]:
        """Flat D4RL arrays: observations, actions, rewards, terminals, timeouts, episode_starts, infos/<extra>."""
        from agents.common.episode_io import to_d4rl_dict

        return to_d4rl_dict(self)

    @classmethod
    def from_d4rl_dict(cls, data: Mapping[str, np.ndarray], capacity_steps: int | None = None) -> EpisodeBuffer:
        """Episodes from D4RL-layout arrays, cut at ``episode_starts`` when given, else after every terminal or
        timeout (a trailing unfinished episode is kept). ``infos/<name>`` arrays with one row per step become
        extras; other keys (``next_observations``, ``metadata/*``) are ignored."""
        from agents.common.episode_io import from_d4rl_dict

        return from_d4rl_dict(cls, data, capacity_steps)
