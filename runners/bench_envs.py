"""Benchmark of env throughput: random-action env steps per second through the zoo's env factory.

For cartpole, breakout (Atari 100k preprocessing) and crafter, side by side in one run: ``DummyVecEnv`` with one
env, and ``SubprocVecEnv`` with 1, 2 and 4 envs, each for a fixed number of env steps (summed over the envs).
Actions are drawn before the clock starts and VecEnv start-up is not timed. Run with ``python -m runners.bench envs``.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from envs.factory import make_vec_env

COMMAND = "python -m runners.bench envs"
# (config, env steps per measurement): sized so that the whole benchmark takes about a minute on 2 cores.
ENVS: dict[str, tuple[dict[str, Any], int]] = {
    "cartpole": ({"name": "cartpole", "family": "classic", "id": "CartPole-v1"}, 20_000),
    "breakout": ({"name": "breakout", "family": "atari", "id": "breakout", "preprocessing": "atari100k"}, 4_000),
    "crafter": ({"name": "crafter", "family": "crafter", "id": "zoo/Crafter-v1"}, 2_000),
}
SETUPS: tuple[tuple[str, int], ...] = (("dummy", 1), ("subproc", 1), ("subproc", 2), ("subproc", 4))
WARMUP_STEPS = 20


def measure(env_cfg: Mapping[str, Any], vec_env: str, n_envs: int, env_steps: int, seed: int = 0) -> float:
    """Env steps per second (summed over the ``n_envs`` envs) of random actions, after a short warm-up."""
    venv = make_vec_env(env_cfg, n_envs=n_envs, seed=seed, vec_env=vec_env)
    try:
        venv.reset()
        venv.action_space.seed(seed)
        n_steps = max(1, env_steps // n_envs)
        actions = [np.array([venv.action_space.sample() for _ in range(n_envs)]) for _ in range(n_steps)]
        for action in actions[:WARMUP_STEPS]:
            venv.step(action)
        start = time.perf_counter()
        for action in actions:
            venv.step(action)
        elapsed = time.perf_counter() - start
    finally:
        venv.close()
    return n_steps * n_envs / elapsed


def machine() -> list[str]:
    """The machine and the versions that the numbers depend on, one markdown bullet each."""
    packages = ("torch", "gymnasium", "stable-baselines3", "ale-py", "crafter", "mujoco", "numpy")
    return [
        f"- platform: {platform.platform()} ({platform.machine()}, {platform.processor() or 'unknown processor'})",
        f"- CPUs: {os.cpu_count()}; load average over the last minute at the start: {os.getloadavg()[0]:.2f}",
        f"- python: {sys.version.split()[0]}",
        "- " + ", ".join(f"{p} {version(p)}" for p in packages),
    ]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def run(out_path: str) -> str:
    """Measure every env x VecEnv setup, write the markdown report to ``out_path`` and return it."""
    rows = []
    for name, (cfg, env_steps) in ENVS.items():
        baseline = None
        for vec_env, n_envs in SETUPS:
            fps = measure(cfg, vec_env, n_envs, env_steps)
            baseline = baseline or fps
            rows.append(f"| {name} | {vec_env} | {n_envs} | {env_steps:,} | {fps:,.0f} | {fps / baseline:.2f} |")
    text = "\n".join(
        [
            "# Env throughput",
            "",
            f"Command: `{COMMAND}` ({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
            "",
            "Machine:",
            *machine(),
            "",
            "Random actions (drawn before timing) through `envs.factory.make_vec_env`, training envs, seed 0;",
            "steps/s counts env steps summed over the envs (one Atari step = 4 emulator frames). VecEnv start-up",
            f"and {WARMUP_STEPS} warm-up steps are not timed. Ratio: steps/s over the 1-env DummyVecEnv of the same",
            "env, measured in the same run. Other processes on the machine share its CPUs (see the load average).",
            "",
            "| env | vec_env | n_envs | env steps | steps/s | ratio to dummy x1 |",
            "|-|-|-|-|-|-|",
            *rows,
            "",
        ]
    )
    _write_atomic(Path(out_path), text)
    return text


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else "results/benchmarks/envs.md"))
