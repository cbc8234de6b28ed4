"""Gymnasium spaces <-> JSON, so that a checkpoint can describe the spaces it was trained on without pickle."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from agents.common.checkpoint import CheckpointError


def _array(values: np.ndarray) -> list | float:
    """Encode a bound array compactly: a single number when all entries are equal (inf as a string)."""
    flat = np.unique(values)
    as_json = [str(v) if not np.isfinite(v) else float(v) for v in values.reshape(-1)]
    if flat.size == 1:
        return as_json[0]
    return as_json


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": _array(space.low),
            "high": _array(space.high),
        }
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(v) for k, v in space.spaces.items()}}
    raise ValueError(f"cannot describe a {type(space).__name__} in a checkpoint; allowed: Box, Discrete, "
                     "MultiDiscrete, MultiBinary, Dict")


def _bound(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = np.asarray([float(v) for v in value] if isinstance(value, list) else float(value), dtype=np.float64)
    return np.broadcast_to(values.reshape(shape) if values.ndim else values, shape).astype(dtype)


def space_from_json(desc: Any) -> spaces.Space:
    try:
        kind = desc["type"]
        if kind == "Discrete":
            return spaces.Discrete(int(desc["n"]), start=int(desc.get("start", 0)))
        if kind == "MultiDiscrete":
            return spaces.MultiDiscrete([int(n) for n in desc["nvec"]])
        if kind == "MultiBinary":
            return spaces.MultiBinary(desc["n"])
        if kind == "Box":
            shape = tuple(int(s) for s in desc["shape"])
            dtype = np.dtype(desc["dtype"])
            return spaces.Box(_bound(desc["low"], shape, dtype), _bound(desc["high"], shape, dtype), dtype=dtype)
        if kind == "Dict":
            return spaces.Dict({k: space_from_json(v) for k, v in desc["spaces"].items()})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"invalid space description {desc!r} in meta.json ({e})") from None
    raise CheckpointError(f"unknown space type {desc.get('type')!r} in meta.json; allowed: Box, Discrete, "
                          "MultiDiscrete, MultiBinary, Dict")


def describe_space(space: spaces.Space) -> str:
    """Short human description used in error messages, e.g. ``Box(-1.0, 1.0, (6,), float32)``."""
    if isinstance(space, spaces.Box):
        low = float(space.low.min()) if space.low.size else 0.0
        high = float(space.high.max()) if space.high.size else 0.0
        return f"Box({low}, {high}, {space.shape}, {np.dtype(space.dtype).name})"
    return repr(space)
