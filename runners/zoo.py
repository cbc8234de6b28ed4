"""The zoo's shipped checkpoints.

    python -m runners.zoo list                   name, agent, env, score, budget, size
    python -m runners.zoo verify                 check every file against results/zoo/manifest.json (exit 1 if not)
    python -m runners.zoo add name=<name> run=<run dir> [checkpoint=final|best] [episodes=20]
                              [alignment_episodes=5] [command="..."] [export=true] [deterministic=auto]
                                                 copy <run>/final (or <run>/best, the model of the run's best
                                                 periodic evaluation) into results/zoo/<name>, evaluate it, record it
                                                 (command: the training command as run, recorded verbatim;
                                                 default: one rebuilt from the run's config; export: no optimizer
                                                 state, large tensors in float16, for checkpoints over ~25 MB;
                                                 deterministic: auto = the agent's official test protocol, i.e.
                                                 sampled actions for DIAMOND and Δ-IRIS, argmax for the others)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
from pathlib import Path

from agents.common.callbacks import BEST_FILE
from agents.common.checkpoint import CheckpointError, load_checkpoint
from agents.common.evaluation import evaluate
from agents.common.manifest import ZOO_DIR, directory_files, machine, read_manifest, verify_entry, write_entry
from agents.common.registry import get_spec, load_agent
from agents.radt.alignment import evaluate_alignment, paper_targets
from envs.datasets import REPLAY_DATASET, load_dataset
from runners.cli import UsageError, check_keys, parse_args, parse_bool, parse_deterministic, parse_int, run_main
from runners.evaluate import load_for_eval, reference_normalizer


def cmd_list() -> int:
    entries = read_manifest()
    if not entries:
        print("the zoo is empty")
        return 0
    print("| name | agent | env | score (mean +- std, episodes) | budget | size |\n|-|-|-|-|-|-|")
    for name, e in entries.items():
        s, b = e["score"], e["budget"]
        steps = f"{b['gradient_steps']} gradient steps" if "gradient_steps" in b else f"{b['env_steps']} env steps"
        print(
            f"| {name} | {e['agent']} | {e['env']} | {s['mean']:.1f} +- {s['std']:.1f} ({s['episodes']} ep) | "
            f"{steps}, {b['wall_time_s']:.0f} s, {b['machine']} | {e['size_bytes'] / 1e6:.2f} MB |"
        )
    return 0


def cmd_verify() -> int:
    failures = 0
    for name, entry in read_manifest().items():
        try:
            directory = verify_entry(entry)
            if entry["agent"] == "dataset":  # offline data (medium-replay): an .npz read without pickle
                load_dataset(directory / REPLAY_DATASET)
            else:
                load_checkpoint(directory)
            print(f"ok      {name}")
        except (CheckpointError, ValueError) as e:
            failures += 1
            print(f"FAILED  {name}: {e}")
    return 1 if failures else 0


def cmd_add(pairs: dict[str, str]) -> int:
    keys = ("name", "run", "checkpoint", "episodes", "alignment_episodes", "command", "export", "deterministic",
            "debug")
    check_keys(pairs, keys, "runners.zoo add")
    if "name" not in pairs or "run" not in pairs:
        raise UsageError("zoo add needs name=<name> and run=<run dir>")
    name, run = pairs["name"], Path(pairs["run"])
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"name={name!r}: use letters, digits, '-' and '_' only")
    episodes = parse_int("episodes", pairs.get("episodes", "20"), minimum=1)
    alignment_episodes = parse_int("alignment_episodes", pairs.get("alignment_episodes", "5"), minimum=1)
    export = parse_bool("export", pairs.get("export", "false"))
    deterministic = parse_deterministic("deterministic", pairs.get("deterministic", "auto"))
    which = pairs.get("checkpoint", "final")
    if which not in ("final", "best"):
        raise UsageError(f"checkpoint={which!r} is not allowed; choose one of: final, best")
    if not (run / "results.json").is_file():
        raise UsageError(f"run={run}: not a finished training run (no results.json); train it with runners.train")
    summary = json.loads((run / "results.json").read_text())
    source = run / which
    if which == "best":
        if not (run / BEST_FILE).is_file():
            raise UsageError(f"run={run}: no best model (it is saved by periodic evaluations, eval_freq > 0)")
        summary = {**summary, "wall_time_s": json.loads((run / BEST_FILE).read_text())["wall_time_s"]}
    # The new files are staged, evaluated there, and only then swapped in with their manifest entry: a failure
    # (a broken source, an evaluation that raises, a full disk) leaves the zoo's earlier entry and files as they were.
    destination, staging, old = ZOO_DIR / name, ZOO_DIR / f".{name}.tmp", ZOO_DIR / f".{name}.old"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if export:  # weights only, large tensors in float16: what fits the zoo's size limit (the score is of this copy)
            load_agent(source, device="cpu").save(staging, export=True)
        else:
            load_checkpoint(source)  # refuse a broken source before copying anything
            shutil.copytree(source, staging)
        entry = _evaluated_entry(staging, name, pairs, summary, episodes, alignment_episodes, deterministic)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if destination.exists():
        os.replace(destination, old)
    os.replace(staging, destination)
    try:
        write_entry(entry, ZOO_DIR)
    except BaseException:  # the manifest still describes the earlier files: put them back
        shutil.rmtree(destination, ignore_errors=True)
        if old.exists():
            os.replace(old, destination)
        raise
    shutil.rmtree(old, ignore_errors=True)
    result = entry["score"]
    print(f"added {name}: {result['mean']:.2f} +- {result['std']:.2f} over {episodes} episodes, "
          f"{entry['size_bytes']} bytes")
    return 0


def _evaluated_entry(staging: Path, name: str, pairs: dict[str, str], summary: dict, episodes: int,
                     alignment_episodes: int, deterministic: bool | None) -> dict:
    """The manifest entry of the checkpoint in ``staging``, evaluated there (the files it lists are its own)."""
    model, env, env_cfg = load_for_eval(str(staging), "cpu", seed=1000)
    result = evaluate(model, env, episodes, env_cfg, deterministic=deterministic)
    score = {"mean": result.mean, "std": result.std, "episodes": episodes, "deterministic": result.deterministic,
             **result.score}
    if hasattr(model, "wrap_env") and model.dataset_info is not None:  # dt, radt: the paper's alignment protocol
        normalize, unit = reference_normalizer(env_cfg["name"])
        targets = paper_targets(model.dataset_info)
        alignment = evaluate_alignment(model, env, targets, alignment_episodes, env_cfg, normalize).as_dict()
        score["target_return"] = model.default_target_return()
        score["alignment"] = {"unit": unit, **alignment}
    env.close()
    files = directory_files(staging)
    config = model.zoo_config or {}
    data_key = {"offline": "dataset", "demonstrations": "demos"}.get(get_spec(model.agent_id).learns_from)
    # an agent that learns from a dataset or demonstrations never steps an env in training: its budget is updates
    steps_key = "gradient_steps" if data_key else "env_steps"
    budget = {steps_key: int(model.num_timesteps), "wall_time_s": summary["wall_time_s"], "machine": machine()}
    dataset = f" agent.{data_key}={config['agent'][data_key]}" if data_key else ""
    entry = {
        "name": name,
        "path": name,
        "files": files,
        "agent": model.agent_id,
        "env": env_cfg["id"],
        "budget": budget,
        "score": score,
        "date": _dt.date.today().isoformat(),
        "size_bytes": sum((staging / f).stat().st_size for f in files),
        "command": pairs.get("command") or f"python -m runners.train agent={config.get('agent', {}).get('id')} "
        f"env={env_cfg['name']} seed={config.get('seed')} total_timesteps={config.get('total_timesteps')}{dataset}",
    }
    return entry


def main(argv: list[str]) -> int:
    positional, pairs = parse_args(argv, allow_positional=True)
    commands = ("list", "verify", "add")
    if len(positional) != 1 or positional[0] not in commands:
        raise UsageError(f"usage: python -m runners.zoo <command>; commands: {', '.join(commands)}")
    if positional[0] == "add":
        return cmd_add(pairs)
    check_keys(pairs, ("debug",), f"runners.zoo {positional[0]}")
    return cmd_list() if positional[0] == "list" else cmd_verify()


if __name__ == "__main__":
    sys.exit(run_main(main))
