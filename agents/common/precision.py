"""Training precision of the transformer agents (DT, RADT, ACT, Δ-IRIS): fp32, bf16 autocast, or ``auto``.

bf16 autocast pays only where bfloat16 matrix products are native: CUDA GPUs that support bf16, and CPUs with
AVX512-BF16 or AMX (oneDNN's ``_is_mkldnn_bf16_supported``). On other CPUs torch emulates them: on an AVX2-only
AMD EPYC here a 3,840 x 64 x 256 linear layer took 87 ms under bf16 autocast against 8.9 ms in fp32 (2026-12-02,
one thread), and a DT benchmark run of the bf16 cpu preset trained 0.69 steps/s where the AMX machine it was sized on
did its 3,000 steps in about 6 min. ``auto`` (the cpu presets' choice) is bf16 where it is native and fp32 elsewhere,
resolved on every autocast from the hardware query, which is made once per process. A training run prints what it
resolved to and records it in its results.json (``runners.train.training_precision``).
"""

from __future__ import annotations

import functools

import torch

PRECISIONS = ("fp32", "bf16", "auto")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed; choose one of: {', '.join(PRECISIONS)}")
    return precision


def native_bf16(device: torch.device | str) -> bool:
    """Whether bfloat16 matrix products are native on ``device`` (see the module docstring)."""
    return _native_bf16(torch.device(device).type)


@functools.cache
def _native_bf16(device_type: str) -> bool:
    """The hardware query behind :func:`native_bf16`, once per device type (the training steps call it each step)."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: ``precision`` itself, or for ``auto`` bf16 where it is native on ``device``."""
    if check_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """bfloat16 autocast on ``device`` when ``precision`` resolves to bf16, else a disabled autocast."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")
