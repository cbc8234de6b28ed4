"""Data-parallel training with ``torchrun``: process group, DistributedDataParallel, rank-keyed sampling.

Under ``torchrun --nproc_per_node=N`` every process runs the same training script. This module gives each one:

- :func:`distributed_session`: the process group (``gloo`` on CPU, ``nccl`` on CUDA, each process on
  ``cuda:<LOCAL_RANK>``), read from torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``,
  ``MASTER_PORT``); started without torchrun it is one process (world size 1, an in-memory store). The group is
  destroyed when the session ends, also on an error.
- :func:`data_parallel`: the trained modules wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, after
  checking that every parameter an optimizer updates lies inside one of them (else its gradient would not be
  averaged and the ranks would drift apart). On CUDA, BatchNorm layers become SyncBatchNorm (batch statistics over
  all ranks); on CPU SyncBatchNorm does not exist, so BatchNorm normalizes each rank's batch alone. The wrapper is
  kept beside the module, never inside it, so that state dicts keep their names (no ``module.`` prefix) and a
  checkpoint written under DDP loads in one process.
- :func:`rank_streams`: the numpy generator and torch seed of rank ``r > 0`` at gradient step ``t``, derived from
  ``(seed, r, t)`` alone; rank 0 keeps the algorithm's own sampler, which its checkpoints save. A resumed run
  therefore draws on every rank what the uninterrupted run would have drawn, and one process with
  ``distributed=true`` trains exactly as without it.
- :class:`DistributedContext`: rank, world size, device, and the few collectives the training loop needs (a
  barrier, a logical and of "keep going", means of logged scalars, a sum of element counts, broadcasting an object).

What DDP does per step: each rank computes the gradients of its own batch, and DDP averages them over the ranks
during ``backward`` (bucketed all-reduce), so every rank applies the same update; the effective batch is
``world_size x batch_size``. Rank 0 alone writes (logs, checkpoints, the final model, evaluations).

Adopting it in a trainer (:class:`~agents.common.gradient_steps.GradientStepAlgorithm` does all of it; the runner
opens the session and calls the agent's ``distribute(ctx, seed)`` when its class sets ``supports_distributed``)::

    trained = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
    wrapped = data_parallel(ctx, {"denoiser": denoiser, "rew_end": rew_end}, trained)
    loss = wrapped["denoiser"](batch)             # DDP averages in backward only what runs through forward()
    if ctx.rank > 0:
        sampler, noise_seed = rank_streams(seed, ctx.rank, step)   # this rank's draws at this step
    keep_going = ctx.all_true(callback.on_step())  # and ctx.mean_scalars(means) before logging
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
DEFAULT_TIMEOUT_S = 3600.0  # collectives wait this long: rank 0 may evaluate alone for minutes while others wait


@dataclass(frozen=True)
class DistributedContext:
    """One process of a data-parallel run: who it is and the collectives the training loop needs."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints, evaluates and saves the final model."""
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (a stop on one rank stops all of them at the same step)."""
        t = torch.tensor([int(bool(flag))], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def all_sum(self, value: float) -> float:
        """``value`` summed over the ranks."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def mean_scalars(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each scalar averaged over the ranks (every rank must pass the same keys)."""
        if self.world_size == 1 or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable; e.g. the run directory, whose default name holds the time)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]


def torchrun_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's variables, or None when the process was not launched so."""
    environ = os.environ if environ is None else environ
    present = [k for k in TORCHRUN_VARS if k in environ]
    if not present:
        return None
    if len(present) < len(TORCHRUN_VARS):
        missing = [k for k in TORCHRUN_VARS if k not in environ]
        raise ValueError(f"{', '.join(present)} set but not {', '.join(missing)}; launch with torchrun, which sets all")
    rank, world, local = (int(environ[k]) for k in TORCHRUN_VARS)
    if not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: expected 0 <= RANK < WORLD_SIZE")
    return rank, world, local


def resolve_device(device: str, local_rank: int) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> this process's device: ``cuda:<local_rank>`` on a GPU node."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not allowed for distributed training; choose one of: auto, cpu, cuda")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"LOCAL_RANK={local_rank} but this node has {count} CUDA device(s); start at most {count} "
                         "processes per node (--nproc_per_node) or use device=cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistributedContext:
    """Join the process group of a torchrun launch (or form a one-process group without torchrun)."""
    if dist.is_initialized():
        raise ValueError("a torch.distributed process group is already initialized in this process")
    launched = torchrun_env()
    rank, world, local = launched or (0, 1, 0)
    dev = resolve_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = _dt.timedelta(seconds=timeout_s)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if launched is not None:  # env:// rendezvous at MASTER_ADDR:MASTER_PORT, set by torchrun
        extra: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=timeout, **extra)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistributedContext(rank, world, local, backend, dev)


def shutdown() -> None:
    """Destroy this process's group, if any (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_session(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[DistributedContext]:
    """:func:`init_distributed` for the ``with`` block; the group is destroyed at its end, also on an error."""
    ctx = init_distributed(device, timeout_s)
    try:
        yield ctx
        if ctx.world_size > 1:
            # Every rank reaches the end before any destroys the group: a rank that tears down its gloo pairs while
            # rank 0 still writes the final model dies at exit ("terminate called without an active exception",
            # SIGABRT) and torchrun then fails the whole run. Not on an error, where the peers may never arrive.
            ctx.barrier()
    finally:
        shutdown()


def data_parallel(
    ctx: DistributedContext,
    modules: Mapping[str, nn.Module],
    trained: Iterable[torch.Tensor],
    find_unused_parameters: bool = False,
) -> dict[str, DistributedDataParallel]:
    """DDP wrappers of ``modules`` (by name); ``trained``: every parameter an optimizer updates.

    Wrapping broadcasts rank 0's parameters and buffers, so every rank starts from rank 0's weights. Call the wrapper
    in the training forward pass (its ``backward`` averages the gradients); call the module itself elsewhere.
    """
    inside = {id(p) for m in modules.values() for p in m.parameters()}
    outside = [p for p in trained if id(p) not in inside]
    if outside:
        shapes = ", ".join(str(tuple(p.shape)) for p in outside[:4])
        raise ValueError(f"{len(outside)} trained parameter(s) (shapes {shapes}) lie outside the data-parallel "
                         f"modules {', '.join(modules)}; their gradients would not be averaged over the ranks")
    wrapped = {}
    for name, module in modules.items():
        if ctx.device.type == "cuda":
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                raise ValueError(f"{name} is itself a BatchNorm layer; wrap the module that holds it")
            nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces the children in place, same parameters
        wrapped[name] = DistributedDataParallel(
            module,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    return wrapped


def rank_streams(seed: int, rank: int, step: int) -> tuple[np.random.Generator, int]:
    """The numpy generator and the torch seed of ``rank`` at gradient step ``step``, keyed by ``(seed, rank, step)``.

    Independent across ranks and steps (numpy's SeedSequence spawn keys), and the same on every call, so a resumed
    run continues every rank's stream without saving it.
    """
    data, noise = np.random.SeedSequence(int(seed), spawn_key=(int(rank), int(step))).spawn(2)
    return np.random.default_rng(data), int(noise.generate_state(1, np.uint64)[0] >> np.uint64(1))
