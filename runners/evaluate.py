"""Evaluate a checkpoint: mean +- std return over N episodes and the env's own score.

    python -m runners.evaluate model=<checkpoint dir|zoo:name> [episodes=10] [seed=0] [deterministic=true]
                               [device=auto] [json=true]

The env is rebuilt from the config stored in the checkpoint, as an evaluation env (Atari: a life loss does not
end the episode). Scores: human-normalized for Atari, the Crafter score, success rate where the env reports
``is_success``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from agents.common.checkpoint import CheckpointError, read_meta
from agents.common.evaluation import evaluate
from agents.common.manifest import resolve_model
from agents.common.registry import load_agent
from envs.factory import make_vec_env
from runners.cli import UsageError, check_keys, parse_args, parse_bool, parse_int, run_main

KEYS = ("model", "episodes", "seed", "deterministic", "device", "json", "debug")


def load_for_eval(reference: str, device: str = "auto", seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """(model, eval vec env, env config) for a checkpoint path or ``zoo:<name>``."""
    path = resolve_model(reference)
    meta = read_meta(path)
    config = meta["config"]
    if not config or "env" not in config:
        raise CheckpointError(f"'{path}' stores no env config; it was not saved by runners.train")
    env_cfg = config["env"]
    env = make_vec_env(env_cfg, n_envs=1, seed=seed, training=False)
    return load_agent(path, env=env, device=device), env, env_cfg


def main(argv: list[str]) -> int:
    _, pairs = parse_args(argv)
    check_keys(pairs, KEYS, "runners.evaluate")
    if "model" not in pairs:
        raise UsageError("missing model=<checkpoint dir or zoo:name>, e.g. model=zoo:ppo-cartpole")
    episodes = parse_int("episodes", pairs.get("episodes", "10"), minimum=1)
    seed = parse_int("seed", pairs.get("seed", "0"), minimum=0)
    deterministic = parse_bool("deterministic", pairs.get("deterministic", "true"))
    as_json = parse_bool("json", pairs.get("json", "false"))
    model, env, env_cfg = load_for_eval(pairs["model"], pairs.get("device", "auto"), seed)
    result = evaluate(model, env, episodes, env_cfg, deterministic=deterministic)
    env.close()
    report = {"model": pairs["model"], "agent": model.agent_id, "env": env_cfg["id"], **result.as_dict()}
    if as_json:
        print(json.dumps(report))
    else:
        print(f"{report['agent']} on {report['env']}: {result.mean:.2f} +- {result.std:.2f} over {episodes} episodes")
        for key, value in result.score.items():
            print(f"  {key}: {value:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
