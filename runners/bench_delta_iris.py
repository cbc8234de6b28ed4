"""Benchmark of Δ-IRIS on Crafter (issue 7, item 5): ``python -m runners.bench delta_iris [parts=...] [size=full] ...``.

Parts, each measured side by side in one run on this machine and written to ``results/benchmarks/delta_iris.md``:

- iris: Δ-IRIS (``TokenizerConfig.crafter``: 4 tokens per frame, conditioned on the previous frame and action)
  against the IRIS-style configuration of the same code (``TokenizerConfig.iris``: 16 tokens, no context; world model
  with ``tokens_per_frame=16``), on random-policy Crafter frames: both tokenizers trained for the same steps on the
  same pairs, then their reconstruction error on held-out pairs, the world-model train step and the imagined frames
  per second (``DeltaIrisWorldModelEnv``).
- cla: KV-cache tensors and bytes of the world model with ``cla_factor`` 1 and 2, and the world-model loss of both
  after the same training steps on the same Crafter segments (same initialization seed, the Δ-IRIS tokenizer of
  part iris), over ``cla_seeds`` initializations.
- official: the tokenizer and world-model train steps (fp32 and bf16 autocast) and the imagination step at the
  paper's Crafter configuration, each in its own process with its peak memory, beside the authors' code
  (../shared/reference/OFFICIAL_TIMINGS.md, section 2; see world_models/delta_iris/benchmark.py).
- score: Crafter score and per-achievement success rates of a random policy, a Δ-IRIS model (``model=``) and a PPO
  model (``ppo=``) over ``episodes`` episodes each, the training env steps read from the models' metadata.

``size=tiny`` runs everything with the tiny configurations (tests). The random-policy frames and the trained
tokenizers are kept under ``cache`` (``runs/bench/delta_iris``) and reused when asked for again with the same budget.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from agents.common.checkpoint import read_meta
from agents.common.convnet import FrameCnnConfig
from agents.common.evaluation import RandomPolicy, evaluate
from agents.common.transformer import KVCache, count_parameters
from envs.crafter import CRAFTER_ACHIEVEMENTS, CrafterEnv
from envs.factory import make_vec_env
from runners.benchkit import describe_machine, mean_std, run_parts
from runners.cli import UsageError, parse_choice, parse_int
from world_models.delta_iris import DeltaIrisWorldModelEnv, Tokenizer, TokenizerConfig, WorldModel, WorldModelConfig
from world_models.delta_iris import benchmark as bm

PARTS = ("iris", "cla", "official", "score")
A = 17  # Crafter's actions
BURN_IN = 5  # real frames before imagination (actor_critic.burn_in_length)
HORIZON = 15  # imagination horizon of Crafter
CRAFTER_ENV = Path(__file__).parent / "configs" / "env" / "crafter.yaml"


# ----------------------------------------------------------------------------------------------------------------
# Plan: the command's options
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """The command's options, parsed (see :func:`run`), and the model configurations of the chosen ``size``."""

    size: str
    frames: int
    seed: int
    threads: int
    tok_steps: int
    tok_batch: int
    wm_batch: int
    imag_batch: int
    cla_steps: int
    cla_batch: int
    cla_layers: int
    cla_seeds: int
    repeats: int
    memory_gb: float | None
    episodes: int
    length: int | None
    model: str | None
    ppo: str | None
    cache: Path

    @property
    def tiny(self) -> bool:
        return self.size == "tiny"

    def tokenizer_configs(self) -> dict[str, TokenizerConfig]:
        if not self.tiny:
            return {"Δ-IRIS": TokenizerConfig.crafter(A), "IRIS-style": TokenizerConfig.iris(A)}

        def cnn(image_channels: int, latent_dim: int) -> FrameCnnConfig:  # as TokenizerConfig.tiny
            return FrameCnnConfig(image_channels, latent_dim, 8, [1, 2, 2], [1, 1, 1])

        iris = TokenizerConfig(A, tokens_per_frame=16, context=False, codebook_size=64, codebook_dim=16,
                               encoder=cnn(3, 16), decoder=cnn(3, 16))
        return {"Δ-IRIS": TokenizerConfig.tiny(A), "IRIS-style": iris}

    def world_model_config(self, tokens_per_frame: int, layers: int | None = None, cla_factor: int = 1
                           ) -> WorldModelConfig:
        if self.tiny:
            return WorldModelConfig.tiny(A, tokens_per_frame=tokens_per_frame, layers=layers or 2,
                                         cla_factor=cla_factor)
        return WorldModelConfig.crafter(A, tokens_per_frame=tokens_per_frame, layers=layers or 3,
                                        cla_factor=cla_factor)


def _load() -> float:
    return os.getloadavg()[0]


def _load_note(start: float, end: float | None = None) -> str:
    """The 1-minute load average at the start (and end) of a part, flagged when other jobs shared the cores."""
    cores = os.cpu_count() or 1
    span = f"{start:.1f}" + (f" / {end:.1f}" if end is not None else "")
    when = "at the start / end of this part" if end is not None else "at the start of this part"
    busy = max(start, end or 0.0) > cores + 1  # this process's own threads count for up to the cores
    return (f"Load average {when}: {span} on {cores} cores, this benchmark's own threads included"
            + (" (a loaded machine: wall-clock times are longer than on an idle one)." if busy else "."))


# ----------------------------------------------------------------------------------------------------------------
# Random-policy Crafter frames
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Crafter:
    """Random-policy Crafter steps: ``obs [N, 64, 64, 3]`` uint8, ``acts[i]`` taken at ``obs[i]``, ``rews[i]`` and
    ``ends[i]`` (terminated) what followed, ``episode[i]`` the episode of frame ``i`` (an episode's last frame has
    action 0, reward 0, no end). Starts at or after ``split`` (an episode boundary) are held out."""

    obs: np.ndarray
    acts: np.ndarray
    rews: np.ndarray
    ends: np.ndarray
    episode: np.ndarray
    split: int

    def starts(self, span: int, held_out: bool) -> np.ndarray:
        """Starts ``s`` whose frames ``s .. s + span`` lie in one episode, on the chosen side of the split."""
        s = np.arange(len(self.obs) - span)
        s = s[self.episode[s + span] == self.episode[s]]
        return s[s >= self.split] if held_out else s[s + span < self.split]

    def segments(self, starts: np.ndarray, length: int) -> tuple[torch.Tensor, ...]:
        """``frames [B, L, 3, 64, 64]`` in [0, 1], ``acts [B, L]``, ``rews``, ``ends``, ``mask`` (all real)."""
        idx = np.asarray(starts)[:, None] + np.arange(length)
        frames = torch.from_numpy(self.obs[idx]).permute(0, 1, 4, 2, 3).float() / 255
        return (frames, torch.from_numpy(self.acts[idx]), torch.from_numpy(self.rews[idx]),
                torch.from_numpy(self.ends[idx]).long(), torch.ones(idx.shape, dtype=torch.bool))


def collect(n: int, seed: int, cache: Path) -> Crafter:
    """``n`` frames of a uniform random policy in Crafter (world seed ``seed``), cached as ``.npz``: two collections
    with the same seeds diverged here after about 100 steps (Crafter is not reproducible across processes), so every
    part and every invocation reads the same cached frames."""
    path = cache / f"crafter_random_{n}_s{seed}.npz"
    if not path.is_file():
        env, rng = CrafterEnv(seed=seed), np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        rows: list[tuple[np.ndarray, int, float, bool, int]] = []
        episode = 0
        while len(rows) < n:
            act = int(rng.integers(A))
            next_obs, rew, terminated, truncated, _ = env.step(act)
            rows.append((obs, act, rew, terminated, episode))
            obs = next_obs
            if (terminated or truncated) and len(rows) < n:
                rows.append((obs, 0, 0.0, False, episode))
                obs, _ = env.reset()
                episode += 1
        cache.mkdir(parents=True, exist_ok=True)
        o, a, r, e, ep = (np.array(c) for c in zip(*rows, strict=True))
        np.savez_compressed(path, obs=o, acts=a.astype(np.int64), rews=r.astype(np.float32), ends=e, episode=ep)
    with np.load(path, allow_pickle=False) as f:
        episode = f["episode"]
        boundaries = np.flatnonzero(np.diff(episode)) + 1
        late = boundaries[boundaries >= int(0.85 * len(episode))]
        split = int(late[0]) if len(late) else int(0.85 * len(episode))
        return Crafter(f["obs"], f["acts"], f["rews"], f["ends"], episode, split)


# ----------------------------------------------------------------------------------------------------------------
# The tokenizers, trained on the same pairs for the same steps
# ----------------------------------------------------------------------------------------------------------------
def trained_tokenizer(name: str, cfg: TokenizerConfig, data: Crafter, plan: Plan) -> tuple[Tokenizer, dict]:
    """The tokenizer ``cfg`` after ``tok_steps`` bf16-autocast AdamW steps (lr 1e-4, the official trainer's) on
    ``tok_batch`` random training pairs per step (the same pairs, in the same order, for every tokenizer)."""
    slug = "delta" if cfg.context else "iris"
    stem = plan.cache / f"{plan.size}_tokenizer_{slug}_{len(data.obs)}f_s{plan.seed}_{plan.tok_steps}x{plan.tok_batch}"
    torch.manual_seed(plan.seed)
    tokenizer = Tokenizer(cfg)
    if stem.with_suffix(".safetensors").is_file():
        tokenizer.load_state_dict(load_file(stem.with_suffix(".safetensors")))
        return tokenizer.eval(), json.loads(stem.with_suffix(".json").read_text())
    rng = np.random.default_rng(plan.seed)
    starts = data.starts(1, held_out=False)
    schedule = [rng.choice(starts, plan.tok_batch) for _ in range(plan.tok_steps)]

    def loss(i: int) -> torch.Tensor:
        frames, acts, _, _, mask = data.segments(schedule[i], 2)
        return tokenizer.loss(frames, acts, mask)[0]

    start = time.perf_counter()
    losses = bm.fit(tokenizer, loss, plan.tok_steps, bf16=True)
    info = {"name": name, "seconds": time.perf_counter() - start, "final_loss": float(np.mean(losses[-10:]))}
    save_file(tokenizer.state_dict(), stem.with_suffix(".safetensors"))
    stem.with_suffix(".json").write_text(json.dumps(info))
    return tokenizer.eval(), info


def _held_out_pairs(data: Crafter, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    starts = data.starts(1, held_out=True)
    starts = starts[np.linspace(0, len(starts) - 1, min(n, len(starts))).astype(int)]
    frames, acts = data.segments(starts, 2)[:2]
    return frames[:, 0], acts[:, 0], frames[:, 1]


def _ms(t: dict) -> str:
    return f"{t['median_ms']:,.0f} ms (CPU {t['cpu_ms']:,.0f} ms)"


def part_iris(plan: Plan, data: Crafter) -> str:
    torch.set_num_threads(plan.threads)
    load_start = _load()
    x_prev, act, x_next = _held_out_pairs(data, 64 if plan.tiny else 512)
    copy_mse = float((x_prev - x_next).pow(2).mean())
    rng = np.random.default_rng(plan.seed + 1)
    segments = data.segments(rng.choice(data.starts(plan.world_model_config(4).max_blocks, False), plan.wm_batch),
                             plan.world_model_config(4).max_blocks)
    contexts = data.segments(rng.choice(data.starts(BURN_IN, False), plan.imag_batch), BURN_IN)[:2]
    x, a = contexts[0][:, -1], contexts[1][:, -1]  # frames and actions to decode after
    models, train_steps, resets, steps, decodes = {}, {}, {}, {}, {}
    g = torch.Generator().manual_seed(plan.seed)
    imagined_acts = torch.randint(0, A, (plan.imag_batch,), generator=g)
    for name, cfg in plan.tokenizer_configs().items():
        tokenizer, info = trained_tokenizer(name, cfg, data, plan)
        error = bm.reconstruction_error(tokenizer, x_prev, act, x_next)
        torch.manual_seed(plan.seed)
        wm = WorldModel(plan.world_model_config(cfg.tokens_per_frame))
        models[name] = (cfg, tokenizer, info, error, wm)
        train_steps[name] = bm.train_step_fn(wm, lambda wm=wm, t=tokenizer: wm.loss(*segments, tokenizer=t)[0],
                                             bf16=False)
        env = DeltaIrisWorldModelEnv(tokenizer, wm, horizon=10**9, num_envs=plan.imag_batch)
        codes = torch.randint(0, cfg.codebook_size, (plan.imag_batch, cfg.tokens_per_frame), generator=g)
        resets[name] = lambda env=env: env.reset_from(*contexts)
        steps[name] = lambda env=env: env.step(imagined_acts)
        decodes[name] = lambda t=tokenizer, c=codes: t.decode_tokens(x, a, c)
    # the two configurations are timed in turns, so that a change in the machine's load falls on both alike
    train = bm.time_interleaved(train_steps, plan.repeats, 1)
    n = max(1, min(8, plan.world_model_config(4).max_blocks - BURN_IN - 1))  # the steps stay within one context
    with torch.inference_mode():
        for _, tokenizer, _, _, wm in models.values():
            tokenizer.eval()
            wm.eval()
        reset, step, decode = (bm.time_interleaved(fns, n, 1) for fns in (resets, steps, decodes))
    results = {name: (*models[name], train[name], {"reset": reset[name], "step": step[name],
                                                   "decode": decode[name]}) for name in models}

    rows = ["| tokenizer | tokens per frame | context (x_t, a_t) | parameters | train time | final train loss | "
            "held-out MSE | L1 | PSNR | codes used |", "|-|-|-|-|-|-|-|-|-|-|"]
    for name, (cfg, tokenizer, info, error, *_) in results.items():
        rows.append(f"| {name} | {cfg.tokens_per_frame} | {'yes' if cfg.context else 'no'} | "
                    f"{count_parameters(tokenizer):,} | {info['seconds']:.0f} s | {info['final_loss']:.4f} | "
                    f"{error['mse']:.5f} | {error['l1']:.4f} | {error['psnr']:.1f} dB | "
                    f"{error['codes_used']} / {cfg.codebook_size} |")
    seq, b = plan.world_model_config(4).max_blocks, plan.imag_batch
    rows += ["", f"| world model | tokens per block | parameters | train step (batch {plan.wm_batch} x {seq}, fp32) | "
             f"imagination step (batch {b}) | of which decoding | imagined frames / s | reset from {BURN_IN} frames | "
             f"frames / s over reset + {HORIZON} steps |", "|-|-|-|-|-|-|-|-|-|"]
    fps = {}
    for name, (_, _, _, _, wm, train, imagination) in results.items():
        step_s, reset_s = imagination["step"]["median_ms"] / 1000, imagination["reset"]["median_ms"] / 1000
        fps[name] = (b / step_s, b * HORIZON / (reset_s + HORIZON * step_s))
        rows.append(f"| {name} | {wm.cfg.tokens_per_block} | {count_parameters(wm):,} | {_ms(train)} | "
                    f"{_ms(imagination['step'])} | {_ms(imagination['decode'])} | {fps[name][0]:.1f} | "
                    f"{_ms(imagination['reset'])} | "
                    f"{fps[name][1]:.1f} |")
    delta, iris = results["Δ-IRIS"], results["IRIS-style"]
    ratios = {
        "train": iris[5]["median_ms"] / delta[5]["median_ms"],
        "train_cpu": iris[5]["cpu_ms"] / delta[5]["cpu_ms"],
        "imagination": fps["Δ-IRIS"][0] / fps["IRIS-style"][0],
        "rollout": fps["Δ-IRIS"][1] / fps["IRIS-style"][1],
        "mse": delta[3]["mse"] / iris[3]["mse"],
        "transformer": ((iris[6]["step"]["cpu_ms"] - iris[6]["decode"]["cpu_ms"])
                        / max(delta[6]["step"]["cpu_ms"] - delta[6]["decode"]["cpu_ms"], 1e-9)),
    }
    verdict = "met" if ratios["imagination"] >= 5 and ratios["mse"] <= 1.2 else "not met"
    return "\n".join(rows) + (
        f"\n\nRatios, Δ-IRIS against IRIS-style: world-model train step {ratios['train']:.2f}x faster (CPU time "
        f"{ratios['train_cpu']:.2f}x), imagination step {ratios['imagination']:.2f}x the frames per second (reset + "
        f"{HORIZON} steps: {ratios['rollout']:.2f}x; the step without the tokenizer's decoding, i.e. frame embedding, "
        f"transformer and sampling of the K tokens, in CPU time: {ratios['transformer']:.2f}x), held-out "
        f"reconstruction MSE {ratios['mse']:.2f}x the IRIS-style one. Target (>= 5x faster imagination at "
        f"comparable reconstruction error, read as an MSE at most 1.2x): {verdict}.\n\n"
        f"Data: {len(data.obs):,} frames of a uniform random policy in Crafter (world seed {plan.seed}, "
        f"{int(data.episode[-1]) + 1} episodes); held out: the episodes from frame {data.split:,} on "
        f"({len(x_prev)} pairs evaluated). Reduced budget: each tokenizer trained for {plan.tok_steps} steps of "
        f"{plan.tok_batch} frame pairs (bf16 autocast, AdamW lr 1e-4, weight decay 0.01, clip 10: the official "
        f"trainer's settings; the paper trains for far longer), the same pairs in the same order for both "
        f"(train time: of the invocation that trained them; trained tokenizers are kept under {plan.cache} and "
        f"reused). "
        f"Reconstruction error: MSE, L1 and PSNR of the decoded tokens (clamped to [0, 1], 8-bit levels) against "
        f"the true next frame, pixels in [0, 1], and the distinct codes the held-out pairs use; copying the "
        f"previous frame would give MSE {copy_mse:.5f}. "
        f"Both world models are the same code ({wm.cfg.layers} layers, width {wm.cfg.embed_dim}, {seq}-block "
        f"context), a block being [frame embedding, action, K tokens]: the IRIS-style baseline keeps the frame "
        f"embedding (IRIS itself has blocks of 16 tokens + action). Train step: forward, backward, clip 10, AdamW "
        f"on real Crafter segments, the tokens computed inside the step by the tokenizer (no grad), median of "
        f"{plan.repeats} after 1 warm-up; imagination: untrained world models (the cost does not depend on the "
        f"weights) from real {BURN_IN}-frame contexts, no grad, fp32, median of {n} after 1, the steps within one "
        f"context; the two configurations timed in turns (Δ-IRIS, IRIS-style, Δ-IRIS, ...). "
        f"CPU = the process's CPU time over all threads (OpenMP's spin-waiting included). Torch threads: "
        f"{plan.threads}. "
        f"{_load_note(load_start, _load())}\n"
    )


# ----------------------------------------------------------------------------------------------------------------
# Cross-layer attention
# ----------------------------------------------------------------------------------------------------------------
def _cache_size(cfg: WorldModelConfig) -> tuple[int, int]:
    """(cached K/V tensors, bytes) after a forward pass over a full context (batch 1, fp32)."""
    torch.manual_seed(0)
    wm, cache, t = WorldModel(cfg).eval(), KVCache(), cfg.max_blocks
    frames, acts, tokens = torch.rand(1, t, 3, 64, 64), torch.zeros(1, t, dtype=torch.long), torch.zeros(
        1, t, cfg.tokens_per_frame, dtype=torch.long)
    with torch.no_grad():
        wm(frames, acts, tokens, cache=cache)
    return cache.num_tensors, cache.nbytes


def part_cla(plan: Plan, data: Crafter) -> str:
    torch.set_num_threads(plan.threads)
    load_start = _load()
    rows = ["| layers | cla_factor | cached K/V tensors | cache bytes (batch 1, full context) | cache bytes, "
            "imagination batch 32 |", "|-|-|-|-|-|"]
    sizes = {}
    for layers in sorted({3, plan.cla_layers} if not plan.tiny else {2, plan.cla_layers}):
        for factor in (1, 2):
            cfg = plan.world_model_config(4, layers, factor)
            sizes[layers, factor] = _cache_size(cfg)
            rows.append(f"| {layers} | {factor} | {sizes[layers, factor][0]} | {sizes[layers, factor][1]:,} | "
                        f"{32 * sizes[layers, factor][1]:,} |")

    tokenizer, _ = trained_tokenizer("Δ-IRIS", plan.tokenizer_configs()["Δ-IRIS"], data, plan)
    length = plan.world_model_config(4).max_blocks
    rng = np.random.default_rng(plan.seed + 2)
    schedule = [rng.choice(data.starts(length, False), plan.cla_batch) for _ in range(plan.cla_steps)]
    held_out = data.starts(length, True)
    held_out = held_out[np.linspace(0, len(held_out) - 1, min(len(held_out), 4 * plan.cla_batch)).astype(int)]
    needed = np.unique(np.concatenate([*schedule, held_out])[:, None] + np.arange(length - 1))
    tokens = np.zeros((len(data.obs), tokenizer.cfg.tokens_per_frame), dtype=np.int64)
    for i in range(0, len(needed), 64):
        frames, acts = data.segments(needed[i:i + 64], 2)[:2]
        tokens[needed[i:i + 64]] = tokenizer.tokenize(frames[:, 0], acts[:, 0], frames[:, 1]).numpy()

    def batch(starts: np.ndarray) -> dict[str, torch.Tensor]:
        frames, acts, rews, ends, mask = data.segments(starts, length)
        t = torch.from_numpy(tokens[np.asarray(starts)[:, None] + np.arange(length - 1)])
        return {"frames": frames, "acts": acts, "rews": rews, "ends": ends, "mask": mask, "tokens": t}

    losses: dict[int, list[tuple[int, float, dict[str, float], float]]] = {1: [], 2: []}
    for seed in range(plan.seed, plan.seed + plan.cla_seeds):  # initializations; the same segments for all
        for factor in (1, 2):
            torch.manual_seed(seed)
            wm = WorldModel(plan.world_model_config(4, plan.cla_layers, factor))
            start = time.perf_counter()
            train = bm.fit(wm, lambda i, wm=wm: wm.loss(**batch(schedule[i]))[0], plan.cla_steps, bf16=True)
            seconds = time.perf_counter() - start
            wm.eval()
            with torch.no_grad():
                logs = [wm.loss(**batch(held_out[i:i + plan.cla_batch]))[1]
                        for i in range(0, len(held_out), plan.cla_batch)]
            held = {k: float(np.mean([log[k] for log in logs]))
                    for k in ("loss_total", "loss_latents", "loss_rewards", "loss_ends")}
            losses[factor].append((count_parameters(wm), float(np.mean(train[-10:])), held, seconds))

    def spread(values: list[float]) -> str:  # one initialization: the value alone
        return mean_std(values, 4, single=False)

    rows += ["", f"| cla_factor ({plan.cla_layers} layers) | parameters | train loss (mean of the last 10 steps) | "
             "held-out loss | latents | rewards | ends | train time per seed |", "|-|-|-|-|-|-|-|-|"]
    for factor, runs in losses.items():
        held = {k: [r[2][k] for r in runs] for k in runs[0][2]}
        rows.append(f"| {factor} | {runs[0][0]:,} | {spread([r[1] for r in runs])} | {spread(held['loss_total'])} | "
                    f"{spread(held['loss_latents'])} | {spread(held['loss_rewards'])} | {spread(held['loss_ends'])} | "
                    f"{np.mean([r[3] for r in runs]):.0f} s |")
    cache_ratio = sizes[plan.cla_layers, 2][1] / sizes[plan.cla_layers, 1][1]
    held_total = {factor: np.array([r[2]["loss_total"] for r in runs]) for factor, runs in losses.items()}
    rel = float(held_total[2].mean() / held_total[1].mean() - 1)
    verdict = "met" if cache_ratio <= 0.5 + 1e-9 and rel <= 0.05 else "not met"
    if plan.cla_seeds > 1:  # the same seed pairs the two factors: the spread of the per-seed ratios
        per_seed = held_total[2] / held_total[1] - 1
        noise = (f" Per seed: {', '.join(f'{100 * r:+.1f}%' for r in per_seed)}; seed-to-seed std of the held-out "
                 f"loss {100 * held_total[1].std() / held_total[1].mean():.1f}% (cla_factor 1) and "
                 f"{100 * held_total[2].std() / held_total[2].mean():.1f}% (cla_factor 2) of its mean.")
        seeds = f"{plan.cla_seeds} seeds ({plan.seed}..{plan.seed + plan.cla_seeds - 1}: the initialization)"
    else:
        noise = ""
        seeds = "One seed, and the seed-to-seed spread at this budget was not measured: a difference of a few " \
                "percent may be noise"
    three = sizes.get((3, 2), (0, 0))[1] / sizes[3, 1][1] if (3, 1) in sizes else None
    return "\n".join(rows) + (
        f"\n\nWith {plan.cla_layers} layers, cla_factor 2 holds {cache_ratio:.2f}x the cache of cla_factor 1, and its "
        f"held-out loss is {100 * rel:+.1f}% relative to it. Target (half the cache for at most 5% higher loss): "
        f"{verdict}.{noise}"
        + (f" With the paper's 3 layers, layers 0 and 1 share K/V and layer 2 keeps its own: "
           f"{three:.2f}x the cache." if three else "")
        + f"\n\nReduced budget: {plan.cla_steps} steps of {plan.cla_batch} segments of {length} steps (bf16 "
        f"autocast, AdamW lr 1e-4, weight decay 0.01, clip 10), the same segments in the same order and the same "
        f"initialization seed for both; the Δ-tokens come from the Δ-IRIS tokenizer of part iris "
        f"({plan.tok_steps} steps). "
        f"Held-out loss: latents + rewards + ends cross-entropies on {len(held_out)} segments of the held-out "
        f"episodes, eval mode; mean +- std over seeds. {seeds}. "
        f"Cache bytes: the KVCache after a forward pass over {length} blocks (fp32); batch 32 = 32 times that. "
        f"Torch threads: {plan.threads}. {_load_note(load_start, _load())}\n"
    )


# ----------------------------------------------------------------------------------------------------------------
# Speed beside the authors' code
# ----------------------------------------------------------------------------------------------------------------
def _memory_limit_gb(plan: Plan) -> float:
    """``memory_gb``, or what the machine has available now less 3 GB for everything else."""
    if plan.memory_gb is not None:
        return plan.memory_gb
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    return round(max(1.0, available / 2**20 - 3), 1)


def _estimated_peak(peaks: dict[tuple[str, int, str], float], kind: str, small: int, batch: int, precision: str
                    ) -> float | None:
    """Peak memory at ``batch`` extrapolated linearly from the one measured at batch ``small`` (None if none)."""
    measured = peaks.get((kind, small, precision))
    return None if measured is None or batch == small else measured * batch / small


def part_official(plan: Plan) -> str:
    load_start = _load()
    limit = _memory_limit_gb(plan)
    small, big = (1, 2) if plan.tiny else (8, 32)
    tok_cfg = plan.tokenizer_configs()["Δ-IRIS"]
    wm_cfg = plan.world_model_config(4)
    seq = 3 if plan.tiny else wm_cfg.max_blocks
    common = {"threads": plan.threads, "repeats": plan.repeats, "warmup": 1}
    tok = {"config": asdict(tok_cfg), "seq_length": seq, **common}
    wm = {"tokenizer_config": asdict(tok_cfg), "world_model_config": asdict(wm_cfg), "seq_length": seq, **common}
    imag = {"tokenizer": asdict(tok_cfg), "world_model": asdict(wm_cfg), "threads": plan.threads,
            "burn_in": min(BURN_IN, wm_cfg.max_blocks - 3), "repeats": 2 if plan.tiny else 5,
            "warmup": 1 if plan.tiny else 2}
    jobs = [  # (label, kind, batch, precision, function, kwargs); the likeliest to run out of memory last
        ("imagination step", "imagination", big, "fp32", "imagination", {**imag, "batch_size": big}),
        ("imagination step", "imagination", big, "fp32", "imagination", {**imag, "batch_size": big,
                                                                          "channels_last": False}),
        ("imagination step", "imagination", big, "bf16", "imagination", {**imag, "batch_size": big, "bf16": True}),
        ("world-model train step", "world_model", big, "fp32", "world_model", {**wm, "batch_size": big}),
        ("world-model train step", "world_model", big, "fp32", "world_model", {**wm, "batch_size": big,
                                                                                "channels_last": False}),
        ("world-model train step", "world_model", big, "bf16", "world_model", {**wm, "batch_size": big,
                                                                                "bf16": True}),
        ("tokenizer train step", "tokenizer", small, "fp32", "tokenizer", {**tok, "batch_size": small}),
        ("tokenizer train step", "tokenizer", small, "bf16", "tokenizer", {**tok, "batch_size": small, "bf16": True}),
        ("tokenizer train step", "tokenizer", big, "fp32", "tokenizer", {**tok, "batch_size": big}),
        ("tokenizer train step", "tokenizer", big, "bf16", "tokenizer", {**tok, "batch_size": big, "bf16": True}),
    ]
    rows = ["| measurement | batch | precision | ours (median, runs) | ours, CPU time | peak memory (RSS) | "
            "official | official / ours |", "|-|-|-|-|-|-|-|-|"]
    peaks: dict[tuple[str, int, str], float] = {}
    for label, kind, batch, precision, name, kwargs in jobs:
        nchw = kwargs.get("channels_last") is False  # the layout before channels-last (same numbers, reordered)
        estimate = _estimated_peak(peaks, kind, small, batch, precision)
        if estimate is not None and estimate > 1.25 * limit:
            result = {"error": f"not run: ~{estimate:.0f} GB estimated from batch {small} exceeds the {limit:g} GB "
                               f"limit"}
        else:
            result = bm.measure_in_subprocess(name, limit, **kwargs)
        if kind == "imagination":
            timings = [("imagination step", result.get("step")), (f"reset from {kwargs['burn_in']} real frames",
                                                                   result.get("reset"))]
        else:
            timings = [(label, result if "median_ms" in result else None)]
        if "peak_rss_gb" in result and "error" not in result and not nchw:
            peaks[kind, batch, precision] = result["peak_rss_gb"]
        timings = [(f"{what}, NCHW" if nchw else what, t) for what, t in timings]
        for what, t in timings:
            key = ("reset" if what.startswith("reset") else kind, batch, precision)
            official = bm.OFFICIAL_MS.get(key) if not plan.tiny else None
            if kind == "tokenizer" and batch == 32 and precision == "fp32" and not plan.tiny:
                official_text = bm.OFFICIAL_FP32_TOKENIZER_B32
            else:
                official_text = f"{official:,.0f} ms" if official else "—"
            memory = "—" if "peak_rss_gb" not in result else (
                f"{result['peak_rss_gb']:.1f} GB" + (" when it failed" if "error" in result else ""))
            if t is None:
                ours = f"**{result.get('error', 'failed')}**"
                rows.append(f"| {what} | {batch} | {precision} | {ours} | — | {memory} | {official_text} | — |")
                continue
            runs = ", ".join(f"{r:,.0f}" for r in t["runs_ms"])
            ratio = f"{official / t['median_ms']:.2f}x" if official else "—"
            rows.append(f"| {what} | {batch} | {precision} | {t['median_ms']:,.0f} ms ({runs}) | "
                        f"{t['cpu_ms']:,.0f} ms | {memory} | {official_text} | {ratio} |")
    notes = [f"{precision} tokenizer at batch {big}: ~{estimate:.0f} GB estimated from batch {small}"
             for precision in ("fp32", "bf16")
             if ("tokenizer", big, precision) not in peaks
             and (estimate := _estimated_peak(peaks, "tokenizer", small, big, precision)) is not None]
    return "\n".join(rows) + (
        f"\n\nEach row ran in its own process (`python -m world_models.delta_iris.benchmark`), its address space "
        f"limited to its start-up size + {limit:g} GB (what this machine had available less 3 GB); peak memory is "
        f"the process's peak resident set (VmHWM), torch and the inputs included. Train steps: median of "
        f"{plan.repeats} after 1 warm-up, forward + backward + clip 10 + AdamW (lr 1e-4, weight decay 0.01), on "
        f"random segments of {seq} frames ({seq - 1} pairs); the world-model step includes the no-grad tokenizer "
        f"encoding of the {seq - 1} pairs as the official measurement did; the tokenizer step includes the codebook "
        f"update. Imagination: `DeltaIrisWorldModelEnv.step` (frame embedding, action, 4 sampled tokens through the "
        f"KV cache, tokenizer decoding), no grad, median of {imag['repeats']} after {imag['warmup']}, after a "
        f"reset from {imag['burn_in']} frames. Official numbers: OFFICIAL_TIMINGS.md section 2 (2-core CPU, 2 "
        f"threads, median of 5 after 2, measured one at a time on an idle machine); the official fp32 world-model "
        f"step measured 31.6 s and 25.0 s in two processes, the faster is used. Ratios: official time / ours at "
        f"equal batch and precision, wall clock. CPU time: the process's, over all threads (OpenMP's spin-waiting "
        f"included, so it grows too when other jobs share the cores). Rows marked NCHW: the same networks with "
        f"their convolutions in the NCHW layout instead of channels-last (`DeltaIrisPolicy(channels_last=False)`), "
        f"the agent's layout before 2026-12-02; the other rows are channels-last, the agent's default. "
        + (f"Peak memory of the {'; '.join(notes)} (the activations grow linearly with the batch; a run whose "
           f"estimate exceeds 1.25x the limit is not started). " if notes else "")
        + f"Torch threads: {plan.threads}. {_load_note(load_start, _load())}\n"
    )


# ----------------------------------------------------------------------------------------------------------------
# Crafter score
# ----------------------------------------------------------------------------------------------------------------
def _checkpoint(reference: str) -> str:
    """A checkpoint directory from ``zoo:<name>``, a checkpoint path or a run directory (its ``final``)."""
    path = Path(reference)
    if not reference.startswith("zoo:") and not (path / "meta.json").is_file() and (path / "final").is_dir():
        return str(path / "final")
    return reference


def part_score(plan: Plan) -> str:
    from agents.common.manifest import resolve_model
    from runners.evaluate import load_for_eval

    torch.set_num_threads(plan.threads)
    load_start = _load()
    env_cfg = yaml.safe_load(CRAFTER_ENV.read_text())
    overrides = {}
    if plan.length is not None:
        env_cfg["kwargs"]["length"] = plan.length
        overrides["env.kwargs.length"] = str(plan.length)
    seed = 1000
    columns: dict[str, dict[str, Any] | str] = {}
    env = make_vec_env(env_cfg, n_envs=1, seed=seed, training=False)
    result = evaluate(RandomPolicy(env.action_space), env, plan.episodes, env_cfg, deterministic=False)
    env.close()
    columns["random policy"] = {"result": result, "steps": 0, "agent": "random"}
    for label, reference in (("Δ-IRIS", plan.model), ("PPO", plan.ppo)):
        if reference is None:
            columns[label] = f"not run (no {'model' if label == 'Δ-IRIS' else 'ppo'}= given)"
            continue
        path = _checkpoint(reference)
        meta = read_meta(resolve_model(path))
        model, env, cfg = load_for_eval(path, "cpu", seed, overrides)
        result = evaluate(model, env, plan.episodes, cfg, deterministic=False)
        env.close()
        columns[label] = {"result": result, "steps": int(meta["num_timesteps"]), "agent": meta["agent"],
                          "reference": reference}
    names = list(columns)
    rows = ["| | " + " | ".join(names) + " |", "|-" + "|-" * len(names) + "|"]

    def row(title: str, cell: Any) -> None:
        rows.append(f"| {title} | " + " | ".join(
            cell(columns[n]) if isinstance(columns[n], dict) else (columns[n] if title == "model" else "—")
            for n in names) + " |")

    expected = {"Δ-IRIS": "delta_iris", "PPO": "ppo"}
    for label, c in columns.items():
        if isinstance(c, dict) and label in expected and c["agent"] != expected[label]:
            c["agent"] += f", not a {expected[label]} model"
    row("model", lambda c: f"{c['agent']}" + (f" (`{c['reference']}`)" if "reference" in c else ""))
    row("training env steps", lambda c: f"{c['steps']:,}")
    row("**Crafter score (%)**", lambda c: f"**{c['result'].score['crafter_score']:.2f}**")
    row("mean return", lambda c: f"{c['result'].mean:.2f} +- {c['result'].std:.2f}")
    row("mean episode length", lambda c: f"{np.mean(c['result'].lengths):.0f}")
    for achievement in CRAFTER_ACHIEVEMENTS:
        row(achievement, lambda c, a=achievement: f"{c['result'].score[f'achievement/{a}']:.1f}")
    budgets = {c["steps"] for label, c in columns.items() if isinstance(c, dict) and label != "random policy"}
    same = ("" if len(budgets) < 2 else " The two models were trained on different numbers of env steps: compare "
            "them with care.")
    return "\n".join(rows) + (
        f"\n\n{plan.episodes} episodes per policy (the official test uses 64), evaluation seed {seed} (the same "
        f"worlds for every policy), actions sampled from the policy (deterministic=false, as the official test), "
        f"episodes of at most {plan.length or 10000:,} steps. Crafter score: the geometric mean of the success "
        f"rates, exp(mean ln(1 + s_i)) - 1 in percent (Hafner 2021); achievement rows: percent of the episodes in "
        f"which it was unlocked. Training env steps: `num_timesteps` of the checkpoint's meta.json. "
        f"Torch threads: {plan.threads}. {_load_note(load_start)}{same}\n"
    )


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
def run(out_path: str, parts: str = ",".join(PARTS), size: str = "full", frames: str = "3000", seed: str = "0",
        threads: str = "2", tok_steps: str = "100", tok_batch: str = "8", wm_batch: str = "8", imag_batch: str = "16",
        cla_steps: str = "40", cla_batch: str = "4", cla_layers: str = "4", cla_seeds: str = "1", repeats: str = "3",
        memory_gb: str = "auto", episodes: str = "16", length: str = "none", model: str = "none", ppo: str = "none",
        cache: str = "runs/bench/delta_iris") -> str:
    plan = Plan(
        size=parse_choice("size", size, ("full", "tiny")), frames=parse_int("frames", frames, 64),
        seed=parse_int("seed", seed, 0), threads=parse_int("threads", threads, 1),
        tok_steps=parse_int("tok_steps", tok_steps, 1), tok_batch=parse_int("tok_batch", tok_batch, 1),
        wm_batch=parse_int("wm_batch", wm_batch, 1), imag_batch=parse_int("imag_batch", imag_batch, 1),
        cla_steps=parse_int("cla_steps", cla_steps, 1), cla_batch=parse_int("cla_batch", cla_batch, 1),
        cla_layers=parse_int("cla_layers", cla_layers, 2),
        cla_seeds=parse_int("cla_seeds", cla_seeds, 1), repeats=parse_int("repeats", repeats, 1),
        memory_gb=None if memory_gb == "auto" else _positive_float("memory_gb", memory_gb),
        episodes=parse_int("episodes", episodes, 1),
        length=None if length == "none" else parse_int("length", length, 1),
        model=None if model == "none" else model, ppo=None if ppo == "none" else ppo, cache=Path(cache),
    )
    data: list[Crafter] = []

    def crafter() -> Crafter:
        if not data:
            data.append(collect(plan.frames, plan.seed, plan.cache))
        return data[0]

    header = [
        "# Δ-IRIS on Crafter (issue 7, item 5)", "",
        f"Machine: {describe_machine()}.", "",
        "Command: `python -m runners.bench delta_iris` (parts: " + ", ".join(PARTS) + "; `parts=` chooses); see "
        "runners/bench_delta_iris.py. Every section states its own command, budget and the load of the machine "
        "while it ran.", "",
    ]
    titles = {
        "iris": "## (a) Δ-IRIS against the IRIS-style configuration of the same code",
        "cla": "## (b) Cross-layer attention: KV cache and world-model loss",
        "official": "## (c) Speed beside the authors' code at the paper's Crafter configuration",
        "score": "## (d) Crafter score and achievements",
    }
    functions = {"iris": lambda: part_iris(plan, crafter()), "cla": lambda: part_cla(plan, crafter()),
                 "official": lambda: part_official(plan), "score": lambda: part_score(plan)}
    options = {"size": size, "frames": frames, "seed": seed, "tok_steps": tok_steps, "tok_batch": tok_batch,
               "wm_batch": wm_batch, "imag_batch": imag_batch, "cla_steps": cla_steps, "cla_batch": cla_batch,
               "cla_layers": cla_layers, "cla_seeds": cla_seeds,
               "repeats": repeats, "episodes": episodes, "length": length, "model": model,
               "ppo": ppo}
    chosen = [p for p in parts.split(",") if p]
    if unknown := sorted(set(chosen) - set(titles)):  # before anything is measured
        raise ValueError(f"unknown part '{unknown[0]}'; choose from: {', '.join(titles)}")
    text = ""
    for part in chosen:  # the report is rewritten after each part, so a long part never loses the earlier ones
        text = run_parts("delta_iris", out_path, part, header, titles, functions, options)
    return text


def _positive_float(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{key}={value!r} is not a number") from None
    if not number > 0:
        raise UsageError(f"{key}={number} must be > 0")
    return number
