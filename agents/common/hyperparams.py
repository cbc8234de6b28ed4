"""Hyperparameters as JSON (configs, checkpoints) <-> the Python objects SB3 constructors expect.

The config files and ``meta.json`` hold only JSON values; the few SB3 arguments that are Python objects are
written as strings, in rl-zoo3's conventions:

- ``learning_rate: lin_3e-4``: a rate decayed linearly from 3e-4 to 0 over training;
- ``policy_kwargs.activation_fn: relu``: a ``torch.nn`` activation by name;
- ``train_freq: [4, step]``: the tuple form of SB3's ``train_freq``;
- ``optimizer: ademamix`` with ``optimizer_kwargs: {alpha: 8}``: the optimizer by name
  (:data:`agents.common.optim.OPTIMIZERS`), given to SB3 as ``policy_kwargs.optimizer_class`` /
  ``policy_kwargs.optimizer_kwargs``. ``adam`` is SB3's default and leaves ``policy_kwargs`` as it is, so that a
  policy's own Adam defaults (PPO's ``eps=1e-5``, StochDQN's fused Adam) stay; ``optimizer_kwargs``, when given,
  replace them, as ``policy_kwargs.optimizer_kwargs`` does in SB3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from agents.common.optim import check_optimizer_kwargs, optimizer_class

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
SB3_OPTIMIZER = "adam"  # what SB3's policies build when policy_kwargs names no optimizer_class


def _schedule(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if not value.startswith("lin_"):
            raise ValueError(f"{key}={value!r}: a schedule is written lin_<initial value>, e.g. lin_3e-4")
        try:
            start = float(value[4:])
        except ValueError:
            raise ValueError(f"{key}={value!r}: '{value[4:]}' is not a number; write e.g. lin_3e-4") from None
        return LinearSchedule(start=start, end=0.0, end_fraction=1.0)
    return value


def _activation(value: Any) -> Any:
    if isinstance(value, str):
        if value not in ACTIVATIONS:
            raise ValueError(f"unknown activation_fn '{value}'; choose one of: {', '.join(sorted(ACTIVATIONS))}")
        return ACTIVATIONS[value]
    return value


def decode_hyperparams(hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """JSON hyperparameters -> constructor keyword arguments."""
    kwargs = dict(hyperparams)
    for key in SCHEDULE_KEYS:
        if key in kwargs:
            kwargs[key] = _schedule(key, kwargs[key])
    if isinstance(kwargs.get("train_freq"), list | tuple):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    policy_kwargs = kwargs.get("policy_kwargs")
    if policy_kwargs:
        policy_kwargs = dict(policy_kwargs)
        if "activation_fn" in policy_kwargs:
            policy_kwargs["activation_fn"] = _activation(policy_kwargs["activation_fn"])
        kwargs["policy_kwargs"] = policy_kwargs
    if "optimizer" in kwargs or "optimizer_kwargs" in kwargs:
        _optimizer(kwargs)
    return kwargs


def _optimizer(kwargs: dict[str, Any]) -> None:
    """``optimizer`` / ``optimizer_kwargs`` -> SB3's ``policy_kwargs.optimizer_class`` / ``optimizer_kwargs``."""
    name = kwargs.pop("optimizer", None) or SB3_OPTIMIZER
    options = kwargs.pop("optimizer_kwargs", None) or {}
    cls = optimizer_class(name)
    check_optimizer_kwargs(name, options)
    policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
    clash = sorted({"optimizer_class", "optimizer_kwargs"} & set(policy_kwargs))
    if clash and (name != SB3_OPTIMIZER or options):
        raise ValueError(f"policy_kwargs.{clash[0]} and optimizer={name} both choose the optimizer; "
                         "use optimizer= and optimizer_kwargs= only")
    if name != SB3_OPTIMIZER:
        policy_kwargs["optimizer_class"] = cls
    if options:
        policy_kwargs["optimizer_kwargs"] = dict(options)
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs


def _to_json(key: str, value: Any) -> Any:
    if isinstance(value, LinearSchedule) and value.end == 0.0 and value.end_fraction == 1.0:
        return f"lin_{value.start}"
    if isinstance(value, type) and issubclass(value, nn.Module):
        names = {cls: name for name, cls in ACTIVATIONS.items()}
        if value in names:
            return names[value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(f"{key}[{i}]", v) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(
        f"hyperparameter '{key}' = {value!r} cannot be stored as JSON in a checkpoint; use a number, a string "
        "(e.g. learning_rate='lin_3e-4', activation_fn='relu') or a list"
    )


def encode_hyperparams(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments -> JSON hyperparameters (the inverse of :func:`decode_hyperparams`)."""
    return {key: _to_json(key, value) for key, value in kwargs.items()}
