"""Optimizers the zoo offers beyond each paper's own: AdEMAMix, and the name -> optimizer choice of every agent.

AdEMAMix (Pagliardini, Ablin, Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older",
https://arxiv.org/abs/2409.03137, Algorithm 1) is Adam with a second, slow EMA of the gradients mixed into the
numerator. For each parameter theta with gradient g at step t = 1, 2, ...:

    m1 = beta1 m1 + (1 - beta1) g                  fast EMA (Adam's first moment)
    m2 = beta3(t) m2 + (1 - beta3(t)) g            slow EMA, no bias correction
    nu = beta2 nu + (1 - beta2) g^2                Adam's second moment
    m1_hat = m1 / (1 - beta1^t),  nu_hat = nu / (1 - beta2^t)
    theta = theta - lr ((m1_hat + alpha(t) m2) / (sqrt(nu_hat) + eps) + lambda theta)

The weight decay lambda is decoupled and scaled by the learning rate, as in AdamW; with alpha = 0 the update is
AdamW's exactly (whatever beta3). The warm-up schedulers of the paper (Sec. 3, "Dealing with instabilities"), over
``T = T_alpha_beta3`` steps, both ending at their final value from step T on:

    alpha(t) = min(t alpha / T, alpha)                                               linear
    beta3(t) = min(exp(ln(beta_s) ln(beta3) / ((1 - t/T) ln(beta3) + (t/T) ln(beta_s))), beta3),  beta_s = beta1

the second being linear in the half-life ``ln(0.5) / ln(beta)`` of the EMA rather than in beta (the official code's
``linear_hl_warmup_scheduler``, written there through that half-life). Without ``T_alpha_beta3`` there is no
warm-up: alpha(t) = alpha, beta3(t) = beta3.

Sources: the paper's Algorithm 1 and Sec. 3, and the authors' PyTorch code (github.com/apple/ml-ademamix,
pytorch/ademamix.py), read for the update order and the schedulers; this implementation is written here. It keeps
torch's AdamW operation order (decay, then ``lerp`` of the moments, then one ``addcdiv``) so that alpha = 0
reproduces ``torch.optim.AdamW`` to the last bit on CPU. The optimizer state is tensors plus an integer step, so it
goes into the zoo's safetensors checkpoints like Adam's.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

OPTIMIZERS = ("adamw", "adam", "ademamix")


def alpha_schedule(step: int, alpha: float, warmup: int | None) -> float:
    """alpha(t) = min(t alpha / T, alpha): linear warm-up from 0 to ``alpha`` over ``warmup`` steps."""
    if warmup is None or step >= warmup:
        return alpha
    return min(step * alpha / warmup, alpha)


def beta3_schedule(step: int, beta3: float, beta_start: float, warmup: int | None) -> float:
    """beta3(t): from ``beta_start`` to ``beta3`` over ``warmup`` steps, linearly in the EMA's half-life."""
    if warmup is None or step >= warmup or beta3 <= 0.0:
        return beta3
    a = step / warmup
    if beta_start <= 0.0:  # ln(0) = -inf: the formula's limit, exp(ln(beta3) / a)
        return beta3 ** (1.0 / a) if a > 0 else 0.0
    log_start, log_end = math.log(beta_start), math.log(beta3)
    return min(math.exp(log_start * log_end / ((1.0 - a) * log_end + a * log_start)), beta3)


class AdEMAMix(torch.optim.Optimizer):
    """AdEMAMix (Pagliardini et al. 2024, Algorithm 1); see the module docstring for the update.

    :param params: parameters or parameter groups (every hyperparameter below may be set per group)
    :param lr: learning rate
    :param betas: ``(beta1, beta2, beta3)``: fast EMA, second moment, slow EMA
    :param alpha: weight of the slow EMA in the numerator
    :param eps: added to ``sqrt(nu_hat)``
    :param weight_decay: lambda, decoupled and multiplied by ``lr`` as in AdamW
    :param T_alpha_beta3: warm-up steps of alpha and beta3 (the paper's ``T_alpha = T_beta3``); None: no warm-up.
        With a large beta3 (0.9999) the paper warms up over the whole run (T = the number of steps).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        T_alpha_beta3: int | None = None,  # noqa: N803 (the paper's name)
    ) -> None:
        _check_hyperparameters(lr, betas, alpha, eps, weight_decay, T_alpha_beta3)
        defaults = dict(lr=lr, betas=tuple(betas), alpha=alpha, eps=eps, weight_decay=weight_decay,
                        T_alpha_beta3=T_alpha_beta3)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its own hyperparameters (any of the constructor's) are checked like the defaults."""
        _check_hyperparameters(**{key: param_group.get(key, value) for key, value in self.defaults.items()})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; ``closure`` re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps, decay, warmup = group["lr"], group["eps"], group["weight_decay"], group["T_alpha_beta3"]
            beta1, beta2, beta3_final = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("AdEMAMix does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)  # m1
                    state["exp_avg_slow"] = torch.zeros_like(param, memory_format=torch.preserve_format)  # m2
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)  # nu
                state["step"] += 1
                t = state["step"]
                alpha = alpha_schedule(t, group["alpha"], warmup)
                beta3 = beta3_schedule(t, beta3_final, beta1, warmup)
                exp_avg, exp_avg_slow, exp_avg_sq = state["exp_avg"], state["exp_avg_slow"], state["exp_avg_sq"]
                # decoupled weight decay: theta <- theta - lr lambda theta (AdamW's order: before the moments)
                if decay != 0:
                    param.mul_(1 - lr * decay)
                exp_avg.lerp_(grad, 1 - beta1)  # m1 = beta1 m1 + (1 - beta1) g
                exp_avg_slow.lerp_(grad, 1 - beta3)  # m2 = beta3(t) m2 + (1 - beta3(t)) g
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # nu = beta2 nu + (1 - beta2) g^2
                bias_correction1 = 1 - beta1**t
                denom = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(eps)  # sqrt(nu_hat) + eps
                # (m1_hat + alpha m2) = (m1 + alpha (1 - beta1^t) m2) / (1 - beta1^t): with alpha = 0 the numerator
                # is m1 itself and the step AdamW's, operation for operation
                numerator = exp_avg.add(exp_avg_slow, alpha=alpha * bias_correction1) if alpha != 0 else exp_avg
                param.addcdiv_(numerator, denom, value=-lr / bias_correction1)
        return loss


def _check_hyperparameters(
    lr: float, betas: Any, alpha: float, eps: float, weight_decay: float, T_alpha_beta3: int | None,  # noqa: N803
) -> None:
    if not lr >= 0.0:
        raise ValueError(f"AdEMAMix lr={lr}; expected a number >= 0")
    if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"AdEMAMix betas={list(betas)}; expected three numbers in [0, 1): beta1, beta2, beta3")
    if not alpha >= 0.0:
        raise ValueError(f"AdEMAMix alpha={alpha}; expected a number >= 0")
    if not eps >= 0.0:
        raise ValueError(f"AdEMAMix eps={eps}; expected a number >= 0")
    if not weight_decay >= 0.0:
        raise ValueError(f"AdEMAMix weight_decay={weight_decay}; expected a number >= 0")
    if T_alpha_beta3 is not None and (isinstance(T_alpha_beta3, bool) or not isinstance(T_alpha_beta3, int)
                                      or T_alpha_beta3 < 1):
        raise ValueError(f"AdEMAMix T_alpha_beta3={T_alpha_beta3!r}; expected an integer >= 1 or null (no warm-up)")


_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "ademamix": AdEMAMix,
}


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class of ``name`` (one of :data:`OPTIMIZERS`), for SB3's ``policy_kwargs.optimizer_class``."""
    if name not in _CLASSES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return _CLASSES[name]


def check_optimizer_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments that the optimizer ``name`` does not take (before anything is built); ``lr`` is
    the agent's ``learning_rate``, never one of them."""
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"optimizer_kwargs={kwargs!r}; expected a dict of {name}'s arguments, e.g. {{alpha: 8}}")
    allowed = [p for p in inspect.signature(optimizer_class(name)).parameters if p not in ("self", "params", "lr")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"optimizer_kwargs.{unknown[0]} is not an argument of {name}; allowed: {', '.join(allowed)}")


def make_optimizer(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], name: str, lr: float, weight_decay: float = 0.0,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` (``adamw``, ``adam`` or ``ademamix``) over ``params``.

    ``weight_decay`` is decoupled for ``adamw`` and ``ademamix`` and an L2 term of the gradient for ``adam``
    (torch's meanings); ``kwargs`` are the optimizer's other arguments (``betas``, ``eps``, ``alpha``, ...).
    """
    check_optimizer_kwargs(name, {"weight_decay": weight_decay, **kwargs})
    return optimizer_class(name)(params, lr=lr, weight_decay=weight_decay, **kwargs)


__all__ = ["OPTIMIZERS", "AdEMAMix", "alpha_schedule", "beta3_schedule", "check_optimizer_kwargs",
           "make_optimizer", "optimizer_class"]
