"""Q-networks for Stochastic Q-learning whose cost follows the candidate set, not the number of actions N.

:class:`ActionQNetwork` computes Q(s, a) from the state and a representation of the action, as the official
code does (``SQNetwork``: concat(state, action vector) -> 64 -> 64 -> 1). Its first layer is split,
``W [s; a] = W_s s + W_a a``, so that ``W_s s`` is computed once per state and only ``W_a a`` per candidate:
B states x W candidates cost one state pass and one batched pass over B*W rows. Actions are represented by
an :class:`ActionEncoder` computed arithmetically from the index (no table of N entries):

- ``{"type": "grid", "levels": L, "dims": d}``: the discretized continuous action, ``L`` uniform levels per
  dimension in [-1, 1], first dimension most significant (the ``Discretize`` wrapper of ``envs.large_action``);
- ``{"type": "bits", "bits": m}``: the action's m index bits as +-1 (the synthetic 2^20-action task);
- ``{"type": "embedding", "n": N, "dim": k}``: a learned embedding for abstract actions (a table of N rows,
  the only representation whose size grows with N).

:class:`HeadQNetwork` is the usual N-head network (one output per action), an option for small N: its cost is
O(N) per state whatever the candidate set.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPRESENTATIONS = ("grid", "bits", "embedding")


class ActionEncoder(nn.Module):
    """Action index -> action vector, computed from the index (``grid``, ``bits``) or learned (``embedding``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        kind = spec.get("type")
        if kind not in REPRESENTATIONS:
            raise ValueError(f"unknown action representation {kind!r}; choose one of: {', '.join(REPRESENTATIONS)}")
        self.kind = kind
        if kind == "grid":
            self.levels, dims = int(spec["levels"]), int(spec["dims"])
            if self.levels < 2 or dims < 1:
                raise ValueError(f"grid representation needs levels >= 2 and dims >= 1, got {spec}")
            # place value of each dimension's digit, first dimension most significant
            self.register_buffer("radix", self.levels ** torch.arange(dims - 1, -1, -1, dtype=torch.int64))
            self.dim = dims
            # (base, digits, first digit most significant, scale) of _digit_vectors
            self._digits = (self.levels, dims, True, np.float32(2.0 / (self.levels - 1)))
        elif kind == "bits":
            self.dim = int(spec["bits"])
            self.register_buffer("shifts", torch.arange(self.dim, dtype=torch.int64))
            self._digits = (2, self.dim, False, np.float32(2.0))
        else:
            self.dim = int(spec.get("dim", 32))
            self.embedding = nn.Embedding(int(spec["n"]), self.dim)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """int64 indices [...] -> float vectors [..., dim]."""
        if self.kind != "embedding" and actions.device.type == "cpu" and actions.dtype == torch.int64:
            # the same float32 values as the torch ops below, in one compiled loop instead of five tensor ops
            vectors = _digit_vectors(actions.reshape(-1).numpy(), *self._digits)
            return torch.from_numpy(vectors).view(*actions.shape, self.dim)
        if self.kind == "grid":
            digits = torch.div(actions.unsqueeze(-1), self.radix, rounding_mode="floor") % self.levels
            return digits.float() * (2.0 / (self.levels - 1)) - 1.0
        if self.kind == "bits":
            return ((actions.unsqueeze(-1) >> self.shifts) & 1).float() * 2.0 - 1.0
        return self.embedding(actions)


@numba.njit(cache=True)
def _digit_vectors(actions: np.ndarray, base: np.int64, dims: np.int64, first_most_significant: bool,
                   scale: np.float32) -> np.ndarray:
    """float32 [n, dims]: digit * scale - 1 for the ``dims`` base-``base`` digits of each index (>= 0), first digit
    most significant (``grid``) or least significant (``bits``); float32 arithmetic as in torch."""
    out = np.empty((actions.size, dims), dtype=np.float32)
    one = np.float32(1.0)
    bits = np.int64(0)  # base = 2^bits: digits are bit fields (an integer division costs tens of cycles)
    while (np.int64(1) << bits) < base:
        bits += 1
    power_of_two = (np.int64(1) << bits) == base
    for i in range(actions.size):
        rest = actions[i]
        for j in range(dims):
            column = dims - 1 - j if first_most_significant else j
            if power_of_two:
                digit = rest & (base - 1)
                rest >>= bits
            else:
                digit = rest % base
                rest //= base
            out[i, column] = np.float32(digit) * scale - one
    return out


class ActionQNetwork(nn.Module):
    """Q(s, a) = MLP([s; phi(a)]) with the first layer split so that candidates share the state's pass.

    :param obs_dim: size of the (flattened) observation
    :param action_spec: the action representation (see :class:`ActionEncoder`)
    :param net_arch: hidden sizes (the official code: [64, 64])
    """

    def __init__(self, obs_dim: int, action_spec: dict[str, Any], net_arch: list[int] | None = None) -> None:
        super().__init__()
        net_arch = list(net_arch or [64, 64])
        self.encoder = ActionEncoder(action_spec)
        self.state_in = nn.Linear(obs_dim, net_arch[0])
        self.action_in = nn.Linear(self.encoder.dim, net_arch[0], bias=False)
        layers: list[nn.Module] = [nn.ReLU()]
        for size_in, size_out in zip(net_arch[:-1], net_arch[1:], strict=True):
            layers += [nn.Linear(size_in, size_out), nn.ReLU()]
        layers.append(nn.Linear(net_arch[-1], 1))
        self.head = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Q-values of each state's candidates: obs [B, obs_dim], candidates int64 [B, W] -> [B, W]."""
        state = F.linear(obs, self.state_in.weight, self.state_in.bias).unsqueeze(1)
        hidden = F.linear(self.encoder(candidates), self.action_in.weight).add_(state)  # in place: same sums
        return self._head(hidden).squeeze(-1)

    def q_at(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s_i, a_i), one action per state: obs [B, obs_dim], actions int64 [B] -> [B]. The same values as
        ``forward(obs, actions[:, None])[:, 0]``, on 2-D tensors (fewer ops in the forward and backward passes)."""
        state = F.linear(obs, self.state_in.weight, self.state_in.bias)
        return self._head(F.linear(self.encoder(actions), self.action_in.weight).add_(state)).squeeze(-1)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``self.head(hidden)`` with the layers' functions called directly and ReLU in place (same values): this
        runs three times per env step on tensors of a few thousand numbers, where the modules' call overhead
        outweighs the arithmetic. ``hidden`` must be a fresh tensor (it is overwritten)."""
        for layer in self.head:
            hidden = F.linear(hidden, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else hidden.relu_()
        return hidden

    def q_all(self, obs: torch.Tensor, n_actions: int, chunk: int = 4096) -> torch.Tensor:
        """Q-values of every action, [B, N], in chunks of actions (the full max that Stochastic Q-learning avoids)."""
        state = F.linear(obs, self.state_in.weight, self.state_in.bias).unsqueeze(1)
        values = []
        for start in range(0, n_actions, chunk):
            actions = torch.arange(start, min(start + chunk, n_actions), device=obs.device)
            values.append(self._head(state + F.linear(self.encoder(actions), self.action_in.weight)).squeeze(-1))
        return torch.cat(values, dim=1)


class HeadQNetwork(nn.Module):
    """The N-head Q-network (one output per action), evaluated for all N actions then gathered."""

    def __init__(self, obs_dim: int, n_actions: int, net_arch: list[int] | None = None) -> None:
        super().__init__()
        sizes = [obs_dim, *([64, 64] if net_arch is None else net_arch)]  # [] gives a linear Q table
        layers: list[nn.Module] = []
        for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(size_in, size_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.net(obs).gather(1, candidates)

    def q_at(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s_i, a_i), one action per state: obs [B, obs_dim], actions int64 [B] -> [B]."""
        return self.net(obs).gather(1, actions[:, None]).squeeze(1)

    def q_all(self, obs: torch.Tensor, n_actions: int, chunk: int = 0) -> torch.Tensor:
        return self.net(obs)
