"""ACT: SRT's action representations, temporal ensembling, the CVAE loss, the paper model's size, and the agent
(fitting demonstrations, save/load)."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.act.actions import ACTION_KINDS, from_representation, to_representation
from agents.act.agent import ACT
from agents.act.backbone import ResNet18
from agents.act.model import DETRVAE, ACTConfig, act_loss, count_parameters, kl_divergence
from agents.act.policy import CAMERAS, ACTPolicy, ensemble, ensemble_weights
from agents.common.episode_buffer import EpisodeBuffer
from envs.poses import matrix_to_rot6d, rotation_about

TINY = dict(chunk_size=8, hidden_dim=32, enc_layers=1, dec_layers=1, n_heads=2, dim_feedforward=64, latent_dim=8,
            backbone_width=0.125, batch_size=4, learning_rate=1e-3, lr_backbone=1e-3, log_interval=5)
SIZE = 32


def random_poses(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``[*shape, 20]``: two arms of random position, random rotation (as rot6d) and jaw."""
    arms = []
    for _ in range(2):
        rot = rotation_about(rng.normal(size=(*shape, 3)), rng.uniform(-np.pi, np.pi, shape))
        arms += [rng.normal(scale=0.05, size=(*shape, 3)), matrix_to_rot6d(rot), rng.uniform(0, 1, (*shape, 1))]
    return np.concatenate(arms, axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# Action representations
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_representation_round_trip_is_exact_on_random_poses(kind: str) -> None:
    rng = np.random.default_rng(0)
    chunk, pose = random_poses((5, 7), rng), random_poses((5,), rng)
    rep = to_representation(chunk, pose, kind)
    np.testing.assert_allclose(from_representation(rep, pose, kind), chunk, atol=1e-12)
    if kind != "absolute":  # the current pose is the identity in a relative representation
        ident = to_representation(pose[:, None], pose, kind)[:, 0]
        for arm in (0, 10):
            np.testing.assert_allclose(ident[:, arm:arm + 3], 0.0, atol=1e-12)
            np.testing.assert_allclose(ident[:, arm + 3:arm + 9], [[1, 0, 0, 0, 1, 0]] * 5, atol=1e-12)
            np.testing.assert_array_equal(ident[:, arm + 9], pose[:, arm + 9])  # the jaw stays absolute


def test_relative_rotates_the_translation_into_the_tool_frame_hybrid_does_not() -> None:
    rz90 = rotation_about(np.array([0.0, 0.0, 1.0]), np.pi / 2)  # tool turned 90 degrees about the camera's z
    arm_now = np.concatenate([[0.1, 0.2, 0.3], matrix_to_rot6d(rz90), [0.5]])
    arm_next = np.concatenate([[0.11, 0.2, 0.3], matrix_to_rot6d(rz90), [0.2]])  # 1 cm along the camera's x
    pose, chunk = np.tile(arm_now, 2), np.tile(arm_next, 2)[None]
    relative = to_representation(chunk, pose, "relative")[0, :10]
    hybrid = to_representation(chunk, pose, "hybrid_relative")[0, :10]
    # camera x is the tool's -y: R^T (0.01, 0, 0) = (0, -0.01, 0); the hybrid keeps the camera frame's (0.01, 0, 0)
    np.testing.assert_allclose(relative[:3], [0.0, -0.01, 0.0], atol=1e-12)
    np.testing.assert_allclose(hybrid[:3], [0.01, 0.0, 0.0], atol=1e-12)
    for rep in (relative, hybrid):  # same orientation: no relative rotation; the jaw is the target's
        np.testing.assert_allclose(rep[3:9], [1, 0, 0, 0, 1, 0], atol=1e-12)
        assert rep[9] == 0.2
    np.testing.assert_array_equal(to_representation(chunk, pose, "absolute"), chunk)


# ----------------------------------------------------------------------------------------------------------------
# Temporal ensembling
# ----------------------------------------------------------------------------------------------------------------
def test_ensemble_weights_favour_the_oldest_prediction() -> None:
    e1, e2 = math.exp(-0.01), math.exp(-0.02)
    np.testing.assert_allclose(ensemble_weights(3), [1 / (1 + e1 + e2), e1 / (1 + e1 + e2), e2 / (1 + e1 + e2)])
    # predictions 10, 20, 30 (oldest first): (10 + 20 e^-0.01 + 30 e^-0.02) / (1 + e^-0.01 + e^-0.02), by hand
    np.testing.assert_allclose(ensemble(np.array([[10.0], [20.0], [30.0]])), [19.933334444420], rtol=1e-12)


def needle_env(image_size: int = SIZE) -> gym.Env:
    import envs.needle  # noqa: F401  (registers zoo/NeedleHandover-v0)

    return gym.make("zoo/NeedleHandover-v0", image_size=image_size)


def record(episodes: int, image_size: int = SIZE) -> EpisodeBuffer:
    """Demonstrations of the scripted expert in the layout of ``runners.demos`` (cameras stacked, measured pose)."""
    from envs.needle.expert import NeedleExpert

    env = needle_env(image_size)
    buffer = EpisodeBuffer((3, image_size, image_size, 3), np.uint8, (20,), np.float32,
                           extras={"pose": ((20,), np.float32)})
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        expert = NeedleExpert(env)
        expert.reset()
        end = trunc = False
        while not (end or trunc):
            action = expert(obs)
            images = np.stack([obs[c] for c in CAMERAS])
            nxt, reward, end, trunc, _ = env.step(action)
            buffer.add_step(0, images, action, reward, end, trunc, {"pose": obs["pose"]})
            obs = nxt
    env.close()
    return buffer


def stub_policy(temporal_ensembling: bool, chunk_size: int = 4) -> ACTPolicy:
    env = needle_env()
    sizes = {**model_sizes(), "chunk_size": chunk_size}
    policy = ACTPolicy(env.observation_space, env.action_space, lambda _: 1e-3, actions="absolute",
                       temporal_ensembling=temporal_ensembling, model_kwargs=sizes)
    calls = []

    def predict_chunk(obs: dict) -> np.ndarray:  # the s-th chunk (from 1) holds 0.1 s + 0.01 row
        calls.append(1)
        rows = np.arange(chunk_size, dtype=np.float64)[:, None]
        return np.broadcast_to(0.1 * len(calls) + 0.01 * rows, (len(obs["pose"]), chunk_size, 20)).copy()

    policy.predict_chunk = predict_chunk  # type: ignore[method-assign]
    return policy


def model_sizes() -> dict:
    return {k: TINY[k] for k in ("chunk_size", "hidden_dim", "enc_layers", "dec_layers", "n_heads",
                                 "dim_feedforward", "latent_dim", "backbone_width")}


def test_temporal_ensembling_averages_every_prediction_for_the_step() -> None:
    policy, env = stub_policy(True), needle_env()
    obs, _ = env.reset()
    batch = {k: v[None] for k, v in obs.items()}
    state, actions = None, []
    for start in (True, False, False):
        action, state = policy.predict(batch, state, np.array([start]))
        actions.append(action[0, 0])
    # step 0: chunk 1 row 0 = .1; step 1: chunks 1 (row 1 = .11), 2 (row 0 = .2); step 2: .12, .21, .3, oldest first
    e1, e2 = math.exp(-0.01), math.exp(-0.02)
    by_hand = [0.1, (0.11 + 0.2 * e1) / (1 + e1), (0.12 + 0.21 * e1 + 0.3 * e2) / (1 + e1 + e2)]
    np.testing.assert_allclose(actions, by_hand, rtol=1e-6)
    action, _ = policy.predict(batch, state, np.array([True]))  # a new episode forgets the stored chunks
    assert action[0, 0] == pytest.approx(0.4)


def test_without_temporal_ensembling_chunks_run_open_loop() -> None:
    policy, env = stub_policy(False), needle_env()
    obs, _ = env.reset()
    batch = {k: v[None] for k, v in obs.items()}
    state, actions = None, []
    for t in range(6):
        action, state = policy.predict(batch, state, np.array([t == 0]))
        actions.append(float(action[0, 0]))
    np.testing.assert_allclose(actions, [0.1, 0.11, 0.12, 0.13, 0.2, 0.21], rtol=1e-6)  # a query every 4 steps


# ----------------------------------------------------------------------------------------------------------------
# The CVAE
# ----------------------------------------------------------------------------------------------------------------
def test_kl_and_masked_l1_by_hand() -> None:
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 0: -0.5 (1 + 0 - 1 - 1) + -0.5 (1 + ln 2 - 0 - 2) = 0.5 + 0.5 (1 - ln 2); row 1: 0; mean over the batch
    expected_kl = (0.5 + 0.5 * (1 - math.log(2.0))) / 2
    assert float(kl_divergence(mu, logvar)) == pytest.approx(expected_kl, rel=1e-6)
    actions = torch.ones(2, 3, 2)
    a_hat = torch.zeros(2, 3, 2)
    a_hat[1, 2] = 100.0  # a padded step: its error must not count
    is_pad = torch.tensor([[False, False, False], [False, False, True]])
    loss, l1, kl = act_loss(a_hat, actions, is_pad, mu, logvar, kl_weight=10.0)
    assert float(l1) == pytest.approx(10 / 12)  # 10 real entries of error 1, over all B k D = 12 (official mean)
    assert float(loss) == pytest.approx(10 / 12 + 10 * expected_kl, rel=1e-6)


def test_latent_is_zero_at_test_time() -> None:
    model = DETRVAE(ACTConfig(n_cameras=3, **model_sizes()))
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE, 3), dtype=torch.uint8)
    actions, is_pad = torch.randn(2, 8, 20), torch.zeros(2, 8, dtype=torch.bool)
    a_hat, mu, logvar = model(images, actions, is_pad)
    assert a_hat.shape == (2, 8, 20) and mu.shape == logvar.shape == (2, 8)
    model.eval()
    torch.manual_seed(1)
    first, mu0, _ = model(images)
    torch.manual_seed(2)
    second, _, _ = model(images)
    assert mu0 is None and torch.equal(first, second)
    with torch.no_grad():  # z = 0: the latent token is latent_out_proj's bias
        model.latent_out_proj.bias.add_(1.0)
    assert not torch.allclose(model(images)[0], first)


def test_paper_model_size_derived_from_the_layer_shapes() -> None:
    d, ff, k, act, latent = 512, 3200, 100, 20, 32
    attention = 3 * d * d + 3 * d + d * d + d  # in_proj and out_proj of nn.MultiheadAttention
    feed_forward = d * ff + ff + ff * d + d
    encoder_layer = attention + feed_forward + 2 * 2 * d  # two LayerNorms
    decoder_layer = 2 * attention + feed_forward + 3 * 2 * d
    transformer = 4 * encoder_layer + 7 * decoder_layer + 2 * d  # + the decoder's final norm
    cvae = 4 * encoder_layer
    assert transformer == 55_027_584 and cvae == 17_332_736  # OFFICIAL_TIMINGS.md section 4
    channels = (64, 128, 256, 512)
    convs = 3 * 49 * 64 + 2 * 2 * 9 * 64 * 64  # stem and layer1
    for c_in, c in zip(channels[:-1], channels[1:], strict=True):
        convs += 9 * c_in * c + 3 * 9 * c * c + c_in * c  # two blocks, the first with a 1x1 projection
    bn = 2 * (64 + 4 * 64 + sum(5 * c for c in channels[1:]))  # scale and shift: stem, layer1, layers 2-4
    assert convs == 11_166_912  # the official trunk (frozen BatchNorm: no parameters)
    heads = (act * d + d  # encoder_action_proj
             + d  # cls_embed
             + d * 2 * latent + 2 * latent  # latent_proj
             + latent * d + d  # latent_out_proj
             + 1 * d  # additional_pos_embed: the latent token's only (no qpos)
             + k * d  # query_embed
             + 512 * d + d  # input_proj (1x1 conv)
             + d * act + act)  # action_head
    expected = transformer + cvae + convs + bn + heads
    assert expected == 83_922_452
    for cameras in (1, 3):  # one ResNet18 shared by the cameras, as in the official code
        assert count_parameters(DETRVAE(ACTConfig(n_cameras=cameras))) == expected
    # the official 83,923,087: frozen norms (-9,600), qpos projections in both encoders and its token's position
    # (2 x (14 d + d) + d), is_pad_head (d + 1), 14-D instead of 20-D actions in and out (-2 x 6 d - 6)
    assert expected - bn + 2 * (14 * d + d) + d + (d + 1) - 2 * 6 * d - 6 == 83_923_087


def test_backbone_stride_16_keeps_a_finer_map_with_the_same_weights() -> None:
    images = torch.randn(2, 3, 64, 64)
    strided, unstrided = ResNet18(0.125, stride=32), ResNet18(0.125, stride=16)
    assert strided(images).shape == (2, 64, 2, 2) and unstrided(images).shape == (2, 64, 4, 4)
    assert count_parameters(strided) == count_parameters(unstrided)
    with pytest.raises(ValueError, match="backbone_stride=8 is not allowed; choose one of: 32, 16"):
        ResNet18(0.125, stride=8)


# ----------------------------------------------------------------------------------------------------------------
# The agent
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def demos(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three expert demonstrations of the needle task at 32x32 pixels."""
    path = tmp_path_factory.mktemp("act") / "demos.npz"
    record(episodes=3).save(path)
    return str(path)


def make_env(image_size: int = SIZE) -> DummyVecEnv:
    return DummyVecEnv([lambda: needle_env(image_size)])


@pytest.mark.parametrize("kind", ["hybrid_relative"])
def test_tiny_act_fitted_on_demonstrations_lowers_its_loss(demos: str, kind: str) -> None:
    torch.manual_seed(0)
    model = ACT("MultiInputPolicy", make_env(), demos=demos, actions=kind, seed=0, kl_weight=1.0, **TINY)
    model.load_demos()
    before = np.mean([model.train_step()["l1"] for _ in range(3)])
    model.learn(100)
    after = np.mean([model.train_step()["l1"] for _ in range(3)])
    assert after < 0.75 * before  # about 0.55 x here


def test_save_load_round_trip_gives_the_same_actions(demos: str, tmp_path) -> None:
    model = ACT("MultiInputPolicy", make_env(), demos=demos, seed=0, **TINY)
    model.learn(10)
    model.save(tmp_path / "act")
    loaded = ACT.load(tmp_path / "act", env=make_env())
    torch.testing.assert_close(loaded.policy.action_std, model.policy.action_std)
    env = needle_env()
    obs, _ = env.reset(seed=5)
    batch = {k: v[None] for k, v in obs.items()}
    s1 = s2 = None
    for t in range(3):
        a1, s1 = model.predict(batch, s1, np.array([t == 0]), deterministic=True)
        a2, s2 = loaded.predict(batch, s2, np.array([t == 0]), deterministic=True)
        np.testing.assert_array_equal(a1, a2)
        batch = {k: v[None] for k, v in env.step(a1[0])[0].items()}
    assert loaded.demos_info == model.demos_info and loaded.num_timesteps == 10
    # SB3 wraps the training env in VecTransposeImage: channels-first images give the same action
    first = {k: (np.moveaxis(v, -1, -3) if k in CAMERAS else v) for k, v in batch.items()}
    np.testing.assert_array_equal(loaded.predict(first, s2)[0], loaded.predict(batch, s2)[0])


def test_baselines_are_hyperparameters(demos: str) -> None:
    bc = ACT("MultiInputPolicy", make_env(), demos=demos, **{**TINY, "chunk_size": 1}, use_cvae=False, kl_weight=0.0)
    assert not hasattr(bc.policy.model, "cvae_layers")
    stats = bc.train_step()
    assert stats["kl"] == 0.0
    open_loop = ACT("MultiInputPolicy", make_env(), demos=demos, temporal_ensembling=False, **TINY)
    assert open_loop.policy.initial_state(1).chunks.shape == (1, 1, 8, 20)


def test_demos_of_another_image_size_are_refused(demos: str) -> None:
    env = make_env(16)
    with pytest.raises(ValueError, match=r"hold images \(3, 32, 32, 3\).*record demos at the env's image_size"):
        ACT("MultiInputPolicy", env, demos=demos, **TINY).load_demos()


def test_train_evaluate_and_enjoy_from_the_command_line(demos: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    from runners import enjoy, evaluate, train
    from runners.cli import run_main

    run_dir = tmp_path / "run"
    argv = ["agent=act", "env=needle", "preset=tiny", f"demos={demos}", f"env.kwargs.image_size={SIZE}",
            "total_timesteps=10", "eval_freq=10", "save_freq=10", "progress_bar=false", f"run_dir={run_dir}"]
    assert run_main(train.main, argv) == 0
    assert "act on zoo/NeedleHandover-v0: 10 gradient steps" in capsys.readouterr().out
    assert run_main(evaluate.main, [f"model={run_dir / 'final'}", "episodes=1", "json=true", "device=cpu",
                                    "env.kwargs.kinematic_error=0.01"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["score"]["success_rate"] in (0.0, 1.0) and report["env_overrides"]
    video = tmp_path / "needle.gif"
    assert run_main(enjoy.main, [f"model={run_dir / 'final'}", f"video={video}", "max_steps=5", "device=cpu"]) == 0
    frames = imageio.mimread(video)
    assert len(frames) == 5 and frames[0].shape == (SIZE, 3 * SIZE, 3)  # the three views side by side


def test_benchmark_reports_one_seed_or_mean_and_std_over_seeds() -> None:
    from runners.bench_act import _rate

    assert _rate([{"score": {"success_rate": 0.56}}]) == "56%"
    # seeds 0 and 1 of the cpu preset: mean 68, population std |80 - 56| / 2 = 12
    assert _rate([{"score": {"success_rate": 0.8}}, {"score": {"success_rate": 0.56}}]) == "68% +- 12% (80, 56)"
