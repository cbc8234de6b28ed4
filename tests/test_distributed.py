"""Data-parallel training (agents/common/distributed.py): one DDP update over 2 CPU processes (gloo) equals the
update on the combined batch, torchrun writes one run that loads in one process, a resumed DDP run continues
exactly, and one process with ``distributed=true`` trains exactly as without it.

The equality tests use settings without hidden randomness in the update: dropout 0 (DT and ACT). ACT's CVAE draws
its latent noise from torch's generator; the reference replays each rank's seed. ACT's ResNet has BatchNorm, which
on CPU normalizes each rank's batch alone (SyncBatchNorm needs CUDA), so its reference is the mean of the two
ranks' gradients, each computed on its own batch, rather than the gradient of one combined batch.

The world-model agents (DIAMOND, Δ-IRIS; agents/common/epoch_loop.py) update each of their three components on
unpadded segments, so that a rank's mean is over as many frames as the other's. Where the update draws noise (the
denoiser's noise levels, imagination), the reference replays each rank's seed and its loss is the mean of the two
ranks' losses, which is the loss of the combined batch with those draws.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.common.distributed import data_parallel, distributed_session, rank_streams, torchrun_env
from tests.forkserver import spawn_ranks
from tests.test_act import SIZE, needle_env, record
from tests.test_act import TINY as ACT_TINY
from tests.test_delta_iris_agent import CRAFTER, tiny_delta_iris
from tests.test_diamond_agent import BREAKOUT, tiny_diamond
from tests.test_radt import HOPPER, scripted_dataset  # noqa: F401  (a fixture: 2,000 Hopper steps, episodes of 17)
from tests.test_radt import TINY as DT_TINY

ROOT = Path(__file__).resolve().parents[1]
DT_SIZES = {**DT_TINY, "warmup_steps": 1, "learning_rate": 1e-3}  # dropout 0; a full step at once
ACT_SIZES = {**ACT_TINY, "dropout": 0.0}
NOISE_SEED = 123  # torch's generator on rank 0 before its step (ACT's CVAE noise); ranks > 0 reseed from their key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def act_demos(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One expert demonstration of the needle task (52 steps) at 32x32 pixels."""
    path = tmp_path_factory.mktemp("act") / "demos.npz"
    record(episodes=1).save(path)
    return str(path)


def build(agent: str, data: str):  # noqa: ANN201  (DT or ACT, seed 0, data loaded, no logs)
    from agents.act.agent import ACT
    from agents.common.registry import make_agent
    from envs.factory import make_vec_env

    if agent == "act":
        model = ACT("MultiInputPolicy", DummyVecEnv([lambda: needle_env(SIZE)]), demos=data, seed=0, **ACT_SIZES)
    else:
        model = make_agent(agent, make_vec_env(HOPPER, n_envs=1, seed=0, training=False),
                           {"dataset": data, **DT_SIZES}, seed=0)
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.load_data()
    return model


def one_ddp_update(rank: int, world: int, port: int, agent: str, data: str, out: str) -> None:
    """A rank of a torchrun-like launch: one step of ``learn`` under DDP; saves its parameters and gradients."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed_session("cpu") as ctx:
        model = build(agent, data)
        model.distribute(ctx, seed=0)
        torch.manual_seed(NOISE_SEED)
        model.learn(1)
        params = dict(model.policy.named_parameters())
        torch.save({"params": {n: p.detach().clone() for n, p in params.items()},
                    "grads": {n: p.grad.clone() for n, p in params.items() if p.grad is not None}},
                   Path(out) / f"rank{rank}.pt")


def run_two_ranks(agent: str, data: str, out: Path) -> list[dict]:
    spawn_ranks(one_ddp_update, (2, free_port(), agent, data, str(out)))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def rank_batches(model, batch_size: int) -> tuple[dict, dict]:  # noqa: ANN001
    """What rank 0 (the algorithm's sampler, seed 0) and rank 1 (keyed by (0, 1, step 0)) draw at step 0."""
    first = model.sample_batch(batch_size)
    model._sampler = rank_streams(0, 1, 0)[0]
    return first, model.sample_batch(batch_size)


# ----------------------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------------------
def test_torchrun_env_reads_rank_world_size_and_local_rank() -> None:
    assert torchrun_env({}) is None
    assert torchrun_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (3, 8, 1)
    with pytest.raises(ValueError, match="RANK set but not WORLD_SIZE, LOCAL_RANK"):
        torchrun_env({"RANK": "0"})
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        torchrun_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_rank_streams_are_keyed_by_seed_rank_and_step() -> None:
    def draws(seed: int, rank: int, step: int) -> tuple[list[int], int]:
        gen, noise = rank_streams(seed, rank, step)
        return gen.integers(0, 2**31, 4).tolist(), noise

    assert draws(0, 1, 5) == draws(0, 1, 5)  # a resumed run draws the same
    keys = [(0, 1, 5), (0, 2, 5), (0, 1, 6), (1, 1, 5)]
    assert len({tuple(draws(*k)[0]) for k in keys}) == 4 and len({draws(*k)[1] for k in keys}) == 4
    assert all(0 <= draws(*k)[1] < 2**63 for k in keys)  # a valid torch.manual_seed


def test_parameters_outside_the_wrapped_modules_are_refused() -> None:
    inner, outer = torch.nn.Linear(2, 2), torch.nn.Parameter(torch.zeros(3, 5))
    with distributed_session("cpu") as ctx:  # no torchrun: one process, world size 1
        assert (ctx.rank, ctx.world_size, ctx.backend) == (0, 1, "gloo")
        with pytest.raises(ValueError, match=r"1 trained parameter\(s\) \(shapes \(3, 5\)\) lie outside"):
            data_parallel(ctx, {"inner": inner}, [*inner.parameters(), outer])
        assert set(data_parallel(ctx, {"inner": inner}, inner.parameters())) == {"inner"}
    assert not torch.distributed.is_initialized()


# ----------------------------------------------------------------------------------------------------------------
# One update on 2 processes
# ----------------------------------------------------------------------------------------------------------------
def test_one_ddp_update_of_dt_equals_the_update_on_the_combined_batch(scripted_dataset: str, tmp_path) -> None:  # noqa: F811
    ranks = run_two_ranks("dt", scripted_dataset, tmp_path)
    reference = build("dt", scripted_dataset)
    initial = {n: p.detach().clone() for n, p in reference.policy.named_parameters()}
    b0, b1 = rank_batches(reference, DT_SIZES["batch_size"])
    # the ranks hold different numbers of real (unpadded) steps: a plain mean per rank would weigh them unequally
    assert int(b0["valid"].sum()) != int(b1["valid"].sum())
    reference.train_on_batch({k: torch.cat([b0[k], b1[k]]) for k in b0})
    alone = build("dt", scripted_dataset)
    alone.train_on_batch(b0)
    moved = far = 0.0
    for name, param in reference.policy.named_parameters():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name  # the ranks in lock-step
        torch.testing.assert_close(ranks[0]["params"][name], param.detach(), atol=1e-6, rtol=1e-5, msg=name)
        moved = max(moved, float((param.detach() - initial[name]).abs().max()))
        far = max(far, float((dict(alone.policy.named_parameters())[name].detach() - param.detach()).abs().max()))
    assert moved > 1e-4 and far > 1e-4  # the update is large, and rank 0's batch alone gives another one


def test_one_ddp_update_of_act_averages_the_gradients_of_the_ranks(act_demos: str, tmp_path) -> None:
    ranks = run_two_ranks("act", act_demos, tmp_path)
    expected = {}
    for rank in (0, 1):
        model = build("act", act_demos)
        batch = rank_batches(model, ACT_SIZES["batch_size"])[rank]
        torch.manual_seed(NOISE_SEED if rank == 0 else rank_streams(0, 1, 0)[1])
        model.train_on_batch(batch)
        for name, param in model.policy.named_parameters():
            expected[name] = expected.get(name, 0.0) + param.grad / 2
    assert set(ranks[0]["grads"]) == set(expected)
    for name, grad in expected.items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        torch.testing.assert_close(ranks[0]["grads"][name], grad, atol=1e-6, rtol=1e-4, msg=name)


# ----------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------
def dt_args(data: str, run_dir: Path, steps: int = 20) -> list[str]:
    return ["agent=dt", "env=hopper", "preset=tiny", f"agent.dataset={data}", "distributed=true",
            f"total_timesteps={steps}", "save_freq=10", "eval_freq=10", "log_interval=10", "progress_bar=false",
            "torch_threads=1", f"run_dir={run_dir}"]


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "runners.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def ddp_run(scripted_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:  # noqa: F811
    """20 gradient steps of a tiny DT on 2 processes (torchrun, gloo): the run directory and the printed output."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    return run_dir, torchrun(dt_args(scripted_dataset, run_dir)).stdout


def test_torchrun_writes_one_run_whose_final_model_loads_in_one_process(ddp_run: tuple[Path, str]) -> None:
    from agents.common.checkpoint import load_checkpoint
    from agents.common.registry import load_agent
    from agents.common.tblog import read_config, read_scalars
    from envs.factory import make_vec_env

    run_dir, out = ddp_run
    assert out.count("dt on Hopper-v5: 20 gradient steps") == 1  # rank 0 alone reports
    assert read_config(run_dir).distributed is True
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs
    scalars = read_scalars(run_dir, ["train/loss", "eval/mean_reward"])
    assert scalars["train/loss"][:, 0].tolist() == [10, 20] and scalars["eval/mean_reward"][:, 0].tolist() == [10, 20]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_0000000010", "step_0000000020"]
    assert json.loads((run_dir / "results.json").read_text())["num_timesteps"] == 20
    tensors, meta = load_checkpoint(run_dir / "final")
    assert meta["num_timesteps"] == 20 and not [k for k in tensors if "module." in k]
    model = load_agent(run_dir / "final", env=make_vec_env(HOPPER, n_envs=1, seed=0, training=False), device="cpu")
    obs = {"observation": np.ones((1, 11), np.float32), "return_to_go": np.full((1, 1), 100.0, np.float32)}
    assert model.predict(obs, None, np.ones(1, bool))[0].shape == (1, 3)


@pytest.mark.slow
def test_resumed_ddp_run_equals_the_uninterrupted_one(ddp_run: tuple[Path, str], tmp_path) -> None:
    """A copy of the 20-step run cut back to its step-10 checkpoint (a run killed just after it) is resumed by
    torchrun: rank 0 continues its saved sampler, rank 1 its (seed, rank, step) stream, and the weights after 10 + 10
    steps are those of the 20-step run (one more torchrun launch)."""
    import shutil

    from agents.common.checkpoint import load_checkpoint

    run_dir = Path(shutil.copytree(ddp_run[0], tmp_path / "resumed"))
    for later in (run_dir / "checkpoints" / "step_0000000020", run_dir / "final", run_dir / "best"):
        shutil.rmtree(later, ignore_errors=True)
    (run_dir / "results.json").unlink()
    out = torchrun([f"resume={run_dir}", "total_timesteps=20"]).stdout
    assert "from step_0000000010" in out
    a, _ = load_checkpoint(ddp_run[0] / "final")
    b, _ = load_checkpoint(run_dir / "final")
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def test_one_process_with_distributed_true_trains_exactly_as_without(scripted_dataset: str, tmp_path,  # noqa: F811
                                                                     capsys: pytest.CaptureFixture) -> None:
    from agents.common.checkpoint import load_checkpoint
    from runners.train import main as train_main

    assert train_main(dt_args(scripted_dataset, tmp_path / "ddp")) == 0
    assert "distributed=true without torchrun: one process (world size 1)" in capsys.readouterr().out
    assert not torch.distributed.is_initialized()  # the group is destroyed at the end of the run
    plain = [a for a in dt_args(scripted_dataset, tmp_path / "plain") if a != "distributed=true"]
    assert train_main(plain) == 0
    a, _ = load_checkpoint(tmp_path / "ddp" / "final")
    b, _ = load_checkpoint(tmp_path / "plain" / "final")
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_agents_without_data_parallel_training_exit_2(agent: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    from runners.cli import run_main
    from runners.train import main as train_main

    code = run_main(train_main, [f"agent={agent}", "env=cartpole", "distributed=true", f"run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 2 and (f"agent {agent} does not train data-parallel; agents that do: act, delta_iris, diamond, dt, "
                          "radt") in err, err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------------------------
# The world-model agents: DIAMOND and Δ-IRIS
# ----------------------------------------------------------------------------------------------------------------
WM_ENVS = {"diamond": {**BREAKOUT, "max_episode_frames": 80},  # Breakout truncated after 20 steps
           "delta_iris": {**CRAFTER, "kwargs": {**CRAFTER["kwargs"], "length": 20}}}  # Crafter after 20 steps
WM_STEPS = 60  # random env steps that every process collects before training (the same on both ranks: seed 0)
AC_SEED, AC_SAMPLER_SEED, DENOISER_SEED = 200, 300, 100  # + rank: torch's and the sampler's draws of a rank's step
# Adam's first step is lr * g / (|g| + eps): lr * sign(g) with the default eps, which turns the float32 noise of a
# gradient that should be 0 (a bias before a GroupNorm) into a step of +-lr. With eps 1 it is about lr * g, so the
# parameters after the step differ as little as the gradients do (float32 sums over 2 or 4 segments: ~1e-4 of the
# largest gradient of a tensor).
LINEAR_STEP = {"learning_rate": 1e-2, "optimizer_kwargs": {"eps": 1.0}}


def world_model_agent(agent: str, **kwargs):  # noqa: ANN003, ANN201  (tiny, seed 0, on its short-episode env)
    from envs.factory import make_vec_env

    env = make_vec_env(WM_ENVS[agent], n_envs=1, seed=0)
    model = tiny_diamond(env, **kwargs) if agent == "diamond" else tiny_delta_iris(env, **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def with_episodes(model):  # noqa: ANN001, ANN201
    """``model`` after ``WM_STEPS`` random steps into its episode buffer (episodes of 20 steps)."""
    model._setup_learn(WM_STEPS)
    model.collect(WM_STEPS, random=True)
    assert model.episode_buffer.num_episodes >= 2
    return model


def inside_segments(model, batch_size: int, seq_len: int, rank: int):  # noqa: ANN001, ANN201
    """``batch_size`` windows of ``seq_len`` steps inside episodes (no padding), different for each rank."""
    buffer = model.episode_buffer
    episodes = [e for e in range(buffer.num_episodes) if buffer.lengths[e] >= seq_len]
    ids = np.array([episodes[(rank * batch_size + i) % len(episodes)] for i in range(batch_size)])
    starts = np.array([(3 * rank + i) % (buffer.lengths[e] - seq_len + 1) for i, e in enumerate(ids)])
    seg = buffer.get_segments(ids, starts, seq_len)
    assert seg.mask.all()
    return seg


def component_batches(model, rank: int) -> list:  # noqa: ANN001
    """The batches of ``rank``'s steps: denoiser and reward/end model (DIAMOND); tokenizer, world model and
    actor-critic (Δ-IRIS)."""
    if type(model).__name__ == "Diamond":
        from world_models.diamond import batch_from_segment

        lengths = (model.policy.denoiser.cfg.seq_length, model.rew_end_seq_length)
        return [batch_from_segment(s, "cpu", final_obs=s.final_obs)
                for s in (inside_segments(model, model.batch_size, n, rank) for n in lengths)]
    lengths = (*model.sequence_length, model.burn_in_length + 1)
    return [model._batch(inside_segments(model, b, n, rank)) for b, n in zip(model.batch_size, lengths, strict=True)]


def concat(a, b):  # noqa: ANN001, ANN201  (two batches of the same kind, one after the other)
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return type(a)(**{k: None if v is None else torch.cat([v, getattr(b, k)]) for k, v in vars(a).items()})


def train_components(model, rank: int) -> None:  # noqa: ANN001
    """One update of each component on ``rank``'s batches, in the order (and the modes) of ``train``."""
    batches = component_batches(model, rank)
    model.policy.set_training_mode(True)
    if type(model).__name__ == "Diamond":
        torch.manual_seed(DENOISER_SEED + rank)
        model._denoiser_step(batches[0])
        model._rew_end_step(batches[1])
        model.policy.denoiser.eval()
        model.policy.rew_end_model.eval()
        torch.manual_seed(AC_SEED + rank)
        model._sampler = np.random.default_rng(AC_SAMPLER_SEED + rank)  # the imagination's real contexts
        model._actor_critic_step()
    else:
        model._tokenizer_step(batches[0])
        model.policy.tokenizer.eval()
        model._world_model_step(batches[1])
        model.policy.world_model.eval()
        torch.manual_seed(AC_SEED + rank)
        model._actor_critic_step(batches[2])


def combined_update(model) -> None:  # noqa: ANN001
    """What the two ranks of :func:`train_components` together do, in one process: the deterministic updates on the
    combined batch, the noisy ones on the mean of the two ranks' losses, each with the rank's seed."""
    b = [component_batches(model, rank) for rank in (0, 1)]
    model.policy.set_training_mode(True)
    if type(model).__name__ == "Diamond":
        losses = []
        for rank in (0, 1):
            torch.manual_seed(DENOISER_SEED + rank)
            losses.append(model.policy.denoiser.loss(b[rank][0])[0])
        model._update("denoiser", sum(losses) / 2, model.grad_clip[0])
        model._rew_end_step(concat(b[0][1], b[1][1]))
        model.policy.denoiser.eval()
        model.policy.rew_end_model.eval()
        losses = []
        for rank in (0, 1):
            model._imagination = None  # each rank's own imagined envs
            torch.manual_seed(AC_SEED + rank)
            model._sampler = np.random.default_rng(AC_SAMPLER_SEED + rank)
            losses.append(model._imagined_loss()[0])
        model._update("actor_critic", sum(losses) / 2, model.grad_clip[2])
    else:
        model._tokenizer_step(concat(b[0][0], b[1][0]))
        model.policy.tokenizer.eval()
        model._world_model_step(concat(b[0][1], b[1][1]))
        model.policy.world_model.eval()
        losses = []
        for rank in (0, 1):
            torch.manual_seed(AC_SEED + rank)
            losses.append(model._imagined_loss(b[rank][2])[0])
        model.policy.actor_critic.update_target(model.tau)
        model._update("actor_critic", sum(losses) / 2)


def own_draws(model) -> dict:  # noqa: ANN001
    """What a process collects next: the first frame of its env after a reset and its random actions."""
    first = model.env.reset()
    model._rank_streams()
    return {"first_obs": torch.as_tensor(first), "actions": [int(model.action_space.sample()) for _ in range(16)]}


def world_model_update(rank: int, world: int, port: int, agent: str, out: str) -> None:
    """A rank of a torchrun-like launch: its own draws, then one update of each component on its own batches."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed_session("cpu") as ctx:
        model = with_episodes(world_model_agent(agent, **LINEAR_STEP))
        model.distribute(ctx, seed=0)
        draws = own_draws(model)
        train_components(model, rank)
        params = dict(model.policy.named_parameters())
        torch.save({"draws": draws, "state": {k: v.clone() for k, v in model.policy.state_dict().items()},
                    "grads": {n: p.grad.clone() for n, p in params.items() if p.grad is not None}},
                   Path(out) / f"rank{rank}.pt")


def codebook_update(rank: int, world: int, port: int, out: str) -> None:
    """A rank's EMA update of a Δ-IRIS codebook, without then with a revival (usage collapsed to one code)."""

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed_session("cpu"):
        quantizer, patches = codebook_case(rank)
        quantizer.all_reduce_statistics = True
        z = quantizer(patches).z
        quantizer.update_codebook(z, quantizer(patches).tokens)
        ema = {k: v.clone() for k, v in quantizer.state_dict().items()}
        quantizer.codeword_freqs.zero_()[0] = 1.0  # entropy 0 bits: dead codes are revived
        torch.manual_seed(rank)
        revived = quantizer.update_codebook(z, quantizer(patches).tokens)["codewords_revived"]
        torch.save({"ema": ema, "revival": quantizer.state_dict(), "z": z, "revived": revived},
                   Path(out) / f"rank{rank}.pt")


def codebook_case(rank: int):  # noqa: ANN201  (16 codes of 4 values, seed 0; 6 patches of rank ``rank``)
    from world_models.delta_iris.quantizer import Quantizer

    torch.manual_seed(0)
    quantizer = Quantizer(codebook_size=16, codebook_dim=4, input_dim=8)
    return quantizer, torch.randn(6, 8, generator=torch.Generator().manual_seed(10 + rank))


def test_the_codebook_ema_sums_its_statistics_over_the_ranks_and_a_revival_is_rank_0s(tmp_path) -> None:
    spawn_ranks(codebook_update, (2, free_port(), str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    reference, patches = codebook_case(0)
    both = torch.cat([patches, codebook_case(1)[1]])
    reference.update_codebook(reference(both).z, reference(both).tokens)  # the 12 patches in one process
    alone, _ = codebook_case(0)
    alone.update_codebook(alone(patches).z, alone(patches).tokens)
    for name, value in reference.state_dict().items():
        assert torch.equal(ranks[0]["ema"][name], ranks[1]["ema"][name]), name
        torch.testing.assert_close(ranks[0]["ema"][name], value, atol=1e-7, rtol=1e-6, msg=name)
    assert not torch.allclose(alone.codebook, reference.codebook, atol=1e-4)  # rank 1's patches count
    assert int(ranks[0]["ema"]["num_updates"]) == 1 and int(ranks[0]["revival"]["num_updates"]) == 2
    for name, value in ranks[0]["revival"].items():
        assert torch.equal(value, ranks[1]["revival"][name]), name  # rank 0's revival on both ranks
    assert ranks[0]["revived"] == ranks[1]["revived"] == 6  # 15 dead codes, 6 patches of rank 0 to take
    codes, z0 = ranks[0]["revival"]["codebook"], torch.nn.functional.normalize(ranks[0]["z"], dim=-1)
    assert sum(bool((codes @ z0.t()).max(dim=1).values.gt(1 - 1e-5)[i]) for i in range(16)) >= 6  # they are z_0's


@pytest.mark.parametrize("agent", ["diamond", "delta_iris"])
def test_one_ddp_update_of_each_world_model_component_equals_the_update_on_the_combined_batch(agent: str,
                                                                                              tmp_path) -> None:
    """Both ranks hold the same episodes here (collected before ``distribute``) but train on different segments;
    DIAMOND's denoiser, reward/end model and actor-critic, Δ-IRIS's tokenizer (its EMA codebook included), world model
    and actor-critic (its EMA target included) take the update of the two ranks' batches together."""
    port = free_port()
    spawn_ranks(world_model_update, (2, port, agent, str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    reference = with_episodes(world_model_agent(agent, **LINEAR_STEP))
    draws = own_draws(reference)  # rank 0 collects what one process collects, rank 1 its own env seed and actions
    assert torch.equal(ranks[0]["draws"]["first_obs"], draws["first_obs"])
    assert ranks[0]["draws"]["actions"] == draws["actions"] != ranks[1]["draws"]["actions"]
    if agent == "delta_iris":  # another Crafter world (Breakout starts on the same screen whatever the seed)
        assert not torch.equal(ranks[1]["draws"]["first_obs"], draws["first_obs"])
    initial = {k: v.clone() for k, v in reference.policy.state_dict().items()}
    alone = with_episodes(world_model_agent(agent, **LINEAR_STEP))
    train_components(alone, 0)  # rank 0's batches alone
    combined_update(reference)
    state = reference.policy.state_dict()
    params = dict(reference.policy.named_parameters())
    assert set(ranks[0]["grads"]) == {n for n, p in params.items() if p.grad is not None}
    moved, far = {}, {}
    for name, value in state.items():
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name  # the ranks in lock-step
        torch.testing.assert_close(ranks[0]["state"][name], value, atol=1e-5, rtol=1e-5, msg=name)
        component = name.split(".")[0]
        moved[component] = max(moved.get(component, 0.0), float((value.float() - initial[name].float()).abs().max()))
        far[component] = max(far.get(component, 0.0),
                             float((alone.policy.state_dict()[name].float() - value.float()).abs().max()))
    error, scale = {}, {}  # per component: the mean of the ranks' gradients (after the clipping), up to float32 sums
    for name, grad in ranks[0]["grads"].items():
        component = name.split(".")[0]
        error[component] = max(error.get(component, 0.0), float((grad - params[name].grad).abs().max()))
        scale[component] = max(scale.get(component, 0.0), float(params[name].grad.abs().max()))
    assert all(error[c] <= 1e-3 * scale[c] for c in scale), (error, scale)
    components = ["denoiser", "rew_end_model", "actor_critic"] if agent == "diamond" else [
        "tokenizer", "world_model", "actor_critic"]
    for component in components:  # every component moved, and rank 1's batch changed its update
        assert moved[component] > 1e-4 and far[component] > 1e-4, (component, moved, far)
    if agent == "delta_iris":
        codebook = "tokenizer.quantizer.codebook"
        assert int(state["tokenizer.quantizer.num_updates"]) == 1
        assert not torch.allclose(alone.policy.state_dict()[codebook], state[codebook], atol=1e-7)


@pytest.mark.parametrize("agent", ["diamond", "delta_iris"])
def test_one_process_with_distributed_true_trains_a_world_model_agent_exactly_as_without(agent: str) -> None:
    """An epoch of random steps and one of the policy's (DIAMOND: 40 + 20, Δ-IRIS: 40 + 20), each followed by updates
    of the three components: DDP over one process changes nothing."""
    budget = {"diamond": {}, "delta_iris": {"num_steps_first_epoch": 40, "num_steps": 20}}[agent]
    plain = world_model_agent(agent, **budget).learn(60)
    with distributed_session("cpu") as ctx:
        model = world_model_agent(agent, **budget)
        model.distribute(ctx, seed=0)
        model.learn(60)
    assert model.updates == plain.updates and model.epoch == plain.epoch == 2 - (agent == "diamond")
    for name, value in plain.policy.state_dict().items():
        assert torch.equal(value, model.policy.state_dict()[name]), name


WM_RUNS = {  # two epochs or fewer of a few updates, episodes of 40 (Breakout) or 30 (Crafter) steps
    "diamond": ["agent=diamond", "env=breakout", "env.max_episode_frames=160", "agent.initial_collect_steps=50",
                "agent.initial_collect_max_steps=75", "agent.threshold_rew=1", "agent.collect_steps=25",
                "agent.first_epoch_train_steps=[1,1,1]", "agent.train_steps=[1,1,1]"],
    "delta_iris": ["agent=delta_iris", "env=crafter", "env.kwargs.length=30", "agent.num_steps_first_epoch=60",
                   "agent.num_steps=20", "agent.steps_first_epoch=[1,1,1]"],
}
WM_BUDGET = {"diamond": 100, "delta_iris": 80}
WM_ENV_IDS = {"diamond": "BreakoutNoFrameskip-v4", "delta_iris": "zoo/Crafter-v1"}


def wm_args(agent: str, run_dir: Path, steps: int) -> list[str]:
    return [*WM_RUNS[agent], "preset=tiny", "distributed=true", f"total_timesteps={steps}", f"save_freq={steps}",
            "eval_freq=0", "eval_episodes=1", "progress_bar=false", "torch_threads=1", f"run_dir={run_dir}"]


@pytest.fixture(scope="module")
def wm_ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Tiny world-model runs on 2 processes (torchrun, gloo), made on first use: agent -> (run directory, printed
    output). DIAMOND: 50 random steps, 25 more while no minority reward is seen on every rank (up to 75), 25 of the
    policy, then a final epoch; Δ-IRIS: 60 random steps, 20 of the policy, a final epoch. (A dict rather than a
    parametrized fixture: pytest-xdist may order the tests so that a parametrized one is built twice.)"""
    root = tmp_path_factory.mktemp("ddp_wm")

    class Runs(dict):
        def __missing__(self, agent: str) -> tuple[Path, str]:
            run_dir = root / agent / "run"
            self[agent] = run_dir, torchrun(wm_args(agent, run_dir, WM_BUDGET[agent])).stdout
            return self[agent]

    return Runs()


@pytest.fixture(params=["diamond", "delta_iris"])
def wm_ddp_run(request: pytest.FixtureRequest, wm_ddp_runs: dict) -> tuple[str, Path, str]:
    """The agent, the run directory and the printed output of its tiny torchrun run."""
    return request.param, *wm_ddp_runs[request.param]


def test_torchrun_trains_a_world_model_agent_and_rank_0_writes_a_run_that_loads_in_one_process(
        wm_ddp_run: tuple[str, Path, str]) -> None:
    from agents.common.checkpoint import load_checkpoint
    from agents.common.registry import load_agent
    from agents.common.tblog import read_config, read_scalars
    from envs.factory import make_vec_env

    agent, run_dir, out = wm_ddp_run
    steps = WM_BUDGET[agent]
    assert out.count(f"{agent} on {WM_ENV_IDS[agent]}: {steps} env steps") == 1  # rank 0 alone reports
    assert read_config(run_dir).distributed is True
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs
    tag = "world_model/loss_denoising" if agent == "diamond" else "world_model/loss_latents"
    scalars = read_scalars(run_dir, [tag, "train/loss_actions"])
    assert scalars[tag][-1, 0] == steps and np.isfinite(scalars["train/loss_actions"][:, 1]).all()
    checkpoint = run_dir / "checkpoints" / f"step_{steps:010d}"
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [checkpoint.name]
    assert (checkpoint / "episode_buffer.npz").is_file()  # rank 0's episodes
    assert json.loads((run_dir / "results.json").read_text())["num_timesteps"] == steps
    tensors, meta = load_checkpoint(run_dir / "final")
    assert meta["num_timesteps"] == steps and not [k for k in tensors if "module." in k]
    env = make_vec_env(WM_ENVS[agent], n_envs=1, seed=0)
    model = load_agent(run_dir / "final", env=env, device="cpu")
    resumed = load_agent(checkpoint, env=env, device="cpu")
    assert model.updates == {k: v + 1 for k, v in resumed.updates.items()}  # the final epoch: one update each
    assert resumed.episode_buffer.num_episodes >= 1
    assert model.predict(env.reset(), None, np.ones(1, bool))[0].shape == (1,)


@pytest.mark.slow
def test_a_resumed_ddp_run_of_a_world_model_agent_continues_its_counters_and_curves(
        wm_ddp_run: tuple[str, Path, str], tmp_path) -> None:
    """Every rank resumes rank 0's checkpoint (weights, optimizers, counters, episodes) and restarts its envs, as a
    one-process resume with a fresh env does; rank r > 0 then draws from its (seed, r, epoch) streams (one more torchrun
    launch)."""
    import shutil

    from agents.common.registry import load_agent
    from agents.common.tblog import read_scalars

    agent, source, _ = wm_ddp_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    steps = WM_BUDGET[agent]
    more = steps + (50 if agent == "diamond" else 40)  # two more policy epochs
    out = torchrun([f"resume={run_dir}", f"total_timesteps={more}", "progress_bar=false", "torch_threads=1"]).stdout
    assert out.count(f"resuming {run_dir} from step_{steps:010d}") == 1
    assert out.count(f"{agent} on {WM_ENV_IDS[agent]}: {more} env steps") == 1
    model = load_agent(run_dir / "final", device="cpu")
    first = load_agent(source / "checkpoints" / f"step_{steps:010d}", device="cpu")
    assert model.num_timesteps == more and model.epoch == first.epoch + 3  # two collecting epochs, one final
    tag = "world_model/loss_denoising" if agent == "diamond" else "world_model/loss_latents"
    assert read_scalars(run_dir, [tag])[tag][-3:, 0].tolist() == [steps, (steps + more) // 2, more]  # one per step
