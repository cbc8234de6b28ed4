"""Delta-IRIS's transformer world model and its imagination env: symlog / two-hot targets, the parameter count of the
official architecture, causality, the KV cache (with and without cross-layer K/V sharing), the loss and its batch
contract, and batched imagination with a tiny tokenizer on real Crafter frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agents.common.transformer import KVCache, count_parameters
from agents.common.two_hot import bucket_mean, decode, symexp, symlog, two_hot, two_hot_loss
from envs.crafter import CrafterEnv
from world_models.delta_iris.tokenizer import Tokenizer, TokenizerConfig
from world_models.delta_iris.world_model import WorldModel, WorldModelConfig
from world_models.delta_iris.world_model_env import DeltaIrisWorldModelEnv
from world_models.imagination import imagine

A = 17  # Crafter's actions
K = 4  # Delta-tokens per frame


def perturbed(model: nn.Module, seed: int = 0, std: float = 0.3) -> nn.Module:
    """Weights far from their init (N(0, 0.02), zero biases), so that every input visibly moves every output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "norm" in name and p.ndim == 1 and name.endswith("weight") else std * noise)
    return model


def tiny_world_model(cla_factor: int = 1, layers: int = 2, seed: int = 0, **kw) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig.tiny(A, layers=layers, cla_factor=cla_factor, **kw))


def random_blocks(b: int = 2, t: int = 3, vocab: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, 3, 64, 64, generator=g), torch.randint(0, A, (b, t), generator=g),
            torch.randint(0, vocab, (b, t, K), generator=g))


@pytest.fixture(scope="module")
def crafter() -> tuple[torch.Tensor, torch.Tensor]:
    """A real Crafter trajectory: frames ``[25, 3, 64, 64]`` in [0, 1] and the 25 actions taken at them."""
    env = CrafterEnv(area=(24, 24), seed=0)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    frames, acts = [obs], []
    for _ in range(24):
        acts.append(int(rng.integers(A)))
        obs, *_ = env.step(acts[-1])
        frames.append(obs)
    acts.append(int(rng.integers(A)))
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor(acts)


def windows(crafter, b: int, n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` contexts of ``n`` consecutive Crafter steps, starting at ``offset, offset + 2, ...``."""
    frames, acts = crafter
    starts = [(offset + 2 * i) % (len(acts) - n + 1) for i in range(b)]
    return torch.stack([frames[s:s + n] for s in starts]), torch.stack([acts[s:s + n] for s in starts])


# ----------------------------------------------------------------------------------------------------------------
# symlog and two-hot (agents/common/two_hot.py)
# ----------------------------------------------------------------------------------------------------------------
def test_symlog_hand_values_and_symexp_inverts_it() -> None:
    # symlog(e - 1) = log(e) = 1; symlog(-(e^2 - 1)) = -2; symlog(0) = 0
    x = torch.tensor([math.e - 1, -(math.e**2 - 1), 0.0], dtype=torch.float64)
    assert torch.allclose(symlog(x), torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64))
    y = torch.tensor([-1e4, -3.5, -1.0, 0.0, 0.5, 7.0, 1e4], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(y)), y, rtol=1e-12)


def test_two_hot_hand_values() -> None:
    # buckets linspace(-1, 1, 5) = [-1, -0.5, 0, 0.5, 1]; 0.1 lies between 0 and 0.5 at 0.2 of the way
    assert torch.allclose(two_hot(torch.tensor(0.1), 5, -1.0, 1.0), torch.tensor([0, 0, 0.8, 0.2, 0]))
    # Delta-IRIS buckets: 255 on [-20, 20], spacing 40/254; 1.0 = bucket 133 + 0.35 spacing (21 * 254 / 40 = 133.35)
    w = two_hot(torch.tensor([1.0]))[0]
    assert w[133].item() == pytest.approx(0.65, abs=1e-4) and w[134].item() == pytest.approx(0.35, abs=1e-4)
    assert w.sum().item() == pytest.approx(1.0) and (w > 0).sum() == 2


def test_two_hot_round_trips_through_bucket_mean_inside_the_range_and_clips_outside() -> None:
    x = torch.tensor([-20.0, -13.7, -0.01, 0.0, 0.3, 5.5, 19.99, 20.0])
    assert torch.allclose(bucket_mean(two_hot(x).log()), x, atol=1e-4)
    assert torch.allclose(decode(two_hot(symlog(torch.tensor([-250.0, 0.1, 3.0]))).log()),
                          torch.tensor([-250.0, 0.1, 3.0]), rtol=1e-3)
    outside = two_hot(torch.tensor([25.0, -30.0]))
    assert outside[0, -1] == 1 and outside[1, 0] == 1 and outside.sum() == 2


def test_two_hot_loss_of_uniform_logits_is_log_num_buckets() -> None:
    # sum_k w_k = 1 whatever the target, and every log-softmax entry is -log(255)
    assert two_hot_loss(torch.zeros(3, 255), torch.tensor([0.0, 1.0, -7.0])).item() == pytest.approx(math.log(255))


# ----------------------------------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------------------------------
def test_crafter_and_atari_parameter_counts_match_the_official_world_model() -> None:
    # Crafter (17 actions): frame CNN 446,632 + LayerNorm 1,024 + actions 8,704 + codes 524,288 + positions 126 * 512
    # = 64,512 + GPT 9,458,176 (3 x 3,152,384 + final norm 1,024) + heads 787,968 + 393,471 + 263,682
    assert count_parameters(WorldModel(WorldModelConfig.crafter(17))) == 11_948_457
    # Atari (18 actions, 256 wide, 4 heads, 26 blocks, CNN latent 4, 3 reward classes): 442,020 + 512 + 4,608 + 262,144
    # + 39,936 + 2,369,792 + 328,960 + 66,563 + 66,306
    assert count_parameters(WorldModel(WorldModelConfig.atari(18))) == 3_580_841


@pytest.mark.parametrize("cla_factor", [1, 2])
def test_causality_by_gradient(cla_factor: int) -> None:
    """Outputs of block t ignore later blocks; inside a block the logits of z^k ignore z^k, z^k+1, ..."""
    wm = perturbed(tiny_world_model(cla_factor, layers=3))
    frames, acts, tokens = random_blocks(b=1, t=3)
    frames.requires_grad_()
    x = wm.embed_blocks(frames, acts, tokens)
    tpb, t_len = K + 2, acts.shape[1]
    h = wm.transform(x, torch.arange(x.shape[1])).view(1, t_len, tpb, -1)
    for t in range(t_len):
        # reward and end read a_t (position 1); the logits of z^{k+1} read position 1 + k
        outputs = [(wm.head_rewards(h[:, t, 1]), 2), (wm.head_ends(h[:, t, 1]), 2)]
        outputs += [(wm.head_latents(h[:, t, 1 + k]), 2 + k) for k in range(K)]
        for out, first_unseen in outputs:
            g_x, g_frames = torch.autograd.grad(out.sum(), (x, frames), retain_graph=True)
            g = g_x.view(t_len, tpb, -1).abs().sum(-1)
            assert (g[t + 1:] == 0).all() and (g[t, first_unseen:] == 0).all()
            assert (g[:t] > 0).all() and (g[t, :first_unseen] > 0).all()
            assert (g_frames[0, t + 1:] == 0).all() and (g_frames[0, :t + 1].abs().sum((1, 2, 3)) > 0).all()


@pytest.mark.parametrize("cla_factor", [1, 2])
def test_kv_cached_generation_equals_the_uncached_forward(cla_factor: int) -> None:
    wm = perturbed(tiny_world_model(cla_factor, layers=3)).eval()
    frames, acts, tokens = random_blocks(b=2, t=4)
    with torch.no_grad():
        full = wm(frames, acts, tokens)
        cache = KVCache()  # block by block
        steps = [wm(frames[:, t:t + 1], acts[:, t:t + 1], tokens[:, t:t + 1], cache=cache) for t in range(4)]
        for i, name in enumerate(("logits_tokens", "logits_rewards", "logits_ends")):
            assert torch.allclose(torch.cat([s[i] for s in steps], 1), getattr(full, name), atol=1e-4, rtol=1e-4)
        x, cache = wm.embed_blocks(frames, acts, tokens), KVCache()  # token by token
        h = torch.cat([wm.transform(x[:, i:i + 1], torch.tensor([i]), cache=cache) for i in range(x.shape[1])], 1)
        logits = wm.head_latents(h.view(2, 4, K + 2, -1)[:, :, 1:1 + K])
    assert torch.allclose(logits, full.logits_tokens, atol=1e-4, rtol=1e-4)
    assert full.logits_tokens.std() > 1  # the perturbed model's logits are far from constant
    assert cache.length("self.0") == 4 * (K + 2)


def test_cla_halves_the_cached_tensors_and_bytes() -> None:
    frames, acts, tokens = random_blocks(b=2, t=3)
    sizes = {}
    for factor in (1, 2):
        wm, cache = tiny_world_model(factor, layers=4), KVCache()
        with torch.no_grad():
            wm(frames, acts, tokens, cache=cache)
        sizes[factor] = (cache.num_tensors, cache.nbytes, wm.kv_cache_bytes(2, 3))
    assert sizes[1] == (8, 2 * 4 * 2 * 18 * 64 * 4, 2 * 4 * 2 * 18 * 64 * 4)  # k and v x layers x B x tokens x E x fp32
    assert sizes[2] == (4, sizes[1][1] // 2, sizes[1][1] // 2)


def test_init_is_the_official_one() -> None:
    wm = WorldModel(WorldModelConfig.crafter(17))
    assert wm.head_latents[0].bias.abs().sum() == 0 and wm.transformer.blocks[0].attn.q_proj.bias.abs().sum() == 0
    assert wm.latents_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert wm.head_rewards[2].weight.std().item() == pytest.approx(0.02, rel=0.05)


# ----------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------
def test_loss_counts_each_term_where_its_data_is_real_and_atari_rewards_are_signs() -> None:
    wm = perturbed(tiny_world_model(two_hot_rewards=False, latents_weight=0.1, ends_weight=0.1))
    frames, acts, tokens = random_blocks(b=2, t=4)
    rews = torch.tensor([[0.0, 2.0, -0.5, 9.0], [5.0, -1.0, 0.0, 0.1]])
    ends = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])  # padded after an end / before start
    total, logs = wm.loss(frames, acts, rews, ends, mask, tokens=tokens[:, :3])
    out = wm(frames, acts, torch.cat([tokens[:, :3], torch.zeros(2, 1, K, dtype=torch.long)], 1))
    # latents: transitions (x_t, x_{t+1}) with both frames real: row 0 t = 0, 1; row 1 t = 1, 2
    pick = [(0, 0), (0, 1), (1, 1), (1, 2)]
    latents = F.cross_entropy(torch.cat([out.logits_tokens[i, t] for i, t in pick]),
                              torch.cat([tokens[i, t] for i, t in pick]))
    real = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]
    signs = torch.tensor([1, 2, 0, 0, 1, 2])  # sign(r) + 1 of the real steps
    rewards = F.cross_entropy(torch.stack([out.logits_rewards[i, t] for i, t in real]), signs)
    end = F.cross_entropy(torch.stack([out.logits_ends[i, t] for i, t in real]), torch.tensor([0, 0, 1, 0, 0, 1]))
    assert logs["loss_latents"] == pytest.approx(latents.item(), rel=1e-5)
    assert logs["loss_rewards"] == pytest.approx(rewards.item(), rel=1e-5)
    assert logs["loss_ends"] == pytest.approx(end.item(), rel=1e-5)
    assert total.item() == pytest.approx(0.1 * latents.item() + rewards.item() + 0.1 * end.item(), rel=1e-5)
    rews[0, 3], rews[1, 0] = -100.0, 100.0  # padded steps do not count
    assert wm.loss(frames, acts, rews, ends, mask, tokens=tokens[:, :3])[0].item() == pytest.approx(total.item())


def test_loss_decreases_when_fitting_a_fixed_batch_of_crafter_steps(crafter) -> None:
    wm = tiny_world_model()
    frames, acts = windows(crafter, b=2, n=4)
    tokens = torch.randint(0, 64, (2, 3, K), generator=torch.Generator().manual_seed(0))
    rews = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, -0.1, 1.0, 0.0]])
    ends = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]])
    mask = torch.ones(2, 4, dtype=torch.bool)
    opt = torch.optim.Adam(wm.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = wm.loss(frames, acts, rews, ends, mask, tokens=tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(64) + math.log(255) + math.log(2), rel=0.1)  # near-uniform at init
    assert losses[-1] < 0.3 * losses[0]


def test_loss_with_a_tokenizer_equals_the_loss_with_its_tokens_and_runs_under_bf16(crafter) -> None:
    torch.manual_seed(0)
    tokenizer = Tokenizer(TokenizerConfig.tiny(A)).eval()
    wm = tiny_world_model()
    frames, acts = windows(crafter, b=2, n=4)
    rews, ends, mask = torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool)
    tokens = tokenizer.tokenize(frames[:, :-1].flatten(0, 1), acts[:, :-1].flatten(), frames[:, 1:].flatten(0, 1))
    with_tokenizer, _ = wm.loss(frames, acts, rews, ends, mask, tokenizer=tokenizer)
    with_tokens, _ = wm.loss(frames, acts, rews, ends, mask, tokens=tokens.view(2, 3, K))
    assert with_tokenizer.item() == pytest.approx(with_tokens.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = wm.loss(frames, acts, rews, ends, mask, tokens=tokens.view(2, 3, K))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(with_tokens.item(), rel=0.05)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in wm.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------------------
# Imagination
# ----------------------------------------------------------------------------------------------------------------
def make_env(crafter, horizon: int = 4, max_blocks: int = 8, memory: int | None = None, seed: int = 0,
             two_hot_rewards: bool = True, context: int = 3) -> DeltaIrisWorldModelEnv:
    """A tiny tokenizer and a perturbed tiny world model; ``sample_contexts`` draws ``context`` Crafter steps."""
    torch.manual_seed(seed)
    tokenizer = Tokenizer(TokenizerConfig.tiny(A))
    wm = perturbed(tiny_world_model(max_blocks=max_blocks, two_hot_rewards=two_hot_rewards), seed=seed)

    def sample_contexts(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return windows(crafter, n, context, offset=5)

    return DeltaIrisWorldModelEnv(tokenizer, wm, sample_contexts, horizon=horizon, num_envs=3, memory=memory)


def test_env_shapes_dtypes_ranges_and_truncation_at_the_horizon(crafter) -> None:
    env = make_env(crafter, horizon=3)
    contexts = windows(crafter, 3, 4)
    first = env.reset_from(*contexts)
    assert torch.equal(first, contexts[0][:, -1])
    for t in range(1, 4):
        obs, rew, end, trunc = env.step(torch.tensor([0, 5, 16]))
        assert obs.shape == (3, 3, 64, 64) and obs.dtype == torch.float32 and 0 <= obs.min() and obs.max() <= 1
        assert torch.equal(obs, (obs * 255).round() / 255)  # snapped to uint8 levels, as decode_tokens does
        assert rew.shape == (3,) and rew.dtype == torch.float32 and torch.isfinite(rew).all()
        assert end.dtype == torch.bool and trunc.dtype == torch.bool and end.shape == trunc.shape == (3,)
        assert trunc.tolist() == [t >= 3] * 3
        assert env.last_tokens.shape == (3, K) and env.last_tokens.max() < 64
    env = make_env(crafter, two_hot_rewards=False)  # Atari: sampled reward signs
    env.reset_from(*contexts)
    assert set(env.step(torch.zeros(3, dtype=torch.long))[1].tolist()) <= {-1.0, 0.0, 1.0}
    rollout = imagine(env, contexts, lambda obs: torch.zeros(len(obs), dtype=torch.long), horizon=2)
    assert rollout.obs.shape == (3, 3, 3, 64, 64) and rollout.rew.shape == (3, 2)
    env = make_env(crafter)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 K/V, float32 outputs
        env.reset_from(*contexts)
        obs, rew, _, _ = env.step(torch.zeros(3, dtype=torch.long))
    assert env.cache.entries["self.0"][0].dtype == torch.bfloat16
    assert obs.dtype == rew.dtype == torch.float32


def test_env_is_reproducible_with_a_torch_seed_and_from_its_state_dict(crafter) -> None:
    runs = []
    for _ in range(2):
        env = make_env(crafter)
        env.reset()
        torch.manual_seed(7)
        runs.append([env.step(torch.tensor([1, 2, 3])) for _ in range(3)])
    for a, b in zip(*runs, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    state = env.state_dict()
    torch.manual_seed(3)
    after = env.step(torch.tensor([4, 4, 4]))
    env.load_state_dict(state)
    torch.manual_seed(3)
    assert all(torch.equal(x, y) for x, y in zip(after, env.step(torch.tensor([4, 4, 4])), strict=True))


@pytest.mark.parametrize(("context", "memory"), [(3, 2), (1, 0)])
def test_env_steps_equal_the_uncached_world_model_through_reset_dead_and_refills(crafter, context, memory) -> None:
    """Each env's reward is the world model's over its own memory alone (positions from 0), whatever the other rows
    did: a reset of some rows mid-rollout, and the memory rebuilt from the last ``memory`` transitions when the
    5 blocks are full (``memory=0``: the official flush; ``context=1``: no real transition to burn in)."""
    max_blocks = 5
    env = make_env(crafter, horizon=20, max_blocks=max_blocks, memory=memory, context=context)
    wm, tokenizer = env.world_model, env.tokenizer
    frames, acts = windows(crafter, 3, context)
    env.reset_from(frames, acts)
    ctx_tokens = env._tokenize(frames, acts)
    # per env: the transitions in its memory (frame, action, tokens) and its current frame
    mem = [[(frames[i, j], acts[i, j], ctx_tokens[i, j]) for j in range(context - 1)] for i in range(3)]
    current = [frames[i, -1] for i in range(3)]
    g = torch.Generator().manual_seed(1)
    refilled = 0
    for step in range(9):
        if step == 3:
            last, before = env.reset_dead(torch.tensor([True, False, True]))
            new_frames, new_acts = windows(crafter, 2, context, offset=5)
            assert torch.equal(last, new_frames[:, -1]) and torch.equal(before, new_frames[:, :-1])
            assert env.ep_len.tolist() == [0, 3, 0]
            new_tokens = env._tokenize(new_frames, new_acts)
            for row, i in enumerate((0, 2)):
                mem[i] = [(new_frames[row, j], new_acts[row, j], new_tokens[row, j]) for j in range(context - 1)]
                current[i] = new_frames[row, -1]
        for i in range(3):
            if len(mem[i]) >= max_blocks:  # the next block would not fit: keep the last `memory` transitions
                mem[i], refilled = mem[i][len(mem[i]) - memory:], refilled + 1
        act = torch.randint(0, A, (3,), generator=g)
        obs, rew, _, _ = env.step(act)
        for i in range(3):
            f = torch.stack([m[0] for m in mem[i]] + [current[i]])[None]
            a = torch.stack([m[1] for m in mem[i]] + [act[i]])[None]
            z = torch.stack([m[2] for m in mem[i]] + [torch.zeros(K, dtype=torch.long)])[None]
            with torch.no_grad():
                expected = bucket_mean(wm(f, a, z).logits_rewards[0, -1])
                frame = tokenizer.decode_tokens(current[i][None], act[i:i + 1], env.last_tokens[i:i + 1])[0]
            assert symlog(rew[i]).item() == pytest.approx(expected.item(), abs=2e-3), (step, i)
            assert (obs[i] - frame).abs().max() <= 1 / 255 + 1e-6
            mem[i].append((current[i], act[i], env.last_tokens[i]))
            current[i] = obs[i]
    assert refilled >= 3
    assert env.key_valid.shape[1] <= (max_blocks + 2) * (K + 2)  # the shared cache stays compact


def test_bad_values_raise_value_error(crafter) -> None:
    with pytest.raises(ValueError, match="embed_dim"):
        WorldModelConfig.crafter(17, embed_dim=256)  # 8 x 8 x 8 frame features
    with pytest.raises(ValueError, match="heads"):
        WorldModelConfig.tiny(A, heads=5)
    with pytest.raises(ValueError, match="cla_factor"):
        WorldModelConfig.tiny(A, cla_factor=0)
    with pytest.raises(ValueError, match="dropout"):
        WorldModelConfig.tiny(A, dropout=1.0)
    with pytest.raises(ValueError, match="tokens"):
        tiny_world_model().loss(*random_blocks(t=3)[:2], torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="positions"):
        wm = tiny_world_model()
        wm(*random_blocks(t=9))  # 9 blocks > max_blocks = 8
    env = make_env(crafter)
    with pytest.raises(ValueError, match="horizon"):
        DeltaIrisWorldModelEnv(env.tokenizer, env.world_model, horizon=0)
    with pytest.raises(ValueError, match="memory"):
        DeltaIrisWorldModelEnv(env.tokenizer, env.world_model, memory=7)  # at most max_blocks - 2 = 6
    with pytest.raises(ValueError, match="do not match"):
        DeltaIrisWorldModelEnv(env.tokenizer, tiny_world_model(vocab_size=32))
    with pytest.raises(ValueError, match="contexts"):
        env.reset_from(*windows(crafter, 2, 9))  # 9 frames > max_blocks
    with pytest.raises(RuntimeError, match="reset"):
        DeltaIrisWorldModelEnv(env.tokenizer, env.world_model).step(torch.zeros(3, dtype=torch.long))
