"""Timing a piece of work on a CPU, for the benchmarks that set the zoo beside the authors' code.

What ``world_models/diamond/benchmark.py`` and ``world_models/delta_iris/benchmark.py`` share:

- :func:`time_fn` and :func:`time_interleaved`: the median wall-clock milliseconds of a function over ``repeats``
  runs after ``warmup`` (a, b, a, b, ... when several are compared, so that a change in the load of a shared machine
  falls on all of them alike), with ``cpu_ms``, the median CPU time of the process over all threads (steadier than the
  wall clock on a shared machine; OpenMP's spin-waiting included).
- :func:`measure_in_subprocess`: one such measurement in a fresh Python process whose address space is limited, with
  the process's peak resident memory (``VmHWM`` of ``/proc/self/status``): what "fits in memory" means here.
- :func:`train_step_fn`: one optimizer step as the official trainers take it (backward, clip, AdamW).
- :func:`torch_threads`, :func:`autocast` (bf16 on the CPU, as the official trainers' ``use_mixed_precision``),
  :func:`load_average` / :func:`load_note` and :func:`available_memory_gb`, to say under what the numbers were taken.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from agents.common.precision import autocast as precision_autocast

Timing = dict[str, Any]  # {"median_ms", "runs_ms", "cpu_ms"}


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (nothing when ``n`` is None), the previous count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    """CPU autocast to bfloat16 when ``bf16``, else nothing (:func:`agents.common.precision.autocast`)."""
    return precision_autocast("bf16" if bf16 else "fp32", "cpu")


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


def train_step_fn(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], bf16: bool = False, clip: float = 10.0,
                  weight_decay: float = 0.01, **adamw: Any) -> Callable[[], float]:
    """One optimizer step of ``model`` on ``loss_fn()`` (under bf16 autocast if asked): backward, gradient-norm
    clipping at ``clip``, AdamW (lr 1e-4, eps 1e-8, ``weight_decay``; ``adamw``: its other options, e.g.
    ``fused=True``). The defaults are Δ-IRIS's trainer's; the step returns the loss."""
    optimizer = torch.optim.AdamW(model.parameters(), **{"lr": 1e-4, "eps": 1e-8, "weight_decay": weight_decay,
                                                         **adamw})

    def step() -> float:
        with autocast(bf16):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return float(loss.detach())

    return step


def status_kib(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``VmSize``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def available_memory_gb(reserve_gb: float = 3.0) -> float:
    """``MemAvailable`` of ``/proc/meminfo`` less ``reserve_gb`` for everything else (at least 1 GB)."""
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    return round(max(1.0, available / 2**20 - reserve_gb), 1)


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def load_note(start: float, end: float | None = None) -> str:
    """The 1-minute load average at the start (and end) of a measurement, flagged when other jobs shared the cores."""
    cores = os.cpu_count() or 1
    span = f"{start:.1f}" + (f" / {end:.1f}" if end is not None else "")
    when = "at the start / end of this part" if end is not None else "at the start of this part"
    busy = max(start, end or 0.0) > cores + 1  # this process's own threads count for up to the cores
    return (f"Load average {when}: {span} on {cores} cores, this benchmark's own threads included"
            + (" (a loaded machine: wall-clock times are longer than on an idle one)." if busy else "."))


# ----------------------------------------------------------------------------------------------------------------
# One measurement in its own process, with its peak memory
# ----------------------------------------------------------------------------------------------------------------
def measure_in_subprocess(fn: Callable[..., dict[str, Any]], memory_limit_gb: float | None = None,
                          **kwargs: Any) -> dict[str, Any]:
    """Run ``fn(**kwargs)`` (a module-level function returning a JSON-able dict; JSON-able arguments) in a fresh
    Python process whose address space is limited to what it holds after start-up plus ``memory_limit_gb``; returns
    its result with ``peak_rss_gb`` (the process's peak resident memory) and ``baseline_rss_gb`` (after importing
    torch and ``fn``'s module), or ``{"error": ...}`` when it ran out of memory or failed."""
    module, name = fn.__module__, fn.__qualname__
    if module == "__main__":  # a module run with ``python -m``: its importable name
        module = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", module)
    if module == "__main__" or "." in name:
        raise ValueError(f"{module}.{name}: measure_in_subprocess needs a module-level function of an importable "
                         f"module")
    args = json.dumps({"module": module, "name": name, "limit": memory_limit_gb, "kwargs": kwargs})
    done = subprocess.run([sys.executable, "-m", __name__, args], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode < 0 and memory_limit_gb is not None:  # a failed allocation can crash a library outright
        return {"error": f"killed by signal {-done.returncode} under the {memory_limit_gb:g} GB limit (most likely "
                         f"out of memory)"}
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit status {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def _child(args: dict[str, Any]) -> dict[str, Any]:
    fn = getattr(importlib.import_module(args["module"]), args["name"])
    baseline = status_kib("VmRSS")
    if args["limit"] is not None:
        address_space = status_kib("VmSize") * 1024 + int(args["limit"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    try:
        result: dict[str, Any] = fn(**args["kwargs"])
    except (RuntimeError, MemoryError) as e:  # the allocator or oneDNN refusing memory under the limit
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if args["limit"] is None:
            raise
        result = {"error": f"failed under the {args['limit']:g} GB limit, most likely out of memory ({message})"}
    result["peak_rss_gb"] = status_kib("VmHWM") / 2**20
    result["baseline_rss_gb"] = baseline / 2**20
    return result


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
