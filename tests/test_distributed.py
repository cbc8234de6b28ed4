"""Data-parallel training (agents/common/distributed.py): one DDP update over 2 CPU processes (gloo) equals the
update on the combined batch, torchrun writes one run that loads in one process, a resumed DDP run continues
exactly, and one process with ``distributed=true`` trains exactly as without it.

The equality tests use settings without hidden randomness in the update: dropout 0 (DT and ACT). ACT's CVAE draws
its latent noise from torch's generator; the reference replays each rank's seed. ACT's ResNet has BatchNorm, which
on CPU normalizes each rank's batch alone (SyncBatchNorm needs CUDA), so its reference is the mean of the two
ranks' gradients, each computed on its own batch, rather than the gradient of one combined batch.
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
from tests.test_act import SIZE, needle_env, record
from tests.test_act import TINY as ACT_TINY
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
    torch.multiprocessing.spawn(one_ddp_update, args=(2, free_port(), agent, data, str(out)), nprocs=2, join=True)
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
def test_resumed_ddp_run_equals_the_uninterrupted_one(ddp_run: tuple[Path, str], scripted_dataset: str,  # noqa: F811
                                                      tmp_path) -> None:
    """Rank 0 continues its saved sampler, rank 1 its (seed, rank, step) stream: the weights after 10 + 10 steps are
    those of the 20-step run (about 30 s: two more torchrun launches)."""
    from agents.common.checkpoint import load_checkpoint

    run_dir = tmp_path / "resumed"
    torchrun(dt_args(scripted_dataset, run_dir, steps=10))
    torchrun([f"resume={run_dir}", "total_timesteps=20"])
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


@pytest.mark.parametrize("agent", ["ppo", "diamond"])
def test_agents_without_data_parallel_training_exit_2(agent: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    from runners.cli import run_main
    from runners.train import main as train_main

    code = run_main(train_main, [f"agent={agent}", "env=cartpole", "distributed=true", f"run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 2 and f"agent {agent} does not train data-parallel; agents that do: act, dt, radt" in err, err
    assert not (tmp_path / "r").exists()
