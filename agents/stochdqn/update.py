"""The gradient step of the Q-network, without the per-call Python layers of torch's helpers.

StochDQN's Q-network is small (about 10^4 parameters in 7 tensors) and it takes one gradient step per env step, so
the arithmetic of clipping and Adam costs less than the generic code around it: grouping tensors by device and
dtype, profiler ranges, hooks, argument checks. The functions below run the same kernels with the same arguments in
the same order as torch's own, so they give the same values bit for bit; what they do not cover goes through torch.
"""

from __future__ import annotations

import torch
from torch.optim import optimizer as _optimizer_module

# torch's registries of global optimizer hooks: a step with hooks (or a torch without these names) takes torch's path
_GLOBAL_HOOKS = tuple(
    getattr(_optimizer_module, name, None) for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
)
# options of a param group that the direct call below does not implement: it needs all of them False
_UNSUPPORTED_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay", "foreach")


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)`` for gradients on one device and of one
    dtype: the same kernels in the same order (so the same values), without the per-call grouping and checks.
    Returns the total norm before clipping."""
    total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total_norm + 1e-6), max=1.0))
    return total_norm


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad()`` (set_to_none=True) without its profiler range and dynamo wrapper."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = None


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``. For a fused ``torch.optim.Adam`` (the policy's default) whose state exists (every step
    after the first), without hooks or gradient scaling, the fused kernel is called directly, as
    ``torch.optim.adam._fused_adam`` would call it; anything else goes through ``optimizer.step()``."""
    groups = _fused_adam_groups(optimizer)
    if groups is None:
        optimizer.step()
        return
    with torch.no_grad():
        for group, params, states in groups:
            steps = [state["step"] for state in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                params, [p.grad for p in params], [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states], [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None,
                found_inf=None,
            )


def _fused_adam_groups(optimizer: torch.optim.Optimizer) -> list[tuple[dict, list, list]] | None:
    """(group, parameters with a gradient, their states) per param group, or None when the direct call does not
    apply."""
    if (
        type(optimizer) is not torch.optim.Adam
        or None in _GLOBAL_HOOKS
        or any(_GLOBAL_HOOKS)
        or optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or getattr(optimizer, "grad_scale", None) is not None
        or getattr(optimizer, "found_inf", None) is not None
        or not hasattr(torch, "_fused_adam_")
    ):
        return None
    groups = []
    for group in optimizer.param_groups:
        if (not group.get("fused") or any(group.get(flag) for flag in _UNSUPPORTED_FLAGS)
                or isinstance(group["lr"], torch.Tensor)):  # torch moves a tensor lr to each device first
            return None
        params = [p for p in group["params"] if p.grad is not None]
        states = [optimizer.state.get(p) for p in params]
        if any(not state or "exp_avg" not in state for state in states):  # the first step creates the state
            return None
        groups.append((group, params, states))
    return groups
