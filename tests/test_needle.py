"""The needle hand-over task on real MuJoCo (small images): spaces, cameras, seeding, the staged reward on scripted
states, the kinematic error, the scripted expert and the demonstration recorder."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from envs.factory import make_env
from envs.needle import CAMERAS, ENV_ID, NeedleExpert, NeedleHandoverEnv, load_demos
from envs.needle.expert import THETA_LEFT, THETA_RIGHT, grasp_frame
from envs.needle.task import MAX_STEP_POS, TARGET_CENTER
from envs.poses import compose, rotation_about
from runners.cli import run_main
from runners.demos import main as demos_main

SIZE = 32
ENV_CONFIGS = Path(__file__).resolve().parents[1] / "runners" / "configs" / "env"


@pytest.fixture
def env() -> NeedleHandoverEnv:
    env = NeedleHandoverEnv(image_size=SIZE)
    yield env
    env.close()


def test_spaces_are_three_uint8_views_plus_a_float32_pose_and_a_20d_action(env: NeedleHandoverEnv) -> None:
    assert env.action_space.shape == (20,) and env.action_space.dtype == np.float32
    assert sorted(env.observation_space.spaces) == sorted([*CAMERAS, "pose"])
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    assert info == {"is_success": False, "stage": 0}
    for name in CAMERAS:
        assert obs[name].shape == (SIZE, SIZE, 3) and obs[name].dtype == np.uint8
    assert obs["pose"].shape == (20,) and obs["pose"].dtype == np.float32
    np.testing.assert_array_equal(obs["pose"][[9, 19]], [1.0, 1.0])  # jaws start open


def test_every_camera_renders_a_distinct_nonblank_view_and_render_puts_them_side_by_side() -> None:
    env = NeedleHandoverEnv(image_size=48, render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    for name in CAMERAS:
        assert obs[name].shape == (48, 48, 3) and obs[name].std() > 5.0
    assert not np.array_equal(obs["endoscope"], obs["wrist_left"])
    assert not np.array_equal(obs["wrist_left"], obs["wrist_right"])
    frame = env.render()
    assert frame.shape == (48, 144, 3)
    np.testing.assert_array_equal(frame[:, 48:96], obs["wrist_left"])
    env.close()


def test_same_seed_gives_identical_observations_and_needle_pose() -> None:
    runs = []
    for seed in (3, 3, 4):
        env = NeedleHandoverEnv(image_size=SIZE)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        trace = [obs]
        for _ in range(5):
            trace.append(env.step(env.action_space.sample())[0])
        runs.append((trace, env.needle_pose()[0]))
        env.close()
    (a, needle_a), (b, needle_b), (_, needle_c) = runs
    for obs_a, obs_b in zip(a, b, strict=True):
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
    np.testing.assert_array_equal(needle_a, needle_b)
    assert np.linalg.norm(needle_a - needle_c) > 1e-4


def _place(env: NeedleHandoverEnv, needle_pos: np.ndarray, arm: int, theta: float, sign: float, jaw: float) -> None:
    """Tool ``arm`` on the needle (at ``needle_pos``, flat, yaw 0) at arc angle ``theta``, jaw opening ``jaw``."""
    env.set_tool(arm, *compose(needle_pos, np.eye(3), *grasp_frame(theta, sign)), jaw)


def test_staged_reward_on_scripted_states(env: NeedleHandoverEnv) -> None:
    env.reset(seed=0)
    on_pad = np.array([0.0, 0.0, 0.001])
    env.set_needle(on_pad, np.eye(3))
    assert env.update() == 0  # tools at home, far from the needle
    _place(env, on_pad, 0, THETA_LEFT, -1.0, 1.0)
    assert env.update() == 1 and env.held == [False, False]  # touching with an open jaw
    _place(env, on_pad, 0, THETA_LEFT, -1.0, 0.0)
    assert env.update() == 1 and env.held == [True, False]  # grasped, still on the pad
    lifted = on_pad + [0.0, 0.0, 0.03]
    env.set_needle(lifted, np.eye(3))
    _place(env, lifted, 0, THETA_LEFT, -1.0, 0.0)
    assert env.update() == 2
    _place(env, lifted, 1, THETA_RIGHT, 1.0, 0.0)
    assert env.update() == 2 and env.held == [True, True]  # both hold: not handed over yet
    _place(env, lifted, 0, THETA_LEFT, -1.0, 1.0)
    assert env.update() == 3 and env.held == [False, True]  # the left let go
    in_target = TARGET_CENTER - [0.0, 0.012, 0.0]  # the arc's midpoint is 12 mm along the needle's y
    env.set_needle(in_target, np.eye(3))
    _place(env, in_target, 1, THETA_RIGHT, 1.0, 0.0)
    assert env.update() == 4


def test_right_picking_the_needle_without_a_hand_over_is_not_a_transfer(env: NeedleHandoverEnv) -> None:
    env.reset(seed=0)
    lifted = np.array([0.0, 0.0, 0.03])
    env.set_needle(lifted, np.eye(3))
    _place(env, lifted, 1, THETA_RIGHT, 1.0, 0.0)
    assert env.update() == 0 and env.held == [False, True]


@pytest.mark.parametrize("kinematic_error", [0.0, 0.01])
def test_scripted_expert_succeeds(kinematic_error: float) -> None:
    env = gym.make(ENV_ID, image_size=SIZE, kinematic_error=kinematic_error)
    expert = NeedleExpert(env)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        stages, done = [], False
        while not done:
            obs, reward, terminated, truncated, info = env.step(expert(obs))
            stages.append(int(reward))
            done = terminated or truncated
        assert info["is_success"] and terminated and not truncated
        assert stages[-1] == 4 and {1, 2, 3} <= set(stages) and len(stages) < 80
    env.close()


def test_kinematic_error_offsets_measured_pose_and_absolute_actions_miss_by_it() -> None:
    env = NeedleHandoverEnv(image_size=SIZE, kinematic_error=0.01)
    obs, _ = env.reset(seed=2)
    start = [env.tool_pose(arm)[0] for arm in range(2)]
    offsets = []
    for _ in range(10):  # commanding the measured pose keeps the tools still
        for arm in range(2):
            true_c = env.camera_rot.T @ (env.tool_pose(arm)[0] - env.camera_pos)
            np.testing.assert_allclose(obs["pose"][10 * arm: 10 * arm + 3] - true_c, env.kinematic_offset(arm),
                                       atol=1e-6)
        offsets.append(env.kinematic_offset(0))
        obs = env.step(obs["pose"])[0]
    for arm in range(2):
        np.testing.assert_allclose(env.tool_pose(arm)[0], start[arm], atol=1e-6)  # float32 actions
    assert 0.007 - 1e-9 <= np.linalg.norm(offsets[0]) <= 0.013 + 1e-9  # |k u| = 1 cm, drift <= 0.3 cm
    assert np.linalg.norm(offsets[-1] - offsets[0]) > 1e-5  # it drifts
    # an absolute action in TRUE coordinates (no e) lands off by -e in truth
    e = env.kinematic_offset(0)
    true_pose = env.absolute_action([(*env.tool_pose(a), 1.0) for a in range(2)])
    true_pose[:3] -= e
    true_pose[10:13] -= env.kinematic_offset(1)
    before = env.tool_pose(0)[0]
    env.step(true_pose)
    np.testing.assert_allclose(env.tool_pose(0)[0] - before, -env.camera_rot @ e, atol=1e-7)
    env.close()


def test_one_step_moves_the_tool_at_most_max_step_pos(env: NeedleHandoverEnv) -> None:
    obs, _ = env.reset(seed=0)
    action = obs["pose"].copy()
    action[0] += 0.1  # 10 cm to the right in the camera frame
    before = env.tool_pose(0)[0]
    env.step(action)
    moved = env.tool_pose(0)[0] - before
    assert np.linalg.norm(moved) == pytest.approx(MAX_STEP_POS)
    np.testing.assert_allclose(moved / MAX_STEP_POS, env.camera_rot[:, 0], atol=1e-5)
    # a rotation of 90 degrees is cut to 10 degrees
    r = env.tool_pose(0)[1]
    turned = env.camera_rot.T @ (r @ rotation_about(np.array([0.0, 0.0, 1.0]), np.pi / 2))
    action = env.measured_pose()
    action[3:9] = np.r_[turned[:, 0], turned[:, 1]]
    env.step(action)
    cos = (np.trace(r.T @ env.tool_pose(0)[1]) - 1) / 2
    assert np.degrees(np.arccos(cos)) == pytest.approx(10.0, abs=1e-3)


def test_factory_builds_the_needle_env_from_its_config() -> None:
    cfg = yaml.safe_load((ENV_CONFIGS / "needle.yaml").read_text())
    cfg["kwargs"]["image_size"] = SIZE
    env = make_env(cfg, seed=0)
    assert env.spec.max_episode_steps == 150
    obs, _ = env.reset(seed=0)
    assert obs["endoscope"].shape == (SIZE, SIZE, 3)
    env.close()


def test_runners_demos_writes_a_loadable_buffer_with_the_spec_layout(tmp_path: Path) -> None:
    out = tmp_path / "demos.npz"
    args = ["env=needle", "episodes=2", "seed=5", f"image_size={SIZE}", "kinematic_error=0.01", f"out={out}",
            "progress=false"]
    assert run_main(demos_main, args) == 0
    buffer, sidecar = load_demos(out)
    assert buffer.num_episodes == 2
    assert sidecar["episodes"] == 2 and sidecar["seed"] == 5
    assert sidecar["env_kwargs"] == {"image_size": SIZE, "kinematic_error": 0.01}
    for i in range(2):
        ep = buffer.episode(i)
        steps = len(ep)
        assert ep.obs.shape == (steps, 3, SIZE, SIZE, 3) and ep.obs.dtype == np.uint8
        assert ep.act.shape == (steps, 20) and ep.act.dtype == np.float32
        assert ep.extras["pose"].shape == (steps, 20)
        assert ep.end[-1] and not ep.end[:-1].any() and not ep.trunc.any() and ep.rew[-1] == 4.0
        np.testing.assert_array_equal(ep.extras["pose"][0, [9, 19]], [1.0, 1.0])
    assert sidecar["mean_length"] == pytest.approx(buffer.num_steps / 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env=needel"], "env='needel'; choose one of: needle"),
        (["env=needle", "episodes=0"], "episodes=0 must be >= 1"),
        (["env=needle", "episodes=two"], "episodes='two' is not an integer"),
        (["env=needle", "kinematic_error=1"], "kinematic_error=1 must be in [0, 0.05]"),
        (["env=needle", "frames=3"], "unknown key 'frames' for runners.demos"),
    ],
)
def test_bad_demos_input_exits_2_with_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert run_main(demos_main, args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_diverging_physics_truncates_the_episode_with_a_flag(env: NeedleHandoverEnv) -> None:
    obs, _ = env.reset(seed=0)
    env.data.qvel[:] = np.nan  # MuJoCo warns (bad QACC) and resets the simulation inside mj_step
    obs, reward, terminated, truncated, info = env.step(obs["pose"])  # "stay where you are"
    assert truncated and not terminated and info == {"is_success": False, "stage": 0, "sim_unstable": True}
    _, _, _, truncated, info = env.step(obs["pose"])  # a healthy step after it is not flagged
    assert "sim_unstable" not in info
