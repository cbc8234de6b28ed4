"""Symlog and two-hot encoding over fixed buckets, for rewards and values predicted as distributions.

As ``symlog``, ``symexp``, ``two_hot`` and ``compute_softmax_over_buckets`` of ``src/utils.py`` in
github.com/vmicheli/delta-iris (Micheli et al. 2024; after DreamerV3, Hafner et al. 2023), written anew:

- ``symlog(x) = sign(x) log(1 + |x|)`` and its inverse ``symexp(y) = sign(y) (exp(|y|) - 1)``;
- ``two_hot(y)`` spreads ``y`` over its two neighbouring buckets of ``linspace(low, high, num_buckets)`` (255 buckets on
  [-20, 20] in Δ-IRIS) with weights linear in the distance, so that ``sum_k w_k b_k = y`` exactly; values outside
  the range are clipped to ``[low, high]`` first;
- ``bucket_mean(logits) = softmax(logits) . buckets``, the expectation the two-hot target is decoded with.

The network predicts logits over buckets of ``symlog(x)``; it is trained by cross-entropy against
``two_hot(symlog(x))`` and read back as ``symexp(bucket_mean(logits))``.
"""

from __future__ import annotations

import torch

NUM_BUCKETS, LOW, HIGH = 255, -20.0, 20.0


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def buckets(num_buckets: int = NUM_BUCKETS, low: float = LOW, high: float = HIGH,
            device: torch.device | str | None = None) -> torch.Tensor:
    if int(num_buckets) < 2 or not low < high:
        raise ValueError(f"num_buckets={num_buckets}, low={low}, high={high}: need num_buckets >= 2 and low < high")
    return torch.linspace(low, high, int(num_buckets), device=device)


def two_hot(x: torch.Tensor, num_buckets: int = NUM_BUCKETS, low: float = LOW, high: float = HIGH) -> torch.Tensor:
    """``x [...]`` -> weights ``[..., num_buckets]`` on the two buckets around ``clip(x, low, high)``, summing to 1."""
    b = buckets(num_buckets, low, high, x.device)
    x = x.detach().float().clamp(low, high)
    k = (torch.searchsorted(b, x.contiguous(), right=True) - 1).clamp(0, num_buckets - 2)  # b[k] <= x < b[k+1]
    left, right = b[k], b[k + 1]
    w_right = (x - left) / (right - left)
    out = x.new_zeros(*x.shape, num_buckets)
    out.scatter_(-1, k.unsqueeze(-1), (1 - w_right).unsqueeze(-1))
    out.scatter_add_(-1, (k + 1).unsqueeze(-1), w_right.unsqueeze(-1))
    return out


def bucket_mean(logits: torch.Tensor, low: float = LOW, high: float = HIGH) -> torch.Tensor:
    """``softmax(logits [..., K]) . buckets`` -> ``[...]`` (on the symlog scale when the targets were symlogged)."""
    return torch.softmax(logits.float(), dim=-1) @ buckets(logits.shape[-1], low, high, logits.device)


def two_hot_loss(logits: torch.Tensor, x: torch.Tensor, low: float = LOW, high: float = HIGH) -> torch.Tensor:
    """Cross-entropy of ``logits [N, K]`` against ``two_hot(symlog(x [N]))``, averaged over ``N``."""
    target = two_hot(symlog(x), logits.shape[-1], low, high)
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def decode(logits: torch.Tensor, low: float = LOW, high: float = HIGH) -> torch.Tensor:
    """The value a two-hot head predicts: ``symexp(bucket_mean(logits))``."""
    return symexp(bucket_mean(logits, low, high))
