"""Decision Transformer and RADT: the models' equations and causality, the shared transformer, and the agents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common.transformer import GPT, KVCache, causal_mask, kv_source_layers, make_norm, step_causal_mask
from agents.radt.models import DecisionTransformer, ReturnAlignedDT

STATE_DIM, ACT_DIM, K = 5, 2, 6
MODELS = {
    "dt": lambda **kw: DecisionTransformer(STATE_DIM, ACT_DIM, embed_dim=16, n_layer=2, n_head=2, context=K, **kw),
    "radt": lambda **kw: ReturnAlignedDT(STATE_DIM, ACT_DIM, embed_dim=16, n_layer=2, n_head=2, context=K, **kw),
    "radt_no_seqra": lambda **kw: ReturnAlignedDT(
        STATE_DIM, ACT_DIM, embed_dim=16, n_layer=2, n_head=2, context=K, seqra=False, **kw
    ),
    "radt_no_stepra": lambda **kw: ReturnAlignedDT(
        STATE_DIM, ACT_DIM, embed_dim=16, n_layer=2, n_head=2, context=K, stepra=False, **kw
    ),
}


def window(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, K, STATE_DIM, generator=g)
    actions = torch.rand(batch, K, ACT_DIM, generator=g) * 2 - 1
    rtg = torch.randn(batch, K, 1, generator=g)
    timesteps = torch.arange(K).repeat(batch, 1) + 7
    return states, actions, rtg, timesteps


def perturbed(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Move every parameter off its initialization, so that zero-initialized gates carry gradient too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# Shared transformer
# ----------------------------------------------------------------------------------------------------------------
def test_masks_by_hand() -> None:
    m = causal_mask(2, 4)  # the last two of four tokens
    assert (m == 0).tolist() == [[True, True, True, False], [True, True, True, True]]
    s = step_causal_mask(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1]))
    assert (s == 0).tolist() == [[True, False], [True, False], [True, True], [True, True]]


def test_norm_choices() -> None:
    assert make_norm("layernorm", 8).bias is not None
    assert make_norm("layernorm_nobias", 8).bias is None and make_norm("layernorm_nobias", 8).weight is not None
    assert isinstance(make_norm("rmsnorm", 8), torch.nn.RMSNorm)
    assert make_norm("layernorm", 8, affine=False).weight is None
    with pytest.raises(ValueError, match="norm='batchnorm' is not allowed; choose one of: layernorm"):
        make_norm("batchnorm", 8)


def test_cla_groups_and_halved_cache() -> None:
    assert kv_source_layers(4, 1) == [0, 1, 2, 3]
    assert kv_source_layers(4, 2) == [0, 0, 2, 2]
    x = torch.randn(2, 5, 16)
    counts = {}
    for factor in (1, 2):
        gpt = perturbed(GPT(16, 4, 2, cla_factor=factor))
        cache = KVCache()
        cached = torch.cat([gpt(x[:, i : i + 1], cache=cache) for i in range(5)], dim=1)
        torch.testing.assert_close(cached, gpt(x), atol=1e-5, rtol=1e-5)
        counts[factor] = (cache.num_tensors, cache.nbytes)
        # a CLA layer has no K/V projection of its own
        assert sum(hasattr(b.attn, "k_proj") for b in gpt.blocks) == 4 // factor
    assert counts[2][0] * 2 == counts[1][0] and counts[2][1] * 2 == counts[1][1]


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_output_shapes_and_range(name: str) -> None:
    out = MODELS[name]()(*window())
    assert out.shape == (3, K, ACT_DIM) and out.abs().max() <= 1


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("cla_factor", [1, 2])
def test_causality_by_gradient(name: str, cla_factor: int) -> None:
    """The action predicted at step t gets exactly zero gradient from the return, state and action of step t+1
    (and its own action), and a nonzero one from its own state and return."""
    model = perturbed(MODELS[name](cla_factor=cla_factor))
    states, actions, rtg, timesteps = (x.clone() for x in window(batch=1))
    for x in (states, actions, rtg):
        x.requires_grad_(True)
    t = 2
    model(states, actions, rtg, timesteps)[0, t].sum().backward()
    for x in (states, actions, rtg):
        assert torch.all(x.grad[0, t + 1 :] == 0), "information flows from the future"
    assert torch.all(actions.grad[0, t] == 0), "the action at t is what is predicted; it must not be an input"
    assert states.grad[0, t].abs().sum() > 0 and rtg.grad[0, t].abs().sum() > 0
    assert actions.grad[0, t - 1].abs().sum() > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_padding_is_ignored(name: str) -> None:
    """Left padding: whatever the padded steps hold, the real steps' predictions are unchanged."""
    model = perturbed(MODELS[name]())
    states, actions, rtg, timesteps = window(batch=1)
    valid = torch.tensor([[False, False, True, True, True, True]])
    a = model(states, actions, rtg, timesteps, valid)
    states2, actions2, rtg2 = states.clone(), actions.clone(), rtg.clone()
    states2[:, :2], actions2[:, :2], rtg2[:, :2] = 5.0, -10.0, 3.0
    b = model(states2, actions2, rtg2, timesteps, valid)
    torch.testing.assert_close(a[:, 2:], b[:, 2:])


def test_stepra_and_seqra_gate_are_identity_at_init() -> None:
    """At initialization StepRA's modulation is zero (a plain affine-free norm) and SeqRA's gate is 1 + 0."""
    model = MODELS["radt"]().eval()
    cond = torch.randn(2, K, 16)
    for block in model.blocks:
        for scale, shift in block.modulations(cond):
            assert torch.all(scale == 0) and torch.all(shift == 0)
        attended, x = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
        torch.testing.assert_close(block._gated(attended, x), attended + x)
    # so the returns do not change the prediction except through SeqRA's cross-attention
    no_seqra = MODELS["radt_no_seqra"]().eval()
    states, actions, rtg, timesteps = window()
    torch.testing.assert_close(
        no_seqra(states, actions, rtg, timesteps), no_seqra(states, actions, rtg * 0 + 7.0, timesteps)
    )


def test_radt_paper_parameter_count() -> None:
    """Hopper (11-d states, 3-d actions) at the paper's configuration: 1,205,763 parameters in the authors' code
    (../shared/reference/OFFICIAL_TIMINGS.md), 726,147 for their DT."""
    radt = ReturnAlignedDT(11, 3, embed_dim=128, n_layer=3, n_head=1, context=20)
    dt = DecisionTransformer(11, 3, embed_dim=128, n_layer=3, n_head=1, context=20)
    assert sum(p.numel() for p in radt.parameters()) == 1_205_763
    assert abs(sum(p.numel() for p in dt.parameters()) - 726_147) / 726_147 < 0.05


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("cla_factor", [1, 2])
def test_kv_cached_generation_equals_uncached(name: str, cla_factor: int) -> None:
    model = perturbed(MODELS[name](cla_factor=cla_factor))
    states, actions, rtg, timesteps = window(batch=2)
    full = model(states, actions, rtg, timesteps)
    cache = KVCache()
    with torch.no_grad():
        steps = [
            model.step(cache, i, states[:, i], rtg[:, i], timesteps[:, i],
                       (actions[:, i - 1], rtg[:, i - 1], timesteps[:, i - 1]) if i else None)
            for i in range(K)
        ]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cla_shrinks_radt_cache() -> None:
    sizes = {}
    for factor in (1, 2):
        model = ReturnAlignedDT(STATE_DIM, ACT_DIM, embed_dim=16, n_layer=4, n_head=2, context=K, cla_factor=factor)
        cache = KVCache()
        states, actions, rtg, timesteps = window(batch=1)
        with torch.no_grad():
            for i in range(K):
                prev = (actions[:, i - 1], rtg[:, i - 1], timesteps[:, i - 1]) if i else None
                model.step(cache, i, states[:, i], rtg[:, i], timesteps[:, i], prev)
        sizes[factor] = cache.nbytes
    assert sizes[2] * 2 == sizes[1]


def test_returns_to_go_by_hand() -> None:
    from agents.radt.agent import returns_to_go

    rewards = np.array([1.0, 2.0, 3.0, 10.0, 20.0], np.float32)
    np.testing.assert_allclose(returns_to_go(rewards, np.array([0, 3])), [6.0, 5.0, 3.0, 30.0, 20.0])


def test_return_to_go_env_decreases_by_reward() -> None:
    from envs.factory import make_vec_env
    from envs.return_to_go import ReturnToGoVecEnv

    cfg = {"name": "hopper", "family": "mujoco", "id": "Hopper-v5", "kwargs": {}, "max_episode_steps": None,
           "discretize": None}
    env = ReturnToGoVecEnv(make_vec_env(cfg, n_envs=2, seed=0, training=False), target_return=100.0)
    obs = env.reset()
    assert obs["return_to_go"].tolist() == [[100.0], [100.0]]
    rtg = obs["return_to_go"][:, 0].copy()
    for _ in range(30):
        obs, rewards, dones, infos = env.step(np.zeros((2, 3), np.float32))
        for i in range(2):
            if dones[i]:  # a new episode starts at the target again
                assert obs["return_to_go"][i, 0] == 100.0
                assert infos[i]["terminal_observation"]["return_to_go"][0] == pytest.approx(rtg[i] - rewards[i])
            else:
                assert obs["return_to_go"][i, 0] == pytest.approx(rtg[i] - rewards[i])
        rtg = obs["return_to_go"][:, 0].copy()
    env.close()


# ----------------------------------------------------------------------------------------------------------------
# Agents: learning from a dataset, save/load, the runners
# ----------------------------------------------------------------------------------------------------------------
HOPPER = {"name": "hopper", "family": "mujoco", "id": "Hopper-v5", "kwargs": {}, "max_episode_steps": None,
          "discretize": None}
TINY = dict(batch_size=16, context=5, embed_dim=32, n_layer=2, n_head=2, warmup_steps=10, dropout=0.0)


@pytest.fixture(scope="module")
def scripted_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """2,000 Hopper steps of a fixed deterministic policy a = tanh(W s): learnable, in the D4RL layout."""
    from agents.common.buffers import atomic_savez
    from agents.common.episode_buffer import EpisodeBuffer
    from envs.factory import make_vec_env

    env = make_vec_env(HOPPER, n_envs=1, seed=0, training=False)
    w = np.random.default_rng(0).normal(0, 0.5, (3, 11))
    buffer = EpisodeBuffer((11,), np.float32, (3,), np.float32)
    obs = env.reset()
    for _ in range(2000):
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


@pytest.mark.parametrize("agent", ["dt", "radt"])
def test_tiny_agent_fits_and_round_trips(agent: str, scripted_dataset: str, tmp_path) -> None:
    from stable_baselines3.common.logger import configure

    from agents.common.registry import load_agent, make_agent
    from envs.factory import make_vec_env

    env = make_vec_env(HOPPER, n_envs=1, seed=0, training=False)
    model = make_agent(agent, env, {"dataset": scripted_dataset, **TINY}, seed=0)
    model.set_logger(configure(None, []))
    model.load_dataset()
    first = np.mean([model.train_step()["loss"] for _ in range(5)])
    model.learn(300)
    last = np.mean([model.train_step()["loss"] for _ in range(5)])
    assert last < 0.5 * first, (first, last)
    assert model.dataset_info["episodes"] >= 1 and model.env.target_return == model.dataset_info["return_p95"]
    model.save(tmp_path / "model")
    loaded = load_agent(tmp_path / "model", env=make_vec_env(HOPPER, n_envs=1, seed=0, training=False))
    obs = {"observation": np.random.default_rng(1).normal(size=(2, 11)).astype(np.float32),
           "return_to_go": np.array([[300.0], [100.0]], np.float32)}
    state_a = state_b = None
    for _ in range(7):  # past the context length: the window slides
        a, state_a = model.predict(obs, state_a, np.zeros(2, bool))
        b, state_b = loaded.predict(obs, state_b, np.zeros(2, bool))
        np.testing.assert_array_equal(a, b)
    assert loaded.dataset_info == model.dataset_info
    torch.testing.assert_close(loaded.policy.state_mean, model.policy.state_mean)


def test_context_follows_episode_starts(scripted_dataset: str) -> None:
    from agents.common.registry import make_agent
    from envs.factory import make_vec_env

    model = make_agent("radt", make_vec_env(HOPPER, n_envs=1, seed=0, training=False),
                       {"dataset": scripted_dataset, **TINY}, seed=0)
    obs = {"observation": np.ones((2, 11), np.float32), "return_to_go": np.full((2, 1), 50.0, np.float32)}
    _, ctx = model.predict(obs, None, np.ones(2, bool))
    for _ in range(3):
        _, ctx = model.predict(obs, ctx, np.zeros(2, bool))
    assert ctx.steps.tolist() == [4, 4] and ctx.valid.sum(1).tolist() == [4, 4]
    _, ctx = model.predict(obs, ctx, np.array([True, False]))  # env 0 starts a new episode
    assert ctx.steps.tolist() == [1, 5] and ctx.valid.sum(1).tolist() == [1, 5]
    assert ctx.timesteps[0, -1] == 0 and ctx.timesteps[1, -1] == 4
    np.testing.assert_allclose(ctx.returns_to_go[:, -1, 0], 50.0 / model.return_scale)


def test_train_and_evaluate_runners(scripted_dataset: str, tmp_path) -> None:
    import json

    from runners.evaluate import main as evaluate_main
    from runners.train import main as train_main

    run = tmp_path / "radt"
    assert train_main(["agent=radt", "env=hopper", "preset=tiny", f"agent.dataset={scripted_dataset}",
                       "progress_bar=false", "torch_threads=1", f"run_dir={run}"]) == 0
    summary = json.loads((run / "results.json").read_text())
    assert summary["num_timesteps"] == 200 and summary["eval"]["episodes"] == 1
    assert (summary["precision_option"], summary["precision"]) == ("fp32", "fp32")  # the agent's default
    out = tmp_path / "alignment.json"
    assert evaluate_main([f"model={run / 'final'}", "targets=paper", "episodes=1", f"out={out}",
                          f"plot={tmp_path / 'plot.png'}"]) == 0
    report = json.loads(out.read_text())
    assert len(report["targets"]) == 7 and len(report["achieved"]) == 7
    assert report["targets"][0] < report["targets"][-1] and (tmp_path / "plot.png").stat().st_size > 0
    assert report["mean_absolute_error"] == pytest.approx(
        np.mean(np.abs(np.array(report["normalized_achieved"]) - np.array(report["normalized_targets"]))))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["agent.dataset=expertish"], "expertish"),
        (["agent.norm=batchnorm"], "norm='batchnorm' is not allowed"),
        (["agent.precision=fp8"], "precision='fp8' is not allowed"),
        (["agent.context=0"], "context=0"),
    ],
)
def test_bad_input_exits_2(args: list[str], message: str, scripted_dataset: str, tmp_path, capsys) -> None:
    from runners.cli import run_main
    from runners.train import main as train_main

    dataset = [f"agent.dataset={scripted_dataset}"]
    run_dir = f"run_dir={tmp_path / 'r'}"
    code = run_main(train_main, ["agent=radt", "env=hopper", "preset=tiny", *dataset, *args, run_dir])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dataset_with_other_spaces_is_refused(scripted_dataset: str, tmp_path, capsys) -> None:
    from runners.cli import run_main
    from runners.train import main as train_main

    code = run_main(train_main, ["agent=dt", "env=halfcheetah", "preset=tiny", f"agent.dataset={scripted_dataset}",
                                 f"run_dir={tmp_path / 'r'}"])
    assert code == 2 and "(11,)" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_target_outside_dataset_range_warns(scripted_dataset: str) -> None:
    from agents.common.registry import make_agent
    from envs.factory import make_vec_env

    model = make_agent("dt", make_vec_env(HOPPER, n_envs=1, seed=0, training=False),
                       {"dataset": scripted_dataset, **TINY}, seed=0)
    model.load_dataset()
    with pytest.warns(UserWarning, match="outside the dataset's episode returns"):
        model.wrap_env(model.env, target_return=1e6)


@pytest.mark.parametrize(("agent", "optimizer"), [("dt", "adamw"), ("radt", "adamw"), ("radt", "ademamix")])
def test_resume_matches_uninterrupted_run(agent: str, optimizer: str, scripted_dataset: str, tmp_path) -> None:
    """Stopping at step 100 and resuming to 200 gives the weights of one 200-step run (sampler, dropout RNG,
    optimizer and warm-up all continue; AdEMAMix's alpha and beta3 warm-up straddles the resume)."""
    from agents.common.checkpoint import load_checkpoint
    from runners.train import main as train_main

    common = ["agent=" + agent, "env=hopper", "preset=tiny", f"agent.dataset={scripted_dataset}", "progress_bar=false",
              "torch_threads=1", "eval_freq=1000", f"optimizer={optimizer}"]
    if optimizer == "ademamix":
        common.append("optimizer_kwargs.T_alpha_beta3=150")
    assert train_main([*common, f"run_dir={tmp_path / 'a'}"]) == 0
    assert train_main([*common, "total_timesteps=100", f"run_dir={tmp_path / 'b'}"]) == 0
    assert train_main([f"resume={tmp_path / 'b'}", "total_timesteps=200"]) == 0
    a, meta_a = load_checkpoint(tmp_path / "a" / "final")
    b, meta_b = load_checkpoint(tmp_path / "b" / "final")
    assert meta_a["num_timesteps"] == meta_b["num_timesteps"] == 200
    assert meta_b["hyperparams"]["optimizer"] == optimizer
    assert ("policy.optimizer.state.0.exp_avg_slow" in b) == (optimizer == "ademamix")
    for name, tensor in a.items():
        if name.startswith("policy."):
            torch.testing.assert_close(tensor, b[name], msg=name)


def test_enjoy_records_a_return_conditioned_agent(scripted_dataset: str, tmp_path) -> None:
    from runners.enjoy import main as enjoy_main
    from runners.train import main as train_main

    run = tmp_path / "dt"
    assert train_main(["agent=dt", "env=hopper", "preset=tiny", f"agent.dataset={scripted_dataset}",
                       "progress_bar=false", "torch_threads=1", "total_timesteps=50", f"run_dir={run}"]) == 0
    video = tmp_path / "dt.gif"
    assert enjoy_main([f"model={run / 'final'}", f"video={video}", "max_steps=20", "target=8"]) == 0
    assert video.stat().st_size > 0


def test_loss_spikes_counts_jumps_over_the_recent_median_not_drifts() -> None:
    from runners.bench_radt import loss_spikes

    losses = np.array([1.0] * 10 + [3.0] + [1.0] * 5 + [1.9])
    # index 10: 3.0 > 2 x median(ten 1.0s) = 2.0; index 16: 1.9 < 2 x median(1,1,1,1,1,3,1,1,1,1) = 2.0
    assert loss_spikes(losses) == 1
    assert loss_spikes(losses, start=11) == 0  # the spike falls in the warm-up
    assert loss_spikes(np.array([1.0] * 10 + [2.0])) == 0  # exactly 2x the median is not above it
    assert loss_spikes(1.05 ** np.arange(60)) == 0  # a steady 5% rise per log is a drift, not a spike


def test_alignment_record_enters_the_measured_datasets_and_keeps_the_others_and_other_budgets() -> None:
    from runners.bench_radt import MODELS, Plan, alignment_table, record_alignment

    def result(error: float, best: float) -> dict:
        return {"mean_absolute_error": error, "best_normalized_return": best,
                "normalized_targets": [1.0, 2.0], "normalized_achieved": [1.5, 2.5]}

    hopper = {"date": "2026-11-24", "steps": 3000, "embed": 64, "episodes": 3, "note": "old",
              "models": {m: [{"seed": 0, "mean_absolute_error": 2.0, "best_normalized_return": 20.0}] for m in MODELS}}
    walker_short = {"date": "2026-11-24", "steps": 10, "embed": 8, "episodes": 1,
                    "models": {"dt": [{"seed": 0, "mean_absolute_error": 9.0, "best_normalized_return": 1.0}]}}
    kept = {"hopper-medium": [hopper], "walker2d-medium": [walker_short]}
    plan = Plan(seeds=2, steps=3000, embed=64, episodes=3, datasets=[], workers=1)
    # walker2d-medium measured again (dt 2 seeds, radt 1 seed); hopper-medium-replay chosen but nothing finished
    results = {("dt", "walker2d", "medium", 0): result(3.0, 10.0), ("dt", "walker2d", "medium", 1): result(5.0, 12.0),
               ("radt", "walker2d", "medium", 1): result(1.0, 14.0)}
    record = record_alignment(kept, plan, [("walker2d", "medium"), ("hopper", "medium-replay")], results, "2026-12-02")
    assert kept["walker2d-medium"] == [walker_short]  # the input is not modified
    assert set(record) == {"hopper-medium", "walker2d-medium"}  # an unfinished dataset gets no entry
    assert record["hopper-medium"] == [hopper]
    short, walker = record["walker2d-medium"]  # the other budget's entry stays, before the longer one
    assert short is walker_short
    assert (walker["date"], walker["steps"], walker["episodes"]) == ("2026-12-02", 3000, 3)
    assert [r["seed"] for r in walker["models"]["dt"]] == [0, 1] and walker["models"]["radt_no_seqra"] == []
    assert walker["models"]["radt"][0]["normalized_achieved"] == [1.5, 2.5]
    rows, verdicts = alignment_table(record)
    # hopper: radt 2.0 = dt 2.0, not below; walker at 3,000 steps: 1.0 < mean(3, 5) = 4.0; at 10 steps: dt only
    assert verdicts == {"3,000 steps, embed 64, 7 x 3 episodes": (1, 2), "10 steps, embed 8, 7 x 1 episodes": (0, 0)}
    assert rows[2].startswith("| hopper-medium | 3,000 | 2.0 +- 0.0 [20.0 +- 0.0] (1 seed)") and "; old)" in rows[2]
    assert rows[3].startswith("| walker2d-medium | 10 | 9.0 +- 0.0 [1.0 +- 0.0] (1 seed) | not run |")
    assert rows[3].endswith("| not measured | 10 steps, embed 8, 7 x 1 episodes (2026-11-24) |")
    assert rows[4].startswith("| walker2d-medium | 3,000 | 4.0 +- 1.0 [11.0 +- 1.0] (2 seeds) | 1.0 +- 0.0 "
                              "[14.0 +- 0.0]")
    assert "| not run | not run |" in rows[4] and rows[4].endswith("| yes | 3,000 steps, embed 64, 7 x 3 episodes "
                                                                    "(2026-12-02) |")


def test_alignment_record_pools_the_seeds_of_a_later_invocation_at_the_same_budget() -> None:
    from runners.bench_radt import Plan, alignment_table, record_alignment

    def result(seed: int, error: float) -> dict:
        return {"seed": seed, "mean_absolute_error": error, "best_normalized_return": 10.0 * error,
                "normalized_targets": [1.0], "normalized_achieved": [1.0 + error]}

    old = {"date": "2026-11-24", "steps": 3000, "embed": 64, "episodes": 3, "note": "seed 0 rounded",
           "models": {"dt": [result(0, 2.0), result(1, 9.0)], "radt": [result(0, 1.0)]}}
    plan = Plan(seeds=2, steps=3000, embed=64, episodes=3, datasets=[], workers=1, first_seed=1)
    assert list(plan.seed_range) == [1, 2]
    new = {(m, "hopper", "medium", s): result(s, e) for (m, s, e) in
           [("dt", 1, 4.0), ("dt", 2, 6.0), ("radt", 2, 3.0), ("radt_no_seqra", 1, 5.0)]}
    record = record_alignment({"hopper-medium": [old]}, plan, [("hopper", "medium")], new, "2026-12-03")
    [entry] = record["hopper-medium"]
    # seed 1 of dt is measured again and replaces the old one; seed 0 of each model is kept beside the new seeds
    assert [(r["seed"], r["mean_absolute_error"]) for r in entry["models"]["dt"]] == [(0, 2.0), (1, 4.0), (2, 6.0)]
    assert [r["seed"] for r in entry["models"]["radt"]] == [0, 2] and entry["models"]["radt_no_stepra"] == []
    assert entry["date"] == "2026-11-24, 2026-12-03" and entry["note"] == "seed 0 rounded"
    rows, verdicts = alignment_table({"hopper-medium": [entry]})
    assert verdicts == {"3,000 steps, embed 64, 7 x 3 episodes": (1, 1)}  # radt mean(1, 3) = 2 < dt mean(2, 4, 6) = 4
    assert rows[2].startswith("| hopper-medium | 3,000 | 4.0 +- 1.6 [40.0 +- 16.3] (3 seeds) | 2.0 +- 1.0 "
                              "[20.0 +- 10.0] (2 seeds) | 5.0 +- 0.0 [50.0 +- 0.0] (1 seed) | not run |")
    # at another budget the new measurement is an entry of its own, ordered by steps, and the old one stays as it was
    other = Plan(seeds=1, steps=10000, embed=64, episodes=3, datasets=[], workers=1, first_seed=1, models=["dt"])
    longer = record_alignment({"hopper-medium": [old]}, other, [("hopper", "medium")], new, "2026-12-05")
    first, second = longer["hopper-medium"]
    assert first is old and second["steps"] == 10000 and second["date"] == "2026-12-05" and "note" not in second
    assert [r["seed"] for r in second["models"]["dt"]] == [1] and second["models"]["radt"] == []
    assert list(alignment_table(longer)[1]) == ["3,000 steps, embed 64, 7 x 3 episodes",
                                                "10,000 steps, embed 64, 7 x 3 episodes"]
    # a later invocation of other models at the same budget and seeds adds them and keeps the models it did not run
    ablations = Plan(seeds=1, steps=10000, embed=64, episodes=3, datasets=[], workers=1, first_seed=1,
                     models=["radt_no_seqra"])
    added = record_alignment(longer, ablations, [("hopper", "medium")], new, "2026-12-06")
    _, both = added["hopper-medium"]
    assert [(r["seed"], r["mean_absolute_error"]) for r in both["models"]["dt"]] == [(1, 4.0)]
    assert [(r["seed"], r["mean_absolute_error"]) for r in both["models"]["radt_no_seqra"]] == [(1, 5.0)]
    assert both["models"]["radt"] == [] and both["date"] == "2026-12-05, 2026-12-06"


def test_alignment_runs_of_two_budgets_never_share_a_directory_and_models_are_checked(tmp_path: Path) -> None:
    import json

    from runners.bench_radt import Plan, load_alignment_record, run

    short = Plan(seeds=1, steps=3000, embed=64, episodes=3, datasets=[], workers=1)
    longer = Plan(seeds=1, steps=10000, embed=64, episodes=3, datasets=[], workers=1, models=["dt", "radt"])
    assert short.models == ["dt", "radt", "radt_no_seqra", "radt_no_stepra"] and longer.models == ["dt", "radt"]
    assert short.run_dir("alignment", "hopper-medium", "dt_s0") == Path(
        "runs/bench/radt/alignment/steps3000-embed64/hopper-medium/dt_s0")
    assert longer.run_dir("alignment", "hopper-medium", "dt_s0").parent.parent.name == "steps10000-embed64"
    for bad, named in (("dt,rad", "rad"), (",", ",")):
        with pytest.raises(ValueError, match=f"unknown model '{named}'; choose from: dt, radt, radt_no_seqra"):
            run(str(tmp_path / "radt.md"), parts="alignment", models=bad)
    # a record written before budgets had rows of their own: one entry per dataset, read as a list of one
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"hopper-medium": {"steps": 3000}, "walker2d-medium": [{"steps": 10}]}))
    assert load_alignment_record(path) == {"hopper-medium": [{"steps": 3000}], "walker2d-medium": [{"steps": 10}]}
    assert load_alignment_record(tmp_path / "missing.json") == {}


def test_precision_auto_takes_bf16_only_where_the_hardware_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """preset=cpu's ``precision=auto``: bf16 autocast where bfloat16 products are native, fp32 where torch would
    emulate them (AVX2-only CPUs, 10x slower)."""
    from agents.common import precision

    # oneDNN's answer agrees with the CPU's own flags: AVX512-BF16 or AMX
    assert precision.native_bf16("cpu") == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    layer = torch.nn.Linear(4, 4)
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision, "native_bf16", lambda device, native=native: native)
        assert precision.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
        with precision.autocast("auto", "cpu"):
            assert layer(torch.ones(2, 4)).dtype == expected
        for fixed, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):  # explicit choices stay
            assert precision.resolve_precision(fixed, "cpu") == fixed
            with precision.autocast(fixed, "cpu"):
                assert layer(torch.ones(2, 4)).dtype == dtype
    with pytest.raises(ValueError, match="precision='fp16' is not allowed; choose one of: fp32, bf16, auto"):
        precision.check_precision("fp16")
