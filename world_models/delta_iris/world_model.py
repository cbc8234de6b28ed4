"""Delta-IRIS's world model G: an autoregressive transformer over interleaved continuous frame embeddings, action
tokens and Delta-tokens.

As ``src/models/world_model.py``, ``transformer.py`` and ``slicer.py`` of github.com/vmicheli/delta-iris (Micheli,
Alonso, Fleuret, ICML 2024, Sec. 2.2 and Fig. 2) and the ``world_model`` section of ``config/params/crafter.yaml``,
written anew on :class:`~agents.common.transformer.GPT`:

- **Blocks**: time step ``t`` is a block of ``1 + 1 + K`` embeddings ``[e(x_t), e(a_t), e(z_{t+1}^1), ...,
  e(z_{t+1}^K)]``: the *continuous* embedding of frame ``x_t`` (``FrameEncoder(x_t)`` flattened in ``(h w c)``
  order, then LayerNorm; it must have ``embed_dim`` features), the action token, and the ``K`` Delta-tokens the
  frozen tokenizer gives ``x_{t+1}`` knowing ``x_t`` and ``a_t``. A learned absolute position embedding is added and
  the flattened sequence goes through a causal pre-norm GPT (3 layers, 8 heads, 512 wide, 21 blocks for Crafter).
- **Heads** (``Linear -> ReLU -> Linear``, the official ``Head`` slices): the latent head reads the positions
  ``[a_t, z^1, ..., z^{K-1}]`` and predicts ``z^1, ..., z^K`` (next-token prediction inside the block); the reward
  and end heads read the action position ``a_t``. Rewards are 255 two-hot buckets of ``symlog(r)`` (Crafter) or the
  3 classes of ``sign(r)`` (Atari); ends are 2 classes.
- **Loss** (:meth:`WorldModel.loss`): cross-entropies of latents, rewards and ends, weighted by the config (Crafter
  1/1/1, Atari 0.1/1/0.1).
- Init as the official ``init_weights``: Linear and Embedding N(0, 0.02), biases 0, LayerNorm 1/0 (convolutions keep
  PyTorch's default). Optional cross-layer K/V sharing (``cla_factor``, Brandon et al. 2024) comes from the GPT.

At the Crafter configuration with 17 actions the model has 11,948,457 parameters, the count of the official one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from agents.common.convnet import FrameCnnConfig, FrameEncoder
from agents.common.transformer import GPT, KVCache, init_gpt2_weights, kv_source_layers
from agents.common.two_hot import NUM_BUCKETS, two_hot_loss


def _crafter_frame_cnn() -> FrameCnnConfig:
    return FrameCnnConfig(image_channels=3, latent_dim=8, num_channels=32, mult=[1, 1, 2, 2, 4], down=[1, 0, 1, 1, 0])


@dataclass
class WorldModelConfig:
    """``config/params/{crafter,atari}.yaml`` ``world_model``; ``max_blocks`` is the training sequence length."""

    num_actions: int
    tokens_per_frame: int = 4
    vocab_size: int = 1024
    embed_dim: int = 512
    layers: int = 3
    heads: int = 8
    max_blocks: int = 21
    dropout: float = 0.0
    frame_cnn: FrameCnnConfig = field(default_factory=_crafter_frame_cnn)
    image_size: int = 64
    two_hot_rewards: bool = True
    latents_weight: float = 1.0
    rewards_weight: float = 1.0
    ends_weight: float = 1.0
    cla_factor: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.frame_cnn, dict):
            self.frame_cnn = FrameCnnConfig(**self.frame_cnn)
        for name in ("num_actions", "tokens_per_frame", "embed_dim", "layers", "heads", "max_blocks", "image_size",
                     "cla_factor"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected an integer >= 1")
        if int(self.vocab_size) < 2:
            raise ValueError(f"vocab_size={self.vocab_size}; expected an integer >= 2")
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}; expected 0 <= dropout < 1")
        for name in ("latents_weight", "rewards_weight", "ends_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected a weight >= 0")
        side = self.image_size // 2 ** sum(self.frame_cnn.down)
        if side * side * self.frame_cnn.latent_dim != self.embed_dim:
            raise ValueError(
                f"the frame embedding has ({self.image_size} / 2^{sum(self.frame_cnn.down)})^2 * latent_dim "
                f"{self.frame_cnn.latent_dim} = {side * side * self.frame_cnn.latent_dim} features; it must equal "
                f"embed_dim={self.embed_dim}")

    @property
    def tokens_per_block(self) -> int:
        return self.tokens_per_frame + 2

    @property
    def max_tokens(self) -> int:
        return self.tokens_per_block * self.max_blocks

    @property
    def reward_classes(self) -> int:
        return NUM_BUCKETS if self.two_hot_rewards else 3

    @classmethod
    def crafter(cls, num_actions: int = 17, **overrides) -> WorldModelConfig:
        return cls(num_actions=num_actions, **overrides)

    @classmethod
    def atari(cls, num_actions: int, **overrides) -> WorldModelConfig:
        frame_cnn = FrameCnnConfig(3, latent_dim=4, num_channels=32, mult=[1, 1, 2, 2, 4], down=[1, 0, 1, 1, 0])
        kwargs = dict(embed_dim=256, heads=4, max_blocks=26, frame_cnn=frame_cnn, two_hot_rewards=False,
                      latents_weight=0.1, rewards_weight=1.0, ends_weight=0.1)
        return cls(num_actions=num_actions, **{**kwargs, **overrides})

    @classmethod
    def tiny(cls, num_actions: int, vocab_size: int = 64, tokens_per_frame: int = 4, image_size: int = 64,
             **overrides) -> WorldModelConfig:
        """Seconds-long tests (the vocabulary of ``TokenizerConfig.tiny``): 2 layers, 8 blocks, an 8-channel 3-stage
        CNN to an ``(image_size / 8)^2`` map (64 wide at 64 x 64)."""
        side = image_size // 8
        frame_cnn = FrameCnnConfig(3, latent_dim=max(1, 64 // (side * side)), num_channels=8, mult=[1, 2, 2],
                                   down=[1, 1, 1])
        kwargs = dict(embed_dim=side * side * frame_cnn.latent_dim, layers=2, heads=4, max_blocks=8,
                      frame_cnn=frame_cnn, image_size=image_size)
        return cls(num_actions=num_actions, vocab_size=vocab_size, tokens_per_frame=tokens_per_frame,
                   **{**kwargs, **overrides})


class WorldModelOutput(NamedTuple):
    """``logits_tokens [B, T, K, V]`` (of ``z_{t+1}^1..K``), ``logits_rewards [B, T, R]``, ``logits_ends [B, T, 2]``."""

    logits_tokens: torch.Tensor
    logits_rewards: torch.Tensor
    logits_ends: torch.Tensor


def _head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


class WorldModel(nn.Module):
    """The transformer world model (see the module docstring).

    :meth:`forward` runs whole blocks (with a :class:`KVCache`, they follow the blocks already cached). For
    token-by-token use (imagination) the pieces are public: :meth:`embed_frames`, ``act_emb``, ``latents_emb``,
    :meth:`transform` (positions and mask given by the caller), and the heads ``head_latents``, ``head_rewards``,
    ``head_ends`` applied to hidden states.
    """

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e = cfg.embed_dim
        self.frame_cnn = FrameEncoder(cfg.frame_cnn)
        self.frame_norm = nn.LayerNorm(e)
        self.act_emb = nn.Embedding(cfg.num_actions, e)
        self.latents_emb = nn.Embedding(cfg.vocab_size, e)
        self.pos_emb = nn.Embedding(cfg.max_tokens, e)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.transformer = GPT(e, cfg.layers, cfg.heads, cfg.dropout, cla_factor=cfg.cla_factor)
        self.head_latents = _head(e, cfg.vocab_size)
        self.head_rewards = _head(e, cfg.reward_classes)
        self.head_ends = _head(e, 2)
        init_gpt2_weights(self)

    # ------------------------------------------------------------------------------------------------------------
    # Embeddings and the transformer
    # ------------------------------------------------------------------------------------------------------------
    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [..., 3, H, W]`` in [0, 1] -> ``[..., embed_dim]``: CNN map flattened ``(h w c)``, LayerNorm."""
        lead = frames.shape[:-3]
        z = self.frame_cnn(frames.reshape(-1, *frames.shape[-3:]))  # [N, c, h, w]
        return self.frame_norm(z.permute(0, 2, 3, 1).reshape(*lead, -1))

    def embed_blocks(self, frames: torch.Tensor, acts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]``, ``[B, T]``, ``[B, T, K]`` -> the flattened blocks ``[B, T * (K + 2), E]``."""
        b, t = acts.shape
        k = self.cfg.tokens_per_frame
        if frames.shape[:2] != (b, t) or tokens.shape != (b, t, k):
            raise ValueError(f"frames {tuple(frames.shape)}, actions {tuple(acts.shape)}, tokens "
                             f"{tuple(tokens.shape)}: expected [B, T, 3, H, W], [B, T], [B, T, {k}]")
        x = torch.cat([self.embed_frames(frames)[:, :, None], self.act_emb(acts.long())[:, :, None],
                       self.latents_emb(tokens.long())], dim=2)
        return x.flatten(1, 2)

    def transform(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None,
                  cache: KVCache | None = None) -> torch.Tensor:
        """Hidden states ``[B, N, E]`` of new embeddings ``x [B, N, E]`` at ``positions [N]`` or ``[B, N]`` (< max
        tokens), after the tokens of ``cache``; ``mask`` is additive over (cached + new) keys, None = causal."""
        return self.transformer(self.emb_drop(x + self.pos_emb(positions)), mask, cache)

    def forward(self, frames: torch.Tensor, acts: torch.Tensor, tokens: torch.Tensor,
                cache: KVCache | None = None) -> WorldModelOutput:
        """Logits of ``T`` whole blocks (``frames [B, T, 3, H, W]`` in [0, 1], ``acts [B, T]``, ``tokens [B, T, K]``)
        following the blocks already in ``cache`` (whose new K/V are appended)."""
        past = cache.length("self.0") if cache is not None else 0
        tpb, k = self.cfg.tokens_per_block, self.cfg.tokens_per_frame
        if past % tpb:
            raise ValueError(f"the cache holds {past} tokens, not whole blocks of {tpb}; use transform() instead")
        if past + acts.shape[1] * tpb > self.cfg.max_tokens:
            raise ValueError(f"{past // tpb} cached + {acts.shape[1]} new blocks: positions beyond the "
                             f"{self.cfg.max_blocks} blocks of {tpb} tokens the world model holds")
        x = self.embed_blocks(frames, acts, tokens)
        h = self.transform(x, torch.arange(past, past + x.shape[1], device=x.device), cache=cache)
        h = h.view(*acts.shape, tpb, -1)
        return WorldModelOutput(self.head_latents(h[:, :, 1:1 + k]), self.head_rewards(h[:, :, 1]),
                                self.head_ends(h[:, :, 1]))

    # ------------------------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------------------------
    def loss(
        self,
        frames: torch.Tensor,
        acts: torch.Tensor,
        rews: torch.Tensor,
        ends: torch.Tensor,
        mask: torch.Tensor,
        tokens: torch.Tensor | None = None,
        tokenizer: nn.Module | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted latent + reward + end cross-entropies over a batch of segments (official ``compute_loss``).

        The batch contract: a segment of ``L`` steps, ``frames [B, L, 3, H, W]`` in [0, 1] (``x_t``), ``acts [B, L]``
        (``a_t``, taken at ``x_t``), ``rews [B, L]`` and ``ends [B, L]`` (what followed ``a_t``), ``mask [B, L]``
        (False where padded). The Delta-tokens ``tokens [B, L - 1, K]`` of ``(x_t, a_t, x_{t+1})`` are given, or
        computed here without gradient by ``tokenizer.tokenize``. The last block's tokens are unknown (zeros, as
        official): its latent logits are left out. Latent targets count where both ``x_t`` and ``x_{t+1}`` are real
        (``mask[t] & mask[t+1]``; the official code uses ``mask[t]`` alone and so also fits the zero padding after
        an episode end); rewards and ends count where ``mask[t]``.
        """
        b, length = acts.shape
        k = self.cfg.tokens_per_frame
        if tokens is None:
            if tokenizer is None:
                raise ValueError("loss() needs the Delta-tokens: pass tokens [B, L - 1, K] or a tokenizer")
            with torch.no_grad():
                tokens = tokenizer.tokenize(frames[:, :-1].flatten(0, 1), acts[:, :-1].flatten(),
                                            frames[:, 1:].flatten(0, 1)).view(b, length - 1, k)
        if tokens.shape != (b, length - 1, k) or mask.shape != (b, length):
            raise ValueError(f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)}: expected "
                             f"[B, L - 1, {k}] and [B, L] for actions {tuple(acts.shape)}")
        mask = mask.bool()
        out = self(frames, acts, torch.cat([tokens, tokens.new_zeros(b, 1, k)], dim=1))

        latent_mask = mask[:, :-1] & mask[:, 1:]
        logits_latents = out.logits_tokens[:, :-1][latent_mask].flatten(0, 1).float()  # [N * K, V]
        labels_latents = tokens[latent_mask].flatten().long()
        loss_latents = F.cross_entropy(logits_latents, labels_latents) if len(labels_latents) else out[0].sum() * 0
        logits_rewards = out.logits_rewards[mask].float()
        if self.cfg.two_hot_rewards:
            loss_rewards = two_hot_loss(logits_rewards, rews[mask].float())
        else:
            loss_rewards = F.cross_entropy(logits_rewards, (rews[mask].sign() + 1).long())
        loss_ends = F.cross_entropy(out.logits_ends[mask].float(), ends[mask].long())

        total = (self.cfg.latents_weight * loss_latents + self.cfg.rewards_weight * loss_rewards
                 + self.cfg.ends_weight * loss_ends)
        with torch.no_grad():
            accuracy = (logits_latents.argmax(-1) == labels_latents).float().mean() if len(labels_latents) else 0.0
        logs = {"loss_latents": loss_latents.item(), "loss_rewards": loss_rewards.item(),
                "loss_ends": loss_ends.item(), "loss_total": total.item(), "latent_accuracy": float(accuracy)}
        return total, logs

    # ------------------------------------------------------------------------------------------------------------
    # Memory
    # ------------------------------------------------------------------------------------------------------------
    @property
    def num_kv_layers(self) -> int:
        """Layers that compute (and cache) their own K/V: ``ceil(layers / cla_factor)``."""
        sources = kv_source_layers(self.cfg.layers, self.cfg.cla_factor)
        return sum(s == i for i, s in enumerate(sources))

    def kv_cache_bytes(self, batch: int, blocks: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the K/V cache of ``batch`` sequences of ``blocks`` blocks (what :attr:`KVCache.nbytes` reports)."""
        per = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_kv_layers * batch * blocks * self.cfg.tokens_per_block * self.cfg.embed_dim * per
