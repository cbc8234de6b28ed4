"""An :class:`~agents.common.episode_buffer.EpisodeBuffer` on disk (.npz) and in the D4RL layout.

The buffer's ``save``/``load``/``to_d4rl_dict``/``from_d4rl_dict`` delegate here; call those methods, not these
functions. Files go through the .npz helpers of :mod:`agents.common.buffers`: written atomically, read without
pickle, and every array is checked before a buffer is built from it.

This module reads and restores the buffer's internal arrays (``_data``, ``_starts``, ``_lengths``, ``_counts``,
``_final``, ``_builders``): it is the buffer's persistence, kept apart so that the storage itself stays readable in one
sitting. Optional arrays (files written before they existed load without them):

* ``final_obs [E, *obs_shape]`` and ``has_final_obs [E]``: each episode's observation after its last action;
* ``pending.env_index [k]``, ``pending.lengths [k]`` and ``pending.<field>`` (the steps concatenated): the steps of
  episodes still being collected by ``add_step``, so that a run resumed in the same process continues them;
  ``pending.open_episode [k]``: the id of each one's stored open copy (``publish_pending``), -1 where none.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from agents.common.buffers import atomic_savez, check_array, read_npz
from agents.common.episode_buffer import (
    CORE_FIELDS,
    EXTRA_PREFIX,
    Episode,
    EpisodeBuffer,
    EpisodeBuilder,
    coerce_array,
)

__all__ = ["COUNT_PREFIX", "PENDING_PREFIX", "from_d4rl_dict", "load_episode_buffer", "save_episode_buffer",
           "to_d4rl_dict"]

COUNT_PREFIX = "count."
PENDING_PREFIX = "pending."
FINAL_FIELDS = ("final_obs", "has_final_obs")


# ----------------------------------------------------------------------------------------------------------------
# .npz files
# ----------------------------------------------------------------------------------------------------------------
def save_episode_buffer(buffer: EpisodeBuffer, path: str | Path) -> None:
    """Write every held episode of ``buffer`` and its sampling counts to one .npz, atomically."""
    arrays = {key: arr[buffer._head : buffer._tail] for key, arr in buffer._data.items()}
    arrays["lengths"], arrays["episode_starts"] = buffer._lengths, buffer._starts - buffer._head
    arrays.update({COUNT_PREFIX + key: c for key, c in buffer._counts.items()})
    arrays["capacity_steps"] = np.asarray(-1 if buffer.capacity_steps is None else buffer.capacity_steps, np.int64)
    arrays["num_evicted"] = np.asarray(buffer.num_evicted, np.int64)
    obs_shape, obs_dtype = buffer.spec["obs"]
    arrays["has_final_obs"] = np.array([f is not None for f in buffer._final], np.bool_)
    arrays["final_obs"] = np.zeros((buffer.num_episodes, *obs_shape), obs_dtype)
    for i, final in enumerate(buffer._final):
        if final is not None:
            arrays["final_obs"][i] = final
    arrays.update(_pending_arrays(buffer))
    atomic_savez(path, arrays)


def _pending_arrays(buffer: EpisodeBuffer) -> dict[str, np.ndarray]:
    """The steps of the episodes still being collected, concatenated env after env."""
    pending = {i: b for i, b in sorted(buffer._builders.items()) if len(b) > 0}
    if not pending:
        return {}
    out = {PENDING_PREFIX + "env_index": np.array(list(pending), np.int64),
           PENDING_PREFIX + "lengths": np.array([len(b) for b in pending.values()], np.int64),
           PENDING_PREFIX + "open_episode": np.array([buffer._open.get(i, -1) for i in pending], np.int64)}
    for key, (shape, dtype) in buffer.spec.items():
        name = key[len(EXTRA_PREFIX) :] if key.startswith(EXTRA_PREFIX) else key
        steps = [np.stack(b._steps[name]) for b in pending.values()]
        out[PENDING_PREFIX + key] = np.concatenate([coerce_array(key, s, (len(s), *shape), dtype) for s in steps])
    return out


def _restore_pending(buffer: EpisodeBuffer, data: Mapping[str, np.ndarray], where: str) -> None:
    """Builders of ``buffer`` from the ``pending.*`` arrays of ``data``, checked against the buffer's spec."""
    keys = sorted(k for k in data if k.startswith(PENDING_PREFIX))
    if not keys:
        return
    expected = sorted(PENDING_PREFIX + k for k in ("env_index", "lengths", "open_episode", *buffer.spec))
    if keys not in (expected, [k for k in expected if k != PENDING_PREFIX + "open_episode"]):  # older files: none
        raise ValueError(f"{where}: pending arrays {keys}; expected exactly {expected}")
    index, lengths = data[PENDING_PREFIX + "env_index"], data[PENDING_PREFIX + "lengths"]
    n = len(lengths) if lengths.ndim == 1 else -1
    check_array(where, "pending.env_index", index, (n,), np.dtype(np.int64))
    check_array(where, "pending.lengths", lengths, (n,), np.dtype(np.int64))
    if (lengths < 1).any() or (index < 0).any() or len(np.unique(index)) != n:
        raise ValueError(f"{where}: pending env indices {index.tolist()} must be distinct and >= 0, lengths "
                         f"{lengths.tolist()} >= 1")
    opened = data.get(PENDING_PREFIX + "open_episode", np.full(n, -1, np.int64))
    check_array(where, "pending.open_episode", opened, (n,), np.dtype(np.int64))
    stored = opened[opened >= 0]
    if (opened < -1).any() or (stored >= buffer.num_episodes).any() or len(np.unique(stored)) != len(stored) or any(
            buffer._lengths[j] > length for j, length in zip(opened.tolist(), lengths.tolist(), strict=True) if j >= 0):
        raise ValueError(f"{where}: pending open_episode {opened.tolist()} must name distinct held episodes (of "
                         f"{buffer.num_episodes}) no longer than their pending steps {lengths.tolist()}, or be -1")
    buffer._open = {e: j for e, j in zip(index.tolist(), opened.tolist(), strict=True) if j >= 0}
    total = int(lengths.sum())
    steps = {}
    for key, (shape, dtype) in buffer.spec.items():
        steps[key] = coerce_array(PENDING_PREFIX + key, data[PENDING_PREFIX + key], (total, *shape), dtype)
    offsets = np.cumsum(lengths) - lengths
    for env_index, start, length in zip(index.tolist(), offsets.tolist(), lengths.tolist(), strict=True):
        builder = EpisodeBuilder()
        for key, arr in steps.items():
            name = key[len(EXTRA_PREFIX) :] if key.startswith(EXTRA_PREFIX) else key
            builder._steps[name] = list(arr[start : start + length])
        buffer._builders[env_index] = builder


def check_episode_starts(starts: np.ndarray, num_steps: int, where: str) -> None:
    """A ValueError naming ``where`` unless ``starts`` are episode offsets: 1-D, from 0, strictly increasing,
    below ``num_steps``."""
    if num_steps == 0 or starts.ndim != 1 or len(starts) == 0 or starts[0] != 0 or (np.diff(starts) < 1).any() \
            or starts[-1] >= num_steps:
        shown = starts.ravel().tolist()[:8]
        raise ValueError(f"{where}: episode_starts {shown} must increase strictly from 0 below {num_steps} steps")


def _check_episode_file(data: Mapping[str, np.ndarray], where: str) -> np.ndarray:
    """The offset of each episode in ``data`` (read from ``where``); a ValueError names whatever in it is not a
    consistent EpisodeBuffer file."""
    required = {*CORE_FIELDS, "lengths", "episode_starts", "capacity_steps", "num_evicted"}
    if missing := sorted(required - set(data)):
        raise ValueError(f"{where} is missing array(s) {missing}; an EpisodeBuffer file holds {sorted(required)}")
    optional = (EXTRA_PREFIX, COUNT_PREFIX, PENDING_PREFIX)
    if unknown := sorted(k for k in data if k not in required | set(FINAL_FIELDS) and not k.startswith(optional)):
        raise ValueError(f"{where} holds unknown array(s) {unknown}; allowed: {sorted(required)}, "
                         f"{', '.join(FINAL_FIELDS)}, extra.*, count.*, pending.*")
    if (FINAL_FIELDS[0] in data) != (FINAL_FIELDS[1] in data):
        raise ValueError(f"{where}: 'final_obs' and 'has_final_obs' come together; it holds only one of them")
    for key in ("capacity_steps", "num_evicted"):
        check_array(where, key, data[key], (), np.dtype(np.int64))
    if data["num_evicted"] < 0:
        raise ValueError(f"{where}: num_evicted={int(data['num_evicted'])}; expected >= 0")
    lengths = data["lengths"]
    check_array(where, "lengths", lengths, (len(lengths),) if lengths.ndim == 1 else (-1,), np.dtype(np.int64))
    if (lengths < 1).any():
        raise ValueError(f"{where}: every episode length must be >= 1, found {lengths.min()}")
    num_steps, num_episodes = int(lengths.sum()), len(lengths)
    offsets = np.cumsum(lengths) - lengths
    if data["episode_starts"].shape != offsets.shape or (data["episode_starts"] != offsets).any():
        raise ValueError(f"{where}: 'episode_starts' do not match the cumulative sums of 'lengths'")
    fixed = {"rew": np.float32, "end": np.bool_, "trunc": np.bool_}
    for key, arr in data.items():
        if key in CORE_FIELDS or key.startswith(EXTRA_PREFIX):
            if arr.ndim == 0 or arr.shape[0] != num_steps:
                raise ValueError(f"{where}: lengths sum to {num_steps} steps but '{key}' has shape {arr.shape}")
            if key in fixed:
                check_array(where, key, arr, (num_steps,), np.dtype(fixed[key]))
        elif key.startswith(COUNT_PREFIX):
            check_array(where, key, arr, (num_episodes,), np.dtype(np.int64))
            if (arr < 0).any():
                raise ValueError(f"{where}: '{key}' holds negative counts; expected counts >= 0")
    if "final_obs" in data:
        check_array(where, "has_final_obs", data["has_final_obs"], (num_episodes,), np.dtype(np.bool_))
        check_array(where, "final_obs", data["final_obs"], (num_episodes, *data["obs"].shape[1:]), data["obs"].dtype)
    return offsets


def load_episode_buffer(cls: type[EpisodeBuffer], path: str | Path) -> EpisodeBuffer:
    """A ``cls`` holding what :func:`save_episode_buffer` wrote to ``path``; anything inconsistent is refused."""
    data, where = read_npz(path), f"'{path}'"
    offsets = _check_episode_file(data, where)
    lengths, capacity = data["lengths"], int(data["capacity_steps"])
    extras = {k[len(EXTRA_PREFIX) :]: (v.shape[1:], v.dtype) for k, v in data.items() if k.startswith(EXTRA_PREFIX)}
    buffer = cls(
        data["obs"].shape[1:],
        data["obs"].dtype,
        data["act"].shape[1:],
        data["act"].dtype,
        None if capacity == -1 else capacity,
        extras,
    )
    buffer._data = {key: np.require(data[key], requirements=["C", "W"]) for key in buffer.spec}
    buffer._tail, buffer._starts, buffer._lengths = int(lengths.sum()), offsets, lengths.copy()
    for key in (k for k in data if k.startswith(COUNT_PREFIX)):
        buffer._counter(key[len(COUNT_PREFIX) :])[:] = data[key]
    buffer.num_evicted = int(data["num_evicted"])
    if "final_obs" in data:
        buffer._final = [f.copy() if has else None for f, has in zip(data["final_obs"], data["has_final_obs"],
                                                                     strict=True)]
    else:
        buffer._final = [None] * len(lengths)
    _restore_pending(buffer, data, where)
    buffer._evict()
    return buffer


# ----------------------------------------------------------------------------------------------------------------
# Offline datasets (D4RL layout)
# ----------------------------------------------------------------------------------------------------------------
def to_d4rl_dict(buffer: EpisodeBuffer) -> dict[str, np.ndarray]:
    """Flat D4RL arrays: observations, actions, rewards, terminals, timeouts, episode_starts, infos/<extra>."""
    live = {key: arr[buffer._head : buffer._tail].copy() for key, arr in buffer._data.items()}
    out = {
        "observations": live["obs"],
        "actions": live["act"],
        "rewards": live["rew"],
        "terminals": live["end"],
        "timeouts": live["trunc"],
        "episode_starts": buffer._starts - buffer._head,
    }
    out.update({f"infos/{name}": live[EXTRA_PREFIX + name] for name in buffer.extra_names})
    return out


def from_d4rl_dict(
    cls: type[EpisodeBuffer], data: Mapping[str, np.ndarray], capacity_steps: int | None = None
) -> EpisodeBuffer:
    """A ``cls`` holding the episodes of D4RL-layout arrays (see :meth:`EpisodeBuffer.from_d4rl_dict`)."""
    required = ("observations", "actions", "rewards", "terminals", "timeouts")
    if missing := [key for key in required if key not in data]:
        raise ValueError(f"D4RL dict is missing {missing}; it needs {list(required)}")
    obs, act = np.asarray(data["observations"]), np.asarray(data["actions"])
    n = len(obs)
    end = coerce_array("terminals", data["terminals"], (n,), np.dtype(np.bool_))
    trunc = coerce_array("timeouts", data["timeouts"], (n,), np.dtype(np.bool_))
    if "episode_starts" in data:
        starts = np.asarray(data["episode_starts"], np.int64)
        check_episode_starts(starts, n, "D4RL dict")
    else:
        ends = np.flatnonzero(end | trunc) + 1
        starts = np.concatenate([[0], ends[ends < n]]).astype(np.int64)
    extras = {k[len("infos/") :]: np.asarray(v) for k, v in data.items() if k.startswith("infos/")}
    extras = {k: v for k, v in extras.items() if v.ndim >= 1 and len(v) == n and k.isidentifier()}
    buffer = cls(
        obs.shape[1:],
        obs.dtype,
        act.shape[1:],
        act.dtype,
        capacity_steps,
        {k: (v.shape[1:], v.dtype) for k, v in extras.items()},
    )
    rewards = np.asarray(data["rewards"])
    for s, e in itertools.pairwise(np.append(starts, n)):
        sl = slice(int(s), int(e))
        episode = Episode(obs[sl], act[sl], rewards[sl], end[sl], trunc[sl], {k: v[sl] for k, v in extras.items()})
        buffer.add_episode(episode)
    return buffer
