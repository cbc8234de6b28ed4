"""Benchmark of env throughput: ``python -m runners.bench envs [parts=random,collection] [scale=1]``.

Measured side by side in one run, on this machine, written to ``results/benchmarks/envs.md``:

- random: random-action env steps per second through the zoo's env factory, for cartpole, breakout (Atari 100k
  preprocessing) and crafter: ``DummyVecEnv`` with one env, and ``SubprocVecEnv`` with 1, 2 and 4 envs, each for
  a fixed number of env steps (summed over the envs). Actions are drawn before the clock starts and VecEnv
  start-up is not timed.
- collection: env steps per second of collection in the agents' own learn loops (the policy acts, the envs step,
  the buffer stores), ppo on CartPole, dqn and stochdqn on HalfCheetah with 4,096 discrete actions, sac on
  HalfCheetah, with n_envs = 1, 2 and 4 in a ``DummyVecEnv`` and in a ``SubprocVecEnv``. The clock runs from each
  rollout's start to its end (the ``on_rollout_start`` and ``on_rollout_end`` callbacks of SB3's
  ``collect_rollouts``), after a warm-up of a fifth of the steps: updates are never timed. The off-policy agents
  skip them (``gradient_steps=0``, which only shortens the benchmark) and act with their policy from the first
  step (``learning_starts=0``, dqn and stochdqn with a fixed epsilon of 0.05); ppo collects 1,024 env steps per
  rollout whatever n_envs (``n_steps = 1024 / n_envs``) and updates once in between (one epoch, untimed).

``scale=`` multiplies every number of env steps (1: a few minutes on 2 busy cores).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from stable_baselines3.common.callbacks import BaseCallback

from envs.factory import make_vec_env
from runners.benchkit import run_parts
from runners.cli import parse_float
from runners.config import compose_train_config
from runners.train import Trainer

# (config, env steps per measurement): sized so that the part takes about a minute on 2 cores.
ENVS: dict[str, tuple[dict[str, Any], int]] = {
    "cartpole": ({"name": "cartpole", "family": "classic", "id": "CartPole-v1"}, 20_000),
    "breakout": ({"name": "breakout", "family": "atari", "id": "breakout", "preprocessing": "atari100k"}, 4_000),
    "crafter": ({"name": "crafter", "family": "crafter", "id": "zoo/Crafter-v1"}, 2_000),
}
SETUPS: tuple[tuple[str, int], ...] = (("dummy", 1), ("subproc", 1), ("subproc", 2), ("subproc", 4))
WARMUP_STEPS = 20
PPO_ROLLOUT = 1024  # env steps per ppo rollout, summed over the envs
OFF_POLICY = {"agent.learning_starts": "0", "agent.buffer_size": "10000"}
EPSILON = {"agent.exploration_initial_eps": "0.05", "agent.exploration_final_eps": "0.05"}
# agent -> (env config, env steps per measurement, hyperparameters)
COLLECTION: dict[str, tuple[str, int, dict[str, str]]] = {
    "ppo": ("cartpole", 4096, {"agent.n_epochs": "1", "agent.batch_size": "256"}),
    "dqn": ("halfcheetah_4096", 2000, {**OFF_POLICY, **EPSILON}),
    "stochdqn": ("halfcheetah_4096", 2000, {**OFF_POLICY, **EPSILON}),
    "sac": ("halfcheetah", 2000, OFF_POLICY),
}
COLLECTION_SETUPS = tuple((vec_env, n) for vec_env in ("dummy", "subproc") for n in (1, 2, 4))
TITLES = {"random": "## Random actions through the env factory",
          "collection": "## Collection in the agents' own learn loops"}
HEADER = [
    "# Env throughput",
    "",
    "Env steps per second, summed over the envs of a VecEnv (one Atari step = 4 emulator frames; HalfCheetah: 5",
    "MuJoCo steps). Ratio: steps/s over the 1-env DummyVecEnv of the same env (and agent), measured in the same",
    "run. Other processes share the machine's CPUs: see the load average of each section.",
    "",
]


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


class CollectionClock(BaseCallback):
    """Seconds and env steps spent inside the agent's collection (from ``on_rollout_start`` to ``on_rollout_end``),
    counting only the rollouts that start after ``warmup`` env steps."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup = warmup
        self.seconds, self.steps = 0.0, 0
        self._start: tuple[float, int] | None = None

    def _on_rollout_start(self) -> None:
        started = self.model.num_timesteps >= self.warmup
        self._start = (time.perf_counter(), self.model.num_timesteps) if started else None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start[0]
            self.steps += self.model.num_timesteps - self._start[1]


def measure_collection(agent: str, vec_env: str, n_envs: int, env_steps: int) -> float:
    """Env steps per second of collection in ``agent``'s learn loop (see the module docstring)."""
    env, _, hyperparams = COLLECTION[agent]
    pairs = {"agent": agent, "env": env, "n_envs": str(n_envs), "vec_env": vec_env, "torch_threads": "1",
             "progress_bar": "false", **hyperparams}
    if agent == "ppo":
        pairs["agent.n_steps"] = str(PPO_ROLLOUT // n_envs)
    cfg = compose_train_config([], pairs)
    if "gradient_steps" in cfg.agent:  # collection only: no update between rollouts (the zoo's configs need >= 1)
        OmegaConf.update(cfg, "agent.gradient_steps", 0)
    run = Trainer(cfg)
    clock = CollectionClock(warmup=env_steps // 5)
    try:
        run.model.learn(total_timesteps=env_steps, callback=clock)
    finally:
        run.close()
    if not clock.steps:
        raise ValueError(f"{agent}: no rollout started after the warm-up of {clock.warmup} env steps; raise scale=")
    return clock.steps / clock.seconds


def machine() -> list[str]:
    """The machine and the versions that the numbers depend on, one markdown bullet each."""
    import torch

    packages = ("torch", "gymnasium", "stable-baselines3", "ale-py", "crafter", "mujoco", "numpy")
    return [
        f"- platform: {platform.platform()} ({platform.machine()}, {platform.processor() or 'unknown processor'})",
        f"- CPUs: {os.cpu_count()}; load average over the last minute at the start: {os.getloadavg()[0]:.2f}; "
        f"torch threads: {torch.get_num_threads()}",
        f"- python: {sys.version.split()[0]}",
        "- " + ", ".join(f"{p} {version(p)}" for p in packages),
    ]


def part_random(scale: float) -> str:
    head = machine()
    rows = []
    for name, (cfg, env_steps) in ENVS.items():
        steps = max(1, round(env_steps * scale))
        baseline = None
        for vec_env, n_envs in SETUPS:
            fps = measure(cfg, vec_env, n_envs, steps)
            baseline = baseline or fps
            rows.append(f"| {name} | {vec_env} | {n_envs} | {steps:,} | {fps:,.0f} | {fps / baseline:.2f} |")
    return "\n".join([
        "Machine:", *head, "",
        "Random actions (drawn before timing) through `envs.factory.make_vec_env`, training envs, seed 0.",
        f"VecEnv start-up and {WARMUP_STEPS} warm-up steps are not timed.", "",
        "| env | vec_env | n_envs | env steps | steps/s | ratio to dummy x1 |", "|-|-|-|-|-|-|", *rows,
    ])


def part_collection(scale: float) -> str:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the measurements (torch_threads=1): the machine line says what they ran with
    head = machine()
    rows = []
    try:
        for agent, (env, env_steps, _) in COLLECTION.items():
            steps = max(2 * PPO_ROLLOUT if agent == "ppo" else 100, round(env_steps * scale))  # a timed rollout
            fps = {(v, n): measure_collection(agent, v, n, steps) for v, n in COLLECTION_SETUPS}
            baseline = fps[("dummy", 1)]
            for n in (1, 2, 4):
                cells = " | ".join(f"{fps[(v, n)]:,.0f} | {fps[(v, n)] / baseline:.2f}" for v in ("dummy", "subproc"))
                rows.append(f"| {agent} | {env} | {n} | {steps:,} | {cells} |")
    finally:
        torch.set_num_threads(threads)
    return "\n".join([
        "Machine:", *head, "",
        "The agents of the zoo with their configs (`runners/configs`), seed 0, one torch thread in the main process;",
        "each measurement trains from scratch for the env steps given and times its rollouts after the first fifth",
        "(see `runners/bench_envs.py`: off-policy agents act with their policy and skip updates, ppo's updates",
        "are not timed). VecEnv start-up is not timed. Ratios against the 1-env DummyVecEnv of the same agent.",
        "",
        "| agent | env | n_envs | env steps | dummy steps/s | ratio | subproc steps/s | ratio |",
        "|-|-|-|-|-|-|-|-|", *rows,
    ])


def run(out_path: str, parts: str = "random,collection", scale: str = "1") -> str:
    """Measure the chosen parts, write the markdown report to ``out_path`` (other parts' sections kept) and
    return it."""
    factor = parse_float("scale", scale)
    if factor <= 0:
        raise ValueError(f"scale={scale} must be > 0")
    functions = {"random": lambda: part_random(factor), "collection": lambda: part_collection(factor)}
    options = {"scale": scale} if scale != "1" else {}
    return run_parts("envs", out_path, parts, HEADER, TITLES, functions, options)


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else "results/benchmarks/envs.md"))
