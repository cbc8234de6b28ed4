"""Determinism over the first 1,000 steps of every agent, issue 9 item 2: ``python -m runners.bench reliability
part=determinism``.

``make test`` checks determinism on runs of 80 to 2,000 steps (``tests/reliability/test_determinism.py``), which is
what fits in CI. This part trains each registered agent for 1,000 steps (env steps for online agents, gradient steps
for dt, radt and act) twice, in two fresh ``python -m runners.train`` processes with the same seed and config (CPU,
one torch thread each), and compares the two runs with :func:`compare_runs`, the same comparison the test makes:

- the environment trajectories: every array of the last checkpoint's replay or episode buffer, and the returns and
  lengths of the episodes in the monitor buffer, equal;
- the final evaluation (``results.json``) equal;
- every logged scalar but wall time and evaluation: the same tags at the same steps, values allclose (rtol 1e-6);
- the final weights and optimizer state allclose (rtol 1e-6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = 1000
RTOL = 1e-6
TIME_TAGS = ("time/", "eval/")  # wall time, and evaluation (compared through results.json)
OFFLINE = ("dt", "radt", "act")  # no environment trajectories while training
NO_BUFFER = ("ppo", "stochq", *OFFLINE)  # online agents whose checkpoint holds no replay or episode buffer
COMMON = ["device=cpu", "torch_threads=1", "progress_bar=false", "eval_episodes=1", "seed=0"]
_STOCH = ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250", "eval_freq=500", "learning_starts=60",
          "batch_size=16", "env.max_episode_steps=50"]
_OFFLINE = ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250", "eval_freq=500", "agent.dataset={hopper}",
            "log_interval=10", "context=3", "n_layer=1", "env.max_episode_steps=30"]
# agent -> (env, arguments beyond COMMON): the tiny presets of tests/reliability, run for 1,000 steps; {hopper} is a
# Hopper dataset and {needle} needle demonstrations, both made by the zoo's own runners at the start of the part
DETERMINISM_RUNS: dict[str, tuple[str, list[str]]] = {
    "dqn": ("cartpole", ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250", "eval_freq=500"]),
    "ppo": ("cartpole", ["preset=tiny", "n_envs=1", f"total_timesteps={STEPS}", "save_freq=256", "eval_freq=512",
                         "n_steps=32", "batch_size=32", "n_epochs=1"]),
    "sac": ("pendulum", ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250", "eval_freq=500",
                         "learning_starts=60", "batch_size=16", "env.max_episode_steps=50"]),
    **{agent: ("inverted_pendulum_512", _STOCH) for agent in ("stochdqn", "stochddqn", "fulldqn", "fullddqn")},
    "stochq": ("frozenlake_deterministic", ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250",
                                            "eval_freq=500"]),
    "dt": ("hopper", _OFFLINE),
    "radt": ("hopper", _OFFLINE),
    "act": ("needle", ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250", "eval_freq=500", "demos={needle}",
                       "env.kwargs.image_size=32", "log_interval=10", "env.max_episode_steps=10"]),
    "diamond": ("breakout", ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250", "eval_freq=0",
                             "env.max_episode_frames=200"]),
    "delta_iris": ("crafter", ["preset=tiny", f"total_timesteps={STEPS}", "save_freq=250", "eval_freq=500",
                               "agent.num_steps_first_epoch=250", "agent.num_steps=250", "agent.num_final_epochs=0",
                               "env.kwargs.length=100"]),
}


@dataclass
class Comparison:
    """What two runs were compared on, and the largest differences seen."""

    steps: int  # num_timesteps of the final checkpoints
    buffer_arrays: int  # arrays of the replay / episode buffer compared
    transitions: int  # the transitions they hold (see stored_rows)
    episodes: int  # episodes of the monitor buffer compared (SB3 keeps the last 100)
    scalar_tags: int
    scalar_points: int
    max_scalar_rel: float  # largest |a - b| / max(|b|, 1e-12) over the logged scalars
    weight_tensors: int
    max_weight_abs: float  # largest |a - b| over the final weights


def stored_rows(arrays: np.lib.npyio.NpzFile) -> int:
    """Transitions held by a saved buffer: a replay buffer's filled rows (``pos``, or all when ``full``), else the
    length of the longest array."""
    if "pos" in arrays.files:
        capacity = max(len(arrays[k]) for k in arrays.files if arrays[k].ndim)
        return capacity if bool(arrays["full"]) else int(arrays["pos"])
    return max((len(arrays[k]) for k in arrays.files if arrays[k].ndim), default=0)


def compare_runs(agent: str, run_dir: Path, reference: Path) -> Comparison:
    """Compare a run with a reference run of the same seed and config; raise ``AssertionError`` naming the first
    difference beyond the tolerances (see the module docstring)."""
    import torch

    from agents.common.callbacks import checkpoint_dirs
    from agents.common.checkpoint import load_checkpoint
    from agents.common.tblog import read_scalars

    last, ref_last = checkpoint_dirs(run_dir)[-1][1], checkpoint_dirs(reference)[-1][1]
    assert last.name == ref_last.name, f"last checkpoint {last.name} != {ref_last.name}"
    names = [name for name in ("replay_buffer.npz", "episode_buffer.npz") if (ref_last / name).exists()]
    assert names or agent in NO_BUFFER, f"{agent}: an online agent with a buffer saves it"
    arrays, transitions = 0, 0
    for name in names:
        with np.load(last / name) as a, np.load(ref_last / name) as b:
            assert a.files == b.files, f"{name}: arrays {a.files} != {b.files}"
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
                arrays += 1
            transitions = max(transitions, stored_rows(b))

    def episodes_of(path: Path) -> list[tuple[float, int]]:
        state = json.loads((path / "meta.json").read_text())["state"]
        return [(e["r"], e["l"]) for e in state.get("ep_info_buffer") or []]

    episodes, ref_episodes = episodes_of(last), episodes_of(ref_last)
    assert ref_episodes or agent in OFFLINE, f"{agent}: no finished episode in the monitor buffer"
    assert episodes == ref_episodes, f"episodes (return, length) differ: {episodes[:5]} != {ref_episodes[:5]}"
    results = json.loads((run_dir / "results.json").read_text())["eval"]
    assert results == json.loads((reference / "results.json").read_text())["eval"], "final evaluation differs"

    scalars, ref_scalars = read_scalars(run_dir), read_scalars(reference)
    tags = sorted(t for t in ref_scalars if not t.startswith(TIME_TAGS))
    assert sorted(t for t in scalars if not t.startswith(TIME_TAGS)) == tags, "logged tags differ"
    assert any(t.startswith(("train/", "world_model/")) for t in tags), f"no loss logged: {tags}"
    points, max_rel = 0, 0.0
    for tag in tags:
        np.testing.assert_array_equal(scalars[tag][:, 0], ref_scalars[tag][:, 0], err_msg=f"{tag}: steps")
        np.testing.assert_allclose(scalars[tag][:, 1], ref_scalars[tag][:, 1], rtol=RTOL, atol=1e-8, err_msg=tag)
        diff = np.abs(scalars[tag][:, 1] - ref_scalars[tag][:, 1]) / np.maximum(np.abs(ref_scalars[tag][:, 1]), 1e-12)
        max_rel = max(max_rel, float(np.nanmax(diff, initial=0.0)))
        points += len(ref_scalars[tag])

    weights, meta = load_checkpoint(run_dir / "final")
    ref_weights, ref_meta = load_checkpoint(reference / "final")
    assert meta["num_timesteps"] == ref_meta["num_timesteps"], "the final checkpoints are at different steps"
    assert weights.keys() == ref_weights.keys(), "the final checkpoints hold different tensors"
    max_abs = 0.0
    for key in ref_weights:
        torch.testing.assert_close(weights[key], ref_weights[key], rtol=RTOL, atol=1e-7, msg=key)
        if ref_weights[key].numel() and ref_weights[key].is_floating_point():
            max_abs = max(max_abs, float((weights[key].double() - ref_weights[key].double()).abs().max()))
    return Comparison(ref_meta["num_timesteps"], arrays, transitions, len(ref_episodes), len(tags), points, max_rel,
                      len(ref_weights), max_abs)


@dataclass
class Outcome:
    agent: str
    env: str
    seconds: float  # wall time of the two runs, side by side
    comparison: Comparison | None
    error: str = ""


def make_data(root: Path) -> dict[str, str]:
    """A Hopper dataset (5,000 steps of the zoo's medium SAC policy) and 2 needle demonstrations at 32 px, made by
    ``runners.dataset`` and ``runners.demos``."""
    hopper, needle = root / "hopper-medium-5k.npz", root / "needle-demos-2ep-32px.npz"
    for command in (["runners.dataset", "env=hopper", "quality=medium", "size=5000", f"out={hopper}",
                     "progress=false"],
                    ["runners.demos", "env=needle", "episodes=2", "image_size=32", f"out={needle}", "progress=false"]):
        subprocess.run([sys.executable, "-m", *command], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    return {"hopper": str(hopper), "needle": str(needle)}


def measure(agent: str, root: Path, data: dict[str, str]) -> Outcome:
    """Train ``agent``'s 1,000-step run twice, side by side in two fresh processes, and compare the two."""
    env, args = DETERMINISM_RUNS[agent]
    args = [a.format(**data) for a in args]
    runs = [root / agent / name for name in ("a", "b")]
    start = time.perf_counter()
    processes = []
    for run_dir in runs:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(run_dir.parent / f"{run_dir.name}.log", "w")
        command = [sys.executable, "-m", "runners.train", f"agent={agent}", f"env={env}", *COMMON, *args,
                   f"run_dir={run_dir}"]
        processes.append((subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}), log))
    codes = []
    for process, log in processes:
        codes.append(process.wait())
        log.close()
    seconds = time.perf_counter() - start
    if any(codes):
        tail = (runs[0].parent / f"{runs[codes.index(next(c for c in codes if c))].name}.log").read_text()
        return Outcome(agent, env, seconds, None, f"training exited {codes}: {tail.strip().splitlines()[-1:]}")
    try:
        return Outcome(agent, env, seconds, compare_runs(agent, runs[1], runs[0]))
    except AssertionError as error:
        return Outcome(agent, env, seconds, None, " ".join(str(error).split())[:300])


def measure_all(agents: list[str] | None = None) -> list[Outcome]:
    from agents.common.registry import REGISTRY

    chosen = agents or [a for a in DETERMINISM_RUNS if a in REGISTRY]
    with tempfile.TemporaryDirectory(prefix="determinism-") as tmp:
        root = Path(tmp)
        data = make_data(root) if {"dt", "radt", "act"} & set(chosen) else {}
        outcomes = []
        for agent in chosen:
            outcomes.append(measure(agent, root, data))
            print(f"determinism {agent}: {'same' if outcomes[-1].comparison else outcomes[-1].error} "
                  f"({outcomes[-1].seconds:.0f} s)", flush=True)
        return outcomes


def render(outcomes: list[Outcome], heading: str) -> str:
    import datetime as _dt

    from agents.common.manifest import machine

    unit = {a: "gradient steps" for a in OFFLINE}
    now = _dt.datetime.now(_dt.UTC)
    lines = [
        heading,
        "",
        f"Command: `python -m runners.bench reliability part=determinism` ({now:%Y-%m-%d %H:%M} UTC). "
        f"Machine: {machine()}. Each agent's tiny preset ({STEPS:,} steps, the arguments in "
        "`runners/reliability_determinism.py`) trained twice with seed 0 in two fresh processes side by side (CPU, "
        "one torch thread each) and compared: buffer arrays and the monitor's episodes equal, the final evaluation "
        f"equal, every logged scalar at the same steps and allclose (rtol {RTOL:g}), the final weights and optimizer "
        f"state allclose (rtol {RTOL:g}). The largest differences seen are in the last two columns.",
        "",
        "| agent | env | steps | same run | buffer arrays (transitions) | episodes | scalars (points) | "
        "max rel. diff, scalars | weight tensors | max abs. diff, weights | wall time, both runs |",
        "|-|-|-|-|-|-|-|-|-|-|-|",
    ]
    for o in outcomes:
        c = o.comparison
        steps = f"{c.steps if c else STEPS:,} {unit.get(o.agent, 'env steps')}"
        if c is None:
            lines.append(f"| {o.agent} | {o.env} | {steps} (asked) | **no**: {o.error} | | | | | | | "
                         f"{o.seconds:.0f} s |")
            continue
        lines.append(f"| {o.agent} | {o.env} | {steps} | yes | {c.buffer_arrays} ({c.transitions:,}) | {c.episodes} | "
                     f"{c.scalar_tags} ({c.scalar_points:,}) | {c.max_scalar_rel:.1e} | {c.weight_tensors} | "
                     f"{c.max_weight_abs:.1e} | {o.seconds:.0f} s |")
    same = sum(o.comparison is not None for o in outcomes)
    lines += ["", f"Same run in both processes: {same} of {len(outcomes)} agents. Buffer arrays: those of the last "
              "checkpoint's replay or episode buffer; ppo and stochq keep none in a checkpoint, so their trajectories "
              "are compared through the monitor's episodes and the losses. Episodes: those in SB3's monitor buffer "
              "(the last 100 at most). dt, radt and act learn from a fixed dataset and have no trajectory while "
              "training.", ""]
    return "\n".join(lines)
