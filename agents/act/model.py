"""ACT's DETR-VAE (Zhao et al. 2023, github.com/tonyzhaozh/act, ``detr/models/detr_vae.py`` and ``transformer.py``),
image-only as in SRT (Kim et al. 2024): no joint-position (qpos) token in either encoder.

- CVAE encoder (training only): a transformer encoder over ``[CLS, proj(a_1), ..., proj(a_k)]`` with a fixed
  sinusoid position table; padded actions are masked out of attention. The CLS output gives ``mu, logvar``
  (``latent_dim`` each) and ``z = mu + exp(logvar / 2) * eps``. At test time, and without actions, ``z = 0``.
- Decoder ("policy"): a ResNet18 (:mod:`agents.act.backbone`, one trunk shared by the cameras as in the official
  code) gives each camera a stride-32 feature map, a 1x1 convolution projects it to ``hidden_dim``, the cameras are
  concatenated along the width, each with the same 2D sine position embedding. With the latent token
  (``latent_out_proj(z)``, a learned position embedding) they form the memory of a transformer encoder; a
  transformer decoder with ``chunk_size`` learned queries (input zeros, the queries as position embedding) reads it,
  and ``action_head`` gives the chunk ``[B, k, action_dim]``.
- DETR's layers: post-norm, ReLU, position embeddings added to queries and keys (not values) in every layer.
- The official model returns ``hs[0]``, the (normed) output of the FIRST decoder layer (its transformer returns the
  stacked intermediate outputs and the detr_vae indexes them with ``[0]``; tonyzhaozh/act issues #10, #25):
  ``decoder_output="first"`` reproduces that and skips computing the layers whose output is never used (same
  function, same parameters); ``"last"`` uses the last layer's output.

Loss (``ACTPolicy.__call__``): ``L1(a, a_hat)`` with padded steps zeroed, averaged over all ``B * k * D`` entries as
in the official code, plus ``kl_weight * KL(N(mu, sigma^2) || N(0, I))`` summed over latent dimensions, averaged
over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agents.act.backbone import ResNet18, normalize_images

DECODER_OUTPUTS = ("first", "last")


@dataclass
class ACTConfig:
    """Sizes of the DETR-VAE; the defaults are the paper's (ACT README sim config)."""

    action_dim: int = 20
    n_cameras: int = 3
    chunk_size: int = 100
    hidden_dim: int = 512
    enc_layers: int = 4
    dec_layers: int = 7
    n_heads: int = 8
    dim_feedforward: int = 3200
    dropout: float = 0.1
    latent_dim: int = 32
    backbone_width: float = 1.0
    backbone_stride: int = 32
    use_cvae: bool = True
    decoder_output: str = "first"

    def __post_init__(self) -> None:
        for name in ("action_dim", "n_cameras", "chunk_size", "hidden_dim", "enc_layers", "dec_layers", "n_heads",
                     "dim_feedforward", "latent_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected an integer >= 1")
        if self.hidden_dim % self.n_heads or self.hidden_dim % 2:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be even and divisible by n_heads={self.n_heads}")
        if self.decoder_output not in DECODER_OUTPUTS:
            raise ValueError(f"decoder_output={self.decoder_output!r} is not allowed; choose one of: "
                             f"{', '.join(DECODER_OUTPUTS)}")


def sinusoid_table(n_position: int, d_hid: int) -> torch.Tensor:
    """``[n_position, d_hid]``: ``sin`` at even, ``cos`` at odd ``j`` of ``pos / 10000^(2 (j // 2) / d_hid)``."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(d_hid, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d_hid)
    return torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def sine_position_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """DETR's ``PositionEmbeddingSine(dim // 2, normalize=True)`` of an ``h x w`` map: ``[dim, h, w]``."""
    n, scale, eps = dim // 2, 2 * math.pi, 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)[None, :].expand(h, w)
    y, x = y / (h + eps) * scale, x / (w + eps) * scale
    dim_t = 10000.0 ** (2 * torch.div(torch.arange(n, device=device), 2, rounding_mode="floor") / n)
    pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=-1).flatten(-2)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=-1).flatten(-2)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)


class EncoderLayer(nn.Module):
    """DETR's ``TransformerEncoderLayer.forward_post``: ``q = k = x + pos``, post-norm, ReLU feed-forward."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        q = k = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(q, k, x, key_padding_mask=padding, need_weights=False)[0]))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class DecoderLayer(nn.Module):
    """DETR's ``TransformerDecoderLayer.forward_post``: self-attention of the queries, cross-attention to the
    memory (keys ``memory + pos``), feed-forward; each followed by a residual and a LayerNorm."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attended = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class DETRVAE(nn.Module):
    """ACT's model. ``forward(images, actions=None, is_pad=None) -> (a_hat, mu, logvar)``.

    :param images: uint8 ``[B, n_cameras, H, W, 3]``
    :param actions: normalized action chunks ``[B, k, action_dim]`` (training; None at test time: ``z = 0``)
    :param is_pad: bool ``[B, k]``, True at steps past the end of the episode
    """

    def __init__(self, cfg: ACTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, k = cfg.hidden_dim, cfg.chunk_size
        layer_args = (d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout)
        # decoder side ("policy")
        self.backbone = ResNet18(cfg.backbone_width, cfg.backbone_stride)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.encoder_layers = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(cfg.enc_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(cfg.dec_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.query_embed = nn.Embedding(k, d)
        self.action_head = nn.Linear(d, cfg.action_dim)
        self.latent_out_proj = nn.Linear(cfg.latent_dim, d)
        self.additional_pos_embed = nn.Embedding(1, d)  # the latent token's (official: latent and qpos, 2)
        # CVAE encoder
        if cfg.use_cvae:
            self.cls_embed = nn.Embedding(1, d)
            self.encoder_action_proj = nn.Linear(cfg.action_dim, d)
            self.cvae_layers = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(cfg.enc_layers))
            self.latent_proj = nn.Linear(d, 2 * cfg.latent_dim)
            self.register_buffer("pos_table", sinusoid_table(1 + k, d), persistent=False)

    # ------------------------------------------------------------------ CVAE encoder
    def encode(self, actions: torch.Tensor, is_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | a_{t..t+k})``: ``mu, logvar`` ``[B, latent_dim]`` from the CLS token."""
        b = actions.shape[0]
        x = torch.cat([self.cls_embed.weight.expand(b, 1, -1), self.encoder_action_proj(actions)], dim=1)
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=is_pad.device), is_pad], dim=1)
        pos = self.pos_table[None].to(x.dtype)
        for layer in self.cvae_layers:
            x = layer(x, pos, padding)
        mu, logvar = self.latent_proj(x[:, 0]).chunk(2, dim=-1)
        return mu, logvar

    # ------------------------------------------------------------------ policy
    def image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``[B, C, H, W, 3]`` -> tokens ``[B, C * h * w, d]`` and their position embedding ``[1, C*h*w, d]``;
        the cameras' maps side by side along the width, flattened row by row as DETR does."""
        b, c = images.shape[:2]
        features = self.input_proj(self.backbone(normalize_images(images.flatten(0, 1))))  # [B*C, d, h, w]
        d, h, w = features.shape[1:]
        features = features.unflatten(0, (b, c)).permute(0, 2, 3, 1, 4).reshape(b, d, h, c * w)
        pos = sine_position_2d(h, w, d, features.device).repeat(1, 1, c)  # each camera: the same embedding
        return features.flatten(2).transpose(1, 2), pos.flatten(1).T[None].to(features.dtype)

    def forward(
        self, images: torch.Tensor, actions: torch.Tensor | None = None, is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        b = images.shape[0]
        mu = logvar = None
        if self.cfg.use_cvae and actions is not None:
            if is_pad is None:
                is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
            mu, logvar = self.encode(actions, is_pad)
            z = mu + torch.exp(logvar / 2) * torch.randn_like(mu)  # reparameterization
        else:
            z = torch.zeros(b, self.cfg.latent_dim, device=images.device)  # the prior's mean
        tokens, pos = self.image_tokens(images)
        src = torch.cat([self.latent_out_proj(z)[:, None].to(tokens.dtype), tokens], dim=1)
        pos = torch.cat([self.additional_pos_embed.weight[None].to(pos.dtype), pos], dim=1)
        memory = src
        for layer in self.encoder_layers:
            memory = layer(memory, pos)
        query_pos = self.query_embed.weight[None]
        hs = torch.zeros(b, *query_pos.shape[1:], device=memory.device, dtype=memory.dtype)
        layers = self.decoder_layers[:1] if self.cfg.decoder_output == "first" else self.decoder_layers
        for layer in layers:
            hs = layer(hs, memory, pos, query_pos)
        return self.action_head(self.decoder_norm(hs)), mu, logvar


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over latent dimensions, averaged over the batch (a scalar)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()


def act_loss(
    a_hat: torch.Tensor,
    actions: torch.Tensor,
    is_pad: torch.Tensor,
    mu: torch.Tensor | None,
    logvar: torch.Tensor | None,
    kl_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, l1, kl)``: ``l1 = mean(|a - a_hat| * ~is_pad)`` over all entries (official), ``loss = l1 + w KL``."""
    l1 = ((actions - a_hat.float()).abs() * ~is_pad[..., None]).mean()
    kl = kl_divergence(mu.float(), logvar.float()) if mu is not None and logvar is not None else l1.new_zeros(())
    return l1 + kl_weight * kl, l1, kl


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (all are trainable)."""
    return sum(p.numel() for p in module.parameters())
