"""Which episodes and windows an :class:`~agents.common.episode_buffer.EpisodeBuffer` draws: pure functions.

* Episode weights: uniform, proportional to length, DIAMOND's chunked recency weights
  (``sample_weights`` of https://github.com/eloialonso/diamond/blob/main/src/data/batch_sampler.py), or
  Delta-IRIS's count-based weights (``src/data/episode_count.py`` of vmicheli/delta-iris).
* Windows: DIAMOND's ``BatchSampler.sample`` padding rules for where a segment of ``seq_len`` steps starts.

Everything here works on the episode lengths and counts alone; the buffer gathers the steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "RECENCY_WEIGHTS",
    "WEIGHT_SCHEMES",
    "chunk_probabilities",
    "count_probabilities",
    "draw_event_segment_starts",
    "draw_segment_starts",
    "episode_probabilities",
    "length_probabilities",
]

#: DIAMOND's ``sample_weights``: the most recent quarter of the episodes gets 70% of the draws.
RECENCY_WEIGHTS: tuple[float, ...] = (0.1, 0.1, 0.1, 0.7)
WEIGHT_SCHEMES = ("uniform", "length", "recency", "count")


def length_probabilities(lengths: np.ndarray) -> np.ndarray:
    """``p_i ∝ length_i`` (DIAMOND's default)."""
    return lengths / lengths.sum()


def count_probabilities(counts: np.ndarray, count_alpha: float) -> np.ndarray:
    """Delta-IRIS: ``p_i ∝ (1 / (1 + count_i)) ** count_alpha``, rarely drawn episodes first."""
    p = (1.0 / (1.0 + counts)) ** float(count_alpha)
    return p / p.sum()


def chunk_probabilities(lengths: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """DIAMOND's chunks: the ``n`` episodes, oldest first, are cut in ``k = len(weights)`` chunks of ``n // k`` (the
    last also takes the ``n % k`` left over); chunk ``j`` gets mass ``weights[j]`` spread evenly inside it. Until
    ``n >= k`` DIAMOND uses :func:`length_probabilities`."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or (w > 1).any() or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"chunk weights {np.asarray(weights).tolist()}; expected numbers in [0, 1] summing to 1")
    n, k = len(lengths), len(w)
    if n < k:
        return length_probabilities(lengths)
    sizes = np.full(k, n // k)
    sizes[-1] += n % k
    return np.repeat(w / sizes, sizes)


def episode_probabilities(
    weights: str | Sequence[float] | None,
    lengths: np.ndarray,
    counts: np.ndarray | None = None,
    count_alpha: float = 5.0,
) -> np.ndarray:
    """Probability of drawing each of the episodes of ``lengths [n]`` (n >= 1) under ``weights``.

    * ``None``/``"uniform"``: every episode alike. ``"length"``: :func:`length_probabilities`.
    * ``"recency"`` (= ``RECENCY_WEIGHTS``) or a list ``[w_1, ..., w_k]`` summing to 1: :func:`chunk_probabilities`.
    * ``"count"``: :func:`count_probabilities` of ``counts [n]``, which must then be given.
    """
    if isinstance(weights, str) or weights is None:
        scheme = "uniform" if weights is None else weights
        if scheme == "uniform":
            return np.full(len(lengths), 1.0 / len(lengths))
        if scheme == "length":
            return length_probabilities(lengths)
        if scheme == "count":
            if counts is None:
                raise ValueError("sample weights 'count' need the draw counts of the episodes; got counts=None")
            return count_probabilities(counts, count_alpha)
        if scheme != "recency":
            raise ValueError(
                f"unknown sample weights {scheme!r}; choose one of: {', '.join(WEIGHT_SCHEMES)}, "
                "or a list of chunk weights summing to 1"
            )
        weights = RECENCY_WEIGHTS
    return chunk_probabilities(lengths, weights)


def draw_segment_starts(
    lengths: np.ndarray,
    p: np.ndarray,
    batch_size: int,
    seq_len: int,
    rng: np.random.Generator,
    can_sample_beyond_end: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(episode_ids, starts)`` of ``batch_size`` windows of ``seq_len`` steps, as DIAMOND's ``BatchSampler.sample``.

    Episodes are drawn with probabilities ``p``, then a timestep ``t`` uniformly inside each. With
    ``can_sample_beyond_end`` the window starts up to ``seq_len - 1`` steps before ``t`` and may pad on either side;
    otherwise it ends at ``min(length, t + 1 + U{0..seq_len-1})`` and pads only on the left (``start`` < 0).
    """
    episode_ids = rng.choice(len(lengths), size=batch_size, replace=True, p=p)
    lengths = lengths[episode_ids]
    timesteps = rng.integers(0, lengths)
    if can_sample_beyond_end:  # padding allowed both before the start and after the end
        starts = timesteps - rng.integers(0, seq_len, batch_size)
    else:  # padding allowed only before the start
        stops = np.minimum(lengths, timesteps + 1 + rng.integers(0, seq_len, batch_size))
        starts = stops - seq_len
    return episode_ids, starts


def draw_event_segment_starts(
    events: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int, seq_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(episode_ids, starts)`` of ``batch_size`` windows of ``seq_len`` steps that each hold an event: a kind of
    event is drawn uniformly among ``events`` (each ``(episode_ids, timesteps)`` of its steps, the empty kinds
    skipped), then one of its steps uniformly, then the step's place among the window's ``seq_len - 1`` transitions
    uniformly (windows may pad on either side, as with ``can_sample_beyond_end``)."""
    kinds = [(np.asarray(ids), np.asarray(ts)) for ids, ts in events if len(ids)]
    if not kinds:
        raise ValueError("no events to draw windows around: every kind of event is empty")
    kind = rng.integers(0, len(kinds), batch_size)
    episode_ids, starts = np.zeros(batch_size, np.int64), np.zeros(batch_size, np.int64)
    for row, k in enumerate(kind):
        ids, ts = kinds[k]
        j = rng.integers(0, len(ids))
        episode_ids[row], starts[row] = ids[j], ts[j] - rng.integers(0, max(1, seq_len - 1))
    return episode_ids, starts
