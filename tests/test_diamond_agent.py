"""DIAMOND's actor-critic, imagination and agent: lambda-returns and the loss by hand, rollout shapes, a tiny run on
real Breakout through the command line, and a save/load round trip."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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
from world_models.diamond import (
    DenoiserConfig,
    RewEndConfig,
    RewEndModel,
    SamplerConfig,
    frames_to_tensor,
    make_denoiser,
    make_sampler,
)
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
    # saved at the end of the epoch that reached save_freq = 300 steps, after its training; then came one final epoch
    assert resumed.episode_buffer.num_episodes >= 1 and resumed.num_timesteps == model.num_timesteps == 300
    assert resumed.epoch == model.epoch - 1 and model.final_epochs_done == 1
    assert resumed.updates["denoiser"] == model.updates["denoiser"] - 2  # train_steps of the final epoch
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


# ----------------------------------------------------------------------------------------------------------------
# The agent's loop: the official initial collection, final epochs, final frames, exact resume, evaluation
# ----------------------------------------------------------------------------------------------------------------
BREAKOUT = {"name": "breakout", "family": "atari", "id": "BreakoutNoFrameskip-v4", "preprocessing": "atari100k",
            "frame_size": None, "noop_max": 30, "frame_skip": 4, "max_episode_frames": 108000, "frame_stack": 4,
            "kwargs": {}, "max_episode_steps": None}


def breakout_env(seed: int = 1):  # noqa: ANN201
    from envs.factory import make_vec_env

    return make_vec_env(BREAKOUT, n_envs=1, seed=seed)


def tiny_diamond(env, **kwargs):  # noqa: ANN001, ANN003, ANN201
    from agents.diamond.agent import Diamond

    args = {"size": "tiny", "batch_size": 2, "rew_end_seq_length": 6, "initial_collect_steps": 40,
            "initial_collect_max_steps": 40, "threshold_rew": 0, "collect_steps": 20, "train_steps": 1,
            "first_epoch_train_steps": [2, 2, 1], "imagination_batch_size": 2, "horizon": 3, "warmup_steps": 1,
            "num_final_epochs": 0, "seed": 0, "device": "cpu"}
    return Diamond("CnnPolicy", env, **{**args, **kwargs})


def test_official_defaults_of_the_initial_collection_and_the_final_epochs() -> None:
    import inspect

    from agents.diamond.agent import Diamond

    # config/trainer.yaml of eloialonso/diamond: collection.train.first_epoch {min 5000, max 10000, threshold_rew 10},
    # steps_per_epoch 100; training.num_final_epochs 50
    defaults = {k: p.default for k, p in inspect.signature(Diamond).parameters.items()}
    assert (defaults["initial_collect_steps"], defaults["initial_collect_max_steps"], defaults["threshold_rew"]) == (
        5000, 10000, 10)
    assert (defaults["collect_steps"], defaults["num_final_epochs"]) == (100, 50)
    assert Diamond.official_eval_deterministic is False  # the official test collector samples from the policy


def test_learning_rates_and_updates_per_epoch_may_differ_per_component() -> None:
    """preset=cpu gives the denoiser and the reward/end model 1e-3 and the actor-critic 1e-4, and each its own
    number of updates per epoch: [denoiser, rew_end_model, actor_critic]."""
    # epoch 0 collects 40 initial + 20 steps and trains [2, 2, 1]; epoch 1 collects 20 more and trains [3, 0, 1]
    model = tiny_diamond(breakout_env(), learning_rate=[1e-3, 2e-4, 1e-4], train_steps=[3, 0, 1]).learn(80)
    assert model.updates == {"denoiser": 2 + 3, "rew_end_model": 2 + 0, "actor_critic": 1 + 1}
    lrs = {name: opt.param_groups[0]["lr"] for name, opt in model.optimizers.items()}
    assert lrs == {"denoiser": 1e-3, "rew_end_model": 2e-4, "actor_critic": 1e-4}  # past the 1-update warm-up
    assert model.learning_rate == 1e-4  # SB3's learning_rate: the policy's (the actor-critic's)
    with pytest.raises(ValueError, match=r"learning_rate=\[0.001, 0.0001\] needs one value for all components or "
                                         "one per component: denoiser, rew_end_model, actor_critic"):
        tiny_diamond(breakout_env(), learning_rate=[1e-3, 1e-4])
    with pytest.raises(ValueError, match=r"train_steps=\[1, -1, 1\] >= 0"):
        tiny_diamond(breakout_env(), train_steps=[1, -1, 1])
    # weight decay, gradient clipping and the first epoch's updates take one value or one per component alike
    one = tiny_diamond(breakout_env(), weight_decay=0.0, grad_clip=5.0, first_epoch_train_steps=4)
    assert (one.weight_decay, one.grad_clip, one.first_epoch_train_steps) == ([0.0] * 3, [5.0] * 3, [4] * 3)
    with pytest.raises(ValueError, match=r"grad_clip=\[1.0, 2.0\] needs one value for all components"):
        tiny_diamond(breakout_env(), grad_clip=[1.0, 2.0])


def test_initial_collection_waits_for_minority_rewards_and_final_epochs_train_without_collecting() -> None:
    env = breakout_env()
    # an unreachable threshold: the initial collection grows by collect_steps up to its maximum (60), epoch 1
    # collects 20 more and trains the first-epoch steps, then 2 final epochs train 1 step of each model, no collection
    model = tiny_diamond(env, initial_collect_steps=20, initial_collect_max_steps=60, threshold_rew=10**6,
                         num_final_epochs=2).learn(1)
    assert model.num_timesteps == 60 + 20 and model.reward_counts.sum() == 80
    assert model.epoch == 3 and model.final_epochs_done == 2
    assert model.updates == {"denoiser": 2 + 2, "rew_end_model": 2 + 2, "actor_critic": 1 + 2}
    # threshold 0: the minimum only, then epoch 1
    model = tiny_diamond(env, initial_collect_steps=20, initial_collect_max_steps=60, threshold_rew=0).learn(1)
    assert model.num_timesteps == 20 + 20 and model.epoch == 1
    # minority rewards: the steps of every reward sign but the most frequent one (official sum(sorted(counts)[:-1]))
    model.reward_counts = np.array([3, 90, 7])
    assert model.minority_rewards == 10
    model.reward_counts = np.array([0, 5, 95])
    assert model.minority_rewards == 5


def test_collected_episodes_keep_their_final_frame_and_the_reward_end_model_sees_it_after_an_end() -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    class Finals(BaseCallback):  # the terminal observations the env reported (shown to callbacks at the epoch end)
        def __init__(self) -> None:
            super().__init__()
            self.frames: list[np.ndarray] = []

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done:
                    self.frames.append(np.moveaxis(info["terminal_observation"], 0, -1))
            return True

    env, finals = breakout_env(), Finals()
    # a random Breakout player loses a life (a termination of a training episode) every few dozen steps
    model = tiny_diamond(env, initial_collect_steps=200, initial_collect_max_steps=200).learn(1, callback=finals)
    buffer = model.episode_buffer
    ends = [buffer.episode(i) for i in range(buffer.num_episodes) if buffer.episode(i).end[-1]]
    # every finished episode, then the one still going on (stored as it stands, as the official collector does)
    assert len(ends) >= 2 and len(finals.frames) == buffer.num_episodes - 1
    assert buffer.open_episodes == {0: buffer.num_episodes - 1} and buffer.episode(-1).final_obs is None
    assert len(buffer.episode(-1)) == buffer.pending_steps[0] and not buffer.episode(-1).end.any()
    for i, frame in enumerate(finals.frames):
        np.testing.assert_array_equal(buffer.episode(i).final_obs, frame)
    # the reward/end loss: the next frame of each terminal transition is the episode's real final frame
    seen = []
    rew_end = model.policy.rew_end_model

    def recording_forward(obs, act, next_obs):  # noqa: ANN001, ANN202, ARG001
        seen.append(next_obs)
        return torch.zeros(*act.shape, 3), torch.zeros(*act.shape, 2), None

    rew_end.forward = recording_forward
    segments, sample = [], buffer.sample_segments
    buffer.sample_segments = lambda *a, **k: segments.append(sample(*a, **k)) or segments[-1]
    checked = 0
    for _ in range(5):
        batch = model._segments(8, model.rew_end_seq_length, True)
        rew_end.loss(batch)
        next_obs, end = seen[-1], (batch.end & batch.mask)[:, :-1]
        for row, t in zip(*np.nonzero(end.numpy()), strict=True):
            episode = buffer.episode(int(segments[-1].episode_ids[row]))
            torch.testing.assert_close(next_obs[row, t], frames_to_tensor(episode.final_obs), rtol=0, atol=0)
            assert not batch.mask[row, t + 1]  # the segment itself holds grey padding there
            checked += 1
    assert checked > 0


def test_reward_end_batches_may_hold_a_share_of_segments_drawn_around_rewards_and_ends() -> None:
    """``rew_end_event_fraction``: round(fraction x batch) segments each hold a reward or an end among their
    transitions, the rest are the paper's; 0 (the default, and preset=cpu's) draws exactly the paper's batch."""
    env = breakout_env()
    model = tiny_diamond(env, initial_collect_steps=300, initial_collect_max_steps=300, batch_size=8,
                         rew_end_event_fraction=0.5, rew_end_seq_length=6).learn(1)
    buffer = model.episode_buffer
    assert len(buffer.find_steps("rew", lambda r: r > 0)[0]) > 0 and len(buffer.find_steps("end", lambda e: e)[0]) > 0
    for _ in range(10):
        batch = model._rew_end_segments()
        events = ((batch.rew != 0) | batch.end) & batch.mask
        assert batch.obs.shape[:2] == (8, 6) and events[4:, :-1].any(dim=1).all()  # the last 4: event segments
    assert buffer.counts("diamond").sum() >= 80  # the draws are counted as the paper's are
    # fraction 0: the very batch of the paper's sampler, from the same generator state
    model.rew_end_event_fraction = 0.0
    state = model._sampler.bit_generator.state
    paper = model._segments(8, 6, True)
    model._sampler.bit_generator.state = state
    ours = model._rew_end_segments()
    for name in ("obs", "act", "rew", "end", "mask"):
        torch.testing.assert_close(getattr(paper, name), getattr(ours, name), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"rew_end_event_fraction=1.5 must be in \[0, 1\]"):
        tiny_diamond(env, rew_end_event_fraction=1.5)


def test_event_drawn_reward_end_batches_train_with_the_logit_adjustment_of_the_buffer_counts() -> None:
    """With a fraction > 0 the loss gets the offsets of the buffer's own event counts and the batch's event share
    (None at fraction 0, the paper's loss, or with ``rew_end_logit_adjustment=False``); fraction 1 (every segment
    around an event) draws whole batches of event windows."""
    from world_models.diamond.reward_end import event_sampling_logit_offsets

    env = breakout_env()
    model = tiny_diamond(env, initial_collect_steps=300, initial_collect_max_steps=300, batch_size=4,
                         rew_end_event_fraction=1.0, rew_end_seq_length=6).learn(1)
    buffer = model.episode_buffer
    n_pos, n_end = len(buffer.find_steps("rew", lambda r: r > 0)[0]), len(buffer.find_steps("end", lambda e: e)[0])
    assert n_pos > 0 and n_end > 0 and len(buffer.find_steps("rew", lambda r: r < 0)[0]) == 0
    rew, end = model._rew_end_logit_offsets()
    expected = event_sampling_logit_offsets(buffer.num_steps, 0, n_pos, n_end, 1.0, 6)
    torch.testing.assert_close(rew, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(end, expected[1], rtol=0, atol=0)
    assert rew[2] > 0 and end[1] > 0 and rew[0] == 0  # rewards and ends over-drawn; no negative reward held
    batch = model._rew_end_segments()
    events = ((batch.rew != 0) | batch.end) & batch.mask
    assert batch.obs.shape[:2] == (4, 6) and events[:, :-1].any(dim=1).all()
    model.rew_end_logit_adjustment = False
    assert model._rew_end_logit_offsets() is None
    model.rew_end_logit_adjustment, model.rew_end_event_fraction = True, 0.0
    assert model._rew_end_logit_offsets() is None


def test_a_run_checkpointed_mid_epoch_and_resumed_matches_the_uninterrupted_run_exactly(tmp_path: Path) -> None:
    from agents.common.callbacks import CheckpointCallback
    from agents.diamond.agent import Diamond

    kwargs = {"num_final_epochs": 1, "epsilon": 0.5}  # exploration draws from the agent's sampler too

    def start(**changes: Any) -> Diamond:  # a policy far from uniform, so that its collection LSTM state matters
        model = tiny_diamond(breakout_env(), **{**kwargs, **changes})
        head = model.policy.actor_critic.actor_linear.weight
        head.data = torch.randn(head.shape, generator=torch.Generator().manual_seed(0))
        return model

    # the uninterrupted run, checkpointed by the runner's callback every 50 steps: 50 falls inside epoch 1's
    # collection (40 initial + 20), so the checkpoint waits for that epoch's end (60 steps) and its training
    uninterrupted = start()
    uninterrupted.learn(100, callback=CheckpointCallback(tmp_path, save_freq=50, keep=5, replay_buffer=True))
    steps = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "checkpoints").iterdir())
    assert steps == [60, 100] and uninterrupted.epoch == 3 + 1  # epochs ending at 60, 80, 100 steps, a final one
    checkpoint = tmp_path / "checkpoints" / "step_0000000060"
    saved = Diamond.load(checkpoint, device="cpu")
    assert saved.epoch == 1 and saved.updates == {"denoiser": 2, "rew_end_model": 2, "actor_critic": 1}

    # the interrupted run: the same start, stopped by learn(50) at the end of the epoch that reaches 50 steps; its env
    # goes on in this process, and the checkpoint (not this model) continues it
    interrupted = start(num_final_epochs=0)
    env = interrupted.learn(50).env
    assert interrupted.num_timesteps == 60
    for a, b in zip(interrupted.policy.state_dict().values(), saved.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    resumed = Diamond.load(checkpoint, env=env, device="cpu", force_reset=False)
    assert resumed.episode_buffer.pending_steps == interrupted.episode_buffer.pending_steps != {}
    np.testing.assert_array_equal(resumed._last_obs, interrupted._last_obs)  # where collection stood, and the
    for a, b in zip(resumed._collect_hidden, interrupted._collect_hidden, strict=True):  # policy's LSTM state
        np.testing.assert_array_equal(a, b)
    resumed.learn(40, reset_num_timesteps=False)

    assert resumed.num_timesteps == 100 and resumed.epoch == uninterrupted.epoch
    for (name, a), b in zip(uninterrupted.policy.state_dict().items(), resumed.policy.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert resumed.episode_buffer.lengths.tolist() == uninterrupted.episode_buffer.lengths.tolist()
    # a resume with a fresh env (the runner's resume=) resets it: the episode being collected is stored as it was
    fresh = Diamond.load(checkpoint, env=breakout_env(), device="cpu")
    assert fresh._last_obs is None and fresh._collect_hidden is None
    pending, stored = fresh.episode_buffer.pending_steps[0], fresh.episode_buffer.open_episodes[0]
    assert stored == fresh.episode_buffer.num_episodes - 1 and fresh.episode_buffer.lengths[stored] == pending
    fresh.learn(20, reset_num_timesteps=False)
    assert fresh.episode_buffer.lengths[stored] == pending  # finished as it was, in place of its open copy
    assert fresh.episode_buffer.open_episodes[0] > stored  # the new episode, open from its first collection
