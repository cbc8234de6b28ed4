"""AdEMAMix (Pagliardini et al. 2024, Algorithm 1) against hand-worked steps, its reduction to AdamW, its warm-up
schedulers, checkpoints, and ``optimizer=`` of every agent from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from agents.common.checkpoint import join_tensors, load_checkpoint, split_tensors
from agents.common.optim import OPTIMIZERS, AdEMAMix, alpha_schedule, beta3_schedule, make_optimizer
from agents.common.registry import load_agent, make_agent
from envs.factory import make_vec_env
from runners.cli import parse_args, run_main
from runners.config import compose_train_config
from runners.train import main as train_main

THETA0 = [1.0, 2.0, -1.0]
G1 = [2.0, -4.0, 0.5]
G2 = [2.0, 4.0, -0.5]  # the magnitudes of G1: nu_hat stays g^2 and sqrt(nu_hat) = |g|


def run_steps(optimizer_kwargs: dict, grads: list[list[float]], theta0: list[float] = THETA0) -> list[torch.Tensor]:
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    optimizer = AdEMAMix([theta], **optimizer_kwargs)
    trajectory = []
    for grad in grads:
        theta.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        trajectory.append(theta.detach().clone())
    return trajectory


def test_two_steps_equal_the_update_worked_out_by_hand() -> None:
    # beta1 = 0.5, beta2 = 0.75, beta3 = 0.5, alpha = 2, lr = 0.1, eps = 0, no decay; theta0 = [1, 2, -1]
    # step 1, g = [2, -4, 0.5]:
    #   m1 = 0.5 g = [1, -2, 0.25]          m1_hat = m1 / (1 - 0.5) = [2, -4, 0.5]
    #   nu = 0.25 g^2 = [1, 4, 0.0625]      nu_hat = nu / (1 - 0.75) = [4, 16, 0.25], sqrt = [2, 4, 0.5]
    #   m2 = 0.5 g = [1, -2, 0.25]          (no bias correction)
    #   update = (m1_hat + 2 m2) / sqrt(nu_hat) = [4, -8, 1] / [2, 4, 0.5] = [2, -2, 2]
    #   theta1 = theta0 - 0.1 update = [0.8, 2.2, -1.2]
    # step 2, g = [2, 4, -0.5]:
    #   m1 = 0.5 [1, -2, 0.25] + 0.5 g = [1.5, 1, -0.125]      m1_hat = m1 / (1 - 0.25) = [2, 4/3, -1/6]
    #   nu = 0.75 [1, 4, 0.0625] + 0.25 g^2 = [1.75, 7, 0.109375]  nu_hat = nu / (1 - 0.5625) = [4, 16, 0.25]
    #   m2 = 0.5 [1, -2, 0.25] + 0.5 g = [1.5, 1, -0.125]
    #   update = ([2, 4/3, -1/6] + 2 [1.5, 1, -0.125]) / [2, 4, 0.5] = [5, 10/3, -5/12] / [2, 4, 0.5]
    #          = [2.5, 5/6, -5/6]
    #   theta2 = [0.8 - 0.25, 2.2 - 1/12, -1.2 + 1/12] = [0.55, 2.11666..., -1.11666...]
    first, second = run_steps(dict(lr=0.1, betas=(0.5, 0.75, 0.5), alpha=2.0, eps=0.0), [G1, G2])
    torch.testing.assert_close(first, torch.tensor([0.8, 2.2, -1.2], dtype=torch.float64))
    torch.testing.assert_close(second, torch.tensor([0.55, 2.2 - 1 / 12, -1.2 + 1 / 12], dtype=torch.float64))


def test_weight_decay_step_worked_out_by_hand() -> None:
    # as the first step above with lambda = 0.5: theta1 = theta0 - lr (update + lambda theta0)
    #   = [1, 2, -1] - 0.1 ([2, -2, 2] + [0.5, 1, -0.5]) = [1, 2, -1] - [0.25, -0.1, 0.15] = [0.75, 2.1, -1.15]
    (first,) = run_steps(dict(lr=0.1, betas=(0.5, 0.75, 0.5), alpha=2.0, eps=0.0, weight_decay=0.5), [G1])
    torch.testing.assert_close(first, torch.tensor([0.75, 2.1, -1.15], dtype=torch.float64))


def test_weight_decay_is_decoupled_from_the_moments() -> None:
    # zero gradients: the moments stay 0 (an L2 term would enter them) and theta shrinks by (1 - lr lambda) a step
    theta = torch.tensor(THETA0, requires_grad=True)
    optimizer = AdEMAMix([theta], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        theta.grad = torch.zeros(3)
        optimizer.step()
    torch.testing.assert_close(theta.detach(), torch.tensor(THETA0) * 0.95**3)
    state = optimizer.state[theta]
    for key in ("exp_avg", "exp_avg_slow", "exp_avg_sq"):
        assert torch.count_nonzero(state[key]) == 0, key


def test_warmup_uses_alpha_t_and_beta3_t_of_each_step_by_hand() -> None:
    # beta1 = 0.5 (beta3's start), beta2 = 0.75, beta3 = b = 0.5^(1/3) (half-life 3 steps; 0.5 has half-life 1),
    # alpha = 2, T = 2, lr = 1, eps = 0, theta0 = 0, g = 1 at each step (so m1_hat = nu_hat = 1)
    #   step 1: alpha(1) = 1; beta3(1) = 0.5^(1/2) (half-life 2, halfway from 1 to 3)
    #           m2 = 1 - sqrt(0.5);           theta1 = -(1 + 1 (1 - sqrt(0.5))) = -(2 - sqrt(0.5))
    #   step 2: alpha(2) = 2; beta3(2) = b
    #           m2 = b (1 - sqrt(0.5)) + (1 - b);  theta2 = theta1 - (1 + 2 m2)
    b, root = 0.5 ** (1 / 3), math.sqrt(0.5)
    first, second = run_steps(dict(lr=1.0, betas=(0.5, 0.75, b), alpha=2.0, eps=0.0, T_alpha_beta3=2),
                              [[1.0], [1.0]], theta0=[0.0])
    theta1 = -(2 - root)
    assert first.item() == pytest.approx(theta1, rel=1e-12)
    assert second.item() == pytest.approx(theta1 - (1 + 2 * (b * (1 - root) + 1 - b)), rel=1e-12)


def test_schedulers_worked_out_by_hand() -> None:
    # alpha(t) = min(t alpha / T, alpha), alpha = 8, T = 4
    assert [alpha_schedule(t, 8.0, 4) for t in range(6)] == [0.0, 2.0, 4.0, 6.0, 8.0, 8.0]
    # beta_s = 0.5 (ln = -L), beta3 = 0.5^(1/3) (ln = -L/3), T = 4, a = t/T:
    # exp((L^2/3) / (-(1 - a) L/3 - a L)) = exp(-L / (1 + 2a)) = 0.5^(1 / (1 + 2a)): the half-life 1 + 2a
    for t in range(4):
        assert beta3_schedule(t, 0.5 ** (1 / 3), 0.5, 4) == pytest.approx(0.5 ** (1 / (1 + 2 * t / 4)), rel=1e-12)
    assert alpha_schedule(7, 8.0, None) == 8.0 and beta3_schedule(1, 0.9999, 0.9, None) == 0.9999  # no warm-up


@pytest.mark.parametrize(("alpha", "beta3", "beta1", "warmup"), [(5.0, 0.9999, 0.9, 1000), (0.1, 0.999, 0.5, 3)])
def test_schedulers_reach_their_end_values_exactly_at_t_and_rise_before(
    alpha: float, beta3: float, beta1: float, warmup: int
) -> None:
    alphas = [alpha_schedule(t, alpha, warmup) for t in range(warmup + 3)]
    betas = [beta3_schedule(t, beta3, beta1, warmup) for t in range(1, warmup + 3)]
    assert alphas[warmup] == alphas[-1] == alpha  # exactly, not approximately
    assert betas[warmup - 1] == betas[-1] == beta3
    assert all(x < y for x, y in zip(alphas[:warmup], alphas[1 : warmup + 1], strict=True))
    assert all(x < y for x, y in zip(betas[: warmup - 1], betas[1:warmup], strict=True))
    assert beta1 < betas[0] < beta3
    # linear in the half-life ln(0.5) / ln(beta): equal steps of the half-life
    half_lives = [math.log(0.5) / math.log(b) for b in betas[:warmup]]
    steps = [y - x for x, y in zip(half_lives[:-1], half_lives[1:], strict=True)]
    assert max(steps) == pytest.approx(min(steps), rel=1e-6)


def small_net(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(dtype)


def train(net: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    data = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 3, generator=data, dtype=next(net.parameters()).dtype)
        optimizer.zero_grad()
        net(x).pow(2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("beta3", [0.9999, 0.5])
def test_alpha_zero_is_adamw(beta3: float) -> None:
    adamw_net, ademamix_net = small_net(), small_net()
    train(adamw_net, torch.optim.AdamW(adamw_net.parameters(), lr=1e-2, weight_decay=0.1), 20)
    ademamix = AdEMAMix(ademamix_net.parameters(), lr=1e-2, betas=(0.9, 0.999, beta3), alpha=0.0, weight_decay=0.1,
                        T_alpha_beta3=10)
    train(ademamix_net, ademamix, 20)
    for a, b in zip(adamw_net.parameters(), ademamix_net.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)  # in fact bit for bit: the same operations in order


def test_param_groups_keep_their_own_hyperparameters() -> None:
    # group 0 (alpha = 0) follows AdamW, group 1 (alpha = 8, warm-up 5) a one-group AdEMAMix with those values
    grads = torch.randn(10, 2, 3, generator=torch.Generator().manual_seed(0))
    a, b, a_ref, b_ref = (torch.ones(3, requires_grad=True) for _ in range(4))
    optimizer = AdEMAMix([{"params": [a], "alpha": 0.0}, {"params": [b], "alpha": 8.0, "T_alpha_beta3": 5}],
                         lr=1e-2, weight_decay=0.1)
    references = (torch.optim.AdamW([a_ref], lr=1e-2, weight_decay=0.1),
                  AdEMAMix([b_ref], lr=1e-2, weight_decay=0.1, alpha=8.0, T_alpha_beta3=5))
    for grad in grads:
        a.grad, b.grad, a_ref.grad, b_ref.grad = grad[0], grad[1], grad[0].clone(), grad[1].clone()
        optimizer.step()
        for reference in references:
            reference.step()
    torch.testing.assert_close(a, a_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(b, b_ref, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="alpha=-1"):
        optimizer.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "alpha": -1})


def test_closure_is_evaluated_and_its_loss_returned() -> None:
    theta = torch.tensor([3.0], requires_grad=True)
    optimizer = AdEMAMix([theta], lr=0.1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (theta**2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 9.0
    assert theta.item() == pytest.approx(3.0 - 0.1 * (1 + 5 * 0.0001))  # update sign(g) (1 + alpha (1 - beta3))


def test_state_survives_the_checkpoint_format_and_training_continues_identically() -> None:
    net, copy = small_net(), small_net()
    groups = lambda model: [  # noqa: E731
        {"params": list(model.children())[0].parameters(), "alpha": 8.0, "T_alpha_beta3": 30},
        {"params": list(model.children())[2].parameters()},
    ]
    optimizer = AdEMAMix(groups(net), lr=1e-2, weight_decay=0.01)
    train(net, optimizer, 5)
    # what agents.common.persistence does: tensors -> safetensors, everything else -> JSON
    tensors: dict[str, torch.Tensor] = {}
    tree = json.loads(json.dumps(split_tensors(optimizer.state_dict(), "optimizer", tensors)))
    tensors = safetensors_load(safetensors_save({k: v.contiguous() for k, v in tensors.items()}))
    copy.load_state_dict(net.state_dict())
    restored = AdEMAMix(groups(copy), lr=1e-2, weight_decay=0.01)
    restored.load_state_dict(join_tensors(tree, tensors))
    assert restored.param_groups[0]["T_alpha_beta3"] == 30 and restored.param_groups[1]["alpha"] == 5.0
    train(net, optimizer, 5, seed=2)
    train(copy, restored, 5, seed=2)
    for a, b in zip(net.parameters(), copy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert restored.state[next(copy.parameters())]["step"] == 10


def test_make_optimizer_builds_each_choice() -> None:
    params = list(small_net().parameters())
    assert OPTIMIZERS == ("adamw", "adam", "ademamix")
    built = {name: make_optimizer(params, name, 3e-4, weight_decay=0.1) for name in OPTIMIZERS}
    assert [type(o) for o in built.values()] == [torch.optim.AdamW, torch.optim.Adam, AdEMAMix]
    assert all(o.defaults["lr"] == 3e-4 and o.defaults["weight_decay"] == 0.1 for o in built.values())
    assert make_optimizer(params, "ademamix", 1e-3, alpha=8.0, T_alpha_beta3=100).defaults["alpha"] == 8.0


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("sgd", {}, "unknown optimizer 'sgd'; choose one of: adamw, adam, ademamix"),
        ("ademamix", {"alpah": 8}, "optimizer_kwargs.alpah is not an argument of ademamix; allowed: betas, alpha"),
        ("adam", {"alpha": 8}, "optimizer_kwargs.alpha is not an argument of adam; allowed: betas"),
        ("ademamix", {"betas": (0.9, 0.999)}, "betas=[0.9, 0.999]; expected three numbers in [0, 1)"),
        ("ademamix", {"alpha": -1.0}, "alpha=-1.0; expected a number >= 0"),
        ("ademamix", {"T_alpha_beta3": 0}, "T_alpha_beta3=0; expected an integer >= 1 or null"),
    ],
)
def test_bad_names_and_values_raise_naming_them(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        make_optimizer(small_net().parameters(), name, 1e-3, **kwargs)
    assert message in str(error.value)


# ----------------------------------------------------------------------------------------------------------------
# optimizer= for the agents of the zoo
# ----------------------------------------------------------------------------------------------------------------
def build(argv: list[str]) -> Any:
    cfg = compose_train_config(argv, parse_args(argv)[1])
    hyperparams = OmegaConf.to_container(cfg.agent, resolve=True)
    hyperparams.pop("id")
    env = make_vec_env(OmegaConf.to_container(cfg.env, resolve=True), n_envs=1, seed=0)
    return make_agent(cfg.agent.id, env, hyperparams, seed=0, device="cpu")


@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
def test_each_agent_keeps_its_own_default_optimizer() -> None:
    """adam for the SB3 agents (PPO's eps 1e-5, StochDQN's fused Adam), AdamW with weight_decay for DT/RADT."""
    sac = build(["agent=sac", "env=pendulum"])
    assert type(sac.actor.optimizer) is torch.optim.Adam and sac.actor.optimizer.defaults["eps"] == 1e-8
    ppo = build(["agent=ppo", "env=cartpole"])
    assert type(ppo.policy.optimizer) is torch.optim.Adam and ppo.policy.optimizer.defaults["eps"] == 1e-5
    dqn = build(["agent=dqn", "env=cartpole", "agent.buffer_size=1000"])
    assert type(dqn.policy.optimizer) is torch.optim.Adam
    stochdqn = build(["agent=stochdqn", "env=pendulum", "env.discretize=5"])
    assert type(stochdqn.policy.optimizer) is torch.optim.Adam and stochdqn.policy.optimizer.defaults["fused"]
    radt = build(["agent=radt", "env=hopper", "agent.dataset=unused.npz"])
    assert type(radt.policy.optimizer) is torch.optim.AdamW
    assert radt.policy.optimizer.defaults["weight_decay"] == 1e-4
    ademamix = build(["agent=stochddqn", "env=pendulum", "env.discretize=5", "optimizer=ademamix",
                      "optimizer_kwargs.alpha=8"])
    assert type(ademamix.policy.optimizer) is AdEMAMix and ademamix.policy.optimizer.defaults["alpha"] == 8
    dt = build(["agent=dt", "env=hopper", "agent.dataset=unused.npz", "optimizer=ademamix",
                "optimizer_kwargs={alpha: 3, T_alpha_beta3: 50}"])
    assert type(dt.policy.optimizer) is AdEMAMix
    assert {k: dt.policy.optimizer.defaults[k] for k in ("alpha", "T_alpha_beta3", "weight_decay")} == {
        "alpha": 3, "T_alpha_beta3": 50, "weight_decay": 1e-4}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent=sac", "env=pendulum", "optimizer=sgd"],
         "unknown optimizer 'sgd'; choose one of: adamw, adam, ademamix"),
        (["agent=radt", "env=hopper", "optimizer=lion"], "unknown optimizer 'lion'; choose one of: adamw, adam"),
        (["agent=ppo", "env=cartpole", "optimizer=ademamix", "optimizer_kwargs.alpah=8"],
         "optimizer_kwargs.alpah is not an argument of ademamix; allowed: betas, alpha, eps"),
        (["agent=sac", "env=pendulum", "optimizer=ademamix", "optimizer_kwargs.alpha=-2"], "alpha=-2; expected"),
        (["agent=dt", "env=hopper", "agent.dataset={npz}", "optimizer_kwargs.weight_decay=0.1"],
         "set weight_decay= instead"),
        (["agent=stochq", "env=frozenlake", "optimizer=ademamix"], "agent stochq has no optimizer to choose"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_optimizer_exits_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data.npz").touch()  # never read: the constructor refuses the arguments first
    argv = [arg.format(npz=tmp_path / "data.npz") for arg in argv]
    code = run_main(train_main, [*argv, "preset=tiny", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()


def test_sac_with_ademamix_trains_saves_resumes_and_loads(tmp_path: Path) -> None:
    run_dir = tmp_path / "sac"
    common = ["agent=sac", "env=pendulum", "preset=tiny", "optimizer=ademamix", "optimizer_kwargs.alpha=8",
              "optimizer_kwargs.T_alpha_beta3=150", "save_freq=150", "eval_freq=1000", "eval_episodes=1",
              "progress_bar=false", "torch_threads=1"]
    assert run_main(train_main, [*common, "total_timesteps=300", f"run_dir={run_dir}"]) == 0
    checkpoint = run_dir / "checkpoints" / "step_0000000300"
    saved, meta = load_checkpoint(checkpoint)
    assert meta["hyperparams"]["optimizer"] == "ademamix"
    assert meta["hyperparams"]["optimizer_kwargs"] == {"alpha": 8, "T_alpha_beta3": 150}
    model = load_agent(checkpoint)
    for name in ("actor.optimizer", "critic.optimizer"):
        optimizer = model._attr(name)
        assert type(optimizer) is AdEMAMix
        assert optimizer.param_groups[0]["alpha"] == 8 and optimizer.param_groups[0]["T_alpha_beta3"] == 150
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        assert state["step"] == model._n_updates > 0
        torch.testing.assert_close(state["exp_avg_slow"], saved[f"{name}.state.0.exp_avg_slow"])
    assert run_main(train_main, [f"resume={run_dir}", "total_timesteps=450", "progress_bar=false"]) == 0
    resumed = load_agent(run_dir / "final")
    assert resumed.num_timesteps == 450 and type(resumed.critic.optimizer) is AdEMAMix
    first = resumed.critic.optimizer.param_groups[0]["params"][0]
    assert resumed.critic.optimizer.state[first]["step"] == resumed._n_updates > model._n_updates
