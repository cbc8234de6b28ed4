"""AdamW against AdEMAMix at equal steps: ``python -m runners.bench optimizers [parts=denoiser,radt,stochdqn]
[size=default|tiny] [scale=1] [seeds=3] [alpha=8] [workers=1]``, written to ``results/benchmarks/optimizers.md``
with plots ``results/plots/optimizers_<part>.png`` (issue 10 item 2).

Each part trains one model per (optimizer, learning rate, seed) for the same number of steps, with a learning-rate
search of the same size for both optimizers (the same grid), and reports every cell and the best learning rate of
each optimizer, mean +- std over seeds. The same seed gives both optimizers the same initial weights and the same
batches, so that the differences are paired.

- denoiser: DIAMOND's EDM denoiser (:mod:`world_models.diamond`, the ``tiny`` U-Net, the paper's loss: 4 conditioning
  frames, 2 targets with autoregressive feedback) trained alone on a fixed set of real Breakout segments (64x64,
  ``atari100k`` preprocessing) collected once with random actions (env seed 0); the metric is the denoising loss on
  held-out segments of another random-action collection (env seed 1), with the same noise levels and noise for every
  run. Paper settings otherwise: weight decay 1e-2, eps 1e-8, gradient clip 1.0, linear learning-rate warm-up
  (over the first tenth of the steps here).
- radt: RADT (:mod:`agents.radt`, ``preset=cpu`` but a smaller width) on a Hopper dataset rolled out from the zoo's
  medium SAC behaviour policy (``envs.datasets.generate_dataset``, as ``runners.dataset env=hopper quality=medium
  size=...``), its episodes split 80/20 into training and held-out episodes; the metric is the action MSE (actions
  in [-1, 1], the training loss) on fixed held-out windows, dropout off.
- stochdqn: StochDQN (:mod:`agents.stochdqn`) on InvertedPendulum with 512 discrete actions, trained by
  ``runners.train``; the metric is the final deterministic evaluation return (5 episodes, eval env seed + 10,000).
  StochDQN's default optimizer is Adam without weight decay: both optimizers run with weight decay 0 here.

AdEMAMix (:class:`agents.common.optim.AdEMAMix`) runs with the paper's settings: betas (0.9, 0.999, 0.9999),
``alpha`` (8 by default, the paper's language-model value) and both warm-ups over the whole run
(``T_alpha_beta3`` = the number of gradient steps), as the paper does with beta3 = 0.9999.

Every run writes its result to ``runs/bench/optimizers/<part>-<size>-<steps>/<optimizer>_lr<lr>_s<seed>.json``
(``runs=`` moves it), and a finished run is reused, so an interrupted benchmark continues where it stopped. Runs go
one after the other in this process on one torch thread (``workers=1``, the default: the machine this was written on
is shared), or ``workers`` at a time as separate processes (:func:`runners.benchkit.run_processes`, one thread each).
``size=tiny`` is a seconds-long smoke run of the same code (tests/test_bench_optimizers.py).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.common.checkpoint import atomic_write_text
from runners.benchkit import describe_machine, run_parts, run_processes
from runners.cli import UsageError, parse_args, parse_float, parse_int, run_main

PARTS = ("denoiser", "radt", "stochdqn")
OPTIMIZERS = ("adamw", "ademamix")
LABELS = {"adamw": "AdamW", "ademamix": "AdEMAMix"}
RUNS = Path("runs") / "bench" / "optimizers"
PLOTS = Path("results") / "plots"
BETAS = (0.9, 0.999, 0.9999)
BREAKOUT = {"name": "breakout", "family": "atari", "id": "BreakoutNoFrameskip-v4", "preprocessing": "atari100k",
            "frame_size": None, "noop_max": 30, "frame_skip": 4, "max_episode_frames": 108000, "frame_stack": 4,
            "kwargs": {}, "max_episode_steps": None}


@dataclass(frozen=True)
class Budget:
    """One part's budget. ``steps``: gradient steps (denoiser, radt) or env steps (stochdqn); ``data``/``held_out``:
    training and held-out frames (denoiser) or dataset transitions (radt, split by episodes); ``evals``: evaluation
    points along the run; ``options``: the part's own settings."""

    steps: int
    lrs: tuple[float, ...]
    batch: int = 0
    data: int = 0
    held_out: int = 0
    evals: int = 5
    options: dict[str, Any] = field(default_factory=dict)


# The default size: about 25 CPU-minutes of one core in all (the denoiser ~0.3 s per step at batch 8, RADT ~0.1 s,
# StochDQN ~25 s per run). Grids of three rates spaced by ~3x, the same for both optimizers; RADT's first grid
# (3e-4, 1e-3, 3e-3) had both optimizers' best at its top, so it was moved up one step.
SIZES: dict[str, dict[str, Budget]] = {
    "default": {
        "denoiser": Budget(100, (1e-3, 3e-3, 1e-2), batch=8, data=3000, held_out=1000, evals=4,
                           options={"held_out_segments": 64, "weight_decay": 1e-2, "grad_clip": 1.0}),
        "radt": Budget(300, (1e-3, 3e-3, 1e-2), batch=64, data=20_000, evals=5,
                       options={"embed_dim": 64, "n_layer": 3, "context": 20, "held_out_batches": 8}),
        "stochdqn": Budget(10_000, (3e-4, 1e-3, 3e-3), evals=5,
                           options={"env": "inverted_pendulum_512", "learning_starts": 1000, "episodes": 5}),
    },
    "tiny": {
        "denoiser": Budget(2, (1e-3, 3e-3), batch=2, data=60, held_out=30, evals=2,
                           options={"held_out_segments": 4, "weight_decay": 1e-2, "grad_clip": 1.0}),
        "radt": Budget(3, (1e-3, 3e-3), batch=4, data=400, evals=2,
                       options={"embed_dim": 16, "n_layer": 1, "context": 5, "held_out_batches": 2}),
        "stochdqn": Budget(200, (1e-3, 3e-3), evals=1,
                           options={"env": "inverted_pendulum_512", "learning_starts": 100, "episodes": 1,
                                    "max_episode_steps": 50}),
    },
}


@dataclass(frozen=True)
class Job:
    """One training run: ``part`` with ``optimizer`` at ``lr`` and ``seed``, for ``budget.steps`` steps."""

    part: str
    optimizer: str
    lr: float
    seed: int
    budget: Budget
    alpha: float
    runs: str
    data: str  # the part's data file(s), prepared before the runs

    @property
    def out(self) -> Path:
        return Path(self.runs) / f"{self.optimizer}_lr{self.lr:g}_s{self.seed}.json"

    def optimizer_kwargs(self, updates: int) -> dict[str, Any]:
        """AdEMAMix's paper settings, both warm-ups over the run's ``updates`` gradient steps; AdamW: none."""
        if self.optimizer == "adamw":
            return {}
        return {"betas": list(BETAS), "alpha": self.alpha, "T_alpha_beta3": max(1, int(updates))}


def _eval_steps(steps: int, evals: int) -> list[int]:
    """The steps after which a run is evaluated: ``evals`` evenly spaced points ending at ``steps``, plus step 0."""
    return sorted({0, *(round(steps * (i + 1) / evals) for i in range(evals))})


def _flow(options: dict[str, Any]) -> str:
    """A dict as a command-line value, ``{alpha: 8, betas: [0.9, 0.999, 0.9999]}``."""
    return "{" + ", ".join(f"{k}: {list(v) if isinstance(v, tuple | list) else v}" for k, v in options.items()) + "}"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------------------------
# denoiser: DIAMOND's EDM denoiser on fixed random-action Breakout segments
# ----------------------------------------------------------------------------------------------------------------
def breakout_frames(n_steps: int, seed: int, path: Path) -> Path:
    """``n_steps`` random-action Breakout steps (env seed ``seed``) in an EpisodeBuffer file, collected once."""
    if path.is_file():
        return path
    from agents.common.episode_buffer import EpisodeBuffer
    from envs.factory import make_vec_env

    env = make_vec_env(BREAKOUT, n_envs=1, seed=seed)
    buffer = EpisodeBuffer(env.observation_space.shape, np.uint8, (), np.int64)  # HWC frames
    rng = np.random.default_rng(seed)
    obs = env.reset()
    for _ in range(n_steps):
        act = rng.integers(0, env.action_space.n, 1)
        new_obs, rew, dones, infos = env.step(act)
        done, trunc = bool(dones[0]), bool(dones[0]) and bool(infos[0].get("TimeLimit.truncated", False))
        buffer.add_step(0, obs[0], int(act[0]), float(rew[0]), done and not trunc, trunc)
        obs = new_obs
    buffer.finish_episode(0)
    env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer.save(path)
    return path


def run_denoiser(job: Job) -> dict[str, Any]:
    from agents.common.episode_buffer import EpisodeBuffer
    from agents.common.optim import make_optimizer
    from world_models.diamond import DenoiserConfig, batch_from_segment, make_denoiser

    budget, opts = job.budget, job.budget.options
    train_path, held_path = job.data.split(",")
    train, held = EpisodeBuffer.load(train_path), EpisodeBuffer.load(held_path)
    torch.manual_seed(job.seed)
    denoiser = make_denoiser(DenoiserConfig.tiny(num_actions=4))  # Breakout: 4 actions
    seq = denoiser.cfg.seq_length
    held_batches = [batch_from_segment(held.sample_segments(min(16, opts["held_out_segments"]), seq,
                                                            np.random.default_rng(10_000 + i)))
                    for i in range(max(1, opts["held_out_segments"] // 16))]

    def held_out_loss() -> float:
        denoiser.eval()
        with torch.random.fork_rng(), torch.no_grad():  # the same noise levels and noise for every run and step
            torch.manual_seed(12_345)
            value = float(np.mean([denoiser.loss(b)[0].item() for b in held_batches]))
        denoiser.train()
        return value

    optimizer = make_optimizer(denoiser.parameters(), job.optimizer, job.lr, weight_decay=opts["weight_decay"],
                               eps=1e-8, **job.optimizer_kwargs(budget.steps))
    rng, warmup = np.random.default_rng(job.seed), max(1, budget.steps // 10)
    evals, curve, train_losses = _eval_steps(budget.steps, budget.evals), [], []
    denoiser.train()
    for step in range(budget.steps + 1):
        if step in evals:
            curve.append((step, _finite(held_out_loss())))
        if step == budget.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = job.lr * min(1.0, (step + 1) / warmup)
        loss, _ = denoiser.loss(batch_from_segment(train.sample_segments(budget.batch, seq, rng)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), opts["grad_clip"])
        optimizer.step()
        train_losses.append(loss.item())
    return {"final": curve[-1][1], "curve": curve, "train_loss_last_10pct": _finite(
        float(np.mean(train_losses[-max(1, len(train_losses) // 10):])))}


# ----------------------------------------------------------------------------------------------------------------
# radt: RADT's action loss on a Hopper dataset of the zoo's medium behaviour policy
# ----------------------------------------------------------------------------------------------------------------
def hopper_dataset(transitions: int, root: Path) -> tuple[Path, Path]:
    """``transitions`` steps of the zoo's medium SAC policy on Hopper (seed 0), episodes split 80/20 into a
    training and a held-out file; generated once."""
    train_path = root / f"hopper-medium-{transitions}-train.npz"
    held_path = root / f"hopper-medium-{transitions}-heldout.npz"
    if train_path.is_file() and held_path.is_file():
        return train_path, held_path
    from envs.datasets import FIELDS, generate_dataset, save_dataset

    data = generate_dataset("hopper", "medium", transitions, seed=0, progress=False)
    starts = data["episode_starts"]
    if len(starts) < 2:
        raise ValueError(f"{transitions} transitions hold one episode; a held-out split needs more (raise data=)")
    cut_episode = min(len(starts) - 1, max(1, round(0.8 * len(starts))))
    cut = int(starts[cut_episode])
    for path, steps, episodes in ((train_path, slice(0, cut), starts[:cut_episode]),
                                  (held_path, slice(cut, None), starts[cut_episode:] - cut)):
        part = {key: data[key][steps] for key in FIELDS if key != "episode_starts"}
        part["episode_starts"] = episodes.astype(np.int64)
        save_dataset(part, path)
    return train_path, held_path


def _radt_model(job: Job, dataset: str) -> Any:
    from omegaconf import OmegaConf

    from agents.common.registry import make_agent
    from envs.factory import make_vec_env
    from runners.config import compose_train_config

    budget, opts = job.budget, job.budget.options
    kwargs = job.optimizer_kwargs(budget.steps)
    argv = ["agent=radt", "env=hopper", "preset=cpu", f"agent.dataset={dataset}", f"seed={job.seed}",
            f"agent.learning_rate={job.lr}", f"agent.batch_size={budget.batch}",
            f"agent.warmup_steps={max(1, budget.steps // 10)}", f"agent.embed_dim={opts['embed_dim']}",
            f"agent.n_layer={opts['n_layer']}", f"agent.context={opts['context']}", f"optimizer={job.optimizer}",
            f"optimizer_kwargs={_flow(kwargs)}"]
    cfg = compose_train_config(argv, parse_args(argv)[1])
    hyperparams = OmegaConf.to_container(cfg.agent, resolve=True)
    hyperparams.pop("id")
    env = make_vec_env(OmegaConf.to_container(cfg.env, resolve=True), n_envs=1, seed=job.seed, training=False)
    return make_agent("radt", env, hyperparams, seed=job.seed, device="cpu")


def run_radt(job: Job) -> dict[str, Any]:
    from stable_baselines3.common.logger import configure

    budget = job.budget
    train_path, held_path = job.data.split(",")
    model = _radt_model(job, train_path)
    model.set_logger(configure(None, []))
    model.load_dataset()
    held_buffer = _radt_model(job, held_path).load_dataset()
    train_buffer, sampler = model.buffer, model._sampler
    model.buffer, model._sampler = held_buffer, np.random.default_rng(10_000)  # the same windows for every run
    held = [model.sample_batch(budget.batch) for _ in range(budget.options["held_out_batches"])]
    model.buffer, model._sampler = train_buffer, sampler

    def held_out_mse() -> float:
        model.policy.set_training_mode(False)
        with torch.no_grad():
            errors = [((model.policy.model(b["states"], b["actions"], b["returns_to_go"], b["timesteps"], b["valid"])
                        - b["actions"]) ** 2)[b["valid"]].mean().item() for b in held]
        return float(np.mean(errors))

    evals, curve, train_losses = _eval_steps(budget.steps, budget.evals), [], []
    for step in range(budget.steps + 1):
        if step in evals:
            curve.append((step, _finite(held_out_mse())))
        if step == budget.steps:
            break
        train_losses.append(model.train_step()["loss"])
    return {"final": curve[-1][1], "curve": curve, "train_loss_last_10pct": _finite(
        float(np.mean(train_losses[-max(1, len(train_losses) // 10):])))}


# ----------------------------------------------------------------------------------------------------------------
# stochdqn: StochDQN's return on InvertedPendulum-512
# ----------------------------------------------------------------------------------------------------------------
def run_stochdqn(job: Job) -> dict[str, Any]:
    from envs.datasets import eval_curve
    from runners.train import main as train_main

    budget, opts = job.budget, job.budget.options
    run_dir = job.out.with_suffix("")
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run from an interrupted benchmark starts again
    updates = budget.steps - opts["learning_starts"]  # one gradient step per env step from learning_starts on
    kwargs = {"weight_decay": 0.0, **job.optimizer_kwargs(updates)}
    argv = ["agent=stochdqn", f"env={opts['env']}", f"seed={job.seed}", f"total_timesteps={budget.steps}",
            f"eval_freq={max(1, budget.steps // budget.evals)}", f"eval_episodes={opts['episodes']}",
            f"save_freq={budget.steps}", "save_replay_buffer=false", "keep_checkpoints=1", "torch_threads=1",
            "progress_bar=false", f"learning_rate={job.lr}", f"learning_starts={opts['learning_starts']}",
            f"optimizer={job.optimizer}", f"optimizer_kwargs={_flow(kwargs)}", f"run_dir={run_dir}"]
    if "max_episode_steps" in opts:
        argv.append(f"env.max_episode_steps={opts['max_episode_steps']}")
    if train_main(argv) != 0:
        raise RuntimeError(f"runners.train {' '.join(argv)} failed")
    summary = json.loads((run_dir / "results.json").read_text())
    curve = sorted((step, mean) for step, (mean, _) in eval_curve(run_dir).items())
    final = float(summary["eval"]["mean_reward"])
    if not curve or curve[-1][0] != budget.steps:
        curve.append((budget.steps, final))
    return {"final": final, "curve": curve}


RUNNERS: dict[str, Callable[[Job], dict[str, Any]]] = {"denoiser": run_denoiser, "radt": run_radt,
                                                       "stochdqn": run_stochdqn}
HIGHER_IS_BETTER = {"denoiser": False, "radt": False, "stochdqn": True}
METRICS = {"denoiser": "held-out denoising loss", "radt": "held-out action MSE", "stochdqn": "final eval return"}


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` (one thread) and write its result to ``job.out``."""
    torch.set_num_threads(1)
    start = time.time()
    result = RUNNERS[job.part](job)
    result.update(optimizer=job.optimizer, lr=job.lr, seed=job.seed, steps=job.budget.steps,
                  wall_s=round(time.time() - start, 1))
    job.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.out, json.dumps(result))
    return result


def job_main(argv: list[str]) -> int:
    """``python -m runners.bench_optimizers job=<file>``: one run of :func:`run_processes` (``workers > 1``)."""
    _, pairs = parse_args(argv)
    spec = json.loads(Path(pairs["job"]).read_text())
    run_job(Job(**{**spec, "budget": Budget(**{**spec["budget"], "lrs": tuple(spec["budget"]["lrs"])})}))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    size: str
    scale: float
    seeds: int
    alpha: float
    workers: int
    runs: Path
    plots: Path

    def budget(self, part: str) -> Budget:
        base = SIZES[self.size][part]
        return replace(base, steps=max(1, round(base.steps * self.scale)))


def _prepare(plan: Plan, part: str, budget: Budget) -> str:
    """The part's data, made once: file paths joined by commas ('' for stochdqn, whose data is its env)."""
    data = plan.runs / "data"
    if part == "denoiser":
        return ",".join(str(breakout_frames(n, seed, data / f"breakout-random-{n}-s{seed}.npz"))
                        for n, seed in ((budget.data, 0), (budget.held_out, 1)))
    if part == "radt":
        return ",".join(str(p) for p in hopper_dataset(budget.data, data))
    return ""


def _jobs(plan: Plan, part: str) -> list[Job]:
    budget = plan.budget(part)
    data = _prepare(plan, part, budget)
    runs = plan.runs / f"{part}-{plan.size}-{budget.steps}"
    return [Job(part, name, lr, seed, budget, plan.alpha, str(runs), data)
            for seed in range(plan.seeds) for lr in budget.lrs for name in OPTIMIZERS]


def _run_all(plan: Plan, jobs: list[Job]) -> None:
    pending = [job for job in jobs if not job.out.is_file()]
    if plan.workers == 1:
        for job in pending:
            run_job(job)
        return
    specs = []
    for job in pending:
        spec = job.out.with_suffix(".job.json")
        spec.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec, json.dumps(asdict(job)))
        specs.append(([f"job={spec}"], job.out))
    run_processes(specs, "runners.bench_optimizers", plan.workers)
    if missing := [str(job.out) for job in pending if not job.out.is_file()]:
        raise RuntimeError(f"{len(missing)} runs wrote no result, e.g. {missing[0]}; run it alone with "
                           f"python -m runners.bench_optimizers job={Path(missing[0]).with_suffix('.job.json')}")


def _mean_std(values: list[float | None]) -> tuple[float, float]:
    finite = [v for v in values if v is not None]
    if len(finite) < len(values) or not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite))


def _fmt(value: float | None, part: str) -> str:
    if value is None or not math.isfinite(value):
        return "diverged"
    return f"{value:.1f}" if part == "stochdqn" else f"{value:.4f}"


def _best_lr(part: str, results: dict[tuple[str, float], list[dict]], name: str, lrs: tuple[float, ...]) -> float:
    sign = -1.0 if HIGHER_IS_BETTER[part] else 1.0
    means = {lr: _mean_std([r["final"] for r in results[(name, lr)]])[0] for lr in lrs}
    finite = {lr: m for lr, m in means.items() if math.isfinite(m)}
    return min(finite, key=lambda lr: sign * finite[lr]) if finite else lrs[0]


def _plot(part: str, results: dict[tuple[str, float], list[dict]], best: dict[str, float], lrs: tuple[float, ...],
          out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (curves, sweep) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"adamw": "tab:blue", "ademamix": "tab:orange"}
    for name in OPTIMIZERS:
        runs = results[(name, best[name])]
        steps = [s for s, _ in runs[0]["curve"]]
        values = np.array([[np.nan if v is None else v for _, v in r["curve"]] for r in runs], dtype=float)
        mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
        curves.plot(steps, mean, color=colors[name], marker="o", label=f"{LABELS[name]}, lr {best[name]:g}")
        curves.fill_between(steps, mean - std, mean + std, color=colors[name], alpha=0.2)
        finals = [_mean_std([r["final"] for r in results[(name, lr)]]) for lr in lrs]
        sweep.errorbar(lrs, [m for m, _ in finals], yerr=[s for _, s in finals], color=colors[name], marker="o",
                       capsize=3, label=LABELS[name])
    unit = "env steps" if part == "stochdqn" else "gradient steps"
    curves.set(xlabel=unit, ylabel=METRICS[part].replace("final ", ""),
               title=f"{part}: best learning rate of each, mean +- std")
    sweep.set(xscale="log", xlabel="learning rate", ylabel=f"{METRICS[part]} at the end",
              title="learning-rate search (mean +- std over seeds)")
    sweep.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    sweep.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if not HIGHER_IS_BETTER[part]:
        curves.set_yscale("log")
    for ax in (curves, sweep):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _verdict(part: str, results: dict[tuple[str, float], list[dict]], best: dict[str, float]) -> str:
    a, b = ([r["final"] for r in results[(name, best[name])]] for name in OPTIMIZERS)
    (mean_a, std_a), (mean_b, std_b) = _mean_std(a), _mean_std(b)
    if not (math.isfinite(mean_a) and math.isfinite(mean_b)):
        return "One optimizer diverged at every learning rate of its search; no comparison of the best runs."
    def better(u: float, v: float) -> bool:
        return u > v if HIGHER_IS_BETTER[part] else u < v

    better_b = better(mean_b, mean_a)
    winner, loser = ("ademamix", "adamw") if better_b else ("adamw", "ademamix")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    wins = sum(better(y, x) if better_b else better(x, y) for x, y in pairs)
    gap = abs(mean_b - mean_a)
    relative = f" ({gap / abs(mean_a) * 100:.1f}% of AdamW's)" if mean_a else ""
    noise = max(std_a, std_b)
    strength = ("larger than the spread over seeds" if gap > noise else
                "within the spread over seeds: not a clear difference at this budget")
    return (f"At its best learning rate, **{LABELS[winner]}** did better than {LABELS[loser]} on the "
            f"{METRICS[part]}: {_fmt(mean_b if better_b else mean_a, part)} against "
            f"{_fmt(mean_a if better_b else mean_b, part)}, a gap of {_fmt(gap, part)}{relative}, {strength} "
            f"(std {_fmt(std_a, part)} AdamW, {_fmt(std_b, part)} AdEMAMix); with the same seed (same initial "
            f"weights and batches) {LABELS[winner]} was ahead in {wins} of {len(pairs)} seeds.")


def part_report(plan: Plan, part: str) -> str:
    jobs = _jobs(plan, part)
    _run_all(plan, jobs)
    budget = plan.budget(part)
    results: dict[tuple[str, float], list[dict]] = {}
    for job in jobs:
        results.setdefault((job.optimizer, job.lr), []).append(json.loads(job.out.read_text()))
    best = {name: _best_lr(part, results, name, budget.lrs) for name in OPTIMIZERS}
    metric = METRICS[part]
    along = HIGHER_IS_BETTER[part]  # an RL return is noisy: also the mean of every evaluation along the run
    rows = [f"| optimizer | learning rate | {metric}, mean +- std over {plan.seeds} seeds | per seed | "
            + ("mean of the run's evaluations, mean +- std | " if along else "") + "wall time per run (s) |",
            "|-|-|-|-|" + ("-|" if along else "") + "-|"]
    for name in OPTIMIZERS:
        for lr in budget.lrs:
            finals = [r["final"] for r in results[(name, lr)]]
            mean, std = _mean_std(finals)
            cell = f"{_fmt(mean, part)} +- {_fmt(std, part)}" if math.isfinite(mean) else "diverged"
            mark = "**" if lr == best[name] else ""
            extra = ""
            if along:
                m, sd = _mean_std([float(np.mean([v for _, v in r["curve"]])) for r in results[(name, lr)]])
                extra = f"{_fmt(m, part)} +- {_fmt(sd, part)} | "
            rows.append(f"| {mark}{LABELS[name]}{mark} | {mark}{lr:g}{mark} | {mark}{cell}{mark} | "
                        f"{', '.join(_fmt(v, part) for v in finals)} | {extra}"
                        f"{np.mean([r['wall_s'] for r in results[(name, lr)]]):.0f} |")
    plot = plan.plots / f"optimizers_{part}.png"
    _plot(part, results, best, budget.lrs, plot)
    if along:
        runs_mean = {name: _mean_std([float(np.mean([v for _, v in r["curve"]])) for r in results[(name, best[name])]])
                     for name in OPTIMIZERS}
        edge_along = " Averaged over each run's evaluations (less noisy than the last one alone), at the same " \
            "learning rates: " + ", ".join(f"{LABELS[n]} {_fmt(m, part)} +- {_fmt(sd, part)}"
                                           for n, (m, sd) in runs_mean.items()) + "."
    else:
        edge_along = ""
    edge = [LABELS[name] for name in OPTIMIZERS if best[name] in (min(budget.lrs), max(budget.lrs))]
    edge_note = (f" The best learning rate of {' and '.join(edge)} lies at the edge of the grid: a wider search might "
                 "move its numbers." if edge else "")
    return "\n".join([_describe(plan, part, budget), "", *rows, "",
                      f"Bold: the best learning rate of each optimizer (picked on these same final numbers, equally "
                      f"for both). {_verdict(part, results, best)}{edge_along}{edge_note}", "",
                      f"Runs: {len(jobs)}, {sum(r['wall_s'] for rs in results.values() for r in rs) / 60:.0f} min of "
                      "wall time together, one after the other (the seconds on the command line count only the "
                      "invocation that wrote this section, which reuses finished runs).", "",
                      f"Plot: `{plot}` (left: the held-out metric along the runs at the best learning rates; right: "
                      "the learning-rate search)."])


def _describe(plan: Plan, part: str, budget: Budget) -> str:
    opts, lrs = budget.options, ", ".join(f"{lr:g}" for lr in budget.lrs)
    ademamix = (f"AdEMAMix betas {BETAS}, alpha {plan.alpha:g}, T_alpha_beta3 = the run's gradient steps "
                f"({{}}); the same learning-rate grid for both optimizers: {lrs}.")
    if part == "denoiser":
        return (f"Budget: {budget.steps} gradient steps per run, batch {budget.batch} segments of 6 frames (4 "
                f"conditioning + 2 targets), DIAMOND's `tiny` U-Net (113,907 parameters), weight decay "
                f"{opts['weight_decay']:g}, eps 1e-8, clip {opts['grad_clip']:g}, linear warm-up over "
                f"{max(1, budget.steps // 10)} steps. Data: {budget.data} random-action Breakout steps (env seed 0) "
                f"for training, {opts['held_out_segments']} held-out segments from {budget.held_out} other steps "
                f"(env seed 1), evaluated with fixed noise. " + ademamix.format(budget.steps))
    if part == "radt":
        return (f"Budget: {budget.steps} gradient steps per run, batch {budget.batch} windows of K = "
                f"{opts['context']}, RADT with embed_dim {opts['embed_dim']}, n_layer {opts['n_layer']} (otherwise "
                f"preset=cpu: dropout 0.1, weight decay 1e-4, clip 0.25, bf16 autocast), warm-up over "
                f"{max(1, budget.steps // 10)} steps. Data: {budget.data:,} transitions of the zoo's medium SAC "
                f"policy on Hopper (seed 0), episodes split 80/20 by order; metric on "
                f"{opts['held_out_batches']} x {budget.batch} fixed held-out windows. " +
                ademamix.format(budget.steps))
    updates = budget.steps - opts["learning_starts"]
    return (f"Budget: {budget.steps:,} env steps per run on {opts['env']} (learning starts at "
            f"{opts['learning_starts']:,}: {updates:,} gradient steps), the agent's other defaults; "
            f"evaluation episodes (deterministic): {opts['episodes']} every {max(1, budget.steps // budget.evals):,} "
            f"steps, the last one reported; weight decay 0 for both. " + ademamix.format(updates))


def run(out_path: str, parts: str = ",".join(PARTS), size: str = "default", scale: str = "1", seeds: str = "3",
        alpha: str = "8", workers: str = "1", runs: str = str(RUNS), plots: str = str(PLOTS)) -> str:
    if size not in SIZES:
        raise UsageError(f"size={size!r}; choose one of: {', '.join(SIZES)}")
    factor = parse_float("scale", scale)
    if not factor > 0:
        raise UsageError(f"scale={scale} must be > 0")
    plan = Plan(size, factor, parse_int("seeds", seeds, 1), parse_float("alpha", alpha),
                parse_int("workers", workers, 1), Path(runs), Path(plots))
    header = [
        "# Optimizers: AdamW against AdEMAMix at equal steps (issue 10 item 2)", "",
        "Each part trains the same model with both optimizers for the same number of steps, with a learning-rate "
        "search of the same size (the same grid) for each, over the same seeds (a seed gives both optimizers the "
        "same initial weights and batches). See runners/bench_optimizers.py.", "",
        "Read the budgets: these runs are short (a few hundred gradient steps for the networks, 9,000 for StochDQN), "
        "as a shared 2-core CPU allows. AdEMAMix was designed for long runs: its slow EMA with beta3 = 0.9999 has a "
        "half-life of about 6,900 steps, and with the paper's warm-ups over the whole run (T_alpha_beta3 = the run's "
        "steps) alpha and beta3 only reach their final values at the last step. What is measured here is the "
        "short-budget regime; it says nothing about the long runs where the paper reports its gains.", "",
        f"Machine: {describe_machine()}. A loaded machine: its 2 cores were shared with two long trainings and "
        "other jobs while this ran (nice -n 15, one torch thread, one run at a time), so the wall times are "
        "inflated and only comparable within a part.", "",
    ]
    titles = {
        "denoiser": "## (i) DIAMOND's denoiser: held-out denoising loss",
        "radt": "## (ii) RADT: held-out action MSE",
        "stochdqn": "## (iii) StochDQN on InvertedPendulum-512: return",
    }
    functions = {part: (lambda part=part: part_report(plan, part)) for part in PARTS}
    options = {k: v for k, v in (("size", size), ("scale", scale), ("seeds", seeds), ("alpha", alpha))
               if v != {"size": "default", "scale": "1", "seeds": "3", "alpha": "8"}[k]}
    return run_parts("optimizers", out_path, parts, header, titles, functions, options)


if __name__ == "__main__":
    sys.exit(run_main(job_main))
