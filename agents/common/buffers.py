"""Replay storage of the zoo: SB3's ``ReplayBuffer`` for off-policy agents, the episode buffer for the rest.

* :class:`ReplayBuffer` is stable-baselines3's own, re-exported; :func:`save_replay_buffer` and
  :func:`load_replay_buffer` move its arrays to and from an ``.npz`` (never pickle).
* :class:`~agents.common.episode_buffer.EpisodeBuffer` (with :class:`Episode`, :class:`EpisodeBuilder`,
  :class:`Segment` and ``RECENCY_WEIGHTS``) lives in :mod:`agents.common.episode_buffer` and is re-exported here,
  so ``from agents.common.buffers import EpisodeBuffer`` keeps working.

The .npz helpers both buffers share are here: files are written through
:func:`agents.common.checkpoint.atomic_write` (a temporary file beside the destination, renamed into place), and
read with ``np.load(path, allow_pickle=False)`` only.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

from agents.common.checkpoint import atomic_write

if TYPE_CHECKING:
    from agents.common.episode_buffer import RECENCY_WEIGHTS, Episode, EpisodeBuffer, EpisodeBuilder, Segment

__all__ = [
    "RECENCY_WEIGHTS",
    "Episode",
    "EpisodeBuffer",
    "EpisodeBuilder",
    "ReplayBuffer",
    "Segment",
    "load_replay_buffer",
    "save_replay_buffer",
]

Shape = tuple[int, ...]
# Names of agents.common.episode_buffer re-exported lazily: that module imports the .npz helpers below, so importing
# it eagerly here would be circular.
_EPISODE_NAMES = frozenset({"RECENCY_WEIGHTS", "Episode", "EpisodeBuffer", "EpisodeBuilder", "Segment"})


def __getattr__(name: str) -> Any:
    """Resolve the re-exported episode-storage names on first use (PEP 562)."""
    if name in _EPISODE_NAMES:
        from agents.common import episode_buffer

        return getattr(episode_buffer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------------------------
# .npz I/O shared by both buffers
# ----------------------------------------------------------------------------------------------------------------
def atomic_savez(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as an uncompressed .npz; a crash mid-write leaves any previous file intact."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz with ``allow_pickle=False``; object arrays and non-archives are refused."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read '{path}' as an .npz archive: {e}") from None
    except ValueError:  # numpy found no .npy/.npz magic and would have to unpickle the file
        raise ValueError(f"'{path}' is not an .npz archive; pickled or unknown content is never loaded") from None
    if not hasattr(archive, "files"):  # np.load gave a plain ndarray
        raise ValueError(f"'{path}' is a single .npy array; expected an .npz archive of named arrays")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as e:
                if "Object arrays" not in str(e):
                    raise ValueError(f"'{path}': array '{key}' cannot be read: {e}") from None
                raise ValueError(
                    f"'{path}': array '{key}' is an object array; only numeric and bool arrays are allowed "
                    "(pickled data is never loaded)"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"'{path}': array '{key}' cannot be read: {e}") from None
    return arrays


def check_array(where: str, name: str, arr: np.ndarray, shape: Shape, dtype: np.dtype) -> None:
    """Raise a ValueError naming ``name`` when ``arr`` does not have exactly ``shape`` and ``dtype``."""
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise ValueError(
            f"{where}: array '{name}' has shape {arr.shape} and dtype {arr.dtype}; "
            f"expected shape {tuple(shape)} and dtype {np.dtype(dtype)}"
        )


# ----------------------------------------------------------------------------------------------------------------
# SB3 ReplayBuffer persistence
# ----------------------------------------------------------------------------------------------------------------
def _replay_arrays(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    if isinstance(buffer, DictReplayBuffer) or not isinstance(buffer, ReplayBuffer):
        raise TypeError(f"expected a stable_baselines3 ReplayBuffer with array observations, got {type(buffer)}")
    names = ["observations", "actions", "rewards", "dones", "timeouts"]
    if not buffer.optimize_memory_usage:
        names.insert(1, "next_observations")
    return {name: getattr(buffer, name) for name in names}


def save_replay_buffer(buffer: ReplayBuffer, path: str | Path) -> None:
    """Write an SB3 ``ReplayBuffer``'s arrays, ``pos`` and ``full`` to ``path`` (.npz), atomically."""
    arrays = _replay_arrays(buffer)
    arrays["pos"] = np.asarray(buffer.pos, dtype=np.int64)
    arrays["full"] = np.asarray(buffer.full, dtype=np.bool_)
    atomic_savez(path, arrays)


def load_replay_buffer(buffer: ReplayBuffer, path: str | Path) -> ReplayBuffer:
    """Fill ``buffer`` in place from a file written by :func:`save_replay_buffer` and return it.

    Every array is checked against the buffer's own shape and dtype before anything is assigned, so a refused file
    leaves the buffer untouched.
    """
    expected = {name: (arr.shape, arr.dtype) for name, arr in _replay_arrays(buffer).items()}
    expected["pos"], expected["full"] = ((), np.dtype(np.int64)), ((), np.dtype(np.bool_))
    data = read_npz(path)
    if set(data) != set(expected):
        raise ValueError(
            f"'{path}' holds arrays {sorted(data)}; this ReplayBuffer "
            f"(optimize_memory_usage={buffer.optimize_memory_usage}) expects {sorted(expected)}"
        )
    for name, (shape, dtype) in expected.items():
        check_array(f"'{path}'", name, data[name], shape, dtype)
    pos = int(data["pos"])
    if not 0 <= pos < buffer.buffer_size:
        raise ValueError(f"'{path}': pos={pos} is outside [0, buffer_size={buffer.buffer_size})")
    for name in expected:
        if name not in ("pos", "full"):
            getattr(buffer, name)[...] = data[name]
    buffer.pos, buffer.full = pos, bool(data["full"])
    return buffer
