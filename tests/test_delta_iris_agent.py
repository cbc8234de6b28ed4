"""Δ-IRIS's actor-critic and agent: lambda-returns, the EMA target, the two-hot value loss and the count-based
episode weights by hand; a tiny run on real Crafter through the command line; save/load; an exact resume; the play
protocol; bad configurations."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.common.actor_critic import lambda_returns
from agents.common.episode_buffer import Episode, EpisodeBuffer
from agents.delta_iris.actor_critic import (
    ActorCritic,
    ActorCriticConfig,
    CnnLstm,
    Imagined,
    actor_critic_loss,
    mask_after_first_end,
)

CRAFTER = {"name": "crafter", "family": "crafter", "id": "zoo/Crafter-v1",
           "kwargs": {"area": [64, 64], "view": [9, 9], "size": [64, 64], "reward": True, "length": 100},
           "max_episode_steps": None}
BREAKOUT = {"name": "breakout", "family": "atari", "id": "BreakoutNoFrameskip-v4", "preprocessing": "atari100k",
            "frame_size": None, "noop_max": 30, "frame_skip": 4, "max_episode_frames": 108000, "frame_stack": 4,
            "kwargs": {}, "max_episode_steps": None}
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# The actor-critic's equations
# ----------------------------------------------------------------------------------------------------------------
def three_steps(value_logits: torch.Tensor, logits: torch.Tensor | None = None) -> Imagined:
    """Rewards [1, 2, 3], an end at t = 1, target values V'(s_t) = [4, 8, 6], V'(s_3) = 10 (the final frame)."""
    return Imagined(act=torch.tensor([[0, 1, 0]]), rew=torch.tensor([[1.0, 2.0, 3.0]]),
                    end=torch.tensor([[False, True, False]]),
                    logits=torch.zeros(1, 3, 2, requires_grad=True) if logits is None else logits,
                    value_logits=value_logits, target_values=torch.tensor([[4.0, 8.0, 6.0]]),
                    bootstrap=torch.tensor([10.0]))


def test_lambda_returns_by_hand_on_three_steps_with_an_end() -> None:
    # gamma = lambda = 0.5; v'_t = V'(s_{t+1}) = [8, 6, 10];
    # G_t = r_t + gamma (1 - end_t) [(1 - lambda) v'_t + lambda G_{t+1}]:
    #   G_2 = 3 + 0.5 * (0.5 * 10 + 0.5 * 10) = 8          (G_3 := v'_2 = 10)
    #   G_1 = 2                                            (the episode ends at t = 1)
    #   G_0 = 1 + 0.5 * (0.5 * 8 + 0.5 * G_1) = 1 + 2 + 0.5 = 3.5
    rew, ends = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[False, True, False]])
    next_values = torch.tensor([[8.0, 6.0, 10.0]])
    got = lambda_returns(rew, next_values, ends, 0.5, 0.5, sign_rewards=False)
    torch.testing.assert_close(got, torch.tensor([[3.5, 2.0, 8.0]]))
    # DIAMOND's default clips the rewards to their sign: [1, 1, 1] -> G_2 = 6, G_1 = 1, G_0 = 1 + 2 + 0.25 = 3.25
    torch.testing.assert_close(lambda_returns(rew, next_values, ends, 0.5, 0.5), torch.tensor([[3.25, 1.0, 6.0]]))
    # the steps after the first end do not count
    assert mask_after_first_end(ends).tolist() == [[True, True, False]]
    assert mask_after_first_end(torch.tensor([[False, False], [True, True]])).tolist() == [[True, True], [True, False]]


def test_loss_terms_by_hand_with_the_target_baseline_and_the_mask_after_the_first_end() -> None:
    # Atari's scalar critic: V(s_t) = [1, 1, 99]; the third step (after the end) is masked out, 99 included.
    # G = [3.5, 2] where counted; advantages from the TARGET values: G - V' = [3.5 - 4, 2 - 8] = [-0.5, -6]
    # two equal logits: log pi = -ln 2, entropy ln 2 (1 bit)
    value_logits = torch.tensor([[[1.0], [1.0], [99.0]]], requires_grad=True)
    loss, logs = actor_critic_loss(three_steps(value_logits), gamma=0.5, lam=0.5, entropy_weight=0.001,
                                   two_hot_returns=False)
    assert logs["loss_actions"] == pytest.approx(math.log(2) * (-0.5 - 6) / 2)
    assert logs["loss_values"] == pytest.approx(((1 - 3.5) ** 2 + (1 - 2) ** 2) / 2)
    assert logs["loss_entropy"] == pytest.approx(-0.001 * math.log(2))
    assert logs["policy_entropy"] == pytest.approx(1.0)
    assert logs["lambda_return"] == pytest.approx((3.5 + 2) / 2)
    loss.backward()
    torch.testing.assert_close(value_logits.grad[..., 0], torch.tensor([[1 - 3.5, 1 - 2, 0.0]]))  # (V - G) / 2 * 2


def test_two_hot_value_loss_on_a_hand_value() -> None:
    # one step that ends with reward e - 1: G = e - 1, symlog(G) = 1. The 255 buckets of [-20, 20] are 40/254 apart:
    # 1 sits at 21 * 254 / 40 = 133.35 buckets from -20, so two_hot puts 0.65 on bucket 133 and 0.35 on bucket 134.
    # Logits 0 except ln 2 at bucket 133: p_133 = 2/256, p_134 = 1/256 -> CE = 0.65 ln 128 + 0.35 ln 256.
    g = math.e - 1
    value_logits = torch.zeros(1, 1, 255)
    value_logits[0, 0, 133] = math.log(2)
    im = Imagined(act=torch.zeros(1, 1, dtype=torch.long), rew=torch.tensor([[g]]), end=torch.tensor([[True]]),
                  logits=torch.zeros(1, 1, 3), value_logits=value_logits, target_values=torch.zeros(1, 1),
                  bootstrap=torch.tensor([7.0]))
    _, logs = actor_critic_loss(im, gamma=0.997, lam=0.95, entropy_weight=0.001, two_hot_returns=True)
    assert logs["lambda_return"] == pytest.approx(g)  # the end stops the bootstrap on 7
    assert logs["loss_values"] == pytest.approx(0.65 * math.log(128) + 0.35 * math.log(256), rel=1e-5)


def test_ema_target_update_by_hand_and_the_official_network_size() -> None:
    ac = ActorCritic(ActorCriticConfig.tiny(5))
    assert not any(p.requires_grad for p in ac.target_model.parameters())
    with torch.no_grad():
        for p in ac.model.parameters():
            p.fill_(3.0)
        for p in ac.target_model.parameters():
            p.fill_(1.0)
    ac.update_target(0.995)  # 0.995 * 1 + 0.005 * 3 = 1.01
    assert all(torch.allclose(p, torch.full_like(p, 1.01)) for p in ac.target_model.parameters())
    ac.update_target(0.995)  # 0.995 * 1.01 + 0.005 * 3 = 1.01995
    assert all(torch.allclose(p, torch.full_like(p, 1.01995)) for p in ac.target_model.parameters())
    # config/params/crafter.yaml with Crafter's 17 actions: 3,745,216 parameters, as the official CnnLstmActorCritic;
    # FrameEncoder 3 -> 32 ch to 8x8x16 = 1024 features, LSTMCell(1024, 512), a zero critic over 255 buckets
    model = CnnLstm(ActorCriticConfig.crafter(17))
    assert sum(p.numel() for p in model.parameters()) == 3_745_216
    assert model.lstm.input_size == 1024 and model.lstm.hidden_size == 512
    out = model(torch.rand(2, 3, 64, 64))
    assert out.logits.shape == (2, 17) and out.value_logits.shape == (2, 255) and torch.all(out.value_logits == 0)
    assert CnnLstm(ActorCriticConfig.atari(4))(torch.rand(1, 3, 64, 64)).value_logits.shape == (1, 1)


def test_count_based_episode_weights_by_hand() -> None:
    buffer = EpisodeBuffer((2, 2, 3), np.uint8, (), np.int64)
    for n in (3, 5, 4):
        buffer.add_episode(Episode(np.zeros((n, 2, 2, 3), np.uint8), np.zeros(n, np.int64), np.zeros(n, np.float32),
                                   np.zeros(n, bool), np.zeros(n, bool)))
    buffer.count_draws([1, 2, 2, 2], "world_model")  # counts [0, 1, 3]
    # p ∝ (1 / (1 + count))^alpha: alpha 5 -> [1, 1/32, 1/1024] / (1 + 1/32 + 1/1024)
    total = 1 + 1 / 32 + 1 / 1024
    np.testing.assert_allclose(buffer.probabilities("count", "world_model", 5.0), [1 / total, 1 / 32 / total,
                                                                                   1 / 1024 / total])
    # alpha 1 (Atari) -> [1, 1/2, 1/4] / 1.75; another component's counts are its own (all 0: uniform)
    np.testing.assert_allclose(buffer.probabilities("count", "world_model", 1.0), [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(buffer.probabilities("count", "tokenizer", 5.0), [1 / 3] * 3)


# ----------------------------------------------------------------------------------------------------------------
# The agent on real Crafter
# ----------------------------------------------------------------------------------------------------------------
def crafter_env(seed: int = 0):  # noqa: ANN201
    from envs.factory import make_vec_env

    return make_vec_env(CRAFTER, n_envs=1, seed=seed)


def tiny_delta_iris(env, **kwargs: Any):  # noqa: ANN001, ANN201
    from agents.delta_iris.agent import DeltaIris

    args = {"size": "tiny", "batch_size": [2, 2, 2], "sequence_length": [6, 8], "steps_first_epoch": [2, 2, 1],
            "steps_per_epoch": [1, 1, 1], "num_steps_first_epoch": 200, "num_steps": 30, "num_final_epochs": 0,
            "burn_in_length": 2, "horizon": 4, "precision": "fp32", "seed": 0, "device": "cpu"}
    return DeltaIris("CnnPolicy", env, **{**args, **kwargs})


def test_official_crafter_defaults() -> None:
    import inspect

    from agents.delta_iris.agent import DeltaIris

    defaults = {k: p.default for k, p in inspect.signature(DeltaIris).parameters.items()}
    # config/params/crafter.yaml of vmicheli/delta-iris
    assert (defaults["num_steps_first_epoch"], defaults["num_steps"], defaults["num_final_epochs"]) == (100_000, 10_000,
                                                                                                        9)
    assert tuple(defaults["steps_first_epoch"]) == (5000, 2500, 500)
    assert tuple(defaults["steps_per_epoch"]) == (500, 500, 500)
    assert tuple(defaults["batch_size"]) == (32, 32, 86) and tuple(defaults["sequence_length"]) == (21, 21)
    assert (defaults["burn_in_length"], defaults["horizon"], defaults["gamma"], defaults["lam"]) == (5, 15, 0.997, 0.95)
    assert (defaults["priority_alpha"], defaults["tau"], defaults["precision"]) == (5.0, 0.995, "auto")
    assert DeltaIris.official_eval_deterministic is False  # the official test collector samples


def test_schedule_counts_and_optimizer_groups_of_a_tiny_run() -> None:
    from agents.delta_iris.agent import DeltaIris

    # epoch 1: 200 random steps, steps_first_epoch [2, 2, 1], draws not counted; epochs 2 and 3: 30 policy steps each,
    # 1 update per component, 2 segments per update counted; the actor-critic starts after epoch 2
    model = tiny_delta_iris(crafter_env(), start_after_epochs=[0, 0, 2]).learn(260)
    assert model.num_timesteps == 260 and model.epoch == 3
    assert model.updates == {"tokenizer": 2 + 1 + 1, "world_model": 2 + 1 + 1, "actor_critic": 1}
    buffer = model.episode_buffer
    assert buffer.num_episodes >= 1
    assert buffer.counts("tokenizer").sum() == buffer.counts("world_model").sum() == 2 * 2
    assert buffer.counts("actor_critic").sum() == 2
    # minGPT groups: decay on Linear weights only (the transformer's, the heads', the quantizer's projections)
    decayed, plain = model.optimizer_world_model.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.policy.world_model.named_parameters()}
    decayed_names = [names[id(p)] for p in decayed["params"]]
    assert decayed_names and all(n.endswith("weight") and p.ndim == 2  # no bias, no norm, no convolution
                                 for n, p in zip(decayed_names, decayed["params"], strict=True))
    assert not any(n.startswith(("frame_cnn", "act_emb", "latents_emb", "pos_emb")) for n in decayed_names)
    assert len(decayed["params"]) + len(plain["params"]) == len(names)
    ac_params = sum(len(g["params"]) for g in model.optimizer_actor_critic.param_groups)
    assert ac_params == len(list(model.policy.actor_critic.model.parameters()))  # not the EMA target
    with pytest.raises(ValueError, match="batch_size=\\[2, 2\\] needs one value per component"):
        DeltaIris("CnnPolicy", crafter_env(), size="tiny", batch_size=[2, 2])
    with pytest.raises(ValueError, match="must fit in the world model's sequence_length"):
        DeltaIris("CnnPolicy", crafter_env(), size="tiny", sequence_length=[6, 8], burn_in_length=5, horizon=4)


def test_bf16_autocast_trains_the_tokenizer_and_the_world_model() -> None:
    model = tiny_delta_iris(crafter_env(), precision="bf16", steps_first_epoch=[1, 1, 1])
    model.learn(200)
    assert model.updates == {"tokenizer": 1, "world_model": 1, "actor_critic": 1}
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


def test_the_official_atari_networks_train_on_breakout_in_bf16() -> None:
    from agents.delta_iris.agent import DeltaIris
    from envs.factory import make_vec_env

    # size=atari (config/params/atari.yaml): 26 blocks, a scalar critic (MSE) and 3 reward classes; small batches
    model = DeltaIris("CnnPolicy", make_vec_env(BREAKOUT, n_envs=1, seed=0), size="atari", batch_size=[2, 2, 2],
                      sequence_length=[6, 26], steps_first_epoch=[1, 1, 1], num_steps_first_epoch=100, num_steps=10,
                      num_final_epochs=0, horizon=20, seed=0, device="cpu").learn(100)
    assert model.updates == {"tokenizer": 1, "world_model": 1, "actor_critic": 1}
    policy = model.policy
    assert policy.world_model.cfg.max_blocks == 26 and not policy.world_model.cfg.two_hot_rewards
    assert policy.actor_critic.model.critic_linear.out_features == 1
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_save_load_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    from agents.delta_iris.agent import DeltaIris

    env = crafter_env()
    model = tiny_delta_iris(env).learn(200)
    model.save(tmp_path / "model")
    again = DeltaIris.load(tmp_path / "model", env=env, device="cpu")
    torch.testing.assert_close(model.policy.state_dict(), again.policy.state_dict(), rtol=0, atol=0)
    obs = env.reset()
    state_a = state_b = None
    for i in range(6):
        start = np.array([i == 0])
        a, state_a = model.predict(obs, state_a, start, deterministic=True)
        b, state_b = again.predict(obs, state_b, start, deterministic=True)
        assert a.shape == (1,) and a.tolist() == b.tolist()
        np.testing.assert_array_equal(state_a[0], state_b[0])
        obs, *_ = env.step(a)


def test_a_checkpoint_resumed_in_the_same_env_continues_exactly_as_the_uninterrupted_run(tmp_path: Path) -> None:
    from agents.common.callbacks import CheckpointCallback
    from agents.delta_iris.agent import DeltaIris
    from envs.factory import make_vec_env

    # Breakout, not Crafter: crafter 1.8.3 balances its chunks by iterating over a *set* of objects (ordered by memory
    # address), so two Crafter envs with one seed and the same actions part after a few steps, even in one process
    def start(**changes: Any) -> DeltaIris:  # a policy far from uniform, so that the collection's burn-in matters
        model = tiny_delta_iris(make_vec_env(BREAKOUT, n_envs=1, seed=1), epsilon=0.5, **changes)
        head = model.policy.actor_critic.model.actor_linear.weight
        head.data = torch.randn(head.shape, generator=torch.Generator().manual_seed(0))
        return model

    # epochs end at 200, 230, 260 steps, then a final epoch; the checkpoint asked for at 215 waits for 230
    uninterrupted = start(num_final_epochs=1)
    uninterrupted.learn(260, callback=CheckpointCallback(tmp_path, save_freq=215, keep=5, replay_buffer=True))
    checkpoint = tmp_path / "checkpoints" / "step_0000000230"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000000230"]
    interrupted = start()
    env = interrupted.learn(215).env
    assert interrupted.num_timesteps == 230
    resumed = DeltaIris.load(checkpoint, env=env, device="cpu", force_reset=False)
    assert resumed.num_timesteps == 230 and resumed.epoch == 2
    np.testing.assert_array_equal(resumed._recent, interrupted._recent)  # the frames of the next burn-in
    resumed.learn(30, reset_num_timesteps=False)
    assert resumed.num_timesteps == 260 and resumed.epoch == uninterrupted.epoch == 4
    for (name, a), b in zip(uninterrupted.policy.state_dict().items(), resumed.policy.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    for key in ("tokenizer", "world_model", "actor_critic"):
        np.testing.assert_array_equal(resumed.episode_buffer.counts(key), uninterrupted.episode_buffer.counts(key))


def test_play_protocol_shapes_and_ranges() -> None:
    env = crafter_env()
    model = tiny_delta_iris(env)
    assert model.play_context_length == 2
    obs, acts = [env.reset()[0]], []  # uint8 [64, 64, 3]
    for a in (1, 2, 3):
        acts.append(a)
        o, *_ = env.step(np.array([a]))
        obs.append(o[0])
    context = np.stack(obs[-2:])[None].repeat(3, 0)  # [3, 2, 64, 64, 3] uint8
    frames = model.obs_to_frames(context)
    assert frames.shape == (3, 2, 3, 64, 64) and frames.dtype == torch.float32
    assert 0 <= frames.min() and frames.max() <= 1 and frames.max() > 0.1
    np.testing.assert_array_equal(model.frames_to_obs(frames), context)  # exact inverse on uint8 frames
    play = model.play_env(num_envs=3)
    last = play.reset_from(frames, torch.tensor([acts[-2:]] * 3))
    torch.testing.assert_close(last, frames[:, -1])
    for _ in range(model.burn_in_length + 5):  # longer than a training rollout
        nxt, rew, end, trunc = play.step(torch.tensor([0, 5, 16]))
        assert nxt.shape == (3, 3, 64, 64) and 0 <= nxt.min() and nxt.max() <= 1
        assert rew.shape == end.shape == trunc.shape == (3,) and rew.dtype == torch.float32
        assert end.dtype == trunc.dtype == torch.bool and not trunc.any()
        assert model.frames_to_obs(nxt).shape == (3, 64, 64, 3)


# ----------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------
def test_tiny_run_on_crafter_through_the_command_line_writes_the_tags_and_a_final_model(tmp_path: Path) -> None:
    from agents.common.tblog import read_scalars
    from agents.delta_iris.agent import DeltaIris

    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "runners.train", "agent=delta_iris", "env=crafter", "preset=tiny",
                             "device=cpu", "progress_bar=false", f"run_dir={run_dir}"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(run_dir)
    for tag in ("world_model/tokenizer_loss", "world_model/tokenizer_reconstruction_loss_l2",
                "world_model/loss_latents", "world_model/loss_rewards", "world_model/loss_ends", "imagination/return",
                "imagination/entropy", "imagination/lambda_return", "train/loss_actions", "train/loss_values",
                "train/grad_norm", "time/fps"):
        assert tag in scalars, tag
        assert np.isfinite(scalars[tag][:, 1]).all(), tag
    model = DeltaIris.load(run_dir / "final", device="cpu")
    assert model.num_timesteps == 300 and model.epoch == 3  # 250 random steps, one policy epoch, one final epoch
    assert (run_dir / "checkpoints" / "step_0000000300" / "episode_buffer.npz").is_file()


def test_resume_through_the_command_line_continues_the_step_counter(tmp_path: Path) -> None:
    from agents.common.tblog import read_scalars
    from runners import train
    from runners.cli import run_main

    run_dir = tmp_path / "run"
    args = ["agent=delta_iris", "env=crafter", "preset=tiny", "device=cpu", "progress_bar=false",
            "agent.num_final_epochs=0", f"run_dir={run_dir}"]
    assert run_main(train.main, args) == 0
    assert run_main(train.main, [f"resume={run_dir}", "total_timesteps=350", "progress_bar=false"]) == 0
    steps = read_scalars(run_dir)["world_model/loss_latents"][:, 0]
    assert steps.tolist() == [250, 300, 350]  # one curve, continued after the checkpoint's step
    assert (run_dir / "results.json").read_text().count('"num_timesteps": 350') == 1


BAD = [
    (["agent.batch_size=[2,2]"], "batch_size=[2, 2] needs one value per component: tokenizer, world_model"),
    (["agent.precision=fp16"], "precision='fp16' is not allowed; choose one of: fp32, bf16, auto"),
    (["agent.size=huge"], "size='huge' is not allowed; choose one of: crafter, atari, tiny"),
    (["agent.horizon=20"], "burn_in_length=2 + 1 + horizon=20 frames must fit in the world model's sequence_length"),
    (["agent.policy_kwargs={world_model: {layerz: 2}}"], "unknown key 'world_model.layerz'; allowed: num_actions"),
    (["agent.optimizer=sgd"], "unknown optimizer 'sgd'; choose one of: adamw, adam, ademamix"),
    (["agent.gamma=1.5"], "agent.gamma=1.5 must be in (0, 1]"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[e[0] for e, _ in BAD])
def test_bad_values_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                         message: str) -> None:
    from runners import train
    from runners.cli import run_main

    args = ["agent=delta_iris", "env=crafter", "preset=tiny", "device=cpu", *extra, f"run_dir={tmp_path / 'run'}"]
    assert run_main(train.main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()


def test_paper_presets_give_the_official_crafter_and_atari_configurations() -> None:
    from runners.config import compose_train_config

    def compose(env: str) -> Any:
        argv = ["agent=delta_iris", f"env={env}", "preset=paper"]
        return compose_train_config(argv, dict(a.split("=", 1) for a in argv))

    crafter = compose("crafter")  # config/params/crafter.yaml: 100k + 990 x 10k steps, 16 envs
    assert (crafter.total_timesteps, crafter.n_envs, crafter.agent.size) == (10_000_000, 16, "crafter")
    assert list(crafter.agent.batch_size) == [32, 32, 86] and crafter.agent.num_steps == 10_000
    breakout = compose("breakout")  # config/params/atari.yaml: 2000 + 490 x 200 steps, then 109 final epochs
    agent = breakout.agent
    assert (breakout.total_timesteps, breakout.n_envs, agent.size) == (100_000, 1, "atari")
    assert (agent.num_steps_first_epoch, agent.num_steps, agent.num_final_epochs) == (2000, 200, 109)
    assert list(agent.start_after_epochs) == [5, 50, 75] and list(agent.batch_size) == [16, 64, 64]
    assert list(agent.sequence_length) == [21, 26] and list(agent.weight_decay) == [0.0, 0.01, 0.0]
    assert (agent.horizon, agent.gamma, agent.entropy_weight, agent.priority_alpha) == (20, 0.995, 0.002, 1.0)


def test_channels_last_policy_computes_what_the_contiguous_one_does() -> None:
    """``channels_last=True`` (the default) changes the memory layout of the convolutions only: the same weights
    give the same tokens, and reconstructions, world-model losses and actor-critic outputs equal to the NCHW
    policy's up to the order of fp32 sums."""
    from gymnasium import spaces

    from agents.delta_iris.policy import DeltaIrisPolicy

    obs_space, act_space = spaces.Box(0, 255, (3, 64, 64), np.uint8), spaces.Discrete(17)
    torch.manual_seed(0)
    fast = DeltaIrisPolicy(obs_space, act_space, size="tiny", sequence_length=6).eval()
    plain = DeltaIrisPolicy(obs_space, act_space, size="tiny", sequence_length=6, channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    conv = next(m for m in fast.tokenizer.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    g = torch.Generator().manual_seed(1)
    frames, acts = torch.rand(2, 6, 3, 64, 64, generator=g), torch.randint(0, 17, (2, 6), generator=g)
    rews, ends, mask = torch.zeros(2, 6), torch.zeros(2, 6, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        x_prev, a, x_next = frames[:, :-1].flatten(0, 1), acts[:, :-1].flatten(), frames[:, 1:].flatten(0, 1)
        tokens = fast.tokenizer.tokenize(x_prev, a, x_next)
        assert torch.equal(tokens, plain.tokenizer.tokenize(x_prev, a, x_next))
        q = fast.tokenizer.embed_tokens(tokens)  # fp32 sums in another order through the decoder's convolutions
        torch.testing.assert_close(fast.tokenizer.decode(x_prev, a, q), plain.tokenizer.decode(x_prev, a, q),
                                   atol=5e-4, rtol=0)
        # snapped to 8-bit levels, a value at a rounding boundary may fall one level apart
        torch.testing.assert_close(fast.tokenizer.decode_tokens(x_prev, a, tokens),
                                   plain.tokenizer.decode_tokens(x_prev, a, tokens), atol=1 / 255 + 1e-6, rtol=0)
        losses = [p.world_model.loss(frames, acts, rews, ends, mask, tokenizer=p.tokenizer)[0] for p in (fast, plain)]
        torch.testing.assert_close(losses[0], losses[1], atol=1e-4, rtol=1e-4)
        out_fast, out_plain = fast.actor_critic.model(frames[:, 0]), plain.actor_critic.model(frames[:, 0])
        for x, y in zip(out_fast[:2], out_plain[:2], strict=True):  # action logits, value logits
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
