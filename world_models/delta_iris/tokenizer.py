"""The Δ-IRIS context-aware tokenizer: a discrete autoencoder of frame ``x_{t+1}`` given ``x_t`` and ``a_t``.

Micheli, Alonso, Fleuret, ICML 2024 (arXiv 2406.19320, Sec. 2.1), as ``src/models/tokenizer/tokenizer.py`` and the
``tokenizer`` section of ``config/params/{crafter,atari}.yaml`` of github.com/vmicheli/delta-iris, written anew:

- encoder ``E``: ``concat(x_t, action plane, x_{t+1})`` (7 channels; the action plane is ``nn.Embedding(A, H * W)``
  shaped as one ``H x W`` channel) -> :class:`~agents.common.convnet.FrameEncoder` -> latent ``[64, 8, 8]``;
- the latent grid is cut into ``K = g * g`` square patches (``K = 4``: 2 x 2 patches of 4 x 4 x 64 = 1024 values),
  each flattened in ``(row, column, channel)`` order and quantized by :mod:`~world_models.delta_iris.quantizer`
  (Linear to ``codebook_dim`` 64, L2-normalize, nearest of 1024 codes by cosine, EMA codebook);
- decoder ``D``: the code of each patch goes back to its ``input_dim`` values (post-quant Linear), the grid is
  reassembled and concatenated with ``frame_cnn(x_t)`` (its own :class:`FrameEncoder`, latent_dim 8 on Crafter) and
  the decoder action embedding (``nn.Embedding(A, 4 * 8 * 8)`` shaped as 4 planes), then
  :class:`~agents.common.convnet.FrameDecoder` -> ``x_{t+1}`` estimate;
- loss on the pairs ``(t, t+1)`` where both frames are valid: ``0.02 mean((z - sg(q))^2) + 0.1 mean|delta|
  + mean(delta^2) + 0.01 mean_b max_{c,h,w} delta_b^2`` with ``delta = x_{t+1} - D(...)`` (the worst-pixel term is the
  largest squared error over all channels and pixels of each image, averaged over images).

``TokenizerConfig.iris`` is the IRIS-style baseline of the same code: no context (``E`` sees only ``x_{t+1}``, ``D``
only the codes) and 16 tokens per frame. Linear and Embedding weights start N(0, 0.02) with zero biases (official
``init_weights``). Deviation: the quantizer, its loss and the codebook update see only the valid pairs (the official
code encodes the padding pairs too and lets them into the codebook EMA).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from agents.common.convnet import FrameCnnConfig, FrameDecoder, FrameEncoder
from agents.common.transformer import init_gpt2_weights
from world_models.delta_iris.quantizer import Quantizer

LossAndLogs = tuple[torch.Tensor, dict[str, float]]
STAGES = [1, 1, 2, 2, 4], [1, 0, 1, 1, 0]  # mult, down of every official CNN: 64x64 -> 8x8


def _cnn(image_channels: int, latent_dim: int, num_channels: int) -> FrameCnnConfig:
    return FrameCnnConfig(image_channels, latent_dim, num_channels, list(STAGES[0]), list(STAGES[1]))


@dataclass
class TokenizerConfig:
    """The tokenizer (``tokenizer`` of the official ``config/params/*.yaml``); defaults are the Crafter values.

    :param num_actions: size ``A`` of the discrete action space.
    :param image_size: frames are ``image_size x image_size`` RGB.
    :param tokens_per_frame: ``K``, a square number: a ``sqrt(K) x sqrt(K)`` grid of patches of the latent.
    :param codebook_size: number of codes (a power of 2).
    :param codebook_dim: dimension of a code.
    :param decoder_act_channels: planes of the decoder's action embedding at the latent resolution.
    :param context: True: Δ-IRIS (condition on ``x_t`` and ``a_t``); False: the IRIS-style baseline.
    :param encoder: its ``image_channels`` must be 7 with context, 3 without.
    :param decoder: its ``image_channels`` must be 3 and its ``latent_dim`` ``frame_cnn.latent_dim +
        decoder_act_channels + encoder.latent_dim`` with context, ``encoder.latent_dim`` without.
    :param frame_cnn: the CNN that embeds ``x_t`` for the decoder (unused without context).
    :param max_codebook_updates_with_revival: see :class:`~world_models.delta_iris.quantizer.Quantizer`.
    :param commitment_weight, l1_weight, l2_weight, max_pixel_l2_weight: the loss weights.
    """

    num_actions: int
    image_size: int = 64
    tokens_per_frame: int = 4
    codebook_size: int = 1024
    codebook_dim: int = 64
    decoder_act_channels: int = 4
    context: bool = True
    encoder: FrameCnnConfig = field(default_factory=lambda: _cnn(7, 64, 64))
    decoder: FrameCnnConfig = field(default_factory=lambda: _cnn(3, 8 + 4 + 64, 64))
    frame_cnn: FrameCnnConfig = field(default_factory=lambda: _cnn(3, 8, 64))
    max_codebook_updates_with_revival: int | None = 0
    commitment_weight: float = 0.02
    l1_weight: float = 0.1
    l2_weight: float = 1.0
    max_pixel_l2_weight: float = 0.01

    @classmethod
    def crafter(cls, num_actions: int) -> TokenizerConfig:
        """``config/params/crafter.yaml``: 4 tokens, 1024 x 64 codebook, frame_cnn 64 channels to 8, no revival
        outside collapse."""
        return cls(num_actions)

    @classmethod
    def atari(cls, num_actions: int) -> TokenizerConfig:
        """``config/params/atari.yaml``: frame_cnn 32 channels to 16, revival during the first 400 updates."""
        return cls(
            num_actions,
            decoder=_cnn(3, 16 + 4 + 64, 64),
            frame_cnn=_cnn(3, 16, 32),
            max_codebook_updates_with_revival=400,
        )

    @classmethod
    def iris(cls, num_actions: int) -> TokenizerConfig:
        """The IRIS-style baseline of the same code: no context, 16 tokens (4 x 4 grid of 2 x 2 x 64 patches)."""
        return cls(num_actions, tokens_per_frame=16, context=False, encoder=_cnn(3, 64, 64), decoder=_cnn(3, 64, 64))

    @classmethod
    def tiny(cls, num_actions: int) -> TokenizerConfig:
        """Seconds-long tests: 64x64 frames to an 8x8x16 latent with 8-channel CNNs, 4 tokens, 64 x 16 codebook."""

        def cnn(image_channels: int, latent_dim: int) -> FrameCnnConfig:
            return FrameCnnConfig(image_channels, latent_dim, 8, [1, 2, 2], [1, 1, 1])

        return cls(
            num_actions, codebook_size=64, codebook_dim=16, decoder_act_channels=2,
            encoder=cnn(7, 16), decoder=cnn(3, 8 + 2 + 16), frame_cnn=cnn(3, 8),
        )

    def __post_init__(self) -> None:
        for name in ("encoder", "decoder", "frame_cnn"):  # from a dict (JSON metadata, Hydra)
            if isinstance(getattr(self, name), Mapping):
                setattr(self, name, FrameCnnConfig(**getattr(self, name)))
        for name in ("num_actions", "image_size", "tokens_per_frame", "codebook_size", "codebook_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TokenizerConfig.{name}={value!r} must be an integer >= 1")
        if self.codebook_size < 2 or not math.log2(self.codebook_size).is_integer():
            raise ValueError(f"TokenizerConfig.codebook_size={self.codebook_size} must be a power of 2 (>= 2)")
        if self.context and (not isinstance(self.decoder_act_channels, int) or self.decoder_act_channels < 1):
            raise ValueError(f"TokenizerConfig.decoder_act_channels={self.decoder_act_channels!r} must be an int >= 1")
        mcu = self.max_codebook_updates_with_revival
        if mcu is not None and (not isinstance(mcu, int) or mcu < 0):
            raise ValueError(f"TokenizerConfig.max_codebook_updates_with_revival={mcu!r} must be None or an int >= 0")
        for name in ("commitment_weight", "l1_weight", "l2_weight", "max_pixel_l2_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"TokenizerConfig.{name}={getattr(self, name)} must be >= 0")
        self._check_cnns()

    def _check_cnns(self) -> None:
        enc, dec, fcnn = self.encoder, self.decoder, self.frame_cnn
        if self.image_size % enc.downsampling:
            raise ValueError(f"image_size={self.image_size} must be a multiple of 2^sum(down)={enc.downsampling}")
        grid = math.isqrt(self.tokens_per_frame)
        if grid * grid != self.tokens_per_frame or self.latent_res % grid:
            raise ValueError(
                f"tokens_per_frame={self.tokens_per_frame} must be a square k * k with k dividing the latent "
                f"resolution {self.latent_res}"
            )
        expected_in = 7 if self.context else 3
        if enc.image_channels != expected_in:
            raise ValueError(
                f"encoder.image_channels={enc.image_channels} must be {expected_in} when context={self.context}"
            )
        expected_latent = enc.latent_dim + (fcnn.latent_dim + self.decoder_act_channels if self.context else 0)
        if dec.latent_dim != expected_latent or dec.image_channels != 3:
            raise ValueError(
                f"decoder latent_dim={dec.latent_dim}, image_channels={dec.image_channels} must be {expected_latent}, 3"
                " (frame_cnn latent + decoder_act_channels + encoder latent with context, encoder latent without)"
            )
        if dec.downsampling != enc.downsampling or (self.context and fcnn.downsampling != enc.downsampling):
            raise ValueError(
                f"decoder.down={dec.down} and frame_cnn.down={fcnn.down} must scale as encoder.down={enc.down}"
            )
        if self.context and fcnn.image_channels != 3:
            raise ValueError(f"frame_cnn.image_channels={fcnn.image_channels} must be 3")

    @property
    def latent_res(self) -> int:
        """Side of the latent grid (8 with the official CNNs at 64 x 64)."""
        return self.image_size // self.encoder.downsampling

    @property
    def tokens_grid_res(self) -> int:
        return math.isqrt(self.tokens_per_frame)

    @property
    def token_res(self) -> int:
        """Side of the latent patch of one token."""
        return self.latent_res // self.tokens_grid_res


class TokenizerEncoding(NamedTuple):
    """``z [B, K, D]``: normalized projections (float32); ``q [B, K, D]``: their codes with a straight-through gradient
    to ``z``; ``tokens [B, K]`` (int64)."""

    z: torch.Tensor
    q: torch.Tensor
    tokens: torch.Tensor


def reconstruction_losses(target: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unweighted reconstruction terms of images ``[N, C, H, W]``: ``l1 = mean|delta|``, ``l2 = mean delta^2`` and
    ``max_pixel_l2 = mean_n max_{c,h,w} delta_n^2`` (the worst value of each image, averaged over images)."""
    delta = target.float() - recon.float()
    return {
        "l1": delta.abs().mean(),
        "l2": delta.pow(2).mean(),
        "max_pixel_l2": delta.pow(2).flatten(1).max(dim=1).values.mean(),
    }


class Tokenizer(nn.Module):
    """The Δ-IRIS tokenizer (see the module docstring). Frames are float ``[B, 3, H, W]`` in [0, 1].

    :param cfg: :class:`TokenizerConfig`
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_res, self.tokens_grid_res, self.token_res = cfg.latent_res, cfg.tokens_grid_res, cfg.token_res
        if cfg.context:
            self.encoder_act_emb = nn.Embedding(cfg.num_actions, cfg.image_size**2)
            self.decoder_act_emb = nn.Embedding(cfg.num_actions, cfg.decoder_act_channels * cfg.latent_res**2)
            self.frame_cnn = FrameEncoder(cfg.frame_cnn)
        self.encoder = FrameEncoder(cfg.encoder)
        self.decoder = FrameDecoder(cfg.decoder)
        self.quantizer = Quantizer(
            cfg.codebook_size, cfg.codebook_dim, cfg.encoder.latent_dim * cfg.token_res**2,
            cfg.max_codebook_updates_with_revival,
        )
        init_gpt2_weights(self)

    @property
    def device(self) -> torch.device:
        return self.quantizer.codebook.device

    def to_patches(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent grid ``[B, E, g*k, g*k]`` -> ``[B, g*g, k*k*E]``: token ``i * g + j`` holds patch ``(i, j)``,
        flattened as (row, column, channel)."""
        b, e, g, k = latent.size(0), latent.size(1), self.tokens_grid_res, self.token_res
        return latent.reshape(b, e, g, k, g, k).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, k * k * e)

    def from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_patches`."""
        b, g, k = patches.size(0), self.tokens_grid_res, self.token_res
        return patches.reshape(b, g, g, k, k, -1).permute(0, 5, 1, 3, 2, 4).reshape(b, -1, g * k, g * k)

    def encode(self, x_prev: torch.Tensor, act: torch.Tensor, x_next: torch.Tensor) -> TokenizerEncoding:
        """Tokens of ``x_next [B, 3, H, W]`` given ``x_prev [B, 3, H, W]`` and the action ``act [B]`` taken there."""
        if self.cfg.context:
            plane = self.encoder_act_emb(act).view(-1, 1, self.cfg.image_size, self.cfg.image_size)
            x = torch.cat((x_prev, plane.to(x_prev.dtype), x_next), dim=1)
        else:
            x = x_next
        quantized = self.quantizer(self.to_patches(self.encoder(x)).flatten(0, 1))
        b, k = x.size(0), self.cfg.tokens_per_frame
        return TokenizerEncoding(*(t.view(b, k, *t.shape[1:]) for t in quantized))

    def decode(self, x_prev: torch.Tensor, act: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, 3, H, W]`` (not clamped) of the next frame from its codes ``q [B, K, D]``, the
        previous frame ``x_prev [B, 3, H, W]`` and the action ``act [B]``."""
        latent = self.from_patches(self.quantizer.post_quant_proj(q))
        if self.cfg.context:
            r = self.latent_res
            act_planes = self.decoder_act_emb(act).view(-1, self.cfg.decoder_act_channels, r, r)
            frame = self.frame_cnn(x_prev)
            latent = torch.cat((frame, act_planes.to(frame.dtype), latent.to(frame.dtype)), dim=1)
        return self.decoder(latent)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, K]`` -> their unit-norm codes ``[B, K, D]`` (what :meth:`decode` takes as ``q``)."""
        return self.quantizer.embed_codes(tokens)

    @torch.no_grad()
    def tokenize(self, x_prev: torch.Tensor, act: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, K]`` of ``x_next`` given ``x_prev`` and ``act``."""
        return self.encode(x_prev, act, x_next).tokens

    @torch.no_grad()
    def decode_tokens(self, x_prev: torch.Tensor, act: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The frame ``[B, 3, H, W]`` that ``tokens [B, K]`` encode after ``x_prev`` and ``act``, clamped to [0, 1]
        and snapped to the 256 levels of a uint8 frame (official ``decode(..., should_clamp=True)``)."""
        r = self.decode(x_prev, act, self.embed_tokens(tokens)).float()
        return r.clamp(0, 1).mul(255).round().div(255)

    def update_codebook(self, z: torch.Tensor, tokens: torch.Tensor) -> dict[str, float]:
        """EMA codebook update and dead-code revival from normalized ``z [..., D]`` and their ``tokens [...]``."""
        return self.quantizer.update_codebook(z, tokens)

    def loss(self, frames: torch.Tensor, acts: torch.Tensor, mask: torch.Tensor) -> LossAndLogs:
        """Tokenizer loss on segments ``frames [B, T, 3, H, W]`` (float in [0, 1]), ``acts [B, T]`` (int64;
        ``acts[:, t]`` leads from frame ``t`` to ``t + 1``), ``mask [B, T]`` (False on padding). Uses the pairs
        ``(t, t+1)`` where both frames are valid; in training mode also updates the codebook. Returns
        ``(loss, logs)``; the logged loss terms are weighted (they sum to ``loss``), as the official logs."""
        if not frames.is_floating_point():
            raise ValueError(f"frames must be float in [0, 1], got dtype {frames.dtype}")
        valid = mask[:, :-1] & mask[:, 1:]
        if not valid.any():
            zero = sum(p.sum() for p in self.parameters()) * 0.0  # keeps backward() valid on an empty batch
            return zero, {"loss": 0.0}
        x_prev, act, x_next = frames[:, :-1][valid], acts[:, :-1][valid], frames[:, 1:][valid]

        enc = self.encode(x_prev, act, x_next)
        recon = self.decode(x_prev, act, enc.q)
        rec = reconstruction_losses(x_next, recon)
        c = self.cfg
        terms = {
            "commitment_loss": c.commitment_weight * (enc.z - enc.q.detach()).pow(2).mean(),
            "reconstruction_loss_l1": c.l1_weight * rec["l1"],
            "reconstruction_loss_l2": c.l2_weight * rec["l2"],
            "reconstruction_loss_max_pixel_l2": c.max_pixel_l2_weight * rec["max_pixel_l2"],
        }
        loss = sum(terms.values())
        logs = {name: value.item() for name, value in terms.items()}
        logs["loss"] = loss.item()
        logs["codebook_usage"] = enc.tokens.unique().numel() / c.codebook_size
        if self.training:
            logs.update(self.update_codebook(enc.z, enc.tokens))
        logs["codebook_entropy"] = self.quantizer.codebook_entropy()
        return loss, logs
