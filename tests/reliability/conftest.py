"""Tiny trained runs of several agent kinds, built once per test session by the real ``runners.train``.

Each run is ``runs/<agent>`` under a session temp directory with ``config.yaml``, ``checkpoints/step_<n>/`` and
``final/``; tests tamper with copies (:func:`copy_run`), never with the originals. Runs are built lazily, so a
pytest-xdist worker builds only the agents its tests use.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from runners.cli import run_main

HOPPER = {"name": "hopper", "family": "mujoco", "id": "Hopper-v5", "kwargs": {}, "max_episode_steps": None,
          "discretize": None}
COMMON = ["progress_bar=false", "torch_threads=1", "eval_episodes=1", "device=cpu"]
# agent -> (env, arguments beyond COMMON); {data} is replaced by the path of the agent's dataset or demonstrations
TINY_RUNS: dict[str, tuple[str, list[str]]] = {
    "dqn": ("cartpole", ["preset=tiny", "total_timesteps=300", "save_freq=148", "eval_freq=0"]),  # train_freq 4
    "ppo": ("cartpole", ["preset=tiny", "n_envs=1", "total_timesteps=128", "save_freq=64", "eval_freq=0", "n_steps=64",
                         "batch_size=32", "n_epochs=1"]),
    "sac": ("pendulum", ["preset=tiny", "total_timesteps=120", "save_freq=60", "eval_freq=0", "learning_starts=60",
                         "batch_size=16", "env.max_episode_steps=50"]),
    "stochdqn": ("inverted_pendulum_512", ["preset=tiny", "total_timesteps=240", "save_freq=120", "eval_freq=0",
                                           "learning_starts=60", "batch_size=16", "env.max_episode_steps=50"]),
    "dt": ("hopper", ["preset=tiny", "total_timesteps=20", "save_freq=10", "eval_freq=0", "agent.dataset={data}",
                      "log_interval=5", "context=3", "n_layer=1", "env.max_episode_steps=30"]),
    "radt": ("hopper", ["preset=tiny", "total_timesteps=20", "save_freq=10", "eval_freq=0", "agent.dataset={data}",
                        "log_interval=5", "context=3", "n_layer=1", "env.max_episode_steps=30"]),
    "act": ("needle", ["preset=tiny", "total_timesteps=10", "save_freq=5", "eval_freq=0", "demos={data}",
                       "env.kwargs.image_size=32", "log_interval=5", "env.max_episode_steps=10"]),
    # StochDQN's siblings: the same classes and checkpoint code, another target (double) or the full max
    **{agent: ("inverted_pendulum_512", ["preset=tiny", "total_timesteps=240", "save_freq=120", "eval_freq=0",
                                         "learning_starts=60", "batch_size=16", "env.max_episode_steps=50"])
       for agent in ("stochddqn", "fulldqn", "fullddqn")},
    "stochq": ("frozenlake_deterministic", ["preset=tiny", "total_timesteps=400", "save_freq=200", "eval_freq=0"]),
    # the epoch-based world-model agents: checkpoints at epoch ends, here exactly at steps 100 and 200
    "diamond": ("breakout", ["preset=tiny", "total_timesteps=200", "save_freq=100", "eval_freq=0",
                             "agent.initial_collect_steps=50", "agent.threshold_rew=0", "agent.collect_steps=50",
                             "env.max_episode_frames=200"]),
    "delta_iris": ("crafter", ["preset=tiny", "total_timesteps=200", "save_freq=100", "eval_freq=0",
                               "agent.num_steps_first_epoch=100", "agent.num_steps=50", "env.kwargs.length=50"]),
}
AGENTS = tuple(TINY_RUNS)


def scripted_hopper_dataset(path: Path, steps: int = 400) -> Path:
    """``steps`` Hopper steps of a fixed policy a = tanh(W s), in the D4RL layout of envs.datasets."""
    from agents.common.buffers import atomic_savez
    from agents.common.episode_buffer import EpisodeBuffer
    from envs.factory import make_vec_env

    env = make_vec_env(HOPPER, n_envs=1, seed=0, training=False)
    w = np.random.default_rng(0).normal(0, 0.5, (3, 11))
    buffer = EpisodeBuffer((11,), np.float32, (3,), np.float32)
    obs = env.reset()
    for _ in range(steps):
        action = np.tanh(obs @ w.T).astype(np.float32)
        next_obs, reward, done, info = env.step(action)
        truncated = bool(info[0].get("TimeLimit.truncated", False))
        buffer.add_step(0, obs[0], action[0], float(reward[0]), bool(done[0]) and not truncated, truncated)
        obs = next_obs
        if done[0]:
            buffer.finish_episode(0)
    buffer.finish_episode(0)
    env.close()
    atomic_savez(path, buffer.to_d4rl_dict())
    return path


def needle_demos(path: Path) -> Path:
    """Two scripted-expert demonstrations of the needle task at 32x32 pixels, recorded by ``runners.demos``."""
    from runners.demos import main as demos_main

    assert run_main(demos_main, ["env=needle", "episodes=2", "image_size=32", f"out={path}", "progress=false"]) == 0
    return path


class TinyRuns:
    """Lazily trains one tiny run per agent in a session directory; ``runs[agent]`` is its run directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs: dict[str, Path] = {}
        self._data: dict[str, Path] = {}

    def data(self, kind: str) -> Path:
        if kind not in self._data:
            if kind == "hopper":
                self._data[kind] = scripted_hopper_dataset(self.root / "hopper-scripted.npz")
            else:
                self._data[kind] = needle_demos(self.root / "needle-demos.npz")
        return self._data[kind]

    def args(self, agent: str, run_dir: Path, *extra: str) -> list[str]:
        env, args = TINY_RUNS[agent]
        data = {"dt": "hopper", "radt": "hopper", "act": "needle"}.get(agent)
        args = [a.replace("{data}", str(self.data(data))) if data else a for a in args]
        return [f"agent={agent}", f"env={env}", *COMMON, *args, f"run_dir={run_dir}", *extra]

    def __getitem__(self, agent: str) -> Path:
        if agent not in self._runs:
            from runners.train import main as train_main

            run_dir = self.root / "runs" / agent
            assert run_main(train_main, self.args(agent, run_dir)) == 0, agent
            self._runs[agent] = run_dir
        return self._runs[agent]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return TinyRuns(tmp_path_factory.mktemp("reliability"))


def copy_run(run_dir: Path, parent: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run_dir, parent / name, symlinks=True))


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (symlinks by their target), to show that nothing was written."""
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            digest[key] = "-> " + str(path.readlink())
        elif path.is_file():
            digest[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest[key] = "dir"
    return digest


# --------------------------------------------------------------------------------------------------------------
# Longer tiny runs for kill-and-resume and determinism (items 1 and 2): every registered agent
# --------------------------------------------------------------------------------------------------------------
STOCH_ARGS = ["preset=tiny", "total_timesteps=480", "save_freq=60", "eval_freq=120", "learning_starts=60",
              "batch_size=16", "env.max_episode_steps=50"]
OFFLINE_ARGS = ["preset=tiny", "total_timesteps=80", "save_freq=10", "eval_freq=20", "agent.dataset={data}",
                "log_interval=5", "context=3", "n_layer=1", "env.max_episode_steps=30"]
# agent -> (env, arguments beyond COMMON, seconds of sleep per step in a killed run so that a kill lands mid-run)
LONG_RUNS: dict[str, tuple[str, list[str], float]] = {
    "dqn": ("cartpole", ["preset=tiny", "total_timesteps=800", "save_freq=100", "eval_freq=200"], 0.002),
    "ppo": ("cartpole", ["preset=tiny", "n_envs=1", "total_timesteps=640", "save_freq=64", "eval_freq=128",
                         "n_steps=32", "batch_size=32", "n_epochs=1"], 0.002),
    "sac": ("pendulum", ["preset=tiny", "total_timesteps=400", "save_freq=50", "eval_freq=100", "learning_starts=60",
                         "batch_size=16", "env.max_episode_steps=50"], 0.0),
    **{agent: ("inverted_pendulum_512", STOCH_ARGS, 0.0) for agent in ("stochdqn", "stochddqn", "fulldqn", "fullddqn")},
    "stochq": ("frozenlake_deterministic", ["preset=tiny", "total_timesteps=2000", "save_freq=250", "eval_freq=500"],
               0.001),
    "dt": ("hopper", OFFLINE_ARGS, 0.01),
    "radt": ("hopper", OFFLINE_ARGS, 0.01),
    "act": ("needle", ["preset=tiny", "total_timesteps=40", "save_freq=5", "eval_freq=10", "demos={data}",
                       "env.kwargs.image_size=32", "log_interval=5", "env.max_episode_steps=10"], 0.0),
    "diamond": ("breakout", ["preset=tiny", "total_timesteps=300", "save_freq=50", "eval_freq=0",
                             "env.max_episode_frames=200"], 0.0),
    # epochs of 50 steps after a first one of 100: a checkpoint at every epoch end, inside an episode (40 steps at
    # most); no final epoch, so that the last evaluation (step 400) sees the final model and the curve has each step
    # once
    "delta_iris": ("crafter", ["preset=tiny", "total_timesteps=400", "save_freq=50", "eval_freq=100",
                               "agent.num_steps_first_epoch=100", "agent.num_steps=50", "agent.num_final_epochs=0",
                               "env.kwargs.length=40"], 0.002),
}
LONG_AGENTS = tuple(LONG_RUNS)


def arg_value(args: list[str], key: str) -> int:
    return int(next(a for a in args if a.startswith(f"{key}=")).split("=", 1)[1])


class LongRuns(TinyRuns):
    """One uninterrupted :data:`LONG_RUNS` run per agent, trained in this process (the reference of items 1, 2)."""

    def args(self, agent: str, run_dir: Path, *extra: str) -> list[str]:
        env, args, _ = LONG_RUNS[agent]
        data = {"dt": "hopper", "radt": "hopper", "act": "needle"}.get(agent)
        args = [a.replace("{data}", str(self.data(data))) if data else a for a in args]
        return [f"agent={agent}", f"env={env}", *COMMON, *args, f"run_dir={run_dir}", *extra]

    def __getitem__(self, agent: str) -> Path:
        if agent not in self._runs:
            from runners.train import main as train_main

            run_dir = self.root / "long" / agent
            assert run_main(train_main, self.args(agent, run_dir)) == 0, agent
            self._runs[agent] = run_dir
        return self._runs[agent]


@pytest.fixture(scope="session")
def long_runs(runs: TinyRuns) -> LongRuns:
    long = LongRuns(runs.root)
    long._data = runs._data  # one dataset and one set of demonstrations per session
    return long
