"""Issue 9, item 4: a NaN in an observation or in a loss stops the run (``nan_guard=true``, the default) with one
line naming the step and the last good checkpoint, which stays intact and loads with finite weights.

Observations: a real gymnasium env registered here returns NaN observations from its k-th step on. Losses: one
parameter of the real policy is poisoned with NaN just before an update, so the loss and the gradients of that
update are NaN (the way a diverging run ends). No algorithm of the zoo defines skipping a non-finite update, so in
every case the run stops.

What applies where:

- tabular StochQ has no loss, no gradient and Discrete observations (no NaN possible): its TD error is checked, and
  a NaN reward (which would make its Q-table NaN) stops the run at the step of the first NaN TD error;
- DIAMOND and Δ-IRIS take uint8 frames, which hold no NaN: an env with float frames (where a NaN could be) is
  refused before anything is written; a NaN in a loss of their world model or actor-critic stops the run at the
  end of that epoch, before its checkpoint (their checkpoints fall at epoch ends);
- every agent with gradients logs a finite gradient norm per update (``train/grad_norm``; SAC one per network; the
  world-model agents one per component).
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


class NanRewardAfter(NanObservationAfter):
    """Rewards become NaN from the ``nan_step``-th call of ``step`` on (observations stay as they are)."""

    def step(self, action: Any) -> tuple:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, float("nan") if self.steps >= self.nan_step else reward, terminated, truncated, info


class FloatFrames(gym.ObservationWrapper):
    """Crafter with float32 frames in [0, 1], NaN from the ``nan_step``-th step on: frames that could hold a NaN."""

    def __init__(self, env: gym.Env, nan_step: int = NAN_STEP) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0.0, 1.0, env.observation_space.shape, np.float32)
        self.nan_step, self.steps = nan_step, 0

    def step(self, action: Any) -> tuple:
        self.steps += 1
        return super().step(action)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        frames = observation.astype(np.float32) / 255
        return np.full_like(frames, np.nan) if self.steps >= self.nan_step else frames


def _register(env_id: str, make: Any) -> None:
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=make)


for _base in ("CartPole-v1", "Pendulum-v1", "InvertedPendulum-v5"):
    _register(f"reliability/Nan{_base}", lambda base=_base, **kw: NanObservationAfter(gym.make(base, **kw)))
_register("reliability/NanRewardFrozenLake-v1",
          lambda **kw: NanRewardAfter(gym.make("FrozenLake-v1", is_slippery=False, **kw)))
_register("reliability/FloatCrafter-v1",
          lambda length=50, **kw: FloatFrames(gym.make("zoo/Crafter-v1", length=length, **kw)))

COMMON = ["progress_bar=false", "torch_threads=1", "eval_freq=0", "eval_episodes=1", "device=cpu", "save_freq=50",
          "keep_checkpoints=2", "preset=tiny"]
STOCH_OBS = ["env=reliability/NanInvertedPendulum-v5", "env.discretize=512", "learning_starts=50", "batch_size=16",
             "total_timesteps=400"]
OBS_RUNS = {
    "dqn": ["agent=dqn", "env=reliability/NanCartPole-v1", "learning_starts=50", "total_timesteps=400"],
    "ppo": ["agent=ppo", "env=reliability/NanCartPole-v1", "n_envs=1", "n_steps=32", "batch_size=32", "n_epochs=1",
            "total_timesteps=400"],
    "sac": ["agent=sac", "env=reliability/NanPendulum-v1", "learning_starts=50", "batch_size=16",
            "total_timesteps=400"],
    **{agent: [f"agent={agent}", *STOCH_OBS] for agent in ("stochdqn", "stochddqn", "fulldqn", "fullddqn")},
    # tabular: Discrete observations cannot be NaN; a NaN reward makes the TD error NaN at that very step
    "stochq": ["agent=stochq", "env=reliability/NanRewardFrozenLake-v1", "total_timesteps=400"],
}
# what the guard names, when it is not a NaN observation
OBS_FAULT = {"stochq": "non-finite training value train/td_error=nan"}


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
    state = model.policy.state_dict()  # weights and buffers (StochQ's Q-table, the EMA codebook of Δ-IRIS)
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    return last


@pytest.mark.parametrize("agent", sorted(OBS_RUNS))
def test_nan_observation_stops_the_run_at_its_step_and_keeps_the_last_checkpoint(
    agent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = run_main(train.main, [*COMMON, *OBS_RUNS[agent], f"run_dir={run_dir}"])
    assert code == 1
    what = OBS_FAULT.get(agent, "non-finite observation from the env")
    last = assert_stopped_with_an_intact_checkpoint(run_dir, capsys.readouterr().err, NAN_STEP, what)
    # the checkpoint due at step 100 holds its rollout's update: PPO (n_steps=32) writes it after step 128
    assert last.name == ("step_0000000128" if agent == "ppo" else "step_0000000100")


@pytest.mark.parametrize("agent", ["diamond", "delta_iris"])
def test_world_model_agents_refuse_float_frames_that_could_hold_a_nan(
    agent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = run_main(train.main, [*COMMON, f"agent={agent}", "env=reliability/FloatCrafter-v1", "total_timesteps=200",
                                 f"run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and err.startswith(f"error: {agent} needs uint8 image observations"), err
    assert "reliability/FloatCrafter-v1 has Box(0.0, 1.0, (64, 64, 3), float32)" in err, err
    assert not run_dir.exists()


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
    # ACT: gradient step 8 is the first with a NaN loss; checkpoints every 5 gradient steps
    "act": ("agents.act.agent:ACT", "train_step", 8, ["agent=act", "env=needle", "total_timesteps=12", "save_freq=5",
                                                      "demos={data}", "env.kwargs.image_size=32", "log_interval=5",
                                                      "env.max_episode_steps=10"], 8),
    # StochDQN and its siblings (the train() of the StochDQN class they share): DQN's schedule, read at step 60
    **{agent: ("agents.stochdqn.stochdqn:StochDQN", "train", 3,
               [f"agent={agent}", "env=inverted_pendulum_512", "learning_starts=50", "train_freq=4", "batch_size=16",
                "total_timesteps=200", "env.max_episode_steps=50"], 60)
       for agent in ("stochdqn", "stochddqn", "fulldqn", "fullddqn")},
    # the world-model agents: epochs end at steps 100, 150, 200 and train once each (the second is poisoned, its
    # first parameter: the denoiser's, the tokenizer's); the guard stops the run at the end of that epoch (150),
    # before its checkpoint
    "diamond": ("agents.diamond.agent:Diamond", "train", 2,
                ["agent=diamond", "env=breakout", "total_timesteps=200", "agent.initial_collect_steps=50",
                 "agent.threshold_rew=0", "agent.collect_steps=50", "env.max_episode_frames=200"], 150),
    "delta_iris": ("agents.delta_iris.agent:DeltaIris", "train", 2,
                   ["agent=delta_iris", "env=crafter", "total_timesteps=200", "agent.num_steps_first_epoch=100",
                    "agent.num_steps=50", "env.kwargs.length=50"], 150),
}
# the start of what the guard names: the world-model agents log world_model/ and imagination/ values too
LOSS_FAULT = {"diamond": "non-finite training value ", "delta_iris": "non-finite training value "}
DATA = {"dt": "hopper", "act": "needle"}


@pytest.mark.parametrize("agent", sorted(LOSS_RUNS))
def test_nan_loss_stops_the_run_before_the_poisoned_weights_are_saved(
    agent: str, runs: TinyRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    target, method, call, args, step = LOSS_RUNS[agent]
    module, name = target.split(":")
    method, _, parameter = method.partition(":")
    poison_before(getattr(importlib.import_module(module), name), method, call, monkeypatch, parameter)
    if agent in DATA:
        args = [a.replace("{data}", str(runs.data(DATA[agent]))) for a in args]
    run_dir = tmp_path / "run"
    capsys.readouterr()
    code = run_main(train.main, [*COMMON, *args, f"run_dir={run_dir}"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert_stopped_with_an_intact_checkpoint(run_dir, err, step,
                                             LOSS_FAULT.get(agent, "non-finite training value train/"))
    assert re.search(r"(train|world_model)/\w*loss\w*=nan", err), err


def test_nan_guard_is_on_by_default_and_can_be_turned_off() -> None:
    from runners.config import compose_train_config

    assert compose_train_config([], {"agent": "dqn", "env": "cartpole"}).nan_guard is True
    assert compose_train_config([], {"agent": "dqn", "env": "cartpole", "nan_guard": "false"}).nan_guard is False


# agent -> its gradient norms (the norm before clipping, averaged over what is logged at a step)
GRAD_NORM_TAGS = {
    **{agent: ("train/grad_norm",) for agent in ("dqn", "ppo", "stochdqn", "stochddqn", "fulldqn", "fullddqn", "dt",
                                                 "radt", "act")},
    "diamond": ("world_model/grad_norm_denoising", "world_model/grad_norm_rew_end", "train/grad_norm"),
    "delta_iris": ("world_model/grad_norm_tokenizer", "world_model/grad_norm", "train/grad_norm"),
}


@pytest.mark.parametrize("agent", sorted(GRAD_NORM_TAGS))
def test_every_update_logs_a_finite_gradient_norm(agent: str, runs: TinyRuns) -> None:
    from agents.common.tblog import read_scalars

    scalars = read_scalars(runs[agent])
    for tag in GRAD_NORM_TAGS[agent]:
        assert tag in scalars, (tag, sorted(scalars))
        values = np.asarray(scalars[tag])[:, 1]
        assert len(values) and np.isfinite(values).all() and (values > 0).all(), (tag, values)


def test_sac_logs_the_gradient_norms_of_actor_and_critic() -> None:
    from stable_baselines3.common.logger import configure

    from agents.baselines import SAC

    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=20, batch_size=16, seed=0,
                policy_kwargs={"net_arch": [16]})
    model.set_logger(configure(None, []))
    model.learn(40)
    logged = model.logger.name_to_value
    assert logged["train/actor_grad_norm"] > 0 and logged["train/critic_grad_norm"] > 0
