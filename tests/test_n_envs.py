"""Parallel collection: every online agent of the registry trains with ``n_envs=2`` in a ``SubprocVecEnv``."""

from __future__ import annotations

from pathlib import Path

import pytest
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnvWrapper

from agents.common.registry import REGISTRY
from runners.cli import run_main
from runners.config import compose_train_config
from runners.train import Trainer
from runners.train import main as train_main

TINY = ["preset=tiny", "eval_freq=0", "eval_episodes=1", "progress_bar=false"]
WORLD_MODEL_TINY = ["total_timesteps=200", "save_freq=200"]
# agent -> (env, arguments): a few hundred env steps, with at least one update of every network
CASES: dict[str, tuple[str, list[str]]] = {
    "dqn": ("cartpole", ["total_timesteps=256", "agent.learning_starts=64"]),
    "ppo": ("cartpole", ["total_timesteps=256", "agent.n_steps=64", "agent.batch_size=64", "agent.n_epochs=1"]),
    "sac": ("pendulum", ["total_timesteps=128", "agent.learning_starts=64"]),
    **{agent: ("cartpole", ["total_timesteps=256", "agent.learning_starts=64"])
       for agent in ("stochdqn", "stochddqn", "fulldqn", "fullddqn")},
    "diamond": ("breakout", [*WORLD_MODEL_TINY, "agent.initial_collect_steps=100",
                             "agent.initial_collect_max_steps=100", "env.max_episode_frames=200"]),
    "delta_iris": ("crafter", [*WORLD_MODEL_TINY, "agent.num_steps_first_epoch=150", "env.kwargs.length=50"]),
}
REFUSED = {"stochq": ("frozenlake", "stochq runs one env; got a VecEnv of 2 envs (use n_envs=1)")}


def trainer(agent: str, env: str, *args: str) -> Trainer:
    return Trainer(compose_train_config([], dict(a.split("=", 1) for a in
                                                 (f"agent={agent}", f"env={env}", *TINY, *args))))


def test_every_online_agent_of_the_registry_is_covered() -> None:
    online = {agent for agent, spec in REGISTRY.items() if spec.learns_from == "online"}
    assert online == set(CASES) | set(REFUSED)


@pytest.mark.parametrize("agent", sorted(CASES))
def test_agent_collects_from_two_subprocess_envs(tmp_path: Path, agent: str) -> None:
    env, args = CASES[agent]
    run = trainer(agent, env, "n_envs=2", "vec_env=subproc", *args)
    venv = run.env.venv if isinstance(run.env, VecEnvWrapper) else run.env  # Atari: VecFrameStack over the envs
    assert isinstance(venv, SubprocVecEnv) and venv.num_envs == 2
    run.attach(tmp_path)
    summary = run.train()
    model = run.model
    assert model.n_envs == 2
    assert summary["num_timesteps"] >= run.cfg.total_timesteps
    if hasattr(model, "replay_buffer"):  # off-policy: one transition per env per VecEnv step
        assert model.replay_buffer.n_envs == 2 and model.replay_buffer.pos * 2 == model.num_timesteps
    if hasattr(model, "rollout_buffer"):
        assert model.rollout_buffer.n_envs == 2 and model.rollout_buffer.buffer_size * 2 == 128


def test_tabular_stochq_refuses_several_envs_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env, message = REFUSED["stochq"]
    args = ["agent=stochq", f"env={env}", "n_envs=2", "vec_env=subproc", f"run_dir={tmp_path / 'run'}", *TINY]
    assert run_main(train_main, args) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("env", "expected"),
    [("inverted_pendulum_512", {"type": "grid", "levels": 512, "dims": 1}),
     ("cartpole", {"type": "embedding", "n": 2, "dim": 32})],
)
def test_stochdqn_reads_the_action_representation_through_subprocess_envs(env: str, expected: dict) -> None:
    # a missing action_representation() used to be asked inside the worker, which killed it (EOFError)
    run = trainer("stochdqn", env, "n_envs=2", "vec_env=subproc")
    try:
        assert run.model.stoch_kwargs["action_spec"] == expected
        run.env.reset()
        run.env.step(run.env.action_space.sample().repeat(2))  # both workers are alive
    finally:
        run.env.close()
        run.eval_env.close()
