"""Large discrete action spaces: the Discretize wrapper on real MuJoCo envs, the 2^20-action synthetic task and
the factory's ``discretize`` key. Grid values are worked by hand from v_i = low + i / (L - 1) * (high - low)."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import envs.large_action
from agents.stochdqn.qnet import ActionEncoder
from envs.factory import make_env, make_vec_env
from envs.large_action import LARGE_ACTION_ID, Discretize, LargeActionTask, grid_size
from envs.mujoco import make_mujoco  # routes MuJoCo warnings to logging (no MUJOCO_LOG.TXT)

ENV_CONFIGS = Path(__file__).resolve().parents[1] / "runners" / "configs" / "env"


def env_config(name: str) -> dict:
    return yaml.safe_load((ENV_CONFIGS / f"{name}.yaml").read_text())


def test_l4_d2_grid_maps_indices_to_vectors_first_dimension_most_significant() -> None:
    env = Discretize(make_mujoco("Swimmer-v5", seed=0), 4)  # Box(-1, 1, (2,)): levels -1, -1/3, 1/3, 1
    assert env.action_space == gym.spaces.Discrete(16)
    assert (env.n_levels, env.action_dim, env.n_actions) == (4, 2, 16)
    expected = {0: [-1, -1], 1: [-1, -1 / 3], 4: [-1 / 3, -1], 15: [1, 1]}
    for index, vector in expected.items():
        np.testing.assert_allclose(env.index_to_vector(index), vector, atol=1e-6)
        assert env.vector_to_index(np.array(vector)) == index
    assert env.index_to_vector(3).dtype == np.float32


def test_index_order_is_itertools_product_and_round_trips_for_all_4096_halfcheetah_actions() -> None:
    env = Discretize(make_mujoco("HalfCheetah-v5", seed=0), 4)
    levels = [-1.0, -1 / 3, 1 / 3, 1.0]
    product = np.array(list(itertools.product(levels, repeat=6)), dtype=np.float32)
    indices = np.arange(4096)
    np.testing.assert_allclose(env.index_to_vector(indices), product, atol=1e-6)
    np.testing.assert_array_equal(env.vector_to_index(product), indices)
    np.testing.assert_allclose(env.index_to_vector(2730), [1 / 3] * 6, atol=1e-6)  # 2730 = 222222 in base 4


def test_index_to_vector_is_vectorized_over_any_batch_shape() -> None:
    env = Discretize(make_mujoco("HalfCheetah-v5", seed=0), 4)
    batch = np.array([[0, 1, 1024], [4095, 2730, 7]], dtype=np.int64)
    vectors = env.index_to_vector(batch)
    assert vectors.shape == (2, 3, 6) and vectors.dtype == np.float32
    for i, j in itertools.product(range(2), range(3)):
        np.testing.assert_array_equal(vectors[i, j], env.index_to_vector(batch[i, j]))
    np.testing.assert_array_equal(env.vector_to_index(vectors), batch)
    assert env.action_vectors(batch).shape == (2, 3, 6)


def test_hopper_with_100_levels_has_10_to_the_6_actions_computed_without_a_table() -> None:
    env = Discretize(make_mujoco("Hopper-v5", seed=0), 100)
    assert env.n_actions == 1_000_000 and env.action_space.n == 1_000_000
    np.testing.assert_allclose(env.index_to_vector(10101), [-97 / 99] * 3, atol=1e-6)  # digits (1, 1, 1)
    np.testing.assert_allclose(env.index_to_vector(999_999), [1, 1, 1])
    indices = np.arange(0, 1_000_000, 9973)
    np.testing.assert_array_equal(env.vector_to_index(env.index_to_vector(indices)), indices)
    # 200^8 = 2.56e18 actions: only arithmetic can afford this
    ant = Discretize(make_mujoco("Ant-v5", seed=0), 200)
    assert ant.n_actions == 200**8
    np.testing.assert_allclose(ant.index_to_vector(200**8 - 1), np.ones(8))
    assert ant.vector_to_index(np.ones(8)) == 200**8 - 1


def test_action_vectors_are_on_minus_1_1_while_env_actions_are_on_the_env_bounds() -> None:
    env = Discretize(make_mujoco("InvertedPendulum-v5", seed=0), 512)  # Box(-3, 3, (1,))
    assert env.action_space == gym.spaces.Discrete(512)
    np.testing.assert_allclose(env.action(0), [-3.0])
    np.testing.assert_allclose(env.action(511), [3.0])
    np.testing.assert_allclose(env.action(255), [-3 / 511], rtol=1e-5)  # -3 + 255 * 6 / 511
    np.testing.assert_allclose(env.action_vectors(np.array([0, 255, 511])), [[-1], [-1 / 511], [1]], rtol=1e-5)
    assert env.action(255).shape == (1,) and env.action(255).dtype == np.float32


def test_stepping_a_wrapped_env_with_an_index_steps_the_inner_env_with_its_grid_vector() -> None:
    for env_id, levels, index, vector in [
        ("InvertedPendulum-v5", 512, 511, [3.0]),
        ("HalfCheetah-v5", 4, 1, [-1, -1, -1, -1, -1, -1 / 3]),
    ]:
        wrapped, plain = Discretize(make_mujoco(env_id, seed=0), levels), make_mujoco(env_id, seed=0)
        wrapped.reset(seed=3)
        plain.reset(seed=3)
        obs, reward, *_ = wrapped.step(index)
        expected_obs, expected_reward, *_ = plain.step(np.array(vector, dtype=np.float32))
        np.testing.assert_array_equal(obs, expected_obs)
        assert reward == expected_reward


def test_overflowing_grids_fewer_than_2_levels_and_bad_indices_are_refused() -> None:
    with pytest.raises(ValueError, match=r"discretization of 10 levels x 30 dims = 10\^30 actions overflows int64 "
                                         r"\(max 2\^63 - 1\)"):
        grid_size(10, 30)
    assert grid_size(2, 62) == 2**62
    with pytest.raises(ValueError, match=r"2 levels x 63 dims = 2\^63 actions overflows int64"):
        grid_size(2, 63)
    with pytest.raises(ValueError, match=r"256 levels x 8 dims = 256\^8 actions overflows int64"):
        Discretize(make_mujoco("Ant-v5", seed=0), 256)  # 2^64
    with pytest.raises(ValueError, match="levels=1: need an integer of at least 2 levels"):
        Discretize(gym.make("Pendulum-v1"), 1)
    env = Discretize(make_mujoco("Swimmer-v5", seed=0), 4)
    with pytest.raises(ValueError, match=r"action index 16 is out of range; actions are 0..15"):
        env.index_to_vector(np.array([3, 16]))


def test_non_box_action_spaces_are_refused_naming_the_space() -> None:
    with pytest.raises(ValueError, match=r"discretize needs a Box action space; env 'CartPole-v1' has Discrete\(2\)"):
        Discretize(gym.make("CartPole-v1"), 4)


def test_synthetic_task_has_2_to_the_20_actions_and_20_dim_states_with_50_step_episodes() -> None:
    env = gym.make(LARGE_ACTION_ID)
    assert env.action_space == gym.spaces.Discrete(2**20)
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (20,), np.float32)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for step in range(1, 51):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and truncated == (step == 50)
    assert env.get_wrapper_attr("action_representation")() == {"type": "bits", "bits": 20}


def test_features_are_the_index_bits_least_significant_first_as_plus_minus_1() -> None:
    task = LargeActionTask(n_actions=16)
    np.testing.assert_array_equal(task.features(5), [1, -1, 1, -1])  # 5 = 0b0101
    np.testing.assert_array_equal(task.features(np.array([[0], [15]])), [[[-1, -1, -1, -1]], [[1, 1, 1, 1]]])
    np.testing.assert_array_equal(task.action_vectors(5), task.features(5))
    assert LargeActionTask().features(2**20 - 1).tolist() == [1.0] * 20


def test_reward_is_the_share_of_matching_signs_with_optimum_1_and_complement_minus_1() -> None:
    task = LargeActionTask(n_actions=16)
    state = np.array([0.5, -1.0, 2.0, -0.1], dtype=np.float32)
    assert task.optimal_action(state) == 5  # bits 0 and 2, where s > 0
    assert task.reward(state, 5) == 1.0 and task.reward(state, 15 - 5) == -1.0
    assert task.reward(state, 4) == 0.5  # 3 of 4 bits match: (2 * 3 - 4) / 4
    np.testing.assert_array_equal(task.reward(state, np.array([5, 4, 10])), [1.0, 0.5, -1.0])
    np.testing.assert_array_equal(task.optimal_action(np.stack([state, -state])), [5, 10])


def test_optimal_policy_scores_1_per_step_a_one_bit_miss_0_9_and_random_about_0() -> None:
    env = gym.make(LARGE_ACTION_ID)
    task: LargeActionTask = env.unwrapped
    obs, _ = env.reset(seed=1)
    optimal, one_bit_off, complement, random = [], [], [], []
    for _ in range(2000):
        best = int(task.optimal_action(obs))
        one_bit_off.append(float(task.reward(obs, best ^ 1)))
        complement.append(float(task.reward(obs, best ^ (2**20 - 1))))
        random.append(float(task.reward(obs, env.action_space.sample())))
        obs, reward, _, truncated, _ = env.step(best)
        optimal.append(reward)
        if truncated:
            obs, _ = env.reset()
    assert np.all(np.array(optimal) == 1.0) and np.all(np.array(complement) == -1.0)
    np.testing.assert_allclose(one_bit_off, 0.9, rtol=1e-6)  # 1 - 2 / 20
    assert abs(np.mean(random)) < 0.03  # std of the mean: 1 / sqrt(20 * 2000) = 0.005


def test_synthetic_task_refuses_n_actions_that_are_not_powers_of_two() -> None:
    with pytest.raises(ValueError, match="n_actions=1000: must be a power of two 2\\^m with 1 <= m <= 62"):
        LargeActionTask(n_actions=1000)


def test_registration_is_idempotent() -> None:
    spec = gym.registry[LARGE_ACTION_ID]
    importlib.reload(envs.large_action)
    assert gym.registry[LARGE_ACTION_ID] is spec


def test_action_vectors_match_the_agents_encoder_built_from_action_representation() -> None:
    indices = np.array([0, 1, 5, 2730, 4095])
    for env in (Discretize(make_mujoco("HalfCheetah-v5", seed=0), 4), LargeActionTask(n_actions=4096)):
        encoder = ActionEncoder(env.action_representation())
        np.testing.assert_allclose(encoder(torch.from_numpy(indices)).numpy(), env.action_vectors(indices), atol=1e-6)


def test_factory_discretizes_box_envs_when_the_key_is_set_and_not_when_null_or_missing() -> None:
    sizes = {"inverted_pendulum_512": 512, "halfcheetah_4096": 4096, "halfcheetah_1m": 10**6, "hopper_1m": 10**6,
             "large_action": 2**20}
    for name, n in sizes.items():
        env = make_env(env_config(name), seed=0)
        assert env.action_space == gym.spaces.Discrete(n), name
        env.step(n - 1)
    for cfg in (env_config("hopper"), {"name": "hopper", "family": "mujoco", "id": "Hopper-v5"}):
        assert isinstance(make_env(cfg, seed=0).action_space, gym.spaces.Box)
    pendulum = make_env({**env_config("pendulum"), "discretize": 5}, seed=0)  # Box(-2, 2, (1,))
    np.testing.assert_allclose(pendulum.action(1), [-1.0])
    venv = make_vec_env(env_config("inverted_pendulum_512"), n_envs=2, seed=0)
    obs, rewards, _, _ = venv.step(np.array([0, 511]))
    assert obs.shape == (2, 4) and rewards.tolist() == [1.0, 1.0]
    venv.close()


def test_factory_refuses_discretize_below_2_on_atari_and_on_discrete_envs() -> None:
    with pytest.raises(ValueError, match=r"env.discretize=1 must be an integer >= 2"):
        make_env({**env_config("hopper"), "discretize": 1}, seed=0)
    with pytest.raises(ValueError, match="env.discretize=4 applies to Box-action envs of families classic, gym, "
                                         "mujoco; env 'breakout' is atari"):
        make_env({**env_config("breakout"), "discretize": 4}, seed=0)
    with pytest.raises(ValueError, match=r"env 'CartPole-v1' has Discrete\(2\)"):
        make_env({**env_config("cartpole"), "discretize": 4}, seed=0)
