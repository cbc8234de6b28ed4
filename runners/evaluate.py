"""Evaluate a checkpoint: mean +- std return over N episodes and the env's own score.

    python -m runners.evaluate model=<checkpoint dir|zoo:name> [episodes=10] [seed=0] [deterministic=auto]
                               [device=auto] [json=true]
    python -m runners.evaluate model=<dt or radt checkpoint> targets=paper|<r1,r2,...> [episodes=10] [plot=out.png]
    python -m runners.evaluate model=zoo:act-needle episodes=50 env.kwargs.kinematic_error=0.01   # env overrides

Return-conditioned agents (dt, radt) are evaluated at their default target return, or with ``targets=`` by the RADT
protocol (:mod:`agents.radt.alignment`): ``paper`` = 7 targets evenly spaced between the 5th and 95th percentile of
the training dataset's episode returns; reported: the return achieved at each target, the mean absolute error
|achieved - target| and the best return, in normalized-score units where the env has reference returns
(``python -m runners.dataset env=<env> references=true``); ``plot=`` draws achieved against target; ``out=`` also
writes the report as JSON.

The env is rebuilt from the config stored in the checkpoint, as an evaluation env (Atari: a life loss does not
end the episode). Scores: human-normalized for Atari, the Crafter score, success rate where the env reports
``is_success``. ``deterministic=auto`` (default) follows the agent's official test protocol: argmax actions, except
DIAMOND and Δ-IRIS, whose official test collectors sample from the policy; ``true`` / ``false`` force either (the
report states which was used). ``env.<key>=<value>`` changes the stored env config before the env is built (values
read as YAML, e.g. ``env.kwargs.kinematic_error=0.01``); a key the config does not have is refused.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.common.checkpoint import CheckpointError, atomic_write_text, read_meta
from agents.common.evaluation import conditioned_env, evaluate
from agents.common.manifest import resolve_model
from agents.common.registry import load_agent
from agents.radt.alignment import AlignmentResult, evaluate_alignment, paper_targets
from envs.datasets import normalized_score
from envs.factory import make_vec_env
from runners.cli import (
    UsageError,
    check_keys,
    parse_args,
    parse_bool,
    parse_deterministic,
    parse_device,
    parse_int,
    parse_out_path,
    run_main,
)

KEYS = ("model", "episodes", "seed", "deterministic", "device", "json", "debug", "targets", "plot", "out")


def override_env_config(env_cfg: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """``env_cfg`` with ``{"env.kwargs.kinematic_error": "0.01", ...}`` applied (values parsed as YAML); only keys
    the config already has may change (``env.kwargs.<name>`` may be new: kwargs go to the env's constructor)."""
    out = copy.deepcopy(env_cfg)
    for dotted, raw in overrides.items():
        keys = dotted.split(".")[1:]
        node = out
        for i, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):
                raise UsageError(f"{dotted}={raw}: the env config has no mapping '{'.'.join(keys[: i + 1])}'")
            node = node[key]
        if not keys or (keys[-1] not in node and keys[:-1] != ["kwargs"]):
            have = ", ".join(sorted(f"env.{k}" for k in out))
            raise UsageError(f"unknown env key '{dotted}'; the stored env config has: {have}")
        node[keys[-1]] = yaml.safe_load(raw)
    return out


def load_for_eval(
    reference: str, device: str = "auto", seed: int = 0, env_overrides: dict[str, str] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(model, eval vec env, env config) for a checkpoint path or ``zoo:<name>``, the env config overridden by
    ``env_overrides`` (``{"env.kwargs.kinematic_error": "0.01"}``)."""
    path = resolve_model(reference)
    meta = read_meta(path)
    config = meta["config"]
    if not config or "env" not in config:
        raise CheckpointError(f"'{path}' stores no env config; it was not saved by runners.train")
    env_cfg = override_env_config(config["env"], env_overrides or {})
    env = make_vec_env(env_cfg, n_envs=1, seed=seed, training=False)
    model = load_agent(path, env=env, device=device)
    return model, conditioned_env(model, env), env_cfg


def main(argv: list[str]) -> int:
    _, pairs = parse_args(argv)
    env_overrides = {k: v for k, v in pairs.items() if k.startswith("env.")}
    pairs = {k: v for k, v in pairs.items() if k not in env_overrides}
    check_keys(pairs, KEYS, "runners.evaluate")
    if "model" not in pairs:
        raise UsageError("missing model=<checkpoint dir or zoo:name>, e.g. model=zoo:ppo-cartpole")
    episodes = parse_int("episodes", pairs.get("episodes", "10"), minimum=1)
    seed = parse_int("seed", pairs.get("seed", "0"), minimum=0)
    deterministic = parse_deterministic("deterministic", pairs.get("deterministic", "auto"))
    as_json = parse_bool("json", pairs.get("json", "false"))
    device = parse_device(pairs.get("device", "auto"))
    for key in ("out", "plot"):
        if key in pairs:
            parse_out_path(key, pairs[key])
    model, env, env_cfg = load_for_eval(pairs["model"], device, seed, env_overrides)
    if "targets" in pairs or "plot" in pairs:
        return evaluate_targets(model, env, env_cfg, pairs, episodes, as_json)
    result = evaluate(model, env, episodes, env_cfg, deterministic=deterministic)
    env.close()
    report = {"model": pairs["model"], "agent": model.agent_id, "env": env_cfg["id"], **result.as_dict()}
    if env_overrides:
        report["env_overrides"] = env_overrides
    if "out" in pairs:
        atomic_write_text(pairs["out"], json.dumps(report, indent=1))
    if as_json:
        print(json.dumps(report))
    else:
        print(f"{report['agent']} on {report['env']}: {result.mean:.2f} +- {result.std:.2f} over {episodes} episodes")
        for key, value in result.score.items():
            print(f"  {key}: {value:.4g}")
    return 0


def parse_targets(value: str, model: Any) -> list[float]:
    if value == "paper":
        if model.dataset_info is None:
            raise UsageError("targets=paper needs the dataset's return percentiles; this checkpoint has none")
        return paper_targets(model.dataset_info)
    try:
        targets = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        targets = []
    if not targets:
        raise UsageError(f"targets={value!r}; expected 'paper' or comma-separated returns such as 1000,2000,3000")
    return targets


def evaluate_targets(
    model: Any, env: Any, env_cfg: dict[str, Any], pairs: dict[str, str], episodes: int, as_json: bool
) -> int:
    """The RADT protocol: achieved return per target return, alignment error and best return."""
    if not hasattr(model, "wrap_env"):
        raise UsageError(f"targets= applies to return-conditioned agents (dt, radt); {model.agent_id} is not one")
    targets = parse_targets(pairs.get("targets", "paper"), model)
    normalize, unit = reference_normalizer(env_cfg["name"])
    result = evaluate_alignment(model, env, targets, episodes, env_cfg, normalize)
    env.close()
    report = {"model": pairs["model"], "agent": model.agent_id, "env": env_cfg["id"], "unit": unit, **result.as_dict()}
    if "plot" in pairs:
        plot_alignment({model.agent_id: result}, pairs["plot"], f"{env_cfg['id']}: achieved vs target ({unit})")
        report["plot"] = pairs["plot"]
    if "out" in pairs:
        atomic_write_text(pairs["out"], json.dumps(report, indent=1))
    if as_json:
        print(json.dumps(report))
        return 0
    print(f"{model.agent_id} on {env_cfg['id']}, {episodes} episodes per target ({unit}):")
    rows = zip(targets, result.achieved, report["normalized_targets"], report["normalized_achieved"], strict=True)
    for t, a, nt, na in rows:
        print(f"  target {t:9.1f} ({nt:6.1f})  achieved {a:9.1f} ({na:6.1f})")
    print(f"  mean absolute error {result.mean_absolute_error:.2f}; best return {result.best_normalized_return:.2f}")
    return 0


def reference_normalizer(env_name: str) -> tuple[Any, str]:
    """``normalized_score`` of the env when its reference returns were measured, else the raw return."""
    try:
        normalized_score(env_name, 0.0)
    except (KeyError, ValueError, FileNotFoundError):
        return (lambda r: float(r)), "raw return"
    return (lambda r: normalized_score(env_name, r)), "normalized score"


def plot_alignment(results: dict[str, AlignmentResult], path: str | Path, title: str) -> None:
    """Achieved against target return per model, with the diagonal (perfect alignment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    lo, hi = float("inf"), float("-inf")
    for name, result in results.items():
        x = [result.normalize(t) for t in result.targets]
        y = [result.normalize(a) for a in result.achieved]
        err = [np.std([result.normalize(r) for r in rs]) for rs in result.returns]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{name} (MAE {result.mean_absolute_error:.1f})")
        lo, hi = min(lo, *x, *y), max(hi, *x, *y)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="achieved = target")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_main(main))
