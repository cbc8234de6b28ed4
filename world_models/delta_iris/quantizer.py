"""The vector quantizer of the Δ-IRIS tokenizer: cosine nearest code, EMA codebook, dead-code revival.

As ``src/models/tokenizer/quantizer.py`` of github.com/vmicheli/delta-iris (Micheli, Alonso, Fleuret, ICML 2024),
written anew. A token's latent patch ``p`` (``input_dim`` values) becomes ``z = normalize(W_pre p + b)``
(``codebook_dim``), its token is ``argmax_c <z, e_c>`` over the unit-norm codes ``e_c``, and ``q = e_token`` goes on
with a straight-through gradient ``q_st = z + sg(q - z)``. The codebook is not trained by gradient: after each
training batch (:meth:`Quantizer.update_codebook`, ``N`` vectors ``z_n`` with tokens ``k_n``)::

    m_c      = normalize(sum_{n: k_n = c} z_n)                    (0 for a code no vector chose)
    e_c     <- (1 - 0.01) e_c + 0.01 m_c                           (lerp 1 - 0.99; unused codes only shrink)
    f_c     <- (1 - 0.02) f_c + 0.02 |{n: k_n = c}| / N            (usage EMA, lerp 1 - 0.98, starts at 1 / C)
    H        = -sum_c f_c log2 f_c                                   (bits)
    revive if (H < 1  or  max_updates is None  or  num_updates < max_updates)  and  H < log2(C) - 2
              (max_updates = max_codebook_updates_with_revival):
        every code with f_c < 1 / (10 C) is expired; up to N of them (at random) get a distinct random z_n of the
        batch as their new code and f_c = 1 / C
    e_c     <- normalize(e_c);   num_updates += 1

Data-parallel training (:attr:`Quantizer.all_reduce_statistics`, set by the agent on every rank): the batch
statistics ``sum_{n: k_n = c} z_n``, ``|{n: k_n = c}|`` and ``N`` are summed over the ranks before the update, so
every rank applies the update of the combined batch and the codebooks stay identical (DistributedDataParallel's
broadcast of rank 0's buffers alone would keep them equal but drop the other ranks' batches); a revival is rank 0's
(from its own ``z_n``), broadcast to the others.

Crafter uses ``max_codebook_updates_with_revival = 0`` (revival only on collapse, ``H < 1``), Atari 400 (the
tokenizer's first epoch). The projection, the matching and the update run in float32, also under autocast.

Initial codes are uniform in ``[-1/C, 1/C]`` as official, so the first update moves the used codes most of the way to
their batch mean (their norm is ~0.005 against 0.01 for the lerp target). Deviation: codes are normalized when they are
read (matching, ``q``, :meth:`Quantizer.embed_codes`), which only changes the first batch before any update (the
official matches by a dot product with the raw initial codes there).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

CODEBOOK_LERP = 1 - 0.99
FREQS_LERP = 1 - 0.98


class Quantized(NamedTuple):
    """``z``: normalized projections ``[N, D]`` (float32); ``q``: straight-through codes ``[N, D]``; ``tokens [N]``."""

    z: torch.Tensor
    q: torch.Tensor
    tokens: torch.Tensor


class Quantizer(nn.Module):
    """Projection to ``codebook_dim``, cosine matching against ``codebook_size`` codes and the projection back.

    :param codebook_size: number of codes ``C`` (a power of 2, as official).
    :param codebook_dim: dimension ``D`` of a code.
    :param input_dim: dimension of a token's latent patch.
    :param max_codebook_updates_with_revival: updates during which dead codes may be revived whatever the entropy
        (None: always; 0: only on collapse, when the usage entropy falls under 1 bit).
    """

    codebook: torch.Tensor
    codeword_freqs: torch.Tensor
    num_updates: torch.Tensor
    #: sum the statistics of the EMA update over the ranks of the default process group (data-parallel training)
    all_reduce_statistics: bool = False

    def __init__(
        self, codebook_size: int, codebook_dim: int, input_dim: int, max_codebook_updates_with_revival: int | None = 0
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.revival_entropy_threshold = int(math.log2(codebook_size)) - 2
        self.max_codebook_updates_with_revival = max_codebook_updates_with_revival
        self.pre_quant_proj = nn.Linear(input_dim, codebook_dim)
        self.post_quant_proj = nn.Linear(codebook_dim, input_dim)
        bound = 1.0 / codebook_size
        self.register_buffer("codebook", torch.empty(codebook_size, codebook_dim).uniform_(-bound, bound))
        self.register_buffer("codeword_freqs", torch.full((codebook_size,), 1.0 / codebook_size))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def codes(self) -> torch.Tensor:
        """The unit-norm codes ``[C, D]``."""
        return F.normalize(self.codebook, dim=-1)

    def forward(self, patches: torch.Tensor) -> Quantized:
        """Latent patches ``[N, input_dim]`` -> :class:`Quantized` (float32, autocast off)."""
        with torch.autocast(patches.device.type, enabled=False):
            z = F.normalize(self.pre_quant_proj(patches.float()), dim=-1)
            codes = self.codes()
            tokens = (z.detach() @ codes.t()).argmax(dim=-1)  # cosine similarity: both sides have unit norm
            q = codes[tokens]
            return Quantized(z, z + (q - z).detach(), tokens)

    def embed_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[...]`` -> their unit-norm codes ``[..., D]``."""
        return self.codes()[tokens]

    def codebook_entropy(self) -> float:
        """Entropy in bits of the usage EMA ``f``."""
        p = self.codeword_freqs[self.codeword_freqs > 0]
        return float(-(p * p.log2()).sum())

    def can_revive(self, entropy: float) -> bool:
        limit = self.max_codebook_updates_with_revival
        may = entropy < 1 or limit is None or int(self.num_updates) < limit
        return may and entropy < self.revival_entropy_threshold

    @torch.no_grad()
    def update_codebook(self, z: torch.Tensor, tokens: torch.Tensor) -> dict[str, float]:
        """The EMA update and dead-code revival of the module docstring, from normalized ``z [N, D]`` and their
        ``tokens [N]``. Returns ``{"codewords_revived": number of codes replaced}``."""
        with torch.autocast(z.device.type, enabled=False):
            return self._update_codebook(z, tokens)

    def _update_codebook(self, z: torch.Tensor, tokens: torch.Tensor) -> dict[str, float]:
        size, dim = self.codebook.shape
        z, tokens = z.detach().float().reshape(-1, dim), tokens.reshape(-1)
        one_hot = F.one_hot(tokens, size).float()  # [N, C]
        stats = torch.cat([(one_hot.t() @ z).flatten(), one_hot.sum(dim=0), z.new_tensor([z.size(0)])])
        across_ranks = self._across_ranks()
        if across_ranks:
            dist.all_reduce(stats)  # sums over the ranks: the statistics of the combined batch
        sums, counts, n = stats[: size * dim].view(size, dim), stats[size * dim : -1], stats[-1]
        means = F.normalize(sums, dim=-1)  # normalize(sum) = normalize(mean); 0 for unused codes
        self.codebook.lerp_(means, CODEBOOK_LERP)
        self.codeword_freqs.lerp_(counts / n.clamp(min=1), FREQS_LERP)

        revived = torch.zeros(1, device=z.device)
        if self.can_revive(self.codebook_entropy()):  # the same decision on every rank: the same frequencies
            expired = torch.nonzero(self.codeword_freqs < 1 / (10 * self.codebook_size)).flatten()
            expired = expired[torch.randperm(expired.numel(), device=expired.device)[: z.size(0)]]
            sources = torch.randperm(z.size(0), device=z.device)[: expired.numel()]
            self.codebook[expired] = z[sources]
            self.codeword_freqs[expired] = 1 / self.codebook_size
            revived += expired.numel()
            if across_ranks:  # rank 0's revival on every rank
                state = torch.cat([self.codebook.flatten(), self.codeword_freqs, revived])
                dist.broadcast(state, src=0)
                self.codebook.copy_(state[: size * dim].view(size, dim))
                self.codeword_freqs.copy_(state[size * dim : -1])
                revived = state[-1:]
        num_revived = int(revived.item())

        self.codebook.copy_(F.normalize(self.codebook, dim=-1))
        self.num_updates += 1
        return {"codewords_revived": float(num_revived)}

    def _across_ranks(self) -> bool:
        return self.all_reduce_statistics and dist.is_available() and dist.is_initialized() \
            and dist.get_world_size() > 1
