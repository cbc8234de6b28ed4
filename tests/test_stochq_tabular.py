"""Tabular Stochastic Q-learning (Fourati et al. 2024, Algorithm 1): stochmax, the TD update, learning on the toy-text
envs, checkpoints and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from agents.common.evaluation import evaluate
from agents.common.registry import make_agent
from agents.stochdqn.sampling import SubsetSampler
from agents.stochdqn.tabular import StochQLearning, TabularQPolicy, stochmax, td_update
from envs.factory import make_vec_env

ROOT = Path(__file__).resolve().parents[1]
FROZEN = {"name": "frozenlake_deterministic", "family": "classic", "id": "FrozenLake-v1",
          "kwargs": {"is_slippery": False}, "max_episode_steps": None}
CLIFF = {"name": "cliffwalking", "family": "classic", "id": "CliffWalking-v1", "kwargs": {}, "max_episode_steps": 500}
# Sutton & Barto, Example 6.6: alpha = 0.5, epsilon = 0.1
CLIFF_SETTINGS = {"learning_rate": 0.5, "exploration_initial_eps": 0.1, "exploration_final_eps": 0.1}
ROW = np.array([[0.2, 0.5, -0.1, 0.3]])  # Q(s', .) of the hand-worked examples


def frozen_model(seed: int = 0, **kwargs: object) -> StochQLearning:
    return StochQLearning("TabularPolicy", make_vec_env(FROZEN), seed=seed, **kwargs)  # type: ignore[arg-type]


def test_stochmax_is_the_max_over_the_candidates_only() -> None:
    # C = {0, 2, 3} (the last slot is padding): max(0.2, -0.1, 0.3) = 0.3 at action 3, below max = 0.5
    values, actions = stochmax(ROW, np.array([[0, 2, 3, 0]]), np.array([[True, True, True, False]]))
    assert values.tolist() == [0.3] and actions.tolist() == [3]
    assert values[0] <= ROW.max()


def test_stochmax_over_every_action_is_the_max() -> None:
    values, actions = stochmax(ROW, np.array([[3, 1, 0, 2]]), np.ones((1, 4), dtype=bool))
    assert values.tolist() == [0.5] and actions.tolist() == [1]


def test_stochmax_never_exceeds_the_max_and_reaches_it_when_the_argmax_is_a_candidate() -> None:
    q = np.random.default_rng(0).normal(size=(200, 16))
    cands, mask = SubsetSampler(16, rng=np.random.default_rng(1)).candidates(200, np.empty(0, dtype=np.int64))
    values, actions = stochmax(q, cands, mask)
    assert mask.sum(axis=1).tolist() == [4] * 200  # |R| = ceil(log2 16) = 4
    assert np.all(values <= q.max(axis=1))
    has_argmax = (cands == q.argmax(axis=1)[:, None]).any(axis=1)
    np.testing.assert_array_equal(values[has_argmax], q.max(axis=1)[has_argmax])
    np.testing.assert_array_equal(q[np.arange(200), actions], values)


def test_td_update_of_a_hand_worked_transition() -> None:
    q = np.zeros((2, 4))
    q[0, 2], q[1] = 0.4, ROW[0]
    next_value, _ = stochmax(q[[1]], np.array([[0, 2]]), np.ones((1, 2), dtype=bool))  # stochmax over {0, 2} = 0.2
    delta = td_update(q, 0, 2, reward=1.0, next_value=next_value[0], terminated=False, alpha=0.1, gamma=0.9)
    # delta = 1 + 0.9 * 0.2 - 0.4 = 0.78;  Q(0, 2) = 0.4 + 0.1 * 0.78 = 0.478
    assert delta == pytest.approx(0.78) and q[0, 2] == pytest.approx(0.478)
    delta = td_update(q, 0, 2, reward=1.0, next_value=123.0, terminated=True, alpha=0.1, gamma=0.9)
    # terminated: delta = 1 - 0.478 = 0.522;  Q(0, 2) = 0.478 + 0.0522 = 0.5302
    assert delta == pytest.approx(0.522) and q[0, 2] == pytest.approx(0.5302)


def test_train_step_with_every_action_in_the_subset_is_q_learning_and_remembers_the_argmax() -> None:
    model = frozen_model(learning_rate=0.1, gamma=0.9, subset_size=4)
    q = model.policy.tables()[0]
    q[0, 2], q[1] = 0.4, ROW[0]
    delta = model.train_step(0, 2, 1.0, 1, terminated=False)
    # delta = 1 + 0.9 * max(Q(1, .)) - 0.4 = 1 + 0.45 - 0.4 = 1.05;  Q(0, 2) = 0.4 + 0.105 = 0.505
    assert delta == pytest.approx(1.05) and q[0, 2] == pytest.approx(0.505)
    assert model.policy.memory[1].tolist() == [1]  # the stoch_argmax of s' is its memory M
    assert model.policy.q_table[0, 2].item() == pytest.approx(0.505)  # the numpy view writes through


def test_double_train_step_updates_one_table_with_the_others_value_of_its_stoch_argmax() -> None:
    seen = set()
    for seed in range(30):  # a fair coin picks the table: both sides within 30 seeds (each seed's coin is fixed)
        model = frozen_model(seed, learning_rate=0.1, gamma=0.9, subset_size=4, double=True)
        qa, qb = model.policy.tables()
        qa[0, 2], qa[1] = 0.4, ROW[0]
        qb[1] = [0.6, 0.1, 0.0, 0.4]
        model.train_step(0, 2, 1.0, 1, terminated=False)
        if qb[0, 2] == 0.0:  # A: b* = argmax Q_A(1, .) = 1; 0.4 + 0.1 (1 + 0.9 Q_B(1, 1) - 0.4) = 0.469
            assert qa[0, 2] == pytest.approx(0.469)
            seen.add("A")
        else:  # B: b* = argmax Q_B(1, .) = 0; 0 + 0.1 (1 + 0.9 Q_A(1, 0) - 0) = 0.118
            assert qb[0, 2] == pytest.approx(0.118) and qa[0, 2] == 0.4
            seen.add("B")
    assert seen == {"A", "B"}


def test_memory_keeps_the_last_distinct_exploited_actions_of_each_state() -> None:
    policy = TabularQPolicy(spaces.Discrete(16), spaces.Discrete(4), memory_size=2, seed=0)
    policy.remember(np.array([3, 3, 3, 3, 5]), np.array([1, 1, 2, 0, 2]))
    assert policy.memory[3].tolist() == [0, 2]  # 1, 2 then 0 overwrote the oldest (1); the repeated 1 was skipped
    assert policy.memory[5].tolist() == [2, -1] and policy.memory[4].tolist() == [-1, -1]
    assert policy.sampler.subset_size == 2  # ceil(log2 4)


@pytest.mark.parametrize(
    ("env_cfg", "settings", "optimal"),
    [
        (FROZEN, {"stochastic": True}, 1.0),
        (FROZEN, {"stochastic": False}, 1.0),
        (FROZEN, {"stochastic": True, "double": True}, 1.0),
        (CLIFF, {"stochastic": True, **CLIFF_SETTINGS}, -13.0),
        (CLIFF, {"stochastic": False, **CLIFF_SETTINGS}, -13.0),
    ],
    ids=["frozenlake-stochq", "frozenlake-qlearning", "frozenlake-double-stochq", "cliffwalking-stochq",
         "cliffwalking-qlearning"],
)
def test_reaches_the_optimal_return_in_5000_steps(env_cfg: dict, settings: dict, optimal: float) -> None:
    # 3000 steps suffice on 10-20 seeds of each (see configs/agent_env/stochq_*.yaml); 5000 leaves a margin
    model = StochQLearning("TabularPolicy", make_vec_env(env_cfg, seed=1), seed=1, **settings).learn(5000)
    result = evaluate(model, make_vec_env(env_cfg, seed=100), 5, env_cfg)
    assert result.returns == [optimal] * 5


def test_save_load_round_trip_keeps_table_memory_and_actions(tmp_path: Path) -> None:
    model = frozen_model(memory_size=2).learn(1000)
    model.save(tmp_path / "stochq")
    loaded = StochQLearning.load(tmp_path / "stochq", env=make_vec_env(FROZEN))
    np.testing.assert_array_equal(loaded.policy.tables()[0], model.policy.tables()[0])
    np.testing.assert_array_equal(loaded.policy.memory, model.policy.memory)
    assert loaded.hyperparams == model.hyperparams and loaded.num_timesteps == 1000
    assert loaded.exploration_rate == model.exploration_rate == 0.05
    states = np.tile(np.arange(16), 4)  # stoch_argmax draws R: the same sampler state gives the same actions
    np.testing.assert_array_equal(loaded.predict(states, deterministic=True)[0],
                                  model.predict(states, deterministic=True)[0])


def test_auto_policy_is_the_tabular_policy_and_box_observations_are_refused() -> None:
    model = make_agent("stochq", make_vec_env(FROZEN), {"policy": "auto"}, seed=0)
    assert isinstance(model.policy, TabularQPolicy) and model.policy.q_table.shape == (16, 4)
    cartpole = {"name": "cartpole", "family": "classic", "id": "CartPole-v1", "kwargs": {}}
    with pytest.raises(ValueError, match=r"stochq needs a Discrete observation space starting at 0; got Box\("):
        StochQLearning("TabularPolicy", make_vec_env(cartpole))
    with pytest.raises(ValueError, match="stochq runs one env; got a VecEnv of 2 envs"):
        StochQLearning("TabularPolicy", make_vec_env(FROZEN, n_envs=2))


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runners.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_tiny_run_from_the_command_line_exits_0(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train("agent=stochq", "env=frozenlake_deterministic", "preset=tiny", f"run_dir={run_dir}", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (run_dir / "final").iterdir()) == ["meta.json", "model.safetensors"]


def test_cartpole_exits_2_naming_its_observation_space(tmp_path: Path) -> None:
    result = train("agent=stochq", "env=cartpole", f"run_dir={tmp_path / 'run'}", cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: stochq needs a Discrete observation space; CartPole-v1 has Box(-inf, inf, (4,), float32)"
    )
    assert not (tmp_path / "run").exists()
