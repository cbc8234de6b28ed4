"""``train/grad_norm`` for SB3's own algorithms, whose ``train()`` clips the gradients but discards the norm.

Rather than fork SB3's ``train()``, each parameter gets a post-accumulate-grad hook (called by autograd once the
parameter's gradient of a ``backward()`` is complete, before any clipping) that adds its squared norm to a running
sum, and the optimizer gets a step pre-hook that turns the sum into the total L2 norm of that update, logs it with
``logger.record_mean`` (the mean over the updates of one logging interval, as SB3 logs its losses) and resets the
sum. The value is the norm before clipping, the one ``clip_grad_norm_`` returns, as DT/RADT and ACT log it.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def log_grad_norm(algorithm: Any, optimizer: torch.optim.Optimizer, tag: str = "train/grad_norm") -> None:
    """Log the pre-clipping gradient norm of every step of ``optimizer`` as ``tag`` through ``algorithm.logger``."""
    squared: list[torch.Tensor] = []  # per parameter, kept as tensors: one host sync per update, not per parameter

    def accumulate(param: torch.Tensor) -> None:
        if param.grad is not None:
            squared.append(param.grad.detach().pow(2).sum())

    def record(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        logger = getattr(algorithm, "_logger", None)
        if logger is not None:
            logger.record_mean(tag, math.sqrt(float(torch.stack(squared).sum())) if squared else 0.0)
        squared.clear()

    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(accumulate)
    optimizer.register_step_pre_hook(record)
