"""``optimizer=ademamix`` for every gradient-based agent of the registry: built from the command line's config at
``preset=tiny``, every optimizer it checkpoints is an AdEMAMix with the given hyperparameters, and one tiny learning
step goes through it (its per-parameter step counter moves). DIAMOND keeps its per-component weight decay with any
optimizer, and its default stays the paper's AdamW."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from stable_baselines3.common.logger import configure

from agents.common.optim import AdEMAMix
from agents.common.registry import REGISTRY, make_agent
from envs.factory import make_vec_env
from runners.cli import parse_args
from runners.config import compose_train_config

NO_OPTIMIZER = {"stochq"}  # a Q-table updated by the paper's rule (tests/test_optim.py: it refuses the key)
OFF_POLICY = ["agent.learning_starts=8", "agent.batch_size=8", "agent.train_freq=1", "agent.gradient_steps=1"]
STOCH = ["env=pendulum", "env.discretize=5", *OFF_POLICY]
# agent -> the env and the overrides that make one learning step cheap; {data} is the agent's dataset or demos
SETUPS: dict[str, list[str]] = {
    "dqn": ["env=cartpole", *OFF_POLICY],
    "ppo": ["env=cartpole", "agent.n_steps=16", "agent.batch_size=8", "agent.n_epochs=1"],
    "sac": ["env=pendulum", *OFF_POLICY],
    "stochdqn": STOCH, "stochddqn": STOCH, "fulldqn": STOCH, "fullddqn": STOCH,
    "dt": ["env=hopper", "agent.dataset={data}"],
    "radt": ["env=hopper", "agent.dataset={data}"],
    "act": ["env=needle", "env.kwargs.image_size=32", "agent.demos={data}"],
    "diamond": ["env=breakout", "agent.batch_size=2", "agent.rew_end_seq_length=6", "agent.initial_collect_steps=40",
                "agent.initial_collect_max_steps=40", "agent.threshold_rew=0", "agent.collect_steps=20",
                "agent.first_epoch_train_steps=[1,1,1]", "agent.num_final_epochs=0", "agent.imagination_batch_size=2",
                "agent.horizon=3"],
    "delta_iris": ["env=crafter", "agent.num_steps_first_epoch=200", "agent.steps_first_epoch=[1,1,1]",
                   "agent.num_final_epochs=0"],
}


def test_every_gradient_based_agent_of_the_registry_is_covered() -> None:
    assert set(REGISTRY) - NO_OPTIMIZER == set(SETUPS)


@pytest.fixture(scope="module")
def hopper_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """300 Hopper steps of a fixed policy a = tanh(W s), D4RL layout (as tests/test_radt.py, shorter)."""
    from agents.common.buffers import atomic_savez
    from agents.common.episode_buffer import EpisodeBuffer

    env = make_vec_env({"name": "hopper", "family": "mujoco", "id": "Hopper-v5", "kwargs": {},
                        "max_episode_steps": None, "discretize": None}, n_envs=1, seed=0, training=False)
    w = np.random.default_rng(0).normal(0, 0.5, (3, 11))
    buffer = EpisodeBuffer((11,), np.float32, (3,), np.float32)
    obs = env.reset()
    for _ in range(300):
        action = np.tanh(obs @ w.T).astype(np.float32)
        next_obs, reward, done, info = env.step(action)
        truncated = bool(info[0].get("TimeLimit.truncated", False))
        buffer.add_step(0, obs[0], action[0], float(reward[0]), bool(done[0]) and not truncated, truncated)
        obs = next_obs
    buffer.finish_episode(0)
    env.close()
    path = tmp_path_factory.mktemp("data") / "hopper-scripted.npz"
    atomic_savez(path, buffer.to_d4rl_dict())
    return str(path)


@pytest.fixture(scope="module")
def needle_demos(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One scripted-expert demonstration of the needle task at 32x32 pixels (tests/test_act.py's recorder)."""
    from tests.test_act import record

    path = tmp_path_factory.mktemp("act") / "demos.npz"
    record(episodes=1).save(path)
    return str(path)


def build(agent: str, extra: list[str], data: str = "") -> Any:
    argv = [f"agent={agent}", "preset=tiny", "optimizer=ademamix", "optimizer_kwargs={alpha: 8, T_alpha_beta3: 10}",
            *(arg.format(data=data) for arg in SETUPS[agent]), *extra]
    cfg = compose_train_config(argv, parse_args(argv)[1])
    hyperparams = OmegaConf.to_container(cfg.agent, resolve=True)
    hyperparams.pop("id")
    env = make_vec_env(OmegaConf.to_container(cfg.env, resolve=True), n_envs=1, seed=0)
    return make_agent(cfg.agent.id, env, hyperparams, seed=0, device="cpu")


def optimizers(model: Any) -> dict[str, torch.optim.Optimizer]:
    """Every optimizer the agent checkpoints, by its attribute name."""
    found = {name: model._attr(name) for name in model._get_torch_save_params()[0]}
    return {name: opt for name, opt in found.items() if isinstance(opt, torch.optim.Optimizer)}


def one_learning_step(agent: str, model: Any) -> None:
    if agent in ("dt", "radt", "act"):  # offline: one gradient step on a batch of the dataset / demonstrations
        model.set_logger(configure(None, []))
        model.load_demos() if agent == "act" else model.load_dataset()
        model.train_step()
    elif agent == "ppo":
        model.learn(16)  # one rollout of 16 steps, one epoch of 2 minibatches
    elif agent in ("diamond", "delta_iris"):
        model.learn(1)  # the random first epoch, then one update of each component
    else:
        model.learn(10)  # learning starts after 8 steps, one update per step


@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
@pytest.mark.parametrize("agent", sorted(SETUPS))
def test_optimizer_ademamix_builds_and_steps(agent: str, request: pytest.FixtureRequest) -> None:
    data = {"dt": "hopper_data", "radt": "hopper_data", "act": "needle_demos"}.get(agent)
    model = build(agent, [], request.getfixturevalue(data) if data else "")
    chosen = optimizers(model)
    assert chosen, f"{agent} checkpoints no optimizer"
    for name, opt in chosen.items():
        assert type(opt) is AdEMAMix, (name, type(opt))
        assert all(g["alpha"] == 8 and g["T_alpha_beta3"] == 10 for g in opt.param_groups), name
    one_learning_step(agent, model)
    for name, opt in chosen.items():
        steps = [opt.state[p]["step"] for g in opt.param_groups for p in g["params"] if p in opt.state]
        assert steps and max(steps) >= 1, f"{agent}: {name} took no step"


def test_sac_temperature_follows_the_optimizer_without_weight_decay(tmp_path: Path) -> None:
    """SB3 builds SAC's entropy-coefficient optimizer as Adam; the zoo builds it with ``optimizer=`` (weight decay
    0 on log(alpha)), and a checkpoint rebuilds it with its moments."""
    from agents.baselines import SAC

    model = build("sac", ["optimizer=adamw", "optimizer_kwargs={weight_decay: 0.5}"])
    assert type(model.ent_coef_optimizer) is torch.optim.AdamW
    assert model.ent_coef_optimizer.defaults["weight_decay"] == 0.0
    assert model.actor.optimizer.defaults["weight_decay"] == 0.5
    model.learn(10)
    model.save(tmp_path / "sac")
    loaded = SAC.load(tmp_path / "sac", device="cpu")
    assert type(loaded.ent_coef_optimizer) is torch.optim.AdamW
    (a,), (b,) = model.ent_coef_optimizer.state.values(), loaded.ent_coef_optimizer.state.values()
    assert b["step"] == a["step"] >= 1
    torch.testing.assert_close(b["exp_avg"], a["exp_avg"])
    default = build("sac", ["optimizer=adam", "optimizer_kwargs={}"])
    assert type(default.ent_coef_optimizer) is torch.optim.Adam  # SB3's own, untouched


def test_diamond_default_is_the_papers_adamw_and_any_optimizer_keeps_the_per_component_weight_decay(
    tmp_path: Path,
) -> None:
    from agents.diamond.agent import COMPONENTS, Diamond

    paper = build("diamond", ["optimizer=adamw", "optimizer_kwargs={}"])
    for name, decay in zip(COMPONENTS, (1e-2, 1e-2, 0.0), strict=True):
        opt = paper.optimizers[name]
        assert type(opt) is torch.optim.AdamW and opt.defaults["eps"] == 1e-8 and opt.defaults["weight_decay"] == decay
    model = build("diamond", ["agent.weight_decay=[0.5,0.25,0.125]", "optimizer_kwargs={betas: [0.8, 0.99, 0.999]}"])
    for name, decay in zip(COMPONENTS, (0.5, 0.25, 0.125), strict=True):
        opt = model.optimizers[name]
        assert type(opt) is AdEMAMix and opt.defaults["weight_decay"] == decay and opt.defaults["eps"] == 1e-8
        assert opt.defaults["betas"] == (0.8, 0.99, 0.999)
    # a checkpoint rebuilds the same AdEMAMix with its moments; the hyperparameters travel in meta.json
    model.learn(1)
    model.save(tmp_path / "model")
    loaded = Diamond.load(tmp_path / "model", device="cpu")
    assert loaded.optimizer_name == "ademamix" and loaded.hyperparams["optimizer_kwargs"]["betas"] == [0.8, 0.99,
                                                                                                        0.999]
    for name in COMPONENTS:
        a, b = model.optimizers[name], loaded.optimizers[name]
        assert type(b) is AdEMAMix and b.defaults["weight_decay"] == a.defaults["weight_decay"]
        first = a.param_groups[0]["params"][0]
        loaded_first = b.param_groups[0]["params"][0]
        assert b.state[loaded_first]["step"] == a.state[first]["step"] >= 1
        torch.testing.assert_close(b.state[loaded_first]["exp_avg_slow"], a.state[first]["exp_avg_slow"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'; choose one of: adamw, adam, ademamix"),
        ({"optimizer_kwargs": {"weight_decay": 0.1}}, "set weight_decay= instead"),
        ({"optimizer": "ademamix", "optimizer_kwargs": {"alpah": 8}}, "optimizer_kwargs.alpah is not an argument"),
    ],
)
def test_diamond_refuses_bad_optimizer_arguments(kwargs: dict, message: str) -> None:
    from agents.diamond.agent import Diamond

    with pytest.raises(ValueError, match=message):
        Diamond("CnnPolicy", None, size="tiny", **kwargs)
