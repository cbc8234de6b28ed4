"""Compose and validate the training config with Hydra (runners/configs), before anything runs.

Hydra's compose API is used rather than ``@hydra.main`` so that every mistake on the command line becomes one
line naming the value and what is allowed (exit status 2), and so that the run directory, logging and resume
stay the zoo's own. Arguments:

- ``agent=<id>`` (registry), ``env=<config name or any registered gymnasium id>``, ``preset=<tiny|cpu|paper|...>``
- ``<top-level key>=<value>`` (see configs/config.yaml), ``agent.<hyperparameter>=<value>``, ``env.<key>=<value>``
- a bare hyperparameter name is taken as ``agent.<name>`` (``learning_rate=1e-3``, ``optimizer=ademamix``,
  ``optimizer_kwargs.alpha=8``); ``agent.policy_kwargs`` and ``agent.optimizer_kwargs`` take any key of their own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agents.common.hyperparams import decode_hyperparams
from agents.common.registry import REGISTRY, get_spec
from runners.cli import UsageError, parse_deterministic

CONFIG_DIR = Path(__file__).parent / "configs"
GROUPS = ("agent", "env", "preset")
CHOICES = {"device": ("auto", "cpu", "cuda"), "vec_env": ("dummy", "subproc")}
POSITIVE = ("total_timesteps", "n_envs", "eval_episodes", "save_freq", "keep_checkpoints")
NON_NEGATIVE = ("eval_freq", "seed", "verbose", "torch_threads")
# Hyperparameters checked by name (whichever agent has them): sizes and counts, and fractions.
AGENT_POSITIVE = ("n_steps", "n_epochs", "gradient_steps", "learning_rate", "train_freq", "target_update_interval",
                  "context", "chunk_size", "n_layer", "n_head", "n_heads", "embed_dim", "hidden_dim", "log_interval")
AGENT_NON_NEGATIVE = ("learning_starts", "warmup_steps", "weight_decay", "kl_weight", "vf_coef", "train_steps")
AGENT_UNIT_INTERVAL = ("gae_lambda", "dropout", "exploration_fraction", "exploration_initial_eps",
                       "exploration_final_eps", "rew_end_event_fraction")
OPEN_DICTS = ("agent.policy_kwargs", "agent.optimizer_kwargs")  # their keys are the policy's / optimizer's own
OPTIMIZER_KEYS = ("optimizer", "optimizer_kwargs")
# Keys that may change when a run is resumed; everything else is the run's own config.
RESUMABLE = ("total_timesteps", "device", "progress_bar", "verbose", "debug", "resume", "eval_episodes",
             "eval_deterministic", "torch_threads", "nan_guard", "distributed")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _registered_gym_id(env_id: str) -> bool:
    import envs  # noqa: F401  (registers the zoo's envs and the ALE)

    return env_id in gym.registry


def _group_overrides(pairs: dict[str, str]) -> list[str]:
    for group in ("agent", "env"):
        if group not in pairs:
            raise UsageError(f"missing {group}=; e.g. python -m runners.train agent=dqn env=cartpole")
    get_spec(pairs["agent"])
    if pairs["agent"] not in group_options("agent"):
        raise UsageError(f"agent '{pairs['agent']}' has no config file runners/configs/agent/{pairs['agent']}.yaml")
    overrides = [f"agent={pairs['agent']}"]
    env = pairs["env"]
    if env in group_options("env"):
        overrides.append(f"env={env}")
    elif _registered_gym_id(env):
        overrides += ["env=gym", f"env.id={env}", f"env.name={env.replace('/', '_')}"]
    else:
        raise UsageError(
            f"unknown env '{env}'; choose a config ({', '.join(group_options('env'))}) or a registered gymnasium id"
        )
    preset = pairs.get("preset", "default")
    if preset not in group_options("preset"):
        raise UsageError(f"unknown preset '{preset}'; choose one of: {', '.join(group_options('preset'))}")
    overrides.append(f"preset={preset}")
    return overrides


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        raise UsageError(" ".join(line for line in lines if not line.startswith(("full_key", "object_type")))) from None


def _check_type(key: str, reference: Any, value: Any) -> Any:
    """The value of an override must have the type of the default it replaces (ints may stand for floats)."""
    if reference is None or value is None:
        return value
    kind = type(reference).__name__
    if isinstance(reference, bool):
        ok = isinstance(value, bool)
    elif isinstance(reference, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # total_timesteps=1e5
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(reference, float):
        ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.startswith("lin_")
        )
        kind = "float (or lin_<float> for a linear schedule)"
    elif isinstance(reference, DictConfig | ListConfig):
        ok = isinstance(value, DictConfig | ListConfig | dict | list) or key.endswith("train_freq")
    else:  # strings: e.g. ent_coef=auto or a number
        ok = not isinstance(value, DictConfig | ListConfig)
    if key.endswith("train_freq") and isinstance(value, int | ListConfig | list):
        ok = True
    if not ok:
        raise UsageError(f"{key}={value!r} has the wrong type: expected {kind} like the default {reference!r}")
    return value


def _validate(cfg: DictConfig) -> None:
    for key in POSITIVE:
        if cfg[key] <= 0:
            raise UsageError(f"{key}={cfg[key]} must be a positive integer")
    for key in NON_NEGATIVE:
        if cfg[key] < 0:
            raise UsageError(f"{key}={cfg[key]} must be >= 0")
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise UsageError(f"{key}={cfg[key]!r} is not allowed; choose one of: {', '.join(allowed)}")
    parse_deterministic("eval_deterministic", cfg.eval_deterministic)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("device=cuda but no CUDA device is available here; use device=auto or device=cpu")
    try:
        decode_hyperparams(OmegaConf.to_container(cfg.agent, resolve=True))  # type: ignore[arg-type]
    except ValueError as e:
        raise UsageError(str(e)) from None
    for key, value in cfg.agent.items():
        name = str(key)
        if name == "train_freq" and isinstance(value, ListConfig) and value:
            value = value[0]  # [4, step]
        # a list of numbers (one per component: diamond's learning_rate, weight_decay) obeys the rule of its key
        items = list(value) if isinstance(value, ListConfig) else [value]
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise UsageError(f"agent.{name}={shown} must be a finite number")
            if isinstance(item, int | float) and not isinstance(item, bool):
                if (name.endswith("_size") or name in AGENT_POSITIVE) and item <= 0:
                    raise UsageError(f"agent.{name}={shown} must be > 0")
                if name in AGENT_NON_NEGATIVE and item < 0:
                    raise UsageError(f"agent.{name}={shown} must be >= 0")
                if name in AGENT_UNIT_INTERVAL and not 0.0 <= item <= 1.0:
                    raise UsageError(f"agent.{name}={shown} must be in [0, 1]")
                if name in ("gamma", "tau") and not 0.0 < item <= 1.0:
                    raise UsageError(f"agent.{name}={shown} must be in (0, 1]")


def compose_train_config(argv: list[str], pairs: dict[str, str]) -> DictConfig:
    """Build the resolved training config from ``key=value`` pairs, or raise UsageError naming the bad value."""
    overrides = _group_overrides(pairs)
    reference = _compose(overrides)
    values: list[str] = []
    for key, value in pairs.items():
        if key in GROUPS:
            continue
        if key.startswith(("+", "~", "hydra")):
            raise UsageError(f"'{key}={value}': adding or deleting keys is not supported; allowed keys are those of "
                             "runners/configs/config.yaml, agent.<hyperparameter> and env.<key>")
        head = key.split(".")[0]
        if head not in reference and head in reference.agent:  # learning_rate=, optimizer_kwargs.alpha=
            key = f"agent.{key}"
        name = key.removeprefix("agent.").split(".")[0]
        if name in OPTIMIZER_KEYS and name not in reference.agent:
            raise UsageError(f"'{key}={value}': agent {pairs['agent']} has no optimizer to choose "
                             f"(runners/configs/agent/{pairs['agent']}.yaml has no '{name}')")
        if key in OPEN_DICTS:  # a dict of the policy's or optimizer's own options, replaced as a whole
            values += [f"~{key}", f"+{key}={value}"]
            continue
        if key.startswith(tuple(f"{d}." for d in OPEN_DICTS)) and OmegaConf.select(reference, key) is None:
            values.append(f"+{key}={value}")
            continue
        if OmegaConf.select(reference, key, default="__missing__") == "__missing__":
            scope = ".".join(key.split(".")[:-1])
            node = OmegaConf.select(reference, scope) if scope else reference
            allowed = ", ".join(sorted(str(k) for k in node)) if isinstance(node, DictConfig) else "none"
            where = f"'{scope}' of agent {pairs['agent']}" if scope == "agent" else (f"'{scope}'" if scope else "train")
            raise UsageError(f"unknown key '{key}' for {where}; allowed: {allowed}")
        values.append(f"{key}={value}")
    cfg = _compose(overrides + values)
    for item in values:
        key = item.split("=", 1)[0]
        if key.startswith(("~", "+")):
            continue
        checked = _check_type(key, OmegaConf.select(reference, key), OmegaConf.select(cfg, key))
        OmegaConf.update(cfg, key, checked, merge=False)
    _validate(cfg)
    return cfg


def resume_config(run_dir: Path, pairs: dict[str, str]) -> DictConfig:
    """The config of a run to resume, with the few keys that may change on resume applied."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UsageError(f"resume={run_dir}: no config.yaml there; is it a run directory?")
    defaults = OmegaConf.load(CONFIG_DIR / "config.yaml")
    defaults.pop("defaults")
    cfg = OmegaConf.merge(defaults, OmegaConf.load(path))  # keys added to the zoo since the run started
    for key, value in pairs.items():
        if key in GROUPS:
            if value != (cfg.agent.id if key == "agent" else cfg.env.name if key == "env" else value):
                raise UsageError(f"{key}={value} differs from the run being resumed; leave it out when resuming")
            continue
        if key not in RESUMABLE:
            raise UsageError(f"{key} cannot change when resuming; allowed: {', '.join(RESUMABLE)}")
        if key != "resume":
            parsed = OverridesParser.create().parse_override(f"{key}={value}").value()
            OmegaConf.update(cfg, key, _check_type(key, cfg[key], parsed), merge=False)
    _validate(cfg)
    return cfg


def config_markdown(cfg: DictConfig) -> str:
    """The resolved config as a markdown table (logged as TensorBoard text, as CleanRL does)."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    rows = "\n".join(f"|{k}|{v}|" for k, v in flat)
    return f"|param|value|\n|-|-|\n{rows}"


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict) and tree:
        return [item for k, v in tree.items() for item in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), tree)]


__all__ = ["REGISTRY", "compose_train_config", "config_markdown", "group_options", "resume_config"]
