"""Timings of DIAMOND's three networks at the paper's configuration, comparable to the official code's.

The measurements of ``OFFICIAL_TIMINGS.md`` section 1 (eloialonso/diamond on a 2-core CPU, 2 threads, fp32,
4 actions, 64x64 frames): (a) one denoiser train step on segments of 5 frames (4 conditioning + 1 target):
forward, backward, gradient clipping at 1.0, AdamW (lr 1e-4, eps 1e-8, weight decay 1e-2); (b) one reward/end train
step on segments of 19 frames (18 transitions), clip 100, the same AdamW; (c) one imagined frame: the sampler's
3 Euler steps (3 denoiser calls), no grad; (c2) one reward/end prediction and (c3) one actor-critic prediction,
the LSTM state carried, no grad. Ours adds (d) one actor-critic train step as the agent takes it
(``Diamond.train``): ``batch_size`` rollouts of 15 imagined steps in :class:`~world_models.imagination.WorldModelEnv`
(sampler, reward/end model, resets of the truncated envs with burn-in), the lambda-return loss, backward, clip 100,
AdamW without weight decay. The networks are :class:`~agents.diamond.policy.DiamondPolicy`'s (``size="paper"``);
inputs are random tensors shaped like the real batches (the weights do not change the cost; in (d) the reward/end
model's head is set so that imagined episodes never end, as in a trained model, where ends are rare, so that every
step is a whole step).

Each timing function measures ``variants`` of the same step in turns (:func:`agents.common.timing.time_interleaved`):
``eager`` (the code as it stands: channels-last), ``contiguous`` (the networks in the NCHW format, the code before),
``compiled`` (``DiamondPolicy(compile_denoiser=True)``: ``torch.compile`` of the U-Net, inductor; the first call,
which compiles, is reported apart as ``compile_s``), ``fused_adamw`` (train steps), ``inference_mode`` (no-grad
steps: instead of ``no_grad``) and ``bf16`` (CPU autocast: not equal numerics, an extra row). :func:`speed_section`
runs each measurement in its own memory-limited process and renders the markdown section;
``python -m world_models.diamond.benchmark`` prints it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from gymnasium import spaces

from agents.common import timing
from agents.common.actor_critic import ImaginationLoop, actor_critic_loss
from agents.diamond.policy import SIZES, DiamondPolicy
from world_models.diamond.batch import WorldModelBatch
from world_models.imagination import WorldModelEnv

NUM_ACTIONS = 4
#: eloialonso/diamond on the developers' 2-core CPU, 2 threads, fp32, median of 5 after 2 (OFFICIAL_TIMINGS.md 1).
OFFICIAL_MS = {
    ("denoiser", 32): 8232.0, ("denoiser", 8): 971.0,
    ("rew_end", 32): 21275.0, ("rew_end", 8): 3265.0,
    ("imagined_frame", 32): 5590.0, ("imagined_frame", 8): 945.0,
    ("rew_end_predict", 32): 109.0, ("rew_end_predict", 8): 35.4,
    ("actor_critic_predict", 32): 44.3, ("actor_critic_predict", 8): 12.9,
}
OFFICIAL_PARAMETERS = {"denoiser": 4_405_955, "rew_end_model": 5_900_864, "actor_critic": 3_229_637}
VARIANTS = ("eager", "contiguous", "compiled", "fused_adamw", "inference_mode", "bf16")


def networks(size: str = "paper", num_actions: int = NUM_ACTIONS, **options: bool) -> DiamondPolicy:
    """The agent's networks (``denoiser``, ``rew_end_model``, ``actor_critic``, ``sampler``) for 64x64 frames;
    ``options``: ``channels_last``, ``compile_denoiser`` (:class:`~agents.diamond.policy.DiamondPolicy`)."""
    torch.manual_seed(0)
    return DiamondPolicy(spaces.Box(0, 255, (3, 64, 64), dtype="uint8"), spaces.Discrete(num_actions), size=size,
                         **options)


def parameter_counts(size: str = "paper", num_actions: int = NUM_ACTIONS) -> dict[str, int]:
    policy = networks(size, num_actions)
    return {name: sum(p.numel() for p in getattr(policy, name).parameters()) for name in OFFICIAL_PARAMETERS}


def _frames(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _segments(batch_size: int, seq_length: int) -> WorldModelBatch:
    """Random segments: frames in [-1, 1], actions, reward signs, no end, nothing padded."""
    g = torch.Generator().manual_seed(1)
    act = torch.randint(0, NUM_ACTIONS, (batch_size, seq_length), generator=g)
    rew = torch.randint(-1, 2, (batch_size, seq_length), generator=g).float()
    false = torch.zeros(batch_size, seq_length, dtype=torch.bool)
    return WorldModelBatch(_frames(batch_size, seq_length), act, rew, false, false, ~false)


def _policy(size: str, variant: str) -> DiamondPolicy:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}'; choose one of: {', '.join(VARIANTS)}")
    return networks(size, channels_last=variant != "contiguous", compile_denoiser=variant == "compiled")


def _measure(steps: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, Any]:
    """:func:`~agents.common.timing.time_interleaved` of ``steps``; a compiled variant's first call (the
    compilation and one step) is timed apart first, as ``compile_s``."""
    compile_s = {}
    for name, step in steps.items():
        if name == "compiled":
            start = time.perf_counter()
            step()
            compile_s[name] = time.perf_counter() - start
    timings = timing.time_interleaved(steps, repeats, warmup)
    for name, seconds in compile_s.items():
        timings[name]["compile_s"] = seconds
    return {"timings": timings}


def time_denoiser_train_step(batch_size: int = 32, seq_length: int = 5, size: str = "paper",
                             variants: tuple[str, ...] | list[str] = ("eager",), threads: int | None = None,
                             repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """(a) One optimizer step of the denoiser per variant: ``{"timings": {variant: Timing}}``."""
    with timing.torch_threads(threads):
        batch, steps = _segments(batch_size, seq_length), {}
        for variant in variants:
            denoiser = _policy(size, variant).denoiser.train()
            adamw = {"fused": True} if variant == "fused_adamw" else {}
            steps[variant] = timing.train_step_fn(denoiser, lambda d=denoiser: d.loss(batch)[0], variant == "bf16",
                                                  clip=1.0, weight_decay=1e-2, **adamw)
        return _measure(steps, repeats, warmup)


def time_rew_end_train_step(batch_size: int = 32, seq_length: int = 19, size: str = "paper",
                            variants: tuple[str, ...] | list[str] = ("eager",), threads: int | None = None,
                            repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """(b) One optimizer step of the reward/end model per variant (clip 100)."""
    with timing.torch_threads(threads):
        batch, steps = _segments(batch_size, seq_length), {}
        for variant in variants:
            model = _policy(size, variant).rew_end_model.train()
            adamw = {"fused": True} if variant == "fused_adamw" else {}
            steps[variant] = timing.train_step_fn(model, lambda m=model: m.loss(batch)[0], variant == "bf16",
                                                  clip=100.0, weight_decay=1e-2, **adamw)
        return _measure(steps, repeats, warmup)


def _no_grad(variant: str) -> contextlib.AbstractContextManager:
    return torch.inference_mode() if variant == "inference_mode" else torch.no_grad()


def time_imagined_frame(batch_size: int = 32, size: str = "paper", variants: tuple[str, ...] | list[str] = ("eager",),
                        threads: int | None = None, repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """(c) One next frame of ``batch_size`` rollouts per variant: the sampler's 3 Euler steps, no grad."""
    with timing.torch_threads(threads):
        obs, act = _frames(batch_size, 4), torch.randint(0, NUM_ACTIONS, (batch_size, 4))
        steps = {}
        for variant in variants:
            policy = _policy(size, variant).eval()

            def frame(sampler: Any = policy.sampler, variant: str = variant) -> None:
                with _no_grad(variant), timing.autocast(variant == "bf16"):
                    sampler.sample_next_obs(obs, act)

            steps[variant] = frame
        return _measure(steps, repeats, warmup)


def time_predictions(batch_size: int = 32, size: str = "paper", variants: tuple[str, ...] | list[str] = ("eager",),
                     threads: int | None = None, repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """(c2) One reward/end prediction and (c3) one actor-critic prediction of ``batch_size`` envs per variant, the
    LSTM states carried from call to call, no grad: ``{"timings": {"rew_end_predict/<variant>": ...,
    "actor_critic_predict/<variant>": ...}}``."""
    with timing.torch_threads(threads):
        obs, next_obs = _frames(batch_size), _frames(batch_size, seed=1)
        act = torch.randint(0, NUM_ACTIONS, (batch_size,))
        steps = {}
        for variant in variants:
            policy, state = _policy(size, variant).eval(), {}

            def rew_end(model: Any = policy.rew_end_model, state: dict = state, variant: str = variant) -> None:
                with _no_grad(variant), timing.autocast(variant == "bf16"):
                    state["rew_end"] = model.predict(obs, act, next_obs, state.get("rew_end"))[2]

            def actor_critic(model: Any = policy.actor_critic, state: dict = state, variant: str = variant) -> None:
                with _no_grad(variant), timing.autocast(variant == "bf16"):
                    state["actor_critic"] = model(obs, state.get("actor_critic")).hidden

            steps[f"rew_end_predict/{variant}"], steps[f"actor_critic_predict/{variant}"] = rew_end, actor_critic
        return _measure(steps, repeats, warmup)


def time_actor_critic_train_step(batch_size: int = 32, horizon: int = 15, size: str = "paper",
                                 variants: tuple[str, ...] | list[str] = ("eager",), threads: int | None = None,
                                 repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """(d) One update of the actor-critic as ``Diamond.train`` takes it, per variant: ``horizon`` more imagined
    steps of ``batch_size`` rollouts (from random 4-frame contexts; the truncated envs reset and burned in), the
    lambda-return loss (gamma 0.985, lambda 0.95), backward, clip 100, AdamW (weight decay 0)."""
    with timing.torch_threads(threads):
        def contexts(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            return _frames(n, 4, seed=2), torch.randint(0, NUM_ACTIONS, (n, 4))

        steps = {}
        for variant in variants:
            policy = _policy(size, variant).eval()  # the world model imagines, the actor-critic learns
            policy.actor_critic.train()
            with torch.no_grad():  # "no end" logit ~ +10, "end" ~ -10 whatever the frames: episodes never end
                hidden_layer, out = policy.rew_end_model.head[0], policy.rew_end_model.head[-1]
                hidden_layer.bias.add_(10.0)
                out.weight[3].fill_(1 / out.weight.shape[1])
                out.weight[4].fill_(-1 / out.weight.shape[1])
            env = WorldModelEnv(policy.sampler, policy.rew_end_model, contexts, horizon, batch_size)
            loop, model = ImaginationLoop(env, policy.actor_critic), policy.actor_critic

            def loss(loop: ImaginationLoop = loop) -> torch.Tensor:
                return actor_critic_loss(loop.collect(horizon), 0.985, 0.95, 1.0, 1e-3)[0]

            adamw = {"fused": True} if variant == "fused_adamw" else {}
            steps[variant] = timing.train_step_fn(model, loss, variant == "bf16", clip=100.0, weight_decay=0.0,
                                                  **adamw)
        return _measure(steps, repeats, warmup)


# ----------------------------------------------------------------------------------------------------------------
# The section "Speed beside the authors' code"
# ----------------------------------------------------------------------------------------------------------------
#: (row label, official key, function, variants measured in turns in one process); ``compiled`` joins (a) and (c)
#: at the batch sizes asked for (a compilation takes minutes per batch size)
PLAN: list[tuple[str, str, Callable[..., dict[str, Any]], tuple[str, ...]]] = [
    ("(a) denoiser train step", "denoiser", time_denoiser_train_step, ("eager", "contiguous", "bf16")),
    ("(c) imagined frame", "imagined_frame", time_imagined_frame, ("eager", "contiguous", "inference_mode", "bf16")),
    ("(b) reward/end train step", "rew_end", time_rew_end_train_step, ("eager", "contiguous")),
    ("(c2, c3) predictions", "", time_predictions, ("eager", "contiguous")),
    ("(d) actor-critic train step", "actor_critic_train", time_actor_critic_train_step, ("eager",)),
]
TARGET = 1.5  # official_ms / ours_ms at equal numerics (fp32), for (a) and (c)
TARGET_BATCH = 32  # the batch the target is set at (issue 6: denoiser step and imagined frame at batch 32)
VARIANT_TEXT = {"eager": "fp32, channels-last (default)", "contiguous": "fp32, NCHW (before)",
                "compiled": "fp32, torch.compile", "fused_adamw": "fp32, fused AdamW",
                "inference_mode": "fp32, inference_mode", "bf16": "bf16 autocast"}
LABELS = {"rew_end_predict": "(c2) reward/end predict, one step", "actor_critic_predict":
          "(c3) actor-critic predict, one step"}


def _row_order(item: tuple[str, Any]) -> int:
    """The (c2) rows, then the (c3) rows, each in the order of the variants (a measurement of one row kind: 0)."""
    prefix = item[0].partition("/")[0]
    return list(LABELS).index(prefix) if prefix in LABELS else 0


def _rows(label: str, key: str, batch: int, result: dict[str, Any], size: str = "paper"
          ) -> tuple[list[str], dict[str, float]]:
    """Table rows of one measurement at one batch size, and ``{variant: official / ours}`` of its fp32 rows (the
    official numbers only beside the paper size)."""
    memory = f"{result['peak_rss_gb']:.1f} GB" if "peak_rss_gb" in result else "—"
    official_ms = OFFICIAL_MS if size == "paper" else {}
    if "timings" not in result:
        official = official_ms.get((key, batch))
        return [f"| {label} | {batch} | — | **{result.get('error', 'failed')}** | — | {memory} | "
                f"{f'{official:,.0f} ms' if official else '—'} | — |"], {}
    rows, ratios = [], {}
    for name, t in sorted(result["timings"].items(), key=_row_order):
        what, variant = (LABELS[name.split("/")[0]], name.split("/")[1]) if "/" in name else (label, name)
        official = official_ms.get((name.split("/")[0] if "/" in name else key, batch))
        text = VARIANT_TEXT[variant] + (f" (compile {t['compile_s']:,.0f} s apart)" if "compile_s" in t else "")
        runs = ", ".join(f"{r:,.0f}" if r >= 100 else f"{r:.1f}" for r in t["runs_ms"])
        ms = f"{t['median_ms']:,.0f}" if t["median_ms"] >= 100 else f"{t['median_ms']:.1f}"
        ratio = official / t["median_ms"] if official else None
        if ratio is not None and variant != "bf16":
            ratios[variant] = ratio
        rows.append(f"| {what} | {batch} | {text} | {ms} ms ({runs}) | {t['cpu_ms']:,.0f} ms | {memory} | "
                    f"{f'{official:,.0f} ms' if official else '—'} | {f'{ratio:.2f}x' if ratio else '—'} |")
    return rows, ratios


def speed_section(batch_sizes: tuple[int, ...] = (32, 8), repeats: int = 3, warmup: int = 1, threads: int = 2,
                  memory_limit_gb: float | None = None, size: str = "paper", compiled_batch_sizes: tuple[int, ...] = (),
                  command: str = "python -m world_models.diamond.benchmark",
                  log: Callable[[str], None] | None = None, heading: bool = True) -> str:
    """The markdown section "Speed beside the authors' code at the paper configuration": every measurement of
    :data:`PLAN` at every batch size in its own process (:func:`agents.common.timing.measure_in_subprocess`, address
    space limited to its start-up size + ``memory_limit_gb``, by default what the machine has available less 3 GB),
    its variants timed in turns (with ``compiled`` for (a) and (c) at ``compiled_batch_sizes``); the parameter
    counts; the method; the verdict against :data:`TARGET`. ``log`` receives each table row as it is measured (the
    whole section takes an hour or more on a loaded 2-core machine); ``heading=False`` leaves out the section's
    title, for a report that gives it its own."""
    if size not in SIZES or not batch_sizes or min(batch_sizes) < 1 or repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"size={size!r} (choose one of: {', '.join(SIZES)}), batch_sizes={batch_sizes} (>= 1), "
                         f"repeats={repeats} (>= 1), warmup={warmup} (>= 0), threads={threads} (>= 1)")
    load_start, limit = timing.load_average(), memory_limit_gb or timing.available_memory_gb()
    rows = ["| measurement | batch | variant | ours median (runs) | CPU time | peak memory | official | "
            "official / ours |", "|-|-|-|-|-|-|-|-|"]
    verdicts = []
    for label, key, fn, variants in PLAN:
        for batch in batch_sizes:
            compiled = key in ("denoiser", "imagined_frame") and batch in compiled_batch_sizes
            measured = [*variants[:2], "compiled", *variants[2:]] if compiled else list(variants)
            result = timing.measure_in_subprocess(fn, limit, batch_size=batch, size=size, variants=measured,
                                                  threads=threads, repeats=repeats, warmup=warmup)
            table, ratios = _rows(label, key, batch, result, size)
            rows += table
            for row in table if log else ():
                log(row)
            if key in ("denoiser", "imagined_frame") and ratios:
                best = max(ratios, key=ratios.get)
                judged = ('met' if ratios[best] >= TARGET else 'not met') if batch == TARGET_BATCH else \
                    f"for reference: the target is set at batch {TARGET_BATCH}"
                verdicts.append(f"{label} at batch {batch}: {ratios[best]:.2f}x the official rate with "
                                f"{VARIANT_TEXT[best]} ({judged})")
    counts = parameter_counts(size)
    params = ", ".join(f"{name} {counts[name]:,} (official {OFFICIAL_PARAMETERS[name]:,})" for name in counts)
    return (
        ("## Speed beside the authors' code at the paper configuration\n\n" if heading else "")
        + "\n".join(rows) + "\n\n"
        f"Command: `{command}`. Parameters: {params}. Every row times DIAMOND's networks as the agent builds them "
        f"(`DiamondPolicy(size=\"{size}\")`, 4 actions, 64x64 frames) on random inputs shaped as the real batches: "
        "(a) denoiser: loss on segments of 5 frames (4 conditioning + 1 target), backward, clip 1.0, AdamW (lr 1e-4, "
        "eps 1e-8, weight decay 1e-2); (b) reward/end model: segments of 19 frames (18 transitions), clip 100, the "
        "same AdamW; (c) the sampler's 3 Euler steps (3 denoiser calls), no grad; (c2, c3) one step of the reward/end "
        "model and of the actor-critic, LSTM states carried, no grad; (d) one actor-critic update as the agent takes "
        "it: 15 more imagined steps of `batch` rollouts (sampler, reward/end model, resets and burn-ins at the "
        "truncation), lambda-return loss, backward, clip 100, AdamW (the reward/end head set so that episodes never "
        "end; no official number). Each measurement ran in its own process "
        f"(`agents.common.timing.measure_in_subprocess`, address space limited to its start-up size + {limit:g} GB), "
        f"its variants in turns (a, b, a, b, ...), median of {repeats} after {warmup} warm-up; "
        + (f"torch.compile at batch {', '.join(map(str, compiled_batch_sizes))} only: its first call (inductor "
           "compiling the U-Net, or loading it from inductor's cache on disk, plus one step) is timed apart and left "
           "out; " if compiled_batch_sizes else "torch.compile not measured in this run; ")
        + "peak memory "
        "is the process's peak resident set (VmHWM), all its variants and torch included. Variants: channels-last is "
        "the networks' default (`DiamondPolicy(channels_last=True)`), NCHW the code before; bf16 is not equal "
        "numerics and is not counted in the verdict. Official numbers: OFFICIAL_TIMINGS.md section 1 (2-core CPU, "
        "2 threads, fp32, median of 5 after 2, one measurement at a time on an idle machine). Ratio: official time "
        "/ ours, wall clock. CPU time: the process's over all threads (OpenMP spin-waiting included). Torch threads: "
        f"{threads}. {timing.load_note(load_start, timing.load_average())}\n\n"
        f"Verdict against the target (at least {TARGET}x the official rate at equal numerics, fp32, wall clock, "
        f"batch {TARGET_BATCH}): "
        + ("; ".join(verdicts) or "nothing measured") + ".\n"
    )


USAGE = ("python -m world_models.diamond.benchmark [batch_sizes=32,8] [repeats=3] [warmup=1] [threads=2] "
         "[memory_gb=N] [size=paper] [compiled_batch_sizes=8]")


def _main(argv: list[str]) -> int:
    kwargs: dict[str, Any] = {}
    sizes = lambda v: tuple(int(b) for b in v.split(",") if b)  # noqa: E731
    parse = {"batch_sizes": sizes, "repeats": int, "warmup": int, "threads": int, "memory_gb": float, "size": str,
             "compiled_batch_sizes": sizes}
    for arg in argv:
        key, _, value = arg.partition("=")
        try:
            kwargs["memory_limit_gb" if key == "memory_gb" else key] = parse[key](value)
        except (KeyError, ValueError):
            print(f"bad argument '{arg}'; usage: {USAGE}", file=sys.stderr)
            return 2
    try:
        print(speed_section(**kwargs, command=" ".join(["python -m world_models.diamond.benchmark", *argv]),
                            log=lambda row: print(row, file=sys.stderr, flush=True)))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
