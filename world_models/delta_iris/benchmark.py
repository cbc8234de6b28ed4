"""Timings of Δ-IRIS's tokenizer, world model and imagination, comparable to the official code's.

The measurements of ``OFFICIAL_TIMINGS.md`` section 2 (vmicheli/delta-iris @ f8d4173, ``config/params/crafter.yaml``,
17 actions, 2-core CPU, 2 threads): (a) one tokenizer train step on segments ``[B, 21]`` (20 frame pairs each):
forward, backward, gradient clipping at 10, AdamW (lr 1e-4, weight decay 0.01) (our step also updates the codebook,
as the official loss does); (b) one world-model train step on the same segments, the Δ-tokens computed inside the
step by the frozen tokenizer without gradient, then clip 10 and AdamW; (c) one imagined step of ``B`` rollouts
(``DeltaIrisWorldModelEnv.step``: frame embedding, action, ``K`` sampled tokens through the KV cache, decoding by the
tokenizer), no grad, after a reset from 5 real frames; (c0) that reset. ``bf16`` runs the step under CPU autocast, as
the official trainer (``use_mixed_precision``). Inputs are random tensors shaped like the real batches unless given.

Every timing is ``{"median_ms", "runs_ms", "cpu_ms"}`` (``cpu_ms``: the median CPU time of the process over all
threads, steadier than the wall clock on a shared machine). :func:`measure_in_subprocess` runs one of them in a fresh
process under a memory limit and adds its peak resident memory (``VmHWM`` of ``/proc/self/status``), which is what
"fits in memory at batch 32" means here. ``runners.bench delta_iris`` writes the report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch

from agents.common import timing
from agents.common.timing import (  # noqa: F401 (runners.bench_delta_iris uses time_interleaved, train_step_fn)
    Timing,
    time_fn,
    time_interleaved,
    train_step_fn,
)
from world_models.delta_iris.tokenizer import Tokenizer, TokenizerConfig
from world_models.delta_iris.world_model import WorldModel, WorldModelConfig
from world_models.delta_iris.world_model_env import DeltaIrisWorldModelEnv

#: vmicheli/delta-iris @ f8d4173 on the developers' 2-core CPU, 2 threads (ms; OFFICIAL_TIMINGS.md section 2).
#: The fp32 tokenizer step at batch 32 was killed for memory at 24.3 GB; the fp32 world-model step was measured
#: twice in separate processes (31.6 s and 25.0 s).
OFFICIAL_MS = {
    ("tokenizer", 8, "fp32"): 33013.0,
    ("tokenizer", 8, "bf16"): 12970.0,
    ("tokenizer", 32, "bf16"): 69301.0,
    ("world_model", 32, "fp32"): 25044.0,
    ("world_model", 32, "bf16"): 11135.0,
    ("imagination", 32, "fp32"): 795.0,
    ("reset", 32, "fp32"): 3059.0,
}
OFFICIAL_FP32_TOKENIZER_B32 = "out of memory (killed at 24.3 GB RSS)"
NUM_ACTIONS = 17


def random_segments(batch_size: int, seq_length: int, num_actions: int = NUM_ACTIONS, seed: int = 0
                    ) -> tuple[torch.Tensor, ...]:
    """``(frames [B, T, 3, 64, 64] in [0, 1], acts [B, T], rews [B, T], ends [B, T], mask [B, T])``, all real."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch_size, seq_length, 3, 64, 64, generator=g)
    acts = torch.randint(0, num_actions, (batch_size, seq_length), generator=g)
    rews = torch.zeros(batch_size, seq_length)
    ends = torch.zeros(batch_size, seq_length, dtype=torch.long)
    return frames, acts, rews, ends, torch.ones(batch_size, seq_length, dtype=torch.bool)


def _config(cls: type, value: Any) -> Any:
    return cls(**value) if isinstance(value, dict) else value


def _layout(module: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """The module in the memory format the agent gives it (``DeltaIrisPolicy(channels_last=True)``) or in NCHW."""
    return module.to(memory_format=torch.channels_last) if channels_last else module


def time_tokenizer_train_step(
    batch_size: int = 32, seq_length: int = 21, bf16: bool = False, threads: int | None = None,
    config: TokenizerConfig | dict | None = None, repeats: int = 3, warmup: int = 1, channels_last: bool = True,
) -> Timing:
    """One optimizer step of the tokenizer (the Crafter one by default) on ``batch_size`` segments of ``seq_length``
    frames."""
    with timing.torch_threads(threads):
        torch.manual_seed(0)
        tokenizer = Tokenizer(_config(TokenizerConfig, config) or TokenizerConfig.crafter(NUM_ACTIONS)).train()
        _layout(tokenizer, channels_last)
        frames, acts, _, _, mask = random_segments(batch_size, seq_length, tokenizer.cfg.num_actions)
        return time_fn(train_step_fn(tokenizer, lambda: tokenizer.loss(frames, acts, mask)[0], bf16), repeats, warmup)


def time_world_model_train_step(
    batch_size: int = 32, seq_length: int = 21, bf16: bool = False, threads: int | None = None,
    tokenizer_config: TokenizerConfig | dict | None = None, world_model_config: WorldModelConfig | dict | None = None,
    repeats: int = 3, warmup: int = 1, channels_last: bool = True,
) -> Timing:
    """One optimizer step of the world model (the Crafter one by default), the Δ-tokens of the ``seq_length - 1``
    pairs encoded inside the step by the frozen tokenizer (no grad), as the official trainer does."""
    with timing.torch_threads(threads):
        torch.manual_seed(0)
        tokenizer = Tokenizer(_config(TokenizerConfig, tokenizer_config) or TokenizerConfig.crafter(NUM_ACTIONS))
        cfg = _config(WorldModelConfig, world_model_config) or WorldModelConfig.crafter(NUM_ACTIONS)
        world_model = WorldModel(cfg).train()
        _layout(tokenizer, channels_last)
        _layout(world_model, channels_last)
        frames, acts, rews, ends, mask = random_segments(batch_size, seq_length, cfg.num_actions)
        step = train_step_fn(
            world_model, lambda: world_model.loss(frames, acts, rews, ends, mask, tokenizer=tokenizer.eval())[0], bf16
        )
        return time_fn(step, repeats, warmup)


def time_imagination(
    batch_size: int = 32, bf16: bool = False, threads: int | None = None, burn_in: int = 5,
    tokenizer: Tokenizer | dict | None = None, world_model: WorldModel | dict | None = None,
    contexts: tuple[torch.Tensor, torch.Tensor] | None = None, repeats: int = 5, warmup: int = 2,
    channels_last: bool = True,
) -> dict[str, Timing]:
    """``{"reset": reset_from(burn_in real frames), "step": one imagined step of every rollout}`` of
    :class:`DeltaIrisWorldModelEnv` (never truncated), each the median of ``repeats`` after ``warmup``, the steps
    within one context (``warmup + repeats <= max_blocks - burn_in + 1``: no refill). ``tokenizer`` and
    ``world_model``: models, their configs, or None for the Crafter ones (untrained: the cost does not depend on the
    weights); ``contexts``: frames ``[B, burn_in, 3, 64, 64]`` in [0, 1] and actions ``[B, burn_in]``, random
    when None."""
    with timing.torch_threads(threads):
        torch.manual_seed(0)
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = Tokenizer(_config(TokenizerConfig, tokenizer) or TokenizerConfig.crafter(NUM_ACTIONS))
        if not isinstance(world_model, WorldModel):
            world_model = WorldModel(_config(WorldModelConfig, world_model) or WorldModelConfig.crafter(NUM_ACTIONS))
        _layout(tokenizer, channels_last)
        _layout(world_model, channels_last)
        env = DeltaIrisWorldModelEnv(tokenizer.eval(), world_model.eval(), horizon=10**9, num_envs=batch_size)
        num_actions = world_model.cfg.num_actions
        frames, acts = contexts or random_segments(batch_size, burn_in, num_actions)[:2]
        g = torch.Generator().manual_seed(1)
        with torch.inference_mode(), timing.autocast(bf16):
            reset = time_fn(lambda: env.reset_from(frames, acts), repeats, warmup)
            step = time_fn(lambda: env.step(torch.randint(0, num_actions, (batch_size,), generator=g)), repeats,
                           warmup)
        return {"reset": reset, "step": step}


# ----------------------------------------------------------------------------------------------------------------
# Reduced-budget fitting and reconstruction error (runners.bench delta_iris, parts iris and cla)
# ----------------------------------------------------------------------------------------------------------------
def fit(model: torch.nn.Module, loss_of_step: Callable[[int], torch.Tensor], steps: int, bf16: bool) -> list[float]:
    """``steps`` optimizer steps (:func:`train_step_fn`) of ``model`` in training mode on ``loss_of_step(i)``;
    returns the losses."""
    model.train()
    counter = itertools.count()
    step = train_step_fn(model, lambda: loss_of_step(next(counter)), bf16)
    return [step() for _ in range(steps)]


@torch.no_grad()
def reconstruction_error(tokenizer: Tokenizer, x_prev: torch.Tensor, act: torch.Tensor, x_next: torch.Tensor,
                         chunk: int = 64) -> dict[str, float]:
    """Error of ``tokenizer.decode_tokens(x_prev, act, tokenize(x_prev, act, x_next))`` (what imagination shows:
    clamped and snapped to 8 bits) against ``x_next``, frames ``[N, 3, H, W]`` in [0, 1]: ``mse``, ``l1``,
    ``psnr`` (dB, of the mean squared error) and ``codes_used`` (distinct tokens)."""
    tokenizer.eval()
    sq = ab = 0.0
    used: set[int] = set()
    for i in range(0, len(act), chunk):
        p, a, n = x_prev[i:i + chunk], act[i:i + chunk], x_next[i:i + chunk]
        tokens = tokenizer.tokenize(p, a, n)
        delta = tokenizer.decode_tokens(p, a, tokens) - n
        sq, ab = sq + float(delta.pow(2).sum()), ab + float(delta.abs().sum())
        used.update(tokens.unique().tolist())
    mse = sq / x_next.numel()
    return {"mse": mse, "l1": ab / x_next.numel(), "psnr": 10 * math.log10(1 / max(mse, 1e-12)),
            "codes_used": len(used)}


# ----------------------------------------------------------------------------------------------------------------
# One measurement in its own process, with its peak memory
# ----------------------------------------------------------------------------------------------------------------
FUNCTIONS = {"tokenizer": time_tokenizer_train_step, "world_model": time_world_model_train_step,
             "imagination": time_imagination}


def measure_in_subprocess(name: str, memory_limit_gb: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`agents.common.timing.measure_in_subprocess` of ``FUNCTIONS[name]``: the result with ``peak_rss_gb``
    and ``baseline_rss_gb``, or ``{"error": ...}`` when it ran out of memory or failed."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown measurement '{name}'; choose one of: {', '.join(FUNCTIONS)}")
    return timing.measure_in_subprocess(FUNCTIONS[name], memory_limit_gb, **kwargs)
