"""The two return-conditioned sequence models: Decision Transformer and the Return-Aligned Decision Transformer.

Both map a window of ``K`` steps (returns-to-go ``R``, states ``s``, actions ``a``, episode timesteps ``t``,
``valid`` marking the real steps of a left-padded window) to an action for every step, predicted from the output of
that step's state token through a linear layer and tanh:

- :class:`DecisionTransformer` (Chen et al. 2021; the DT of github.com/kzl/decision-transformer as used by the RADT
  repository): tokens ``(R_1, s_1, a_1, ..., R_K, s_K, a_K)``, each plus a learned timestep embedding, a LayerNorm,
  then causal GPT-2 blocks without position embeddings.
- :class:`ReturnAlignedDT` (Tanaka et al. 2024, arXiv 2402.03923; github.com/CyberAgentAILab/radt,
  gym/models/radt.py): the main sequence holds only ``(s_1, a_1, ..., s_K, a_K)`` (plus a sinusoidal timestep
  embedding through a linear layer); the returns-to-go are embedded as a separate sequence ``c`` that enters every
  block twice:

  * SeqRA: cross-attention from the state/action tokens to ``LayerNorm(c + pe)`` (keys) / ``LayerNorm(c)``
    (values), step-level causal (a token of step ``t`` sees ``R_1..R_t``), added through a learned gate
    ``x <- (1 + alpha) * seqra(x) + x`` with ``alpha = Linear(concat(seqra(x), x))`` zero-initialized;
  * StepRA: adaptive layer norm ``norm(x) * (1 + scale) + shift`` after self-attention, SeqRA and the MLP, the six
    (scale, shift) pairs from ``Linear(SiLU(c_t))`` of the token's own step, zero-initialized (a plain norm at
    initialization).

  With StepRA the blocks are post-norm, without it pre-norm, as in the official code. ``seqra=False`` /
  ``stepra=False`` give the paper's ablations.

Both support cross-layer K/V sharing (``cla_factor``) and KV-cached generation (:meth:`step`), which equals the
uncached forward pass over the same steps.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.common.transformer import (
    GPT,
    MLP,
    Attention,
    KVCache,
    causal_mask,
    init_gpt2_weights,
    key_padding_mask,
    kv_source_layers,
    make_norm,
    sinusoid_table,
    step_causal_mask,
)


class SequenceModel(nn.Module):
    """What both models share: embeddings of states and actions, the action head and the cached-step interface."""

    def __init__(self, state_dim: int, act_dim: int, embed_dim: int, context: int, max_ep_len: int) -> None:
        super().__init__()
        self.state_dim, self.act_dim, self.embed_dim = state_dim, act_dim, embed_dim
        self.context, self.max_ep_len = context, max_ep_len
        self.state_emb = nn.Linear(state_dim, embed_dim)
        self.action_emb = nn.Linear(act_dim, embed_dim)
        self.return_emb = nn.Linear(1, embed_dim)
        self.action_head = nn.Sequential(nn.Linear(embed_dim, act_dim), nn.Tanh())

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Actions ``[B, K, act_dim]`` predicted at every step of windows ``states [B, K, state_dim]``,
        ``actions [B, K, act_dim]``, ``returns_to_go [B, K, 1]``, ``timesteps [B, K]`` (int), ``valid [B, K]``."""
        raise NotImplementedError

    def step(
        self,
        cache: KVCache,
        step: int,
        state: torch.Tensor,
        return_to_go: torch.Tensor,
        timestep: torch.Tensor,
        prev: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The action of window step ``step`` given the cache of steps ``< step``.

        Feeds the previous step's action token (``prev = (action [B, act_dim], return_to_go [B, 1], timestep [B])``
        of step ``step - 1``, required when ``step > 0``) and this step's tokens (``state [B, state_dim]``,
        ``return_to_go [B, 1]``, ``timestep [B]``), and returns the action ``[B, act_dim]``.
        """
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------
# Decision Transformer
# ----------------------------------------------------------------------------------------------------------------
class DecisionTransformer(SequenceModel):
    """Chen et al. 2021. 3 tokens per step; GPT-2 blocks (pre-norm, q/k/v biases, 4x MLP) without positions."""

    def __init__(
        self,
        state_dim: int,
        act_dim: int,
        embed_dim: int = 128,
        n_layer: int = 3,
        n_head: int = 1,
        context: int = 20,
        max_ep_len: int = 1000,
        dropout: float = 0.1,
        activation: str = "gelu",
        norm: str = "layernorm",
        cla_factor: int = 1,
    ) -> None:
        super().__init__(state_dim, act_dim, embed_dim, context, max_ep_len)
        self.timestep_emb = nn.Embedding(max_ep_len, embed_dim)
        self.embed_norm = make_norm(norm, embed_dim)
        self.embed_drop = nn.Dropout(dropout)
        self.gpt = GPT(embed_dim, n_layer, n_head, dropout, norm, 4.0, activation, cla_factor, qkv_bias=True)
        init_gpt2_weights(self)

    def _tokens(self, states, actions, returns_to_go, timesteps) -> torch.Tensor:
        """``[B, 3K, E]``: ``R_t, s_t, a_t`` per step, each plus its timestep embedding, then LayerNorm."""
        time = self.timestep_emb(timesteps)
        tokens = torch.stack(
            [self.return_emb(returns_to_go) + time, self.state_emb(states) + time, self.action_emb(actions) + time],
            dim=2,
        )
        b, k = states.shape[:2]
        return self.embed_drop(self.embed_norm(tokens.reshape(b, 3 * k, self.embed_dim)))

    def forward(self, states, actions, returns_to_go, timesteps, valid=None):
        b, k = states.shape[:2]
        x = self._tokens(states, actions, returns_to_go, timesteps)
        mask = causal_mask(3 * k, 3 * k, x.device)
        if valid is not None:
            mask = mask + key_padding_mask(valid.repeat_interleave(3, dim=1))
        h = self.gpt(x, mask).reshape(b, k, 3, self.embed_dim)
        return self.action_head(h[:, :, 1])

    def step(self, cache, step, state, return_to_go, timestep, prev=None):
        time = self.timestep_emb(timestep)
        new = [self.return_emb(return_to_go) + time, self.state_emb(state) + time]
        if step > 0:
            prev_action, _, prev_timestep = prev
            new.insert(0, self.action_emb(prev_action) + self.timestep_emb(prev_timestep))
        x = self.embed_drop(self.embed_norm(torch.stack(new, dim=1)))
        h = self.gpt(x, cache=cache)
        return self.action_head(h[:, -1])


# ----------------------------------------------------------------------------------------------------------------
# RADT
# ----------------------------------------------------------------------------------------------------------------
class RADTBlock(nn.Module):
    """One RADT decoder block (post-norm with StepRA, pre-norm without), with optional SeqRA.

    :param has_kv: False when cross-layer attention makes this block reuse the K/V of the block before it
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        seqra: bool,
        stepra: bool,
        norm: str = "layernorm",
        has_kv: bool = True,
    ) -> None:
        super().__init__()
        self.seqra_on, self.stepra = seqra, stepra
        adaptive = dict(affine=False, eps=1e-6)  # StepRA modulates an affine-free norm
        self.norm1 = make_norm(norm, dim, **adaptive) if stepra else make_norm(norm, dim)
        self.norm3 = make_norm(norm, dim, **adaptive) if stepra else make_norm(norm, dim)
        self.attn = Attention(dim, heads, dropout, qkv_bias=False, has_kv=has_kv)
        if seqra:
            self.norm2 = make_norm(norm, dim, **adaptive) if stepra else make_norm(norm, dim)
            if has_kv:
                self.norm_k, self.norm_v = make_norm(norm, dim), make_norm(norm, dim)
            self.seqra = Attention(dim, heads, dropout, qkv_bias=False, has_kv=has_kv)
            self.gate = nn.Linear(2 * dim, dim)  # alpha of the official code (fc_alpha_ca)
        if stepra:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * (6 if seqra else 4)))
        self.mlp = MLP(dim, 4 * dim, dropout, "gelu")

    def zero_init(self) -> None:
        """StepRA's modulation and SeqRA's gate start at zero: a plain norm and an ungated residual."""
        if self.stepra:
            nn.init.zeros_(self.modulation[-1].weight)
            nn.init.zeros_(self.modulation[-1].bias)
        if self.seqra_on:
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def modulations(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(scale, shift) pairs for self-attention, SeqRA (when on) and the MLP, from per-token returns ``cond``."""
        chunks = self.modulation(cond).chunk(6 if self.seqra_on else 4, dim=-1)
        return [(chunks[i], chunks[i + 1]) for i in range(0, len(chunks), 2)]

    def cross_kv(self, attn: Attention, cond: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attn.kv(self.norm_k(cond + pe), self.norm_v(cond))

    def forward(
        self,
        x: torch.Tensor,
        self_kv: tuple[torch.Tensor, torch.Tensor],
        cross_kv: tuple[torch.Tensor, torch.Tensor] | None,
        token_cond: torch.Tensor,
        self_mask: torch.Tensor,
        cross_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``x [B, T, E]``: the new tokens; ``self_kv`` / ``cross_kv``: K/V of every visible token / return;
        ``token_cond [B, T, E]``: the return embedding of each token's step (StepRA)."""
        mods = iter(self.modulations(token_cond)) if self.stepra else None

        def adaptive(norm: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if mods is None:
                return norm(h)
            scale, shift = next(mods)
            return norm(h) * (1 + scale) + shift

        if self.stepra:  # post-norm: residual, then (modulated) norm
            x = adaptive(self.norm1, x + self.attn(x, *self_kv, self_mask))
            if self.seqra_on:
                x = adaptive(self.norm2, self._gated(self.seqra(x, *cross_kv, cross_mask), x))
            return adaptive(self.norm3, x + self.mlp(x))
        # pre-norm (RADT without StepRA)
        x = x + self.attn(self.norm1(x), *self_kv, self_mask)
        if self.seqra_on:
            x = self._gated(self.seqra(self.norm2(x), *cross_kv, cross_mask), x)
        return x + self.mlp(self.norm3(x))

    def _gated(self, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        alpha = self.gate(torch.cat([attended, x], dim=-1))
        return (1 + alpha) * attended + x


class ReturnAlignedDT(SequenceModel):
    """RADT: returns outside the main sequence, aligned through SeqRA and StepRA (see the module docstring)."""

    def __init__(
        self,
        state_dim: int,
        act_dim: int,
        embed_dim: int = 128,
        n_layer: int = 3,
        n_head: int = 1,
        context: int = 20,
        max_ep_len: int = 1000,
        dropout: float = 0.1,
        seqra: bool = True,
        stepra: bool = True,
        norm: str = "layernorm",
        cla_factor: int = 1,
    ) -> None:
        super().__init__(state_dim, act_dim, embed_dim, context, max_ep_len)
        self.seqra, self.stepra = seqra, stepra
        self.register_buffer("timestep_table", sinusoid_table(max_ep_len + context, embed_dim), persistent=False)
        self.timestep_emb = nn.Linear(embed_dim, embed_dim)
        self.kv_sources = kv_source_layers(n_layer, cla_factor)
        self.blocks = nn.ModuleList(
            RADTBlock(embed_dim, n_head, dropout, seqra, stepra, norm, has_kv=self.kv_sources[i] == i)
            for i in range(n_layer)
        )
        init_gpt2_weights(self)
        for block in self.blocks:
            block.zero_init()

    def _time(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.timestep_emb(self.timestep_table[timesteps])

    def _run(
        self,
        tokens: torch.Tensor,
        token_steps: torch.Tensor,
        cond: torch.Tensor,
        cond_pe: torch.Tensor,
        cond_steps: torch.Tensor,
        token_cond: torch.Tensor,
        self_mask: torch.Tensor,
        valid: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Run the blocks over new ``tokens [B, T, E]`` of window steps ``token_steps [T]``; ``cond [B, C, E]`` are
        the new return embeddings (steps ``cond_steps [C]``), appended to the cache's when there is one."""
        all_cond_steps = cond_steps
        if cache is not None and cache.length("cross.0"):
            all_cond_steps = torch.arange(cache.length("cross.0") + len(cond_steps), device=tokens.device)
        cross_mask = step_causal_mask(token_steps, all_cond_steps) if self.seqra else None
        if valid is not None and cross_mask is not None:
            cross_mask = cross_mask + key_padding_mask(valid)
        shared: dict[int, tuple] = {}
        x = tokens
        for i, block in enumerate(self.blocks):
            source = self.kv_sources[i]
            if source == i:
                self_kv = block.attn.kv(x, x) if block.stepra else block.attn.kv(block.norm1(x), block.norm1(x))
                cross_kv = block.cross_kv(block.seqra, cond, cond_pe) if self.seqra else None
                if cache is not None:
                    self_kv = cache.append(f"self.{i}", *self_kv)
                    if cross_kv is not None:
                        cross_kv = cache.append(f"cross.{i}", *cross_kv)
                shared[i] = (self_kv, cross_kv)
            self_kv, cross_kv = shared[source]
            x = block(x, self_kv, cross_kv, token_cond, self_mask, cross_mask)
        return x

    def forward(self, states, actions, returns_to_go, timesteps, valid=None):
        b, k = states.shape[:2]
        time = self._time(timesteps)
        tokens = torch.stack([self.state_emb(states) + time, self.action_emb(actions) + time], dim=2)
        tokens = tokens.reshape(b, 2 * k, self.embed_dim)
        cond = self.return_emb(returns_to_go)
        steps = torch.arange(k, device=states.device)
        self_mask = causal_mask(2 * k, 2 * k, states.device)
        if valid is not None:
            self_mask = self_mask + key_padding_mask(valid.repeat_interleave(2, dim=1))
        token_cond = cond.repeat_interleave(2, dim=1)
        h = self._run(tokens, steps.repeat_interleave(2), cond, time, steps, token_cond, self_mask, valid)
        return self.action_head(h.reshape(b, k, 2, self.embed_dim)[:, :, 0])

    def step(self, cache, step, state, return_to_go, timestep, prev=None):
        time = self._time(timestep)
        cond = self.return_emb(return_to_go)[:, None]
        tokens, token_cond, token_steps = [self.state_emb(state) + time], [cond[:, 0]], [step]
        if step > 0:
            prev_action, prev_return, prev_timestep = prev
            tokens.insert(0, self.action_emb(prev_action) + self._time(prev_timestep))
            token_cond.insert(0, self.return_emb(prev_return))  # StepRA of a token uses its own step's return
            token_steps.insert(0, step - 1)
        x = torch.stack(tokens, dim=1)
        past = cache.length("self.0")
        self_mask = causal_mask(x.shape[1], past + x.shape[1], x.device)
        steps = torch.tensor(token_steps, device=x.device)
        h = self._run(
            x, steps, cond, time[:, None], torch.tensor([step], device=x.device),
            torch.stack(token_cond, dim=1), self_mask, cache=cache,
        )
        return self.action_head(h[:, -1])
