"""Timings of DIAMOND's world model at the paper's configuration, comparable to the official code's.

The measurements of ``OFFICIAL_TIMINGS.md`` section 1 (eloialonso/diamond on a 2-core CPU, fp32, 4 actions):
(a) one denoiser train step at batch 32 on segments of 5 frames (4 conditioning + 1 target): forward, backward,
gradient clipping at 1.0, AdamW(lr 1e-4, eps 1e-8, weight decay 1e-2); (c) one imagined frame for 32 rollouts:
3 Euler steps, 3 network calls, no grad. Inputs are random tensors shaped like the real batches. Each function
returns the median and the individual runs in milliseconds; ``channels_last`` and ``bf16`` (CPU autocast) are the
variants to try. ``runners.bench`` writes the report.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from world_models.diamond.batch import WorldModelBatch
from world_models.diamond.edm import Denoiser, DenoiserConfig
from world_models.diamond.sampler import DiffusionSampler, SamplerConfig

#: eloialonso/diamond @ 5bcd159 on the developers' 2-core CPU, 2 threads, fp32, batch 32 (ms).
OFFICIAL_MS = {"denoiser_train_step": 8232.0, "imagined_frame": 5590.0}


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time(fn: Callable[[], object], repeats: int, warmup: int) -> dict[str, float | list[float]]:
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(1000 * (time.perf_counter() - start))
    return {"median_ms": statistics.median(runs), "runs_ms": runs}


def _setup(batch_size: int, seq_length: int, num_actions: int, channels_last: bool) -> tuple[Denoiser, WorldModelBatch]:
    torch.manual_seed(0)
    denoiser = Denoiser(DenoiserConfig.paper(num_actions))
    obs = torch.rand(batch_size, seq_length, 3, 64, 64) * 2 - 1
    if channels_last:
        denoiser = denoiser.to(memory_format=torch.channels_last)
        obs = obs.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (batch_size, seq_length))
    act = torch.randint(0, num_actions, (batch_size, seq_length))
    zeros = torch.zeros(batch_size, seq_length)
    batch = WorldModelBatch(obs, act, zeros, zeros.bool(), zeros.bool(), torch.ones(batch_size, seq_length).bool())
    return denoiser, batch


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def time_denoiser_train_step(
    batch_size: int = 32, seq_length: int = 5, num_actions: int = 4, threads: int | None = None,
    channels_last: bool = False, bf16: bool = False, repeats: int = 5, warmup: int = 2,
) -> dict[str, float | list[float]]:
    """One optimizer step of the paper's denoiser: loss, backward, clip 1.0, AdamW."""
    with _threads(threads):
        denoiser, batch = _setup(batch_size, seq_length, num_actions, channels_last)
        opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-4, eps=1e-8, weight_decay=1e-2)

        def step() -> None:
            with _autocast(bf16):
                loss, _ = denoiser.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
            opt.step()

        return _time(step, repeats, warmup)


def time_imagined_frame(
    batch_size: int = 32, num_actions: int = 4, threads: int | None = None, channels_last: bool = False,
    bf16: bool = False, num_steps: int = 3, repeats: int = 5, warmup: int = 2,
) -> dict[str, float | list[float]]:
    """One next frame for ``batch_size`` rollouts: ``num_steps`` Euler steps, no grad."""
    with _threads(threads):
        n = 4
        denoiser, batch = _setup(batch_size, n, num_actions, channels_last)
        sampler = DiffusionSampler(denoiser.eval(), SamplerConfig(num_steps=num_steps))

        def frame() -> None:
            with torch.inference_mode(), _autocast(bf16):
                sampler.sample_next_obs(batch.obs, batch.act)

        return _time(frame, repeats, warmup)
