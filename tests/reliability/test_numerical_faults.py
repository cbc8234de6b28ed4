"""Issue 9, item 4: a NaN in an observation or in a loss stops the run (``nan_guard=true``, the default) with one
line naming the step and the last good checkpoint, which stays intact and loads with finite weights.

Observations: a real gymnasium env registered here returns NaN observations from its k-th step on. Losses: one
parameter of the real policy is poisoned with NaN just before an update, so the loss and the gradients of that
update are NaN (the way a diverging run ends). No algorithm of the zoo defines skipping a non-finite update, so in
every case the run stops.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.common.callbacks import latest_checkpoint
from agents.common.checkpoint import verify_checkpoint
from agents.common.registry import load_agent
from runners import train
from runners.cli import run_main
from tests.reliability.conftest import TinyRuns

NAN_STEP = 130


class NanObservationAfter(gym.Wrapper):
    """Observations become NaN from the ``nan_step``-th call of ``step`` of this env instance on."""

    def __init__(self, env: gym.Env, nan_step: int = NAN_STEP) -> None:
        super().__init__(env)
        self.nan_step, self.steps = nan_step, 0

    def step(self, action: Any) -> tuple:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps >= self.nan_step:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


for _base in ("CartPole-v1", "Pendulum-v1"):
    _id = f"reliability/Nan{_base}"
    if _id not in gym.registry:
        gym.register(_id, entry_point=lambda base=_base, **kw: NanObservationAfter(gym.make(base, **kw)))

COMMON = ["progress_bar=false", "torch_threads=1", "eval_freq=0", "eval_episodes=1", "device=cpu", "save_freq=50",
          "keep_checkpoints=2", "preset=tiny"]
OBS_RUNS = {
    "dqn": ["agent=dqn", "env=reliability/NanCartPole-v1", "learning_starts=50", "total_timesteps=400"],
    "ppo": ["agent=ppo", "env=reliability/NanCartPole-v1", "n_envs=1", "n_steps=32", "batch_size=32", "n_epochs=1",
            "total_timesteps=400"],
    "sac": ["agent=sac", "env=reliability/NanPendulum-v1", "learning_starts=50", "batch_size=16",
            "total_timesteps=400"],
}


def assert_stopped_with_an_intact_checkpoint(run_dir: Path, err: str, step: int, what: str) -> Path:
    last = latest_checkpoint(run_dir)
    assert last is not None and verify_checkpoint(last)
    err = err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"error: nan_guard: {what}"), err
    assert f" at step {step}; the run stopped; last good checkpoint: {last} (intact)" in err, err
    assert not (run_dir / "final").exists()
    model = load_agent(last, device="cpu")
    assert model.num_timesteps <= step
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    return last


@pytest.mark.parametrize("agent", sorted(OBS_RUNS))
def test_nan_observation_stops_the_run_at_its_step_and_keeps_the_last_checkpoint(
    agent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = run_main(train.main, [*OBS_RUNS[agent], *COMMON, f"run_dir={run_dir}"])
    assert code == 1
    last = assert_stopped_with_an_intact_checkpoint(run_dir, capsys.readouterr().err, NAN_STEP,
                                                    "non-finite observation from the env")
    # the checkpoint due at step 100 holds its rollout's update: PPO (n_steps=32) writes it after step 128
    assert last.name == ("step_0000000128" if agent == "ppo" else "step_0000000100")


def poison_before(cls: type, method: str, call: int, monkeypatch: pytest.MonkeyPatch, parameter: str = "") -> None:
    """Before the ``call``-th call of ``cls.<method>``, set a parameter of the policy (its first, or the one named
    ``parameter``) to NaN."""
    original = getattr(cls, method)
    calls = {"n": 0}

    def poisoned(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            named = dict(self.policy.named_parameters())
            with torch.no_grad():
                (named[parameter] if parameter else next(iter(named.values()))).fill_(float("nan"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, poisoned)


# agent -> (class path, method, poisoned call, arguments, step at which the guard stops the run)
LOSS_RUNS = {
    # PPO: update 3 follows the rollout of steps 65-96; the guard reads train/* at step 96. The checkpoint due at
    # step 50 is written after update 2, at step 64 (see CheckpointCallback). The value head is poisoned: NaN policy
    # logits would be refused by torch's Categorical inside SB3's train() itself
    "ppo": ("agents.baselines:PPO", "train:value_net.weight", 3,
            ["agent=ppo", "env=cartpole", "n_envs=1", "n_steps=32", "batch_size=32", "n_epochs=1",
             "total_timesteps=200"],
            96),
    # DQN (train_freq 4, learning_starts 50): the 3rd update runs after step 60 and is read at the next rollout
    "dqn": ("agents.baselines:DQN", "train", 3, ["agent=dqn", "env=cartpole", "learning_starts=50", "train_freq=4",
                                                 "total_timesteps=200"], 60),
    # DT: gradient step 75 is the first with a NaN loss; checkpoints every 50 gradient steps
    "dt": ("agents.radt.agent:DT", "train_step", 75, ["agent=dt", "env=hopper", "total_timesteps=120", "context=3",
                                                      "n_layer=1", "log_interval=10", "agent.dataset={data}"], 75),
}


@pytest.mark.parametrize("agent", sorted(LOSS_RUNS))
def test_nan_loss_stops_the_run_before_the_poisoned_weights_are_saved(
    agent: str, runs: TinyRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    target, method, call, args, step = LOSS_RUNS[agent]
    module, name = target.split(":")
    method, _, parameter = method.partition(":")
    poison_before(getattr(importlib.import_module(module), name), method, call, monkeypatch, parameter)
    if agent == "dt":
        args = [a.replace("{data}", str(runs.data("hopper"))) for a in args]
    run_dir = tmp_path / "run"
    capsys.readouterr()
    code = run_main(train.main, [*args, *COMMON, f"run_dir={run_dir}"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert_stopped_with_an_intact_checkpoint(run_dir, err, step, "non-finite training value train/")
    assert re.search(r"train/\w*loss\w*=nan", err), err


def test_nan_guard_is_on_by_default_and_can_be_turned_off() -> None:
    from runners.config import compose_train_config

    assert compose_train_config([], {"agent": "dqn", "env": "cartpole"}).nan_guard is True
    assert compose_train_config([], {"agent": "dqn", "env": "cartpole", "nan_guard": "false"}).nan_guard is False


@pytest.mark.parametrize("agent", ["dqn", "ppo", "stochdqn", "dt", "radt", "act"])
def test_every_update_logs_a_finite_gradient_norm(agent: str, runs: TinyRuns) -> None:
    from agents.common.tblog import read_scalars

    scalars = read_scalars(runs[agent])
    assert "train/grad_norm" in scalars and np.isfinite(np.asarray(scalars["train/grad_norm"])).all(), sorted(scalars)


def test_sac_logs_the_gradient_norms_of_actor_and_critic() -> None:
    from stable_baselines3.common.logger import configure

    from agents.baselines import SAC

    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=20, batch_size=16, seed=0,
                policy_kwargs={"net_arch": [16]})
    model.set_logger(configure(None, []))
    model.learn(40)
    logged = model.logger.name_to_value
    assert logged["train/actor_grad_norm"] > 0 and logged["train/critic_grad_norm"] > 0
