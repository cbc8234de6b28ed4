"""DIAMOND's actor-critic, imagination and agent: lambda-returns and the loss by hand, rollout shapes, a tiny run on
real Breakout through the command line, and a save/load round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common.actor_critic import (
    ActorCritic,
    ActorCriticConfig,
    ImaginationLoop,
    Rollout,
    actor_critic_loss,
    lambda_returns,
)
from world_models.diamond import DenoiserConfig, RewEndConfig, RewEndModel, SamplerConfig, make_denoiser, make_sampler
from world_models.imagination import WorldModelEnv, imagine


def test_lambda_returns_stop_at_a_termination_and_bootstrap_fully_at_a_truncation() -> None:
    # gamma = lambda = 0.5; bootstrap v'_t = V(s_{t+1}) = [2, 4, 8, 6]; rewards [1, 0, 2, 0] (2 is clipped to 1);
    # a termination at t = 1, a truncation (the horizon) at t = 3.
    # one-step part r_t + gamma (1 - end_t) [(1 - trunc_t)(1 - lambda) + trunc_t] v'_t:
    #   t=0: 1 + 0.5 * 0.5 * 2 = 1.5;  t=1: 0 (ended);  t=2: 1 + 0.5 * 0.5 * 8 = 3;  t=3: 0 + 0.5 * 1 * 6 = 3
    # then G_t += gamma lambda G_{t+1} where the episode goes on at t:
    #   G_3 = 3 (truncated);  G_2 = 3 + 0.25 * 3 = 3.75;  G_1 = 0 (terminated);  G_0 = 1.5 + 0.25 * G_1 = 1.5
    rew = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    values = torch.tensor([[2.0, 4.0, 8.0, 6.0]])
    ends = torch.tensor([[False, True, False, False]])
    truncs = torch.tensor([[False, False, False, True]])
    got = lambda_returns(rew, values, ends, 0.5, 0.5, truncs)
    torch.testing.assert_close(got, torch.tensor([[1.5, 0.0, 3.75, 3.0]]))
    # without the truncation flag the last step bootstraps with (1 - lambda) v' + lambda v' = v': the same 3
    torch.testing.assert_close(lambda_returns(rew, values, ends, 0.5, 0.5), got)
    # the paper's gamma 0.985, lambda 0.95 on one step that does not end: r + gamma v' = 1 + 0.985 * 2
    one = lambda_returns(torch.ones(1, 1), torch.full((1, 1), 2.0), torch.zeros(1, 1, dtype=torch.bool), 0.985, 0.95)
    torch.testing.assert_close(one, torch.tensor([[2.97]]))


def test_actor_critic_loss_terms_on_a_hand_made_batch() -> None:
    # two actions with equal logits: log pi = -ln 2, entropy ln 2 (1 bit); V = [1, 0]; rewards [1, 1]; end at t = 1;
    # bootstrap [2, 5]; gamma = lambda = 0.5 -> G_1 = 1, G_0 = 1 + 0.25 * 2 + 0.25 * G_1 = 1.75
    # advantages (G - V) = [0.75, 1]: loss_actions = ln 2 * (0.75 + 1) / 2; loss_values = (0.75^2 + 1^2) / 2 = 0.78125
    values = torch.tensor([[1.0, 0.0]], requires_grad=True)
    r = Rollout(act=torch.tensor([[0, 1]]), rew=torch.ones(1, 2), end=torch.tensor([[False, True]]),
                trunc=torch.zeros(1, 2, dtype=torch.bool), logits=torch.zeros(1, 2, 2, requires_grad=True),
                values=values, bootstrap=torch.tensor([[2.0, 5.0]]))
    loss, logs = actor_critic_loss(r, gamma=0.5, lam=0.5, weight_value=1.0, weight_entropy=0.001)
    assert logs["loss_actions"] == pytest.approx(math.log(2) * 0.875)
    assert logs["loss_values"] == pytest.approx(0.78125)
    assert logs["loss_entropy"] == pytest.approx(-0.001 * math.log(2))
    assert logs["policy_entropy"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(math.log(2) * 0.875 + 0.78125 - 0.001 * math.log(2))
    loss.backward()
    # the advantages are detached: V gets only the value loss's gradient (V - G) = [-0.75, -1]
    torch.testing.assert_close(values.grad, torch.tensor([[-0.75, -1.0]]))


def test_actor_critic_matches_the_official_shapes_and_starts_uniform() -> None:
    model = ActorCritic(ActorCriticConfig.paper(num_actions=4))
    assert model.lstm.input_size == 64 * 4 * 4 and model.lstm.hidden_size == 512
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.logits.shape == (2, 4) and out.value.shape == (2,)
    assert torch.all(out.logits == 0) and torch.all(out.value == 0)  # zero-initialized heads


@pytest.fixture(scope="module")
def world_model_env() -> WorldModelEnv:
    torch.manual_seed(0)
    denoiser = make_denoiser(DenoiserConfig.tiny(4))
    rew_end = RewEndModel(RewEndConfig.tiny(4))

    def contexts(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(n, 4, 3, 64, 64) * 2 - 1, torch.randint(0, 4, (n, 4))

    return WorldModelEnv(make_sampler(denoiser, SamplerConfig()), rew_end, contexts, horizon=3, num_envs=2)


def test_imagination_produces_frames_rewards_and_ends_of_the_right_shapes(world_model_env: WorldModelEnv) -> None:
    ctx = world_model_env.sample_contexts(2)  # type: ignore[misc]
    out = imagine(world_model_env, ctx, lambda obs: torch.randint(0, 4, (obs.shape[0],)))
    assert out.obs.shape == (2, 4, 3, 64, 64) and out.obs.dtype == torch.float32
    assert out.obs.min() >= -1 and out.obs.max() <= 1
    torch.testing.assert_close(out.obs[:, 0], ctx[0][:, -1])  # the rollout starts at the context's last frame
    assert out.act.shape == out.rew.shape == out.end.shape == out.trunc.shape == (2, 3)
    assert out.rew.dtype == torch.float32 and set(out.rew.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert out.end.dtype == out.trunc.dtype == torch.bool
    assert out.trunc[:, -1].all() and not out.trunc[:, :-1].any()  # truncated at the horizon
    # the training loop: gradients reach the policy, dead envs restart from new contexts
    ac = ActorCritic(ActorCriticConfig.tiny(4))
    rollout = ImaginationLoop(world_model_env, ac).collect(4)
    assert rollout.values.shape == rollout.bootstrap.shape == (2, 4) and rollout.logits.shape == (2, 4, 4)
    assert rollout.values.requires_grad and not rollout.bootstrap.requires_grad
    for b in range(2):  # an imagined episode lasts at most the horizon (3); a truncation comes exactly at it
        length = 0
        for t in range(4):
            length += 1
            assert length <= 3 and (not rollout.trunc[b, t] or length == 3)
            length = 0 if rollout.end[b, t] or rollout.trunc[b, t] else length


def test_tiny_diamond_trains_on_breakout_logs_saves_loads_and_acts_the_same(tmp_path: Path) -> None:
    from agents.common.tblog import read_scalars
    from agents.diamond.agent import Diamond
    from envs.factory import make_vec_env
    from runners import train
    from runners.cli import run_main

    run_dir = tmp_path / "run"
    argv = ["agent=diamond", "env=breakout", "preset=tiny", "device=cpu", "progress_bar=false",
            "save_replay_buffer=true", f"run_dir={run_dir}"]
    assert run_main(train.main, argv) == 0
    scalars = read_scalars(run_dir)
    for tag in ("world_model/loss_denoising", "world_model/loss_rew", "world_model/loss_end", "imagination/return",
                "imagination/entropy", "train/loss_actions", "train/loss_values", "time/fps"):
        assert tag in scalars, tag
        assert np.isfinite(scalars[tag][:, 1]).all()
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert checkpoints and (checkpoints[-1] / "episode_buffer.npz").is_file()

    env = make_vec_env({"name": "breakout", "family": "atari", "id": "BreakoutNoFrameskip-v4",
                        "preprocessing": "atari100k", "frame_size": None, "noop_max": 30, "frame_skip": 4,
                        "max_episode_frames": 108000, "frame_stack": 4, "kwargs": {}, "max_episode_steps": None},
                       n_envs=1, seed=1)
    model = Diamond.load(run_dir / "final", env=env, device="cpu")
    resumed = Diamond.load(checkpoints[-1], env=env, device="cpu")
    # the episodes finished by then (the one still running is not stored yet), and the epoch counter
    assert resumed.episode_buffer.num_episodes >= 1 and resumed.epoch == 2  # saved during epoch 2's collection
    obs = env.reset()
    frames, state_a, state_b = [obs], None, None
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample()[None])
        frames.append(obs)
    model.save(tmp_path / "round_trip")
    again = Diamond.load(tmp_path / "round_trip", env=env, device="cpu")
    for i, frame in enumerate(frames):
        start = np.array([i == 0])
        a, state_a = model.predict(frame, state_a, start, deterministic=True)
        b, state_b = again.predict(frame, state_b, start, deterministic=True)
        assert a.shape == (1,) and a.tolist() == b.tolist()
        np.testing.assert_array_equal(state_a[0], state_b[0])
    torch.testing.assert_close(model.policy.state_dict(), again.policy.state_dict())
