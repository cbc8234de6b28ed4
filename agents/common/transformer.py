"""Transformer pieces shared by the zoo's sequence models (DT, RADT, the Delta-IRIS world model).

- :func:`make_norm`: ``layernorm`` | ``layernorm_nobias`` | ``rmsnorm``, affine or not (adaptive norms modulate an
  affine-free one).
- :class:`Attention`: multi-head attention with separate q/k/v projections whose K/V can come from an earlier layer
  (cross-layer attention, Brandon et al. 2024, "Reducing Transformer Key-Value Cache Size with Cross-Layer
  Attention": with ``cla_factor=2`` the first layer of each adjacent pair computes K/V and the second reuses them,
  so there is one K/V projection and one cached K/V per pair).
- :class:`KVCache`: the keys and values of the tokens seen so far, one entry per K/V-producing layer, so that
  autoregressive generation feeds only the new tokens.
- :class:`Block` / :class:`GPT`: pre-norm causal blocks (GPT-2 layout) built from the above.

Masks are additive float tensors (0 where a query may attend, :data:`MASKED` where it may not) of shape
``[T_q, T_k]`` or ``[B, 1, T_q, T_k]``; a finite large negative keeps a fully masked row (a padded query) finite,
and ``exp(MASKED)`` is exactly 0 in float32, so no information flows through a masked position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("layernorm", "layernorm_nobias", "rmsnorm")
MASKED = -1e9


def make_norm(kind: str, dim: int, affine: bool = True, eps: float = 1e-5) -> nn.Module:
    """A normalization layer by name. ``affine=False`` drops the learned scale and bias whatever ``kind`` says."""
    if kind not in NORMS:
        raise ValueError(f"norm={kind!r} is not allowed; choose one of: {', '.join(NORMS)}")
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps, elementwise_affine=affine)
    return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine, bias=affine and kind == "layernorm")


def kv_source_layers(n_layers: int, cla_factor: int) -> list[int]:
    """For each layer, the index of the layer whose K/V it uses: itself, or the first layer of its CLA group."""
    if int(cla_factor) < 1:
        raise ValueError(f"cla_factor={cla_factor}; expected an integer >= 1 (1: every layer has its own K/V)")
    return [i - i % cla_factor for i in range(n_layers)]


# ----------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------
def causal_mask(n_query: int, n_key: int, device: torch.device | None = None) -> torch.Tensor:
    """``[n_query, n_key]`` additive mask: query ``i`` is token ``n_key - n_query + i`` and sees keys up to itself."""
    q = torch.arange(n_key - n_query, n_key, device=device)[:, None]
    k = torch.arange(n_key, device=device)[None, :]
    return torch.where(k <= q, 0.0, MASKED)


def step_causal_mask(query_steps: torch.Tensor, key_steps: torch.Tensor) -> torch.Tensor:
    """Additive mask letting a token of step ``t`` see the keys of steps ``<= t`` (RADT's step-level causality).

    :param query_steps: ``[T_q]`` step index of each query token
    :param key_steps: ``[T_k]`` step index of each key token
    """
    return torch.where(key_steps[None, :] <= query_steps[:, None], 0.0, MASKED)


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1, T_k]`` additive mask from ``valid [B, T_k]`` (bool): padded keys are never attended to."""
    return torch.where(valid, 0.0, MASKED)[:, None, None, :]


# ----------------------------------------------------------------------------------------------------------------
# Attention with K/V shared across layers, and its cache
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class KVCache:
    """Keys and values of past tokens: ``entries[name]`` = ``(k, v)``, each ``[B, heads, T, head_dim]``.

    ``name`` identifies a K/V-producing layer (e.g. ``"self.0"``); layers that share K/V (CLA) read the entry of
    their source layer, so the cache holds one entry per group.
    """

    entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def append(self, name: str, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' ``k``/``v`` to entry ``name`` and return the whole entry."""
        if name in self.entries:
            past_k, past_v = self.entries[name]
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        self.entries[name] = (k, v)
        return k, v

    def length(self, name: str) -> int:
        return self.entries[name][0].shape[2] if name in self.entries else 0

    @property
    def num_tensors(self) -> int:
        return 2 * len(self.entries)

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.entries.values())


class Attention(nn.Module):
    """Multi-head attention, separate q/k/v projections, output projection and dropout.

    :param has_kv: False for a CLA layer that reuses the K/V of an earlier layer (it then has no K/V projection)
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, qkv_bias: bool = False, has_kv: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not divisible by heads={heads}")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        if has_kv:
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.has_kv = has_kv
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def kv(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project ``key``/``value`` inputs ``[B, T, dim]`` to per-head ``[B, heads, T, head_dim]``."""
        return self._split(self.k_proj(key)), self._split(self.v_proj(value))

    def forward(
        self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``query [B, T_q, dim]`` to projected ``k``/``v`` under the additive ``mask``."""
        q = self._split(self.q_proj(query))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        b, _, t, _ = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, t, -1)))


# ----------------------------------------------------------------------------------------------------------------
# A GPT stack (pre-norm), used by the Decision Transformer and the Delta-IRIS world model
# ----------------------------------------------------------------------------------------------------------------
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not allowed; choose one of: {', '.join(ACTIVATIONS)}")
        super().__init__(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, dim), nn.Dropout(dropout))


class Block(nn.Module):
    """Pre-norm causal block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        norm: str = "layernorm",
        mlp_ratio: float = 4.0,
        activation: str = "gelu",
        has_kv: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1, self.norm2 = make_norm(norm, dim), make_norm(norm, dim)
        self.attn = Attention(dim, heads, dropout, qkv_bias=qkv_bias, has_kv=has_kv)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout, activation)


class GPT(nn.Module):
    """A stack of pre-norm causal :class:`Block` s with a final norm, optionally with cross-layer K/V sharing.

    ``forward(x, mask, cache)`` takes the embeddings of new tokens ``[B, T, dim]``; with a :class:`KVCache` the
    tokens already in the cache precede them (their K/V are reused, the new ones appended). ``mask`` is the
    additive mask of the new queries over all keys (past + new); None means causal.
    """

    def __init__(
        self,
        dim: int,
        layers: int,
        heads: int,
        dropout: float = 0.0,
        norm: str = "layernorm",
        mlp_ratio: float = 4.0,
        activation: str = "gelu",
        cla_factor: int = 1,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.kv_sources = kv_source_layers(layers, cla_factor)
        self.blocks = nn.ModuleList(
            Block(dim, heads, dropout, norm, mlp_ratio, activation, has_kv=self.kv_sources[i] == i, qkv_bias=qkv_bias)
            for i in range(layers)
        )
        self.norm = make_norm(norm, dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        past = cache.length("self.0") if cache is not None else 0
        if mask is None:
            mask = causal_mask(x.shape[1], past + x.shape[1], x.device)
        shared: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, block in enumerate(self.blocks):
            h = block.norm1(x)
            source = self.kv_sources[i]
            if source == i:
                k, v = block.attn.kv(h, h)
                if cache is not None:
                    k, v = cache.append(f"self.{i}", k, v)
                shared[i] = (k, v)
            k, v = shared[source]
            x = x + block.attn(h, k, v, mask)
            x = x + block.mlp(block.norm2(x))
        return self.norm(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def init_gpt2_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 / RADT initialization: Linear and Embedding weights N(0, std), biases 0, norms at scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm | nn.RMSNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def sinusoid_table(n_positions: int, dim: int) -> torch.Tensor:
    """``[n_positions, dim]`` sinusoidal table: sin on even dimensions, cos on odd ones (Vaswani et al. 2017)."""
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2) / dim
    angle = position / torch.pow(10000.0, exponent.double())[None, :]
    table = torch.empty(n_positions, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
    return table.float()


__all__: Sequence[str] = (
    "ACTIVATIONS", "GPT", "MASKED", "MLP", "NORMS", "Attention", "Block", "KVCache", "causal_mask",
    "count_parameters", "init_gpt2_weights", "key_padding_mask", "kv_source_layers", "make_norm", "sinusoid_table",
    "step_causal_mask",
)
