"""Batched imagination inside Delta-IRIS: the tokenizer and the transformer world model as an env.

As ``src/envs/world_model_env.py`` of github.com/vmicheli/delta-iris (Micheli et al. 2024), written anew with the
protocol of :class:`world_models.imagination.WorldModelEnv` (``reset_from``, ``step``, ``reset``, ``reset_dead``;
frames in [0, 1] here, as the Delta-IRIS pixel convention):

- :meth:`~DeltaIrisWorldModelEnv.reset_from` tokenizes the ``n - 1`` real transitions of the contexts and feeds
  their blocks through the transformer, filling the KV cache (official ``burn_in``).
- :meth:`~DeltaIrisWorldModelEnv.step`: the frame embedding of ``x_t`` and the action token go in; the reward
  (Crafter: the expected value ``symexp(bucket_mean)``; Atari: a sampled sign) and the end (sampled) are read at the
  action position, and the ``K`` Delta-tokens of ``x_{t+1}`` are sampled one by one (temperature 1), each fed back
  with the cache; ``tokenizer.decode_tokens(x_t, a_t, tokens)`` gives ``x_{t+1}``.
- When a step no longer fits in the ``max_blocks`` blocks of the world model, the env's memory is rebuilt from its
  last ``memory`` transitions (the official env keeps none: it flushes the cache and restarts from the current frame,
  which is ``memory=0``).

Every env keeps its own positions, so that :meth:`~DeltaIrisWorldModelEnv.reset_dead` can start a new context in some
rows while the others go on: the cache is shared, and a key mask ``key_valid [B, T]`` hides from each env the slots
that are not its own. As in the official env the last Delta-token of a block is fed at the start of the next step,
together with ``x_{t+1}`` and ``a_{t+1}``, so every step feeds one block. The whole state is tensors
(:meth:`~DeltaIrisWorldModelEnv.state_dict`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from agents.common.transformer import MASKED, KVCache
from agents.common.two_hot import decode
from world_models.delta_iris.world_model import WorldModel

Contexts = tuple[torch.Tensor, torch.Tensor]  # frames [B, n, 3, H, W] in [0, 1], actions [B, n] int64
STATE = ("frame", "key_valid", "num_tokens", "last_token", "has_last_token", "ep_len", "hist_frames", "hist_acts",
         "hist_tokens")


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


class DeltaIrisWorldModelEnv:
    """``num_envs`` imagined envs of a Delta-IRIS tokenizer and world model (see the module docstring).

    :param tokenizer: ``tokenize(x_prev, act, x_next) -> [B, K]`` and ``decode_tokens(x_prev, act, tokens)``
    :param world_model: a :class:`~world_models.delta_iris.world_model.WorldModel` with the tokenizer's ``K`` and
        vocabulary
    :param sample_contexts: ``n -> (frames, actions)`` of ``n`` real contexts; needed by :meth:`reset` and
        :meth:`reset_dead` only
    :param horizon: imagined episodes are truncated after this many steps (15 for Crafter, 20 for Atari)
    :param num_envs: rollouts in parallel
    :param memory: transitions re-fed when the context is full (default ``max_blocks // 2``, at most
        ``max_blocks - 2``; 0 is the official flush)
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        world_model: WorldModel,
        sample_contexts: Callable[[int], Contexts] | None = None,
        horizon: int = 15,
        num_envs: int = 32,
        memory: int | None = None,
    ) -> None:
        if int(horizon) < 1 or int(num_envs) < 1:
            raise ValueError(f"horizon={horizon} and num_envs={num_envs} must both be >= 1")
        wm, tk = world_model.cfg, tokenizer.cfg
        if (tk.tokens_per_frame, tk.codebook_size) != (wm.tokens_per_frame, wm.vocab_size):
            raise ValueError(f"tokenizer ({tk.tokens_per_frame} tokens per frame, codebook {tk.codebook_size}) and "
                             f"world model ({wm.tokens_per_frame}, vocabulary {wm.vocab_size}) do not match")
        memory = wm.max_blocks // 2 if memory is None else int(memory)
        if not 0 <= memory <= max(0, wm.max_blocks - 2):
            raise ValueError(f"memory={memory}; expected 0 <= memory <= max_blocks - 2 = {wm.max_blocks - 2}")
        self.tokenizer, self.world_model = tokenizer, world_model
        self.sample_contexts, self.horizon, self.num_envs = sample_contexts, int(horizon), int(num_envs)
        self.memory = memory
        self.cache: KVCache | None = None

    # ------------------------------------------------------------------------------------------------------------
    # Contexts
    # ------------------------------------------------------------------------------------------------------------
    def _contexts(self, n: int) -> Contexts:
        if self.sample_contexts is None:
            raise ValueError("this env has no sample_contexts: start it with reset_from(frames, actions)")
        return self.sample_contexts(n)

    def _check(self, frames: torch.Tensor, acts: torch.Tensor) -> None:
        n = frames.shape[1] if frames.ndim == 5 else 0
        if frames.ndim != 5 or acts.shape != frames.shape[:2] or not 1 <= n <= self.world_model.cfg.max_blocks:
            raise ValueError(f"contexts: frames {tuple(frames.shape)} must be [B, n, 3, H, W] with 1 <= n <= "
                             f"max_blocks={self.world_model.cfg.max_blocks}, actions {tuple(acts.shape)} [B, n]")

    def _tokenize(self, frames: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Delta-tokens ``[B, n - 1, K]`` of the ``n - 1`` transitions of ``frames [B, n, ...]``."""
        b, n = acts.shape
        if n == 1:
            return acts.new_zeros(b, 0, self.world_model.cfg.tokens_per_frame)
        tokens = self.tokenizer.tokenize(frames[:, :-1].flatten(0, 1), acts[:, :-1].flatten(),
                                         frames[:, 1:].flatten(0, 1))
        return tokens.view(b, n - 1, -1).long()

    def _load(self, rows: torch.Tensor, frames: torch.Tensor, acts: torch.Tensor, tokens: torch.Tensor) -> None:
        """Give envs ``rows [k]`` (int64) a fresh memory of contexts ``frames [k, n]``, ``acts [k, n]`` and their
        ``tokens [k, n - 1, K]``: their ``n - 1`` blocks (less the last token, held back for the next step) are fed
        alone, and their K/V written into the last slots of the shared cache, where only these rows see them."""
        n, r = acts.shape[1], self.memory
        self.frame[rows] = frames[:, -1]
        self.num_tokens[rows], self.has_last_token[rows] = 0, False
        self.key_valid[rows] = False
        if r:
            m = min(r, n - 1)
            self.hist_frames[rows, r - m:] = frames[:, n - 1 - m:n - 1]
            self.hist_acts[rows, r - m:] = acts[:, n - 1 - m:n - 1]
            self.hist_tokens[rows, r - m:] = tokens[:, n - 1 - m:]
        if n == 1:
            self._compact()
            return
        wm = self.world_model
        x = wm.embed_blocks(frames[:, :-1], acts[:, :-1], tokens)[:, :-1]
        sub = KVCache()
        wm.transform(x, torch.arange(x.shape[1], device=x.device), cache=sub)
        length, total = x.shape[1], self.key_valid.shape[1]
        if length > total:  # make room: pad every row's past with hidden slots
            pad = length - total
            self.key_valid = torch.cat([self.key_valid.new_zeros(len(self.key_valid), pad), self.key_valid], 1)
            for name, (k, v) in self.cache.entries.items():
                zeros = k.new_zeros(k.shape[0], k.shape[1], pad, k.shape[3])
                self.cache.entries[name] = (torch.cat([zeros, k], 2), torch.cat([zeros, v], 2))
            total = length
        for name, (k_new, v_new) in sub.entries.items():
            if name not in self.cache.entries:
                shape = (len(self.key_valid), *k_new.shape[1:2], total, k_new.shape[3])
                self.cache.entries[name] = (k_new.new_zeros(shape), k_new.new_zeros(shape))
            k, v = self.cache.entries[name]
            k[rows, :, total - length:], v[rows, :, total - length:] = k_new, v_new
        self.key_valid[rows, total - length:] = True
        self.num_tokens[rows] = length
        self.last_token[rows], self.has_last_token[rows] = tokens[:, -1, -1], True
        self._compact()

    def _compact(self) -> None:
        """Drop the leading slots that no env sees."""
        seen = self.key_valid.any(0)
        first = int(seen.float().argmax()) if bool(seen.any()) else self.key_valid.shape[1]
        if first:
            self.key_valid = self.key_valid[:, first:]
            self.cache.entries = {n: (k[:, :, first:], v[:, :, first:]) for n, (k, v) in self.cache.entries.items()}

    def reset(self) -> torch.Tensor:
        """``num_envs`` new episodes from ``sample_contexts``; returns their last frames ``[B, 3, H, W]``."""
        return self.reset_from(*self._contexts(self.num_envs))

    @torch.no_grad()
    def reset_from(self, frames: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Start from real contexts ``frames [B, n, 3, H, W]`` in [0, 1] and ``acts [B, n]`` (``acts[:, -1]`` is
        unused: :meth:`step` gives it); returns ``frames[:, -1]``."""
        self._check(frames, acts)
        device = self.world_model.pos_emb.weight.device
        frames, acts = frames.to(device).float(), acts.to(device).long()
        b, r, k = acts.shape[0], self.memory, self.world_model.cfg.tokens_per_frame
        self.num_envs = b
        self.cache = KVCache()
        self.frame = frames[:, -1].clone()
        self.key_valid = torch.zeros(b, 0, dtype=torch.bool, device=device)
        self.num_tokens = torch.zeros(b, dtype=torch.long, device=device)
        self.last_token = torch.zeros(b, dtype=torch.long, device=device)
        self.has_last_token = torch.zeros(b, dtype=torch.bool, device=device)
        self.ep_len = torch.zeros(b, dtype=torch.long, device=device)
        self.hist_frames = frames.new_zeros(b, r, *frames.shape[2:])
        self.hist_acts = acts.new_zeros(b, r)
        self.hist_tokens = acts.new_zeros(b, r, k)
        self.last_tokens = acts.new_zeros(b, k)  # the Delta-tokens of the last step's next frame
        with _eval_mode(self.tokenizer, self.world_model):
            self._load(torch.arange(b, device=device), frames, acts, self._tokenize(frames, acts))
        return self.frame.clone()

    @torch.no_grad()
    def reset_dead(self, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New contexts for the envs where ``dead [B]``; returns their last frames ``[k, 3, H, W]`` and the frames
        before ``[k, n - 1, 3, H, W]`` (for the policy's burn-in)."""
        if self.cache is None:
            raise RuntimeError("call reset() or reset_from(frames, actions) before reset_dead()")
        rows = dead.to(self.frame.device).bool().nonzero().flatten()
        if len(rows) == 0:
            return self.frame[:0].clone(), self.frame.new_zeros(0, 0, *self.frame.shape[1:])
        frames, acts = self._contexts(len(rows))
        self._check(frames, acts)
        frames, acts = frames.to(self.frame.device).float(), acts.to(self.frame.device).long()
        with _eval_mode(self.tokenizer, self.world_model):
            self._load(rows, frames, acts, self._tokenize(frames, acts))
        self.ep_len[rows] = 0
        return frames[:, -1], frames[:, :-1]

    # ------------------------------------------------------------------------------------------------------------
    # Stepping
    # ------------------------------------------------------------------------------------------------------------
    def _feed(self, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden states of new embeddings ``x [B, n, E]`` (``valid [B, n]``, ``positions [B, n]``): each sees the
        earlier slots of its own env, and itself."""
        total, n = self.key_valid.shape[1], x.shape[1]
        keys = torch.cat([self.key_valid, valid], 1)
        q_slot = torch.arange(total, total + n, device=x.device)[:, None]
        k_slot = torch.arange(total + n, device=x.device)[None, :]
        allowed = (k_slot <= q_slot) & (keys[:, None, :] | (k_slot == q_slot))
        mask = torch.where(allowed, 0.0, MASKED)[:, None]  # [B, 1, n, T + n]
        h = self.world_model.transform(x, positions, mask, self.cache)
        self.key_valid, self.num_tokens = keys, self.num_tokens + valid.sum(1)
        return h

    def _refill(self) -> None:
        """Rebuild the memory of the envs whose next block would not fit from their last ``memory`` transitions."""
        full = self.num_tokens + self.world_model.cfg.tokens_per_block > self.world_model.cfg.max_tokens
        if bool(full.any()):
            rows = full.nonzero().flatten()
            frames = torch.cat([self.hist_frames[rows], self.frame[rows, None]], 1)
            acts = torch.cat([self.hist_acts[rows], self.hist_acts.new_zeros(len(rows), 1)], 1)
            self._load(rows, frames, acts, self.hist_tokens[rows].clone())

    @torch.no_grad()
    def step(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One imagined step of every env: ``(next_frames [B, 3, H, W] float in [0, 1], rew [B] float, end [B] bool,
        trunc [B] bool)``."""
        if self.cache is None:
            raise RuntimeError("call reset() or reset_from(frames, actions) before step()")
        wm, cfg = self.world_model, self.world_model.cfg
        act = torch.as_tensor(act, device=self.frame.device).long().view(self.num_envs)
        with _eval_mode(self.tokenizer, wm):
            self._refill()
            # [z^K of the previous block (if any), x_t, a_t]: the reward, the end and z^1 are read at a_t
            x = torch.stack([wm.latents_emb(self.last_token), wm.embed_frames(self.frame), wm.act_emb(act)], 1)
            valid = torch.stack([self.has_last_token, torch.ones_like(self.has_last_token),
                                 torch.ones_like(self.has_last_token)], 1)
            first = self.num_tokens + self.has_last_token.long()  # position of x_t
            positions = torch.stack([self.num_tokens.clamp(max=cfg.max_tokens - 1), first, first + 1], 1)
            h = self._feed(x, valid, positions)[:, -1]
            logits_rew, logits_end = wm.head_rewards(h).float(), wm.head_ends(h).float()
            if cfg.two_hot_rewards:
                with torch.autocast(logits_rew.device.type, enabled=False):  # the bucket mean in float32
                    rew = decode(logits_rew)
            else:
                rew = torch.distributions.Categorical(logits=logits_rew).sample().float() - 1
            end = torch.distributions.Categorical(logits=logits_end).sample().bool()
            tokens = [torch.distributions.Categorical(logits=wm.head_latents(h).float()).sample()]
            for _ in range(cfg.tokens_per_frame - 1):
                h = self._feed(wm.latents_emb(tokens[-1])[:, None], valid[:, 1:2], self.num_tokens[:, None])[:, -1]
                tokens.append(torch.distributions.Categorical(logits=wm.head_latents(h).float()).sample())
            tokens = torch.stack(tokens, 1)
            self.last_token, self.has_last_token = tokens[:, -1], torch.ones_like(self.has_last_token)
            next_frame = self.tokenizer.decode_tokens(self.frame, act, tokens).float().clamp(0, 1)
        self.last_tokens = tokens
        if self.memory:
            self.hist_frames = torch.cat([self.hist_frames[:, 1:], self.frame[:, None]], 1)
            self.hist_acts = torch.cat([self.hist_acts[:, 1:], act[:, None]], 1)
            self.hist_tokens = torch.cat([self.hist_tokens[:, 1:], tokens[:, None]], 1)
        self.frame = next_frame
        self.ep_len += 1
        return next_frame.clone(), rew, end, self.ep_len >= self.horizon

    # ------------------------------------------------------------------------------------------------------------
    # State
    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The whole state as tensors (cache entries as ``cache.<name>.k`` / ``.v``)."""
        if self.cache is None:
            return {}
        state = {name: getattr(self, name) for name in STATE}
        for name, (k, v) in self.cache.entries.items():
            state[f"cache.{name}.k"], state[f"cache.{name}.v"] = k, v
        return {key: value.clone() for key, value in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not state:
            self.cache = None
            return
        for name in STATE:
            setattr(self, name, state[name].clone())
        names = sorted({key[len("cache."):-2] for key in state if key.startswith("cache.")})
        self.cache = KVCache({n: (state[f"cache.{n}.k"].clone(), state[f"cache.{n}.v"].clone()) for n in names})
        self.num_envs = len(self.frame)
