"""StochDQN / StochDDQN: stochmax, targets against a hand-worked Q table, memory, learning, save/load."""

from __future__ import annotations

import json
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


def test_stochdqn_on_inverted_pendulum_512_beats_a_random_policy(tmp_path: Path) -> None:
    from agents.common.evaluation import evaluate
    from envs.factory import make_vec_env
    from runners.cli import run_main
    from runners.train import main as train_main

    run_dir = tmp_path / "run"
    args = ["agent=stochdqn", "env=inverted_pendulum_512", "preset=tiny", "total_timesteps=2000", "eval_freq=0",
            "eval_episodes=3", "progress_bar=false", "torch_threads=1", f"run_dir={run_dir}"]
    assert run_main(train_main, args) == 0
    model_return = json.loads((run_dir / "results.json").read_text())["eval"]["mean_reward"]

    env_cfg = {"name": "inverted_pendulum_512", "family": "mujoco", "id": "InvertedPendulum-v5", "discretize": 512}
    env = make_vec_env(env_cfg, n_envs=1, seed=10_000, training=False)

    class Random:
        def predict(self, obs: np.ndarray, *args: object, **kwargs: object) -> tuple[np.ndarray, None]:
            return np.array([env.action_space.sample()]), None

    random_return = evaluate(Random(), env, 10, env_cfg).mean
    assert random_return < 20  # the pole falls within a few steps when the torque is random
    assert model_return > 5 * random_return


def test_deterministic_predictions_leave_the_training_memory_and_sampler_untouched() -> None:
    p = policy(2**10)
    p.remember_argmax(np.array([3]))
    before = p.memory_state()
    obs = torch.rand(4, 2)
    p._predict(obs, deterministic=True)
    after = p.memory_state()
    assert after["sampler"] == before["sampler"] and after["ring"] == before["ring"]
    assert after["eval_sampler"] != before["eval_sampler"]
    p._predict(obs, deterministic=False)  # acting in training: the ring remembers the stoch_argmax actions
    assert p.memory_state()["ring"] != before["ring"]


def test_direct_fused_adam_step_and_clipping_equal_torch_bit_for_bit() -> None:
    """agents/stochdqn/update.py calls torch's fused Adam kernel and foreach clipping directly (private names of the
    pinned torch): over several steps the weights and the optimizer state equal those of optimizer.step() and
    clip_grad_norm_, so a torch upgrade that changes them fails here."""
    from agents.stochdqn.update import clip_grad_norm, optimizer_step, zero_grad

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2, fused=True, weight_decay=1e-3) for n in nets]
    for step in range(6):
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
        for i, (net, opt) in enumerate(zip(nets, opts, strict=True)):
            if i == 0:
                opt.zero_grad(set_to_none=True)
            else:
                zero_grad(opt)
            net(x).pow(2).mean().mul(100).backward()
            grads = [p.grad for p in net.parameters()]
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5, foreach=True) if i == 0 else \
                clip_grad_norm(grads, 0.5)
            opt.step() if i == 0 else optimizer_step(opt)
            if i == 0:
                ref_norm = norm
        assert torch.equal(norm, ref_norm)
        for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
            assert torch.equal(a, b)
    for a, b in zip(opts[0].state.values(), opts[1].state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
