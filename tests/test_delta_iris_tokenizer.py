"""Δ-IRIS tokenizer and its CNNs: shapes and parameter counts of the official configurations, the cosine quantizer,
its EMA codebook and dead-code revival on hand-made vectors, the loss terms, a tiny tokenizer fitted on real Crafter
frames, a safetensors round trip and bf16 autocast."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from agents.common.convnet import Downsample, FrameCnnConfig, FrameDecoder, FrameEncoder, ResidualBlock, Upsample
from agents.common.transformer import count_parameters
from envs.crafter import CrafterEnv
from world_models.delta_iris import Quantizer, Tokenizer, TokenizerConfig, reconstruction_losses

CRAFTER_ACTIONS = 17


def random_pairs(b: int, num_actions: int = CRAFTER_ACTIONS, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, size, size, generator=g), torch.randint(0, num_actions, (b,), generator=g),
            torch.rand(b, 3, size, size, generator=g))


def hand_quantizer(codes: list[list[float]], max_updates: int | None = 0) -> Quantizer:
    """A quantizer whose projection is the identity and whose codebook is ``codes``."""
    c, d = len(codes), len(codes[0])
    quantizer = Quantizer(c, d, input_dim=d, max_codebook_updates_with_revival=max_updates)
    with torch.no_grad():
        quantizer.pre_quant_proj.weight.copy_(torch.eye(d))
        quantizer.pre_quant_proj.bias.zero_()
        quantizer.codebook.copy_(torch.tensor(codes))
    return quantizer


# ----------------------------------------------------------------------------------------------------------------
# Shapes and parameter counts
# ----------------------------------------------------------------------------------------------------------------
def conv(i: int, o: int, k: int) -> int:
    return i * o * k * k + o


def res_block(i: int, o: int) -> int:  # GN(i), conv3x3, GN(o), conv3x3, 1x1 skip when the width changes
    return 2 * i + conv(i, o, 3) + 2 * o + conv(o, o, 3) + (conv(i, o, 1) if i != o else 0)


def encoder_params(cfg: FrameCnnConfig) -> int:
    n, width = conv(cfg.image_channels, cfg.num_channels, 3), cfg.num_channels
    for m, d in zip(cfg.mult, cfg.down, strict=True):
        n += res_block(width, m * cfg.num_channels) + (conv(m * cfg.num_channels, m * cfg.num_channels, 2) if d else 0)
        width = m * cfg.num_channels
    return n + 2 * width + conv(width, cfg.latent_dim, 3)


def decoder_params(cfg: FrameCnnConfig) -> int:
    widths = [m * cfg.num_channels for m in cfg.mult]
    n = conv(cfg.latent_dim, widths[-1], 3)
    for i in reversed(range(len(widths))):
        upsample = conv(widths[i], widths[i], 3) if cfg.down[i] else 0
        n += upsample + res_block(widths[i], ([cfg.num_channels] + widths)[i])
    return n + 2 * cfg.num_channels + conv(cfg.num_channels, cfg.image_channels, 3)


def test_crafter_tokenizer_has_4_tokens_over_an_8x8x64_latent_and_a_1024x64_codebook() -> None:
    tok = Tokenizer(TokenizerConfig.crafter(CRAFTER_ACTIONS)).eval()
    assert (tok.latent_res, tok.tokens_grid_res, tok.token_res) == (8, 2, 4)
    assert tok.quantizer.codebook.shape == (1024, 64)
    assert tok.quantizer.pre_quant_proj.in_features == 4 * 4 * 64  # one token = a 4x4 patch of the 64-ch latent
    x_prev, act, x_next = random_pairs(2)
    with torch.no_grad():
        assert tok.encoder(torch.cat((x_prev, x_prev[:, :1], x_next), 1)).shape == (2, 64, 8, 8)
        enc = tok.encode(x_prev, act, x_next)
        assert enc.z.shape == enc.q.shape == (2, 4, 64) and enc.tokens.shape == (2, 4)
        assert enc.tokens.dtype == torch.int64
        assert torch.allclose(enc.z.norm(dim=-1), torch.ones(2, 4))
        assert tok.decode(x_prev, act, enc.q).shape == (2, 3, 64, 64)
    assert tok.embed_tokens(enc.tokens).shape == (2, 4, 64)


def test_iris_baseline_has_16_tokens_and_ignores_the_previous_frame_and_action() -> None:
    tok = Tokenizer(TokenizerConfig.iris(CRAFTER_ACTIONS)).eval()
    assert (tok.tokens_grid_res, tok.token_res) == (4, 2)
    assert tok.quantizer.codebook.shape == (1024, 64) and tok.quantizer.pre_quant_proj.in_features == 2 * 2 * 64
    assert not hasattr(tok, "frame_cnn") and not hasattr(tok, "encoder_act_emb")
    x_prev, act, x_next = random_pairs(2)
    other_prev, other_act, _ = random_pairs(2, seed=1)
    tokens = tok.tokenize(x_prev, act, x_next)
    assert tokens.shape == (2, 16)
    assert torch.equal(tokens, tok.tokenize(other_prev, other_act, x_next))
    assert torch.equal(tok.decode_tokens(x_prev, act, tokens), tok.decode_tokens(other_prev, other_act, tokens))


def test_crafter_tokenizer_has_the_official_5_409_611_parameters_and_atari_iris_follow_the_same_architecture() -> None:
    crafter = Tokenizer(TokenizerConfig.crafter(CRAFTER_ACTIONS))
    # action embeddings: 17 x 64*64 = 69,632 (encoder plane) and 17 x 4*8*8 = 4,352 (decoder planes);
    # quantizer: Linear(1024 -> 64) 65,600 + Linear(64 -> 1024) 66,560 = 132,160 (the codebook is a buffer)
    assert count_parameters(crafter.encoder_act_emb) == 69_632
    assert count_parameters(crafter.decoder_act_emb) == 4_352
    assert count_parameters(crafter.quantizer) == 132_160
    for name in ("crafter", "atari", "iris"):
        tok = Tokenizer(getattr(TokenizerConfig, name)(CRAFTER_ACTIONS))
        assert count_parameters(tok.encoder) == encoder_params(tok.cfg.encoder)
        assert count_parameters(tok.decoder) == decoder_params(tok.cfg.decoder)
        if tok.cfg.context:
            assert count_parameters(tok.frame_cnn) == encoder_params(tok.cfg.frame_cnn)
    assert count_parameters(crafter) == 5_409_611  # "5409611 parameters in agent.tokenizer" (official src/agent.py)
    # Atari: frame_cnn 32 channels to 16 (455,856 instead of 1,761,608), decoder input 84 channels instead of 76
    # (+8 * 256 * 9 = 18,432): 5,409,611 - 1,761,608 + 455,856 + 18,432 = 4,122,291
    assert count_parameters(Tokenizer(TokenizerConfig.atari(CRAFTER_ACTIONS))) == 4_122_291
    assert count_parameters(Tokenizer(TokenizerConfig.iris(CRAFTER_ACTIONS))) == 3_444_995


def test_frame_cnns_follow_the_official_layer_order_and_shapes() -> None:
    cfg = FrameCnnConfig(3, 16, 32, [1, 1, 2, 2, 4], [1, 0, 1, 1, 0])
    enc, dec = FrameEncoder(cfg), FrameDecoder(cfg)
    kinds = [type(m).__name__ for m in enc.layers]
    assert kinds == ["Conv2d", "ResidualBlock", "Downsample", "ResidualBlock", "ResidualBlock", "Downsample",
                     "ResidualBlock", "Downsample", "ResidualBlock", "GroupNorm", "SiLU", "Conv2d"]
    kinds = [type(m).__name__ for m in dec.layers]
    assert kinds == ["Conv2d", "ResidualBlock", "Upsample", "ResidualBlock", "Upsample", "ResidualBlock",
                     "ResidualBlock", "Upsample", "ResidualBlock", "GroupNorm", "SiLU", "Conv2d"]
    blocks = [(m.f[2].in_channels, m.f[2].out_channels) for m in dec.layers if isinstance(m, ResidualBlock)]
    assert blocks == [(128, 64), (64, 64), (64, 32), (32, 32), (32, 32)]
    assert all(m.num_groups == 32 for m in enc.modules() if isinstance(m, nn.GroupNorm))
    assert isinstance(enc.layers[2], Downsample) and enc.layers[2].conv.kernel_size == (2, 2)
    assert isinstance(dec.layers[2], Upsample)
    x = torch.rand(2, 3, 64, 48)
    assert enc(x).shape == (2, 16, 8, 6)
    assert dec(enc(x)).shape == (2, 3, 64, 48)
    narrow = FrameEncoder(FrameCnnConfig(3, 4, 8, [1, 2], [1, 1]))  # fewer than 32 channels: gcd(32, c) groups
    assert [m.num_groups for m in narrow.modules() if isinstance(m, nn.GroupNorm)] == [8, 8, 8, 16, 16]


# ----------------------------------------------------------------------------------------------------------------
# Quantizer: cosine matching, straight-through, EMA, revival
# ----------------------------------------------------------------------------------------------------------------
def test_cosine_matching_picks_the_code_of_closest_direction_whatever_the_norms() -> None:
    # codes (10, 0), (0, 1), (-1, 0), (0, -1): read as unit vectors, so the long first code does not win by its norm
    q = hand_quantizer([[10.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    x = torch.tensor([[0.3, 1.0], [5.0, -1.0], [-2.0, -1.9], [-0.1, -0.5]])
    # (0.3, 1):    cos = 0.287 / 0.958 / -0.287 / -0.958 -> 1 (a dot product with the raw codes would pick 0: 3 > 1)
    # (5, -1):     cos = 0.981 / -0.196 / -0.981 / 0.196 -> 0
    # (-2, -1.9):  |x| = 2.759, cos with (-1, 0) = 0.725, with (0, -1) = 0.689 -> 2
    # (-0.1, -0.5): cos with (0, -1) = 0.981 -> 3
    out = q(x)
    assert out.tokens.tolist() == [1, 0, 2, 3]
    assert torch.allclose(out.z, x / x.norm(dim=1, keepdim=True))
    assert torch.allclose(out.q, torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]]))


def test_straight_through_passes_the_gradient_of_q_to_z_and_on_to_the_encoder() -> None:
    q = hand_quantizer([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    x = torch.tensor([[3.0, 4.0], [-1.0, 0.5]], requires_grad=True)
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    (q(x).q * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (F.normalize(x2, dim=-1) * w).sum().backward()  # dq/dz is the identity: same gradient as through z itself
    assert torch.allclose(x.grad, x2.grad) and x.grad.abs().sum() > 0

    tok = Tokenizer(TokenizerConfig.tiny(CRAFTER_ACTIONS))
    x_prev, act, x_next = random_pairs(2)
    enc = tok.encode(x_prev, act, x_next)
    tok.decode(x_prev, act, enc.q).pow(2).mean().backward()  # reconstruction only, no commitment term
    assert tok.encoder.layers[0].weight.grad.abs().sum() > 0
    assert tok.encoder_act_emb.weight.grad.abs().sum() > 0
    assert tok.quantizer.pre_quant_proj.weight.grad.abs().sum() > 0
    assert not tok.quantizer.codebook.requires_grad


def test_ema_update_moves_each_used_code_one_percent_toward_the_normalized_mean_of_its_vectors() -> None:
    q = hand_quantizer([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    z = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
    tokens = q(z).tokens  # cos: (0.6, 0.8) -> code 1 (0.8 > 0.6); (1, 0) -> 0; (0.8, 0.6) -> 0 (0.8 > 0.6)
    assert tokens.tolist() == [1, 0, 0]
    logs = q.update_codebook(z, tokens)
    # code 0: mean direction normalize((1, 0) + (0.8, 0.6)) = (1.8, 0.6) / sqrt(3.6) = (0.948683, 0.316228)
    #         0.99 (1, 0) + 0.01 (0.948683, 0.316228) = (0.999487, 0.003162), norm 0.999492 -> (0.999995, 0.003164)
    # code 1: 0.99 (0, 1) + 0.01 (0.6, 0.8) = (0.006, 0.998), norm sqrt(0.99604) = 0.998018 -> (0.006012, 0.999982)
    # codes 2, 3 (unused): 0.99 c, normalized again -> unchanged
    expected = torch.tensor([[0.999995, 0.003164], [0.006012, 0.999982], [-1.0, 0.0], [0.0, -1.0]])
    assert torch.allclose(q.codebook, expected, atol=2e-6)
    # usage: 0.98 * 1/4 + 0.02 * (2/3, 1/3, 0, 0) = (0.258333, 0.251667, 0.245, 0.245)
    assert torch.allclose(q.codeword_freqs, torch.tensor([0.258333, 0.251667, 0.245, 0.245]), atol=1e-6)
    # entropy ~ 2 bits, above log2(4) - 2 = 0: no revival
    assert logs == {"codewords_revived": 0.0} and int(q.num_updates) == 1


def test_dead_codes_are_replaced_by_batch_vectors_when_usage_collapses() -> None:
    # 8 codes: code 0 = (1, 0), codes 1-7 pointing left (120..240 degrees): every z below (within 30 degrees of the
    # x axis) picks code 0. With usage (1, 0, ..., 0) the EMA stays (1, 0, ..., 0): entropy 0 < 1 bit (collapse, so
    # revival is allowed even with max_codebook_updates_with_revival = 0) and < log2(8) - 2 = 1 bit. Codes 1-7 have
    # usage 0 < 1 / (10 * 8): all 7 expire and, as the batch has 8 >= 7 vectors, each gets a distinct batch vector.
    angles = [120, 135, 150, 180, 210, 225, 240]
    codes = [[1.0, 0.0]] + [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles]
    q = hand_quantizer(codes, max_updates=0)
    q.codeword_freqs.copy_(torch.tensor([1.0] + [0.0] * 7))
    z = torch.stack([torch.tensor([math.cos(math.radians(a)), math.sin(math.radians(a))])
                     for a in (-30, -20, -10, -5, 5, 10, 20, 30)])
    tokens = q(z).tokens
    assert tokens.tolist() == [0] * 8
    assert q.update_codebook(z, tokens) == {"codewords_revived": 7.0}
    revived = q.codebook[1:]
    distances = torch.cdist(revived, z)
    assert torch.all(distances.min(dim=1).values < 1e-6)  # each revived code is one of the batch vectors ...
    assert len(set(distances.argmin(dim=1).tolist())) == 7  # ... each a different one
    assert torch.allclose(q.codeword_freqs, torch.tensor([1.0] + [1 / 8] * 7))
    assert torch.allclose(q.codebook[0], torch.tensor([1.0, 0.0]), atol=1e-6)  # the mean of z points along x


@pytest.mark.parametrize(("max_updates", "num_updates", "revives"),
                         [(0, 0, False), (None, 0, True), (3, 2, True), (3, 3, False)])
def test_revival_outside_collapse_only_during_the_first_max_codebook_updates_with_revival(
    max_updates: int | None, num_updates: int, revives: bool
) -> None:
    # 16 codes, usage (0.5, 0.5, 0, ...) and a batch split evenly between codes 0 and 1: the EMA stays put, entropy is
    # exactly 1 bit: not a collapse (< 1) but under log2(16) - 2 = 2 bits, so revival depends on the update count.
    # 14 codes are dead, the batch has 4 vectors: 4 revived.
    codes = [[1.0, 0.0], [0.0, 1.0]] + [[-1.0, 0.0]] * 14
    q = hand_quantizer(codes, max_updates=max_updates)
    q.codeword_freqs.copy_(torch.tensor([0.5, 0.5] + [0.0] * 14))
    q.num_updates.fill_(num_updates)
    z = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]])
    tokens = q(z).tokens
    assert tokens.tolist() == [0, 0, 1, 1]
    assert q.update_codebook(z, tokens) == {"codewords_revived": 4.0 if revives else 0.0}
    assert int(q.num_updates) == num_updates + 1


# ----------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------
def test_reconstruction_terms_on_a_hand_made_pair_of_images() -> None:
    target = torch.zeros(2, 2, 1, 2)  # 2 images, 2 channels, 1 x 2 pixels
    delta = torch.tensor([[[[0.1, -0.2]], [[0.3, 0.0]]], [[[0.0, 0.0]], [[0.0, -0.5]]]])
    terms = reconstruction_losses(target, target - delta)
    assert terms["l1"].item() == pytest.approx((0.1 + 0.2 + 0.3 + 0.5) / 8)  # 0.1375
    assert terms["l2"].item() == pytest.approx((0.01 + 0.04 + 0.09 + 0.25) / 8)  # 0.04875
    # worst value of each image: 0.3^2 = 0.09 (image 0), 0.5^2 = 0.25 (image 1); mean 0.17
    assert terms["max_pixel_l2"].item() == pytest.approx(0.17)


def test_loss_is_the_weighted_sum_of_commitment_and_reconstruction_terms_on_valid_pairs_only() -> None:
    tok = Tokenizer(TokenizerConfig.tiny(CRAFTER_ACTIONS)).eval()
    g = torch.Generator().manual_seed(0)
    frames, acts = torch.rand(2, 3, 3, 64, 64, generator=g), torch.randint(0, CRAFTER_ACTIONS, (2, 3), generator=g)
    mask = torch.tensor([[True, True, True], [True, True, False]])  # valid pairs: (0,0-1), (0,1-2), (1,0-1)
    frames[1, 2] = float("nan")  # padding never reaches the loss
    loss, logs = tok.loss(frames, acts, mask)

    x_prev = torch.stack([frames[0, 0], frames[0, 1], frames[1, 0]])
    x_next = torch.stack([frames[0, 1], frames[0, 2], frames[1, 1]])
    act = torch.stack([acts[0, 0], acts[0, 1], acts[1, 0]])
    enc = tok.encode(x_prev, act, x_next)
    rec = reconstruction_losses(x_next, tok.decode(x_prev, act, enc.q))
    commitment = (enc.z - tok.embed_tokens(enc.tokens)).pow(2).mean()
    expected = 0.02 * commitment + 0.1 * rec["l1"] + rec["l2"] + 0.01 * rec["max_pixel_l2"]
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["commitment_loss"] == pytest.approx(0.02 * commitment.item(), rel=1e-4)
    assert logs["reconstruction_loss_max_pixel_l2"] == pytest.approx(0.01 * rec["max_pixel_l2"].item(), rel=1e-5)
    assert logs["codebook_usage"] == pytest.approx(enc.tokens.unique().numel() / 64)
    assert int(tok.quantizer.num_updates) == 0  # eval mode: the codebook does not move
    tok.train()
    tok.loss(frames, acts, mask)
    assert int(tok.quantizer.num_updates) == 1


def test_decode_tokens_gives_the_clamped_uint8_levels_of_the_decoded_codes() -> None:
    tok = Tokenizer(TokenizerConfig.tiny(CRAFTER_ACTIONS)).eval()
    x_prev, act, x_next = random_pairs(3)
    tokens = tok.tokenize(x_prev, act, x_next)
    frame = tok.decode_tokens(x_prev, act, tokens)
    assert frame.shape == (3, 3, 64, 64) and frame.min() >= 0 and frame.max() <= 1
    assert torch.equal(frame, (frame * 255).round() / 255)
    with torch.no_grad():
        raw = tok.decode(x_prev, act, tok.encode(x_prev, act, x_next).q).clamp(0, 1)
    assert torch.allclose(frame, raw, atol=0.5 / 255 + 1e-5)
    assert torch.allclose(tok.embed_tokens(tokens).norm(dim=-1), torch.ones(3, 4))


# ----------------------------------------------------------------------------------------------------------------
# Training on real Crafter frames, persistence, bf16
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crafter_pairs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8 transitions spread over 200 random steps of Crafter (seed 0): frames [8, 2, 3, 64, 64], actions, mask."""
    env, rng = CrafterEnv(seed=0), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    frames, acts = [obs], []
    for _ in range(200):
        acts.append(int(rng.integers(CRAFTER_ACTIONS)))
        obs, *_ = env.step(acts[-1])
        frames.append(obs)
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    idx = torch.arange(0, 200, 25)
    act = torch.tensor(acts)[idx]
    return torch.stack([video[idx], video[idx + 1]], 1), torch.stack([act, act], 1), torch.ones(8, 2, dtype=torch.bool)


def test_tiny_tokenizer_fitted_on_crafter_frames_reconstructs_them_far_better_than_a_constant_colour(
    crafter_pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    frames, acts, mask = crafter_pairs
    x_next = frames[:, 1]
    constant = reconstruction_losses(x_next, x_next.mean(dim=(0, 2, 3), keepdim=True).expand_as(x_next))["l2"]
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig.tiny(CRAFTER_ACTIONS))
    optimizer = torch.optim.AdamW(tok.parameters(), lr=3e-3, weight_decay=0.01)
    first = tok.eval().loss(frames, acts, mask)[1]["reconstruction_loss_l2"]
    tok.train()
    for _ in range(100):
        loss, logs = tok.loss(frames, acts, mask)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(tok.parameters(), 10.0)
        optimizer.step()
    assert int(tok.quantizer.num_updates) == 100 and 0 < logs["codebook_usage"] <= 1
    last = tok.eval().loss(frames, acts, mask)[1]["reconstruction_loss_l2"]
    assert last < 0.1 * first
    assert last < 0.7 * constant.item()  # ~0.015 against ~0.032 for the best constant colour per channel


def test_state_dict_round_trip_through_safetensors_gives_identical_tokens_and_frames(tmp_path: Path) -> None:
    cfg = TokenizerConfig.tiny(CRAFTER_ACTIONS)
    tok = Tokenizer(cfg)
    x_prev, act, x_next = random_pairs(4)
    frames, acts = torch.stack([x_prev, x_next], 1), torch.stack([act, act], 1)
    tok.loss(frames, acts, torch.ones(4, 2, dtype=torch.bool))  # train mode: the EMA buffers move
    assert int(tok.quantizer.num_updates) == 1
    tok.eval()
    save_file(tok.state_dict(), str(tmp_path / "tokenizer.safetensors"))
    torch.manual_seed(123)
    other = Tokenizer(cfg).eval()
    other.load_state_dict(load_file(str(tmp_path / "tokenizer.safetensors")))
    assert torch.equal(other.quantizer.codebook, tok.quantizer.codebook)
    assert torch.equal(other.quantizer.codeword_freqs, tok.quantizer.codeword_freqs)
    assert int(other.quantizer.num_updates) == 1
    tokens = tok.tokenize(x_prev, act, x_next)
    assert torch.equal(other.tokenize(x_prev, act, x_next), tokens)
    assert torch.equal(other.decode_tokens(x_prev, act, tokens), tok.decode_tokens(x_prev, act, tokens))


def test_bf16_autocast_forward_and_backward_keep_the_quantizer_in_float32() -> None:
    tok = Tokenizer(TokenizerConfig.tiny(CRAFTER_ACTIONS))
    x_prev, act, x_next = random_pairs(4)
    frames, acts = torch.stack([x_prev, x_next], 1), torch.stack([act, act], 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc = tok.encode(x_prev, act, x_next)
        assert enc.z.dtype == enc.q.dtype == torch.float32
        assert tok.decode(x_prev, act, enc.q).dtype == torch.bfloat16
        loss, logs = tok.loss(frames, acts, torch.ones(4, 2, dtype=torch.bool))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and math.isfinite(logs["codebook_entropy"])
    assert tok.encoder.layers[0].weight.grad is not None and torch.isfinite(tok.encoder.layers[0].weight.grad).all()
    assert tok.decoder.layers[-1].weight.grad.abs().sum() > 0
    assert tok.quantizer.codebook.dtype == torch.float32 and int(tok.quantizer.num_updates) == 1


# ----------------------------------------------------------------------------------------------------------------
# Config validation
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_actions": 0}, "num_actions=0"),
        ({"tokens_per_frame": 3}, "tokens_per_frame=3"),
        ({"tokens_per_frame": 9}, "tokens_per_frame=9"),  # 3 x 3 does not divide the 8 x 8 latent
        ({"codebook_size": 1000}, "codebook_size=1000"),
        ({"image_size": 60}, "image_size=60"),
        ({"max_codebook_updates_with_revival": -1}, "max_codebook_updates_with_revival=-1"),
        ({"decoder_act_channels": 0}, "decoder_act_channels=0"),
        ({"context": False}, "encoder.image_channels=7"),
        ({"encoder": FrameCnnConfig(7, 32, 64, [1, 1, 2, 2, 4], [1, 0, 1, 1, 0])}, "decoder latent_dim=76"),
        ({"frame_cnn": FrameCnnConfig(3, 8, 64, [1, 1, 2, 2], [1, 0, 1, 0])}, "frame_cnn.down"),
        ({"l2_weight": -1.0}, "l2_weight=-1.0"),
    ],
)
def test_bad_tokenizer_config_values_raise_a_value_error_naming_them(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        TokenizerConfig(**{"num_actions": CRAFTER_ACTIONS, **overrides})


@pytest.mark.parametrize("name", ["crafter", "atari", "iris", "tiny"])
def test_configs_survive_a_round_trip_through_plain_dicts(name: str) -> None:
    cfg = getattr(TokenizerConfig, name)(CRAFTER_ACTIONS)
    assert TokenizerConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 8, 0, [1], [1]), "num_channels=0"),
        ((3, 8, 16, [1, 2], [1]), "mult=\\[1, 2\\] and down=\\[1\\]"),
        ((3, 8, 16, [1], [2]), "down=\\[2\\]"),
        ((3, 8, 16, [0], [1]), "mult=\\[0\\]"),
    ],
)
def test_bad_frame_cnn_config_values_raise_a_value_error_naming_them(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrameCnnConfig(*args)
