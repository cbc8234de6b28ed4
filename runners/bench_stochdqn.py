"""Benchmark of Stochastic Q-learning: ``python -m runners.bench stochdqn [parts=cost,sampler,step,returns,large]``.

Measured side by side in one run, on this machine, written to ``results/benchmarks/stochdqn.md`` (+ plots):

- cost: action selection (1 state) + target computation (a minibatch of 64 next states), StochDQN's
  stochmax/stoch_argmax over C vs the full max over N, same Q-network (ActionQNetwork 64-64), N = 512 .. 2^20;
- sampler: the numba sampler vs numpy's ``choice(N, k, replace=False)`` (legacy, as the official code, and the
  Generator API), k = ceil(log2 N), 32 rows;
- step: one full training step (selection + env step + one update) of StochDQN and DQN on InvertedPendulum-512
  and HalfCheetah-4096, beside the official code's timings on this machine kind;
- returns: return after equal env steps, StochDQN, StochDDQN, DQN, DDQN (same network) and SAC on the continuous
  env, 3 seeds, with each run's wall time;
- large: learning curves on the 10^6-action Hopper and the 2^20-action task against a random policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf
from stable_baselines3.common.utils import LinearSchedule

from agents.common.evaluation import evaluate
from agents.stochdqn.policy import StochQPolicy
from agents.stochdqn.sampling import SubsetSampler, subset_size
from envs.factory import make_vec_env
from runners import compare
from runners.benchkit import RandomPolicy, describe_machine, mean_std, run_parts, timeit, train_all
from runners.cli import parse_args
from runners.config import compose_train_config
from runners.train import Trainer

PARTS = ("cost", "sampler", "step", "returns", "large")
OFFICIAL_MS = {512: (3.72, 98.05), 4096: (5.00, 945.27)}  # ../shared/reference/OFFICIAL_TIMINGS.md (Stoch, DQN)
# env -> (env steps per run, seeds per agent). The full max costs ~0.08 s per update at 4,096 actions on one
# core here (10-25 min per run); the longest runs (DQN- and DDQN-full at 4,096) come first, so that the two
# workers finish together.
RETURN_PLAN = {
    "halfcheetah_4096": (10_000, {"fulldqn": 3, "fullddqn": 3, "stochdqn": 3, "stochddqn": 3, "sac": 3}),
    "inverted_pendulum_512": (10_000, {"stochdqn": 3, "stochddqn": 3, "fulldqn": 3, "fullddqn": 3, "sac": 3}),
}
LARGE_BUDGET = {"hopper_1m": 30_000, "large_action": 20_000}
RUNS = Path("runs") / "bench" / "stochdqn"
PLOTS = Path("results") / "plots"


def _policy(n_actions: int, stochastic: bool, obs_dim: int = 17) -> StochQPolicy:
    spaces = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32), gym.spaces.Discrete(n_actions)
    spec = {"type": "bits", "bits": (n_actions - 1).bit_length()}
    return StochQPolicy(*spaces, LinearSchedule(1e-3, 1e-3, 1.0), action_spec=spec, net_arch=[64, 64],
                        stochastic=stochastic, seed=0)


def part_cost(batch: int = 64) -> str:
    rows = ["| N | StochDQN (ms) | full max (ms) | ratio | target |", "|-|-|-|-|-|"]
    for n in (512, 4096, 2**16, 2**20):
        timings = []
        for stochastic in (True, False):
            policy = _policy(n, stochastic)
            policy.remember_batch(np.arange(batch) * 7 % n)
            state, next_states = torch.randn(1, 17), torch.randn(batch, 17)

            def step(p: StochQPolicy = policy, s: torch.Tensor = state, ns: torch.Tensor = next_states) -> None:
                with torch.no_grad():
                    p.best(p.q_net, s)  # action selection
                    p.best(p.q_net_target, ns)  # stochmax target over the minibatch

            repeats = 20 if stochastic or n <= 4096 else 1
            timings.append(timeit(step, repeats, warmup=1 if repeats == 1 else 2) * 1e3)
        target = {4096: ">= 20x", 2**20: ">= 1000x"}.get(n, "")
        rows.append(f"| {n:,} | {timings[0]:.2f} | {timings[1]:.1f} | {timings[1] / timings[0]:,.0f}x | {target} |")
    return "\n".join(rows)


def part_sampler(batch: int = 32) -> str:
    rows = ["| N | k | numba (us) | Generator.choice (us) | np.random.choice (us) | ratio vs Generator | "
            "ratio vs np.random.choice |", "|-|-|-|-|-|-|-|"]
    rng = np.random.default_rng(0)
    for n in (512, 4096, 2**16, 2**20):
        k = subset_size(n)
        sampler = SubsetSampler(n, k, rng)
        numba = timeit(lambda s=sampler: s.sample(batch), 200) * 1e6
        generator = timeit(lambda n=n, k=k: [rng.choice(n, k, replace=False) for _ in range(batch)], 20) * 1e6
        legacy = timeit(lambda n=n, k=k: [np.random.choice(n, k, replace=False) for _ in range(batch)], 3, 1) * 1e6
        rows.append(f"| {n:,} | {k} | {numba:.1f} | {generator:.0f} | {legacy:,.0f} | {generator / numba:.0f}x | "
                    f"{legacy / numba:,.0f}x |")
    return "\n".join(rows)


def _cfg(agent: str, env: str, seed: int, steps: int, run_dir: Path, extra: list[str] | None = None) -> Any:
    return compose_train_config([], parse_args(_run_args(agent, env, seed, steps, run_dir) + (extra or []))[1])


def part_step(steps: int = 1500) -> str:
    """ms per env step once learning has started: selection + env step + one update, at the zoo's batch (64) and at
    the official code's (2 ceil(log2 N), with which OFFICIAL_TIMINGS.md was measured)."""
    rows = ["| env | N | batch | StochDQN (ms/step) | DQN, same net (ms/step) | official StochDQN | official DQN | "
            "official StochDQN / ours |", "|-|-|-|-|-|-|-|-|"]
    for env, n in (("inverted_pendulum_512", 512), ("halfcheetah_4096", 4096)):
        for batch in (64, 2 * subset_size(n)):
            per_step = []
            for agent in ("stochdqn", "fulldqn"):
                cfg = _cfg(agent, env, 0, 1000 + steps, RUNS / "step" / f"{env}_{agent}",
                           ["learning_starts=1000", "eval_freq=0", "exploration_final_eps=0.0",
                            "exploration_fraction=0.001", f"batch_size={batch}"])
                trainer = Trainer(cfg)
                trainer.model.learn(1000)  # fill the replay buffer first (random actions, no updates)
                start = time.perf_counter()
                trainer.model.learn(steps, reset_num_timesteps=False)
                per_step.append((time.perf_counter() - start) / steps * 1e3)
                trainer.close()
            official = OFFICIAL_MS[n]
            rows.append(f"| {env} | {n} | {batch} | {per_step[0]:.2f} | {per_step[1]:.1f} | {official[0]} | "
                        f"{official[1]} | {official[0] / per_step[0]:.1f}x |")
    return "\n".join(rows)


def _run_args(agent: str, env: str, seed: int, steps: int, run_dir: Path) -> list[str]:
    return [f"agent={agent}", f"env={env}", f"seed={seed}", f"total_timesteps={steps}",
            f"eval_freq={max(steps // 10, 1000)}", "eval_episodes=5", f"save_freq={steps}", "torch_threads=1",
            "progress_bar=false", f"run_dir={run_dir}"]


def part_returns() -> str:
    jobs = []
    for env, (steps, agents) in RETURN_PLAN.items():
        for agent, seeds in agents.items():
            name = env.rsplit("_", 1)[0] if agent == "sac" else env  # SAC on the continuous env
            jobs += [_run_args(agent, name, seed, steps, RUNS / env / f"{agent}_s{seed}") for seed in range(seeds)]
    train_all(jobs)
    sections = []
    for env, (steps, agents) in RETURN_PLAN.items():
        rows = [f"**{env}**, {steps:,} env steps per run, eval: 5 deterministic episodes at the end", "",
                "| agent | seeds | final eval return, mean +- std over seeds | per seed | wall time per run (s) |",
                "|-|-|-|-|-|"]
        for agent, seeds in agents.items():
            results = [json.loads((RUNS / env / f"{agent}_s{seed}" / "results.json").read_text())
                       for seed in range(seeds)]
            returns = [r["eval"]["mean_reward"] for r in results]
            label = f"sac (continuous {env.rsplit('_', 1)[0]})" if agent == "sac" else agent
            rows.append(f"| {label} | {seeds} | {mean_std(returns)} | "
                        f"{', '.join(f'{r:.0f}' for r in returns)} | "
                        f"{np.mean([r['wall_time_s'] for r in results]):.0f} |")
        out = PLOTS / f"stochdqn_{env}.png"
        compare.main([str(RUNS / env / "*"), "tag=eval/mean_reward", f"out={out}"])
        rows += ["", f"Curves: `{out}`; IQM table: `{out.with_suffix('.md')}`."]
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


def part_large() -> str:
    train_all([_run_args("stochdqn", env, 0, steps, RUNS / "large" / env) for env, steps in LARGE_BUDGET.items()])
    rows = ["| env | N | env steps | StochDQN final eval return | random policy return | wall time (s) |",
            "|-|-|-|-|-|-|"]
    for env, steps in LARGE_BUDGET.items():
        summary = json.loads((RUNS / "large" / env / "results.json").read_text())
        env_cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).parent / "configs" / "env" / f"{env}.yaml"))
        vec_env = make_vec_env(env_cfg, n_envs=1, seed=123, training=False)
        random_return = evaluate(RandomPolicy(vec_env.action_space), vec_env, 5, env_cfg).mean
        rows.append(f"| {env} | {vec_env.action_space.n:,} | {steps:,} | {summary['eval']['mean_reward']:.2f} | "
                    f"{random_return:.2f} | {summary['wall_time_s']:.0f} |")
        compare.main([str(RUNS / "large" / env), "tag=eval/mean_reward", f"out={PLOTS / f'stochdqn_{env}.png'}"])
    return "\n".join(rows)


def run(out_path: str, parts: str = ",".join(PARTS)) -> str:
    torch.set_num_threads(1)  # both sides of every ratio on one thread: no oversubscription with other jobs
    header = [
        "# Stochastic Q-learning benchmark", "",
        "Each part below was measured side by side in one run (`python -m runners.bench stochdqn parts=<part>`; all "
        "parts: `python -m runners.bench stochdqn`), with torch on one thread, on this machine:", "",
        f"{describe_machine()}.", "",
    ]
    titles = {
        "cost": "## Action selection + target computation per step (batch 64), same Q-network",
        "sampler": "## Sampling k distinct actions out of N (32 rows)",
        "step": "## One training step (selection + env step + one update), beside the official code",
        "returns": "## Return after equal env steps (3 seeds)",
        "large": "## 10^6 and 2^20 actions: StochDQN against a random policy (1 seed)",
    }
    functions = {"cost": part_cost, "sampler": part_sampler, "step": part_step, "returns": part_returns,
                 "large": part_large}
    return run_parts("stochdqn", out_path, parts, header, titles, functions)
