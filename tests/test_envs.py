"""The env factory on the real ALE, Crafter and MuJoCo: shapes, dtypes, episode ends, seeding and scores."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from envs.atari import ATARI_RANDOM_HUMAN, atari_env_id, human_normalized_score
from envs.crafter import CRAFTER_ACHIEVEMENTS, CrafterEnv, achievement_success_rates, crafter_score
from envs.factory import env_score, make_env, make_vec_env
from envs.mujoco import mujoco_env_id

ENV_CONFIGS = Path(__file__).resolve().parents[1] / "runners" / "configs" / "env"
STEPS = 1_000


def atari_cfg(game: str = "breakout", **overrides: object) -> dict:
    return {"name": game, "family": "atari", "id": game, "preprocessing": "atari100k", **overrides}


CRAFTER = {"name": "crafter", "family": "crafter", "id": "zoo/Crafter-v1"}
CARTPOLE = {"name": "cartpole", "family": "classic", "id": "CartPole-v1"}


def _assert_obs(obs: np.ndarray, shape: tuple[int, ...]) -> None:
    assert obs.dtype == np.uint8
    assert obs.shape == shape


def test_atari100k_env_gives_uint8_64x64_rgb_frames_for_every_step() -> None:
    env = make_env(atari_cfg(), seed=0, training=True)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    obs, _ = env.reset(seed=0)
    _assert_obs(obs, (64, 64, 3))
    for _ in range(STEPS):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        _assert_obs(obs, (64, 64, 3))
        if terminated or truncated:
            obs, _ = env.reset()
            _assert_obs(obs, (64, 64, 3))


def test_sb3_atari_preset_gives_84x84_grey_frames_stacked_4_by_the_vec_env() -> None:
    cfg = atari_cfg(preprocessing="sb3", frame_stack=4)
    single = make_env(cfg, seed=0)
    assert single.observation_space.shape == (84, 84, 1) and single.observation_space.dtype == np.uint8
    venv = make_vec_env(cfg, n_envs=1, seed=0)
    obs = venv.reset()
    _assert_obs(obs, (1, 84, 84, 4))
    for _ in range(STEPS):
        obs, _, _, _ = venv.step(np.array([venv.action_space.sample()]))
        _assert_obs(obs, (1, 84, 84, 4))
    venv.close()


@pytest.mark.parametrize("preprocessing", ["atari100k", "sb3"])
def test_breakout_life_loss_terminates_training_episodes_but_not_evaluation_episodes(preprocessing: str) -> None:
    for training in (True, False):
        env = make_env(atari_cfg(preprocessing=preprocessing), seed=1, training=training)
        ale = env.unwrapped.ale
        life_losses = terminations_with_lives_left = game_overs = 0
        for _ in range(STEPS):
            lives = ale.lives()
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            lost = ale.lives() < lives
            life_losses += lost
            game_over = ale.game_over()
            game_overs += terminated and game_over
            terminations_with_lives_left += terminated and not game_over
            if terminated:
                assert lost, "an episode ended without a life loss"
            if terminated or truncated:
                env.reset()
        assert game_overs >= 1 and life_losses > game_overs
        if training:  # each of the 5 lives is an episode
            assert terminations_with_lives_left == life_losses - game_overs
        else:  # only the game over ends an evaluation episode
            assert terminations_with_lives_left == 0


def test_atari_episode_is_truncated_after_max_episode_frames_emulator_frames() -> None:
    env = make_env(atari_cfg(max_episode_frames=400), seed=0, training=False)
    assert env.unwrapped.spec.kwargs["max_num_frames_per_episode"] == 400
    assert env.unwrapped.spec.kwargs["repeat_action_probability"] == 0.0
    env.reset(seed=0)
    noop_frames = env.unwrapped.ale.getEpisodeFrameNumber()
    step, terminated, truncated = 0, False, False
    while not (terminated or truncated) and step < 1_000:
        _, _, terminated, truncated, info = env.step(0)  # NOOP: Breakout's ball is never launched
        step += 1
    assert truncated and not terminated
    assert info["episode"]["l"] == 400  # Monitor sits below the frame skip: it counts emulator frames
    assert noop_frames + 4 * (step - 1) < 400 <= noop_frames + 4 * step


def test_atari_max_episode_steps_caps_the_episode_at_that_many_agent_steps_of_frame_skip_frames() -> None:
    env = make_env(atari_cfg(max_episode_steps=50, frame_skip=4), seed=0)
    assert env.unwrapped.spec.kwargs["max_num_frames_per_episode"] == 200


def test_atari_reset_takes_1_to_noop_max_noops_and_each_step_repeats_the_action_frame_skip_times() -> None:
    env = make_env(atari_cfg(noop_max=30, frame_skip=4), seed=0, training=False)
    ale = env.unwrapped.ale
    starts = set()
    for seed in range(8):
        env.reset(seed=seed)
        starts.add(ale.getEpisodeFrameNumber())
        before = ale.getEpisodeFrameNumber()
        env.step(0)
        assert ale.getEpisodeFrameNumber() - before == 4
    assert all(1 <= s <= 30 for s in starts) and len(starts) > 1


def test_atari_game_names_normalize_to_the_noframeskip_v4_id() -> None:
    for name in ("breakout", "Breakout", "BreakoutNoFrameskip-v4", "ALE/Breakout-v5"):
        assert atari_env_id(name) == "BreakoutNoFrameskip-v4"
    assert atari_env_id("ms_pacman") == "MsPacmanNoFrameskip-v4"
    with pytest.raises(ValueError, match="unknown Atari game 'brekout'; choose one of .*breakout"):
        make_env(atari_cfg("brekout"), seed=0)


def test_human_normalized_score_is_0_at_random_and_1_at_human_score() -> None:
    assert len(ATARI_RANDOM_HUMAN) == 26
    assert human_normalized_score("breakout", 1.7) == pytest.approx(0.0)
    assert human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized_score("PongNoFrameskip-v4", -20.7) == pytest.approx(0.0)
    # Boxing: mean of (6.1 - 0.1) / (12.1 - 0.1) = 0.5 and (12.1 - 0.1) / (12.1 - 0.1) = 1.0
    assert env_score(atari_cfg("boxing"), [6.1, 12.1], [{}, {}]) == {"human_normalized_score": pytest.approx(0.75)}


def test_crafter_env_gives_uint8_64x64_rgb_frames_17_actions_and_achievements_in_info() -> None:
    env = make_env(CRAFTER, seed=0)
    assert env.action_space == gym.spaces.Discrete(17)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    deaths = 0
    for _ in range(STEPS):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        _assert_obs(obs, (64, 64, 3))
        assert set(info["achievements"]) == set(CRAFTER_ACHIEVEMENTS)
        if terminated:  # a random player dies after ~150 steps
            deaths += 1
            assert info["discount"] == 0.0 and not truncated
            assert "episode" in info
            env.reset()
    assert deaths >= 1
    _assert_obs(env.render(), (64, 64, 3))


def test_crafter_length_limit_truncates_without_terminating() -> None:
    env = make_env({**CRAFTER, "max_episode_steps": 30}, seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(0)  # NOOP: the player stays alive
        steps += 1
    assert truncated and not terminated and info["discount"] == 1.0 and steps == 30


def test_crafter_reset_with_the_same_seed_gives_the_same_world() -> None:
    env = make_env(CRAFTER, seed=0)
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    other, _ = env.reset(seed=8)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_crafter_same_seed_and_actions_give_the_same_episode() -> None:
    """crafter 1.8.3 alone parts after a few dozen steps (its creature balancing iterates sets of objects hashed by
    address); with envs.crafter's object hashes two envs stay identical."""
    envs = [CrafterEnv(length=10_000) for _ in range(2)]
    garbage = [CrafterEnv() for _ in range(3)]  # other objects in memory between the two
    frames = [env.reset(seed=3)[0] for env in envs]
    assert np.array_equal(*frames)
    actions = np.random.default_rng(0).integers(0, 17, 400)
    for t, a in enumerate(actions):
        steps = [env.step(int(a)) for env in envs]
        assert np.array_equal(steps[0][0], steps[1][0]), f"frames differ at step {t}"
        assert steps[0][1:3] == steps[1][1:3]
        if steps[0][2] or steps[0][3]:
            break
    del garbage


def test_crafter_score_matches_hand_computed_geometric_means() -> None:
    assert crafter_score([0.0] * 22) == pytest.approx(0.0)
    assert crafter_score([100.0] * 22) == pytest.approx(100.0)
    # exp(ln(101) / 22) - 1 = exp(4.61512 / 22) - 1 = exp(0.209778) - 1 = 0.233404
    assert crafter_score([100.0] + [0.0] * 21) == pytest.approx(0.233404, abs=1e-6)
    with pytest.raises(ValueError, match="success rate 150.0 is out of range"):
        crafter_score([150.0])


def test_achievement_success_rates_count_episodes_with_at_least_one_unlock() -> None:
    episodes = [{"collect_wood": 3, "wake_up": 1}, {"collect_wood": 1}, {"collect_wood": 0}, {"collect_wood": 2}]
    rates = achievement_success_rates(episodes)
    assert rates["collect_wood"] == 75.0 and rates["wake_up"] == 25.0 and rates["collect_diamond"] == 0.0
    score = env_score(CRAFTER, [1.0] * 4, [{"achievements": a} for a in episodes])
    # exp((ln 76 + ln 26 + 20 * ln 1) / 22) - 1 = exp((4.330733 + 3.258097) / 22) - 1 = exp(0.344947) - 1 = 0.411915
    assert score["crafter_score"] == pytest.approx(0.411915, abs=1e-6)
    assert score["achievement/collect_wood"] == 75.0


def test_success_rate_score_comes_from_is_success_in_final_infos() -> None:
    infos = [{"is_success": True}, {"is_success": False}, {"is_success": True}, {"is_success": True}]
    assert env_score(CARTPOLE, [1.0] * 4, infos) == {"success_rate": 0.75}
    assert env_score(CARTPOLE, [1.0], [{}]) == {}


def test_mujoco_hopper_v5_has_11_dim_observations_and_3_dim_actions() -> None:
    assert mujoco_env_id("hopper") == "Hopper-v5" and mujoco_env_id("half_cheetah") == "HalfCheetah-v5"
    env = make_env({"name": "hopper", "family": "mujoco", "id": "hopper"}, seed=0)
    assert env.observation_space.shape == (11,) and env.action_space.shape == (3,)
    obs, reward, *_ = env.step(env.action_space.sample())
    assert obs.shape == (11,) and np.isfinite(reward)


def test_subproc_vec_env_seeds_env_i_with_seed_plus_i_like_dummy() -> None:
    sub = make_vec_env(CARTPOLE, n_envs=2, seed=3, vec_env="subproc")
    dummy = make_vec_env(CARTPOLE, n_envs=2, seed=3, vec_env="dummy")
    obs_sub, obs_dummy = sub.reset(), dummy.reset()
    single, _ = make_env(CARTPOLE, seed=4).reset(seed=4)
    assert obs_sub.shape == (2, 4) and np.array_equal(obs_sub, obs_dummy)
    assert np.array_equal(obs_sub[1], single)
    obs, rewards, dones, infos = sub.step(np.array([0, 1]))
    assert obs.shape == (2, 4) and rewards.tolist() == [1.0, 1.0] and len(infos) == 2
    sub.close()
    dummy.close()


def test_every_env_config_is_named_by_its_file_and_builds_an_env() -> None:
    paths = sorted(ENV_CONFIGS.glob("*.yaml"))
    assert {"cartpole", "breakout", "crafter", "hopper", "gym"} <= {p.stem for p in paths}
    for path in paths:
        cfg = yaml.safe_load(path.read_text())
        assert cfg["name"] == path.stem
        if path.stem == "gym":
            cfg["id"] = "Acrobot-v1"
        env = make_env(cfg, seed=0)
        assert env.observation_space.contains(env.reset(seed=0)[0])
        env.close()


def test_unknown_family_id_and_vec_env_raise_value_errors_naming_the_value() -> None:
    with pytest.raises(ValueError, match="unknown env family 'box2d'.*choose one of: classic, atari, crafter"):
        make_env({"name": "x", "family": "box2d", "id": "LunarLander-v3"}, seed=0)
    with pytest.raises(ValueError, match="unknown env 'CartPol-v1'; did you mean CartPole-v1"):
        make_env({"name": "x", "family": "gym", "id": "CartPol-v1"}, seed=0)
    with pytest.raises(ValueError, match="env 'gym' of family 'gym' needs an id"):
        make_env({"name": "gym", "family": "gym", "id": None}, seed=0)
    with pytest.raises(ValueError, match="unknown MuJoCo env 'hoper'"):
        make_env({"name": "x", "family": "mujoco", "id": "hoper"}, seed=0)
    with pytest.raises(ValueError, match="unknown vec_env 'ray'; choose one of: dummy, subproc"):
        make_vec_env(CARTPOLE, vec_env="ray")
