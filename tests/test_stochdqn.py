"""StochDQN / StochDDQN: stochmax, targets against a hand-worked Q table, memory, learning, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.utils import LinearSchedule

from agents.stochdqn.policy import StochQPolicy, best_over, next_value
from agents.stochdqn.qnet import ActionEncoder, HeadQNetwork
from agents.stochdqn.stochdqn import FullDDQN, FullDQN, StochDDQN, StochDQN

# A Q table over 2 states (one-hot observations) and 4 actions, as a linear N-head network without bias.
Q_ONLINE = torch.tensor([[1.0, 5.0, 2.0, 0.0], [3.0, -1.0, 4.0, 2.5]])
Q_TARGET = torch.tensor([[2.0, 0.5, 3.0, 1.0], [1.0, 6.0, 0.0, 2.0]])
STATES = torch.eye(2)


def table(values: torch.Tensor) -> HeadQNetwork:
    net = HeadQNetwork(obs_dim=2, n_actions=4, net_arch=[])
    with torch.no_grad():
        net.net[0].weight.copy_(values.T)  # Q(s, a) = one_hot(s) @ W.T = values[s, a]
        net.net[0].bias.zero_()
    return net


def policy(n_actions: int = 4, **kwargs: object) -> StochQPolicy:
    spaces = gym.spaces.Box(0, 1, (2,)), gym.spaces.Discrete(n_actions)
    return StochQPolicy(*spaces, LinearSchedule(1e-3, 1e-3, 1.0), q_network="head", net_arch=[], seed=0, **kwargs)


def test_subset_and_memory_default_to_ceil_log2_n() -> None:
    for n, size in ((4, 2), (512, 9), (4096, 12), (1000, 10)):
        p = policy(n)
        assert p.subset_size == size == math.ceil(math.log2(n))
        assert p.memory_size == size and p.ring_size == math.ceil(size / 2)


def test_stochmax_is_at_most_max_and_equals_it_over_every_action() -> None:
    net = table(Q_ONLINE)
    subset = torch.tensor([[0, 2], [1, 3]])
    values, actions = best_over(net, STATES, subset, torch.ones_like(subset, dtype=torch.bool))
    torch.testing.assert_close(values, torch.tensor([2.0, 2.5]))  # max(1, 2) and max(-1, 2.5)
    torch.testing.assert_close(actions, torch.tensor([2, 3]))
    assert torch.all(values <= Q_ONLINE.max(dim=1).values)
    every = torch.arange(4).expand(2, -1)
    values, actions = best_over(net, STATES, every, torch.ones_like(every, dtype=torch.bool))
    torch.testing.assert_close(values, torch.tensor([5.0, 4.0]))
    torch.testing.assert_close(actions, torch.tensor([1, 2]))


def test_padded_candidates_never_win() -> None:
    candidates = torch.tensor([[0, 1], [2, 2]])
    mask = torch.tensor([[True, False], [True, False]])  # action 1 (Q=5) is padding in state 0
    values, actions = best_over(table(Q_ONLINE), STATES, candidates, mask)
    torch.testing.assert_close(values, torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(actions, torch.tensor([0, 2]))


def test_targets_of_stochdqn_and_stochddqn_against_a_hand_worked_table() -> None:
    online, target = table(Q_ONLINE), table(Q_TARGET)
    candidates = torch.tensor([[0, 1, 2], [0, 1, 3]])
    mask = torch.ones_like(candidates, dtype=torch.bool)
    # StochDQN: stochmax of the target net over C': state 0 max(2, .5, 3) = 3; state 1 max(1, 6, 2) = 6
    stoch = next_value(online, target, STATES, candidates, mask, double=False)
    torch.testing.assert_close(stoch, torch.tensor([3.0, 6.0]))
    # StochDDQN: a* under the online net (state 0: action 1 (Q=5); state 1: action 0 (Q=3)), valued by the target
    double = next_value(online, target, STATES, candidates, mask, double=True)
    torch.testing.assert_close(double, torch.tensor([0.5, 1.0]))
    # full max: DQN max_a Q_target = (3, 6); DDQN: argmax online (1, 2) valued by the target = (0.5, 0)
    torch.testing.assert_close(next_value(online, target, STATES, None, None, False, 4), torch.tensor([3.0, 6.0]))
    torch.testing.assert_close(next_value(online, target, STATES, None, None, True, 4), torch.tensor([0.5, 0.0]))


def test_candidates_hold_subset_size_random_actions_plus_the_memory() -> None:
    p = policy(2**20, memory_size=6, ring_size=2)
    p.remember_batch(np.array([7, 7, 9, 11, 13, 15, 17]))
    np.testing.assert_array_equal(p.batch_memory, [7, 9, 11, 13])  # the first memory - ring = 4 distinct
    p.remember_argmax(np.array([100]))
    p.remember_argmax(np.array([200, 300]))  # the ring of 2 keeps the two most recent
    np.testing.assert_array_equal(np.sort(p.ring), [200, 300])
    candidates, mask = p.candidates(3)
    for row, valid in zip(candidates.numpy(), mask.numpy(), strict=True):
        chosen = row[valid]
        assert len(set(chosen)) == len(chosen)
        assert {7, 9, 11, 13, 200, 300} <= set(chosen)
        assert 20 <= len(chosen) <= 26  # 20 random (ceil(log2 2^20)) + 6 memory, minus overlaps


def test_action_encoders_compute_vectors_from_the_index() -> None:
    grid = ActionEncoder({"type": "grid", "levels": 4, "dims": 2})
    torch.testing.assert_close(grid(torch.tensor([0, 1, 4, 15])),
                               torch.tensor([[-1, -1], [-1, -1 / 3], [-1 / 3, -1], [1, 1]]))
    bits = ActionEncoder({"type": "bits", "bits": 3})
    torch.testing.assert_close(bits(torch.tensor([0, 5])), torch.tensor([[-1.0, -1, -1], [1, -1, 1]]))


@pytest.mark.parametrize("cls", [StochDQN, StochDDQN, FullDQN, FullDDQN])
def test_save_load_round_trip_keeps_network_memory_and_sampler(cls: type, tmp_path: Path) -> None:
    env = gym.make("CartPole-v1")
    model = cls("MlpPolicy", env, seed=0, learning_starts=50, buffer_size=500, batch_size=16, train_freq=1,
                policy_kwargs={"net_arch": [16]})
    model.learn(150)
    model.save(tmp_path / "ckpt", replay_buffer=True)
    loaded = cls.load(tmp_path / "ckpt", env=env)
    assert loaded.hyperparams == model.hyperparams
    assert loaded.policy.memory_state() == model.policy.memory_state()
    observations = np.stack([env.observation_space.sample() for _ in range(8)])
    for _ in range(3):  # the same sampler state and memory give the same stoch_argmax, call after call
        np.testing.assert_array_equal(model.predict(observations, deterministic=True)[0],
                                      loaded.predict(observations, deterministic=True)[0])
