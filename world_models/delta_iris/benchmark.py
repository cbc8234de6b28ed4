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

import contextlib
import itertools
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

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
Timing = dict[str, Any]


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def time_fn(fn: Callable[[], object], repeats: int, warmup: int) -> Timing:
    """Median wall-clock milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` (``cpu_ms``: the median
    CPU time of the process, all threads, over the same runs)."""
    return time_interleaved({"fn": fn}, repeats, warmup)["fn"]


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, Timing]:
    """:func:`time_fn` of several functions run in turns (a, b, a, b, ...), so that a change in the load of a
    shared machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            runs[name].append(1000 * (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - start_cpu))
    return {name: {"median_ms": statistics.median(runs[name]), "runs_ms": runs[name],
                   "cpu_ms": statistics.median(cpu[name])} for name in fns}


def random_segments(batch_size: int, seq_length: int, num_actions: int = NUM_ACTIONS, seed: int = 0
                    ) -> tuple[torch.Tensor, ...]:
    """``(frames [B, T, 3, 64, 64] in [0, 1], acts [B, T], rews [B, T], ends [B, T], mask [B, T])``, all real."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch_size, seq_length, 3, 64, 64, generator=g)
    acts = torch.randint(0, num_actions, (batch_size, seq_length), generator=g)
    rews = torch.zeros(batch_size, seq_length)
    ends = torch.zeros(batch_size, seq_length, dtype=torch.long)
    return frames, acts, rews, ends, torch.ones(batch_size, seq_length, dtype=torch.bool)


def train_step_fn(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], bf16: bool) -> Callable[[], float]:
    """One optimizer step of ``model`` on ``loss_fn()`` (under bf16 autocast if asked): backward, clip 10, AdamW
    (lr 1e-4, weight decay 0.01), as the official trainer. The step returns the loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step() -> float:
        with _autocast(bf16):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        return float(loss.detach())

    return step


def _config(cls: type, value: Any) -> Any:
    return cls(**value) if isinstance(value, dict) else value


def time_tokenizer_train_step(
    batch_size: int = 32, seq_length: int = 21, bf16: bool = False, threads: int | None = None,
    config: TokenizerConfig | dict | None = None, repeats: int = 3, warmup: int = 1,
) -> Timing:
    """One optimizer step of the tokenizer (the Crafter one by default) on ``batch_size`` segments of ``seq_length``
    frames."""
    with _threads(threads):
        torch.manual_seed(0)
        tokenizer = Tokenizer(_config(TokenizerConfig, config) or TokenizerConfig.crafter(NUM_ACTIONS)).train()
        frames, acts, _, _, mask = random_segments(batch_size, seq_length, tokenizer.cfg.num_actions)
        return time_fn(train_step_fn(tokenizer, lambda: tokenizer.loss(frames, acts, mask)[0], bf16), repeats, warmup)


def time_world_model_train_step(
    batch_size: int = 32, seq_length: int = 21, bf16: bool = False, threads: int | None = None,
    tokenizer_config: TokenizerConfig | dict | None = None, world_model_config: WorldModelConfig | dict | None = None,
    repeats: int = 3, warmup: int = 1,
) -> Timing:
    """One optimizer step of the world model (the Crafter one by default), the Δ-tokens of the ``seq_length - 1``
    pairs encoded inside the step by the frozen tokenizer (no grad), as the official trainer does."""
    with _threads(threads):
        torch.manual_seed(0)
        tokenizer = Tokenizer(_config(TokenizerConfig, tokenizer_config) or TokenizerConfig.crafter(NUM_ACTIONS))
        cfg = _config(WorldModelConfig, world_model_config) or WorldModelConfig.crafter(NUM_ACTIONS)
        world_model = WorldModel(cfg).train()
        frames, acts, rews, ends, mask = random_segments(batch_size, seq_length, cfg.num_actions)
        step = train_step_fn(
            world_model, lambda: world_model.loss(frames, acts, rews, ends, mask, tokenizer=tokenizer.eval())[0], bf16
        )
        return time_fn(step, repeats, warmup)


def time_imagination(
    batch_size: int = 32, bf16: bool = False, threads: int | None = None, burn_in: int = 5,
    tokenizer: Tokenizer | dict | None = None, world_model: WorldModel | dict | None = None,
    contexts: tuple[torch.Tensor, torch.Tensor] | None = None, repeats: int = 5, warmup: int = 2,
) -> dict[str, Timing]:
    """``{"reset": reset_from(burn_in real frames), "step": one imagined step of every rollout}`` of
    :class:`DeltaIrisWorldModelEnv` (never truncated), each the median of ``repeats`` after ``warmup``, the steps
    within one context (``warmup + repeats <= max_blocks - burn_in + 1``: no refill). ``tokenizer`` and
    ``world_model``: models, their configs, or None for the Crafter ones (untrained: the cost does not depend on the
    weights); ``contexts``: frames ``[B, burn_in, 3, 64, 64]`` in [0, 1] and actions ``[B, burn_in]``, random
    when None."""
    with _threads(threads):
        torch.manual_seed(0)
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = Tokenizer(_config(TokenizerConfig, tokenizer) or TokenizerConfig.crafter(NUM_ACTIONS))
        if not isinstance(world_model, WorldModel):
            world_model = WorldModel(_config(WorldModelConfig, world_model) or WorldModelConfig.crafter(NUM_ACTIONS))
        env = DeltaIrisWorldModelEnv(tokenizer.eval(), world_model.eval(), horizon=10**9, num_envs=batch_size)
        num_actions = world_model.cfg.num_actions
        frames, acts = contexts or random_segments(batch_size, burn_in, num_actions)[:2]
        g = torch.Generator().manual_seed(1)
        with torch.inference_mode(), _autocast(bf16):
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


def _status_kib(key: str) -> int:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure_in_subprocess(name: str, memory_limit_gb: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run ``FUNCTIONS[name](**kwargs)`` (JSON-able arguments) in a fresh Python process whose address space is
    limited to what it holds after start-up plus ``memory_limit_gb``; returns its result with ``peak_rss_gb`` (the
    process's peak resident memory) and ``baseline_rss_gb`` (after importing torch and this module), or
    ``{"error": ...}`` when it ran out of memory or failed."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown measurement '{name}'; choose one of: {', '.join(FUNCTIONS)}")
    args = json.dumps({"name": name, "limit": memory_limit_gb, "kwargs": kwargs})
    done = subprocess.run([sys.executable, "-m", "world_models.delta_iris.benchmark", args],
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode < 0 and memory_limit_gb is not None:  # a failed allocation can crash a library outright
        return {"error": f"killed by signal {-done.returncode} under the {memory_limit_gb:g} GB limit (most likely "
                         f"out of memory)"}
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit status {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def _child(args: dict[str, Any]) -> dict[str, Any]:
    baseline = _status_kib("VmRSS")
    if args["limit"] is not None:
        address_space = _status_kib("VmSize") * 1024 + int(args["limit"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    try:
        result: dict[str, Any] = FUNCTIONS[args["name"]](**args["kwargs"])
    except (RuntimeError, MemoryError) as e:  # the allocator or oneDNN refusing memory under the limit
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if args["limit"] is None:
            raise
        result = {"error": f"failed under the {args['limit']:g} GB limit, most likely out of memory ({message})"}
    result["peak_rss_gb"] = _status_kib("VmHWM") / 2**20
    result["baseline_rss_gb"] = baseline / 2**20
    return result


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
