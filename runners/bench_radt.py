"""Benchmark of the return-conditioned transformers: ``python -m runners.bench radt [parts=...] [seeds=3] ...``.

Parts, each measured side by side in one run on this machine and written to ``results/benchmarks/radt.md``:

- speed: parameters, train-step time (batch 64, K = 20, Hopper's 11-d states and 3-d actions) and acting latency of
  DT and RADT at the paper's configuration, fp32 and bf16 autocast, beside the authors' code measured on this
  machine kind (../shared/reference/OFFICIAL_TIMINGS.md); KV-cache bytes over a full context with and without
  cross-layer attention (``cla_factor=2``).
- alignment: DT, RADT, RADT without SeqRA and RADT without StepRA trained on Hopper / HalfCheetah / Walker2d x
  medium / medium-replay with the same hyperparameters and gradient steps, then evaluated by the paper's protocol
  (7 targets between the 5th and 95th percentile of the dataset's returns): mean absolute error in normalized-score
  units and the best normalized return, per dataset, over seeds; plots of achieved against target return. Each
  budget (gradient steps, embedding width, episodes per target) is a row of its own: a longer budget adds rows beside
  the shorter one's instead of replacing them, and ``models=dt,radt`` trains a subset.
- cla: DT and RADT with and without ``cla_factor=2`` on hopper-medium: KV-cache bytes and alignment error.
- norm: RADT and DT with ``norm=layernorm|layernorm_nobias|rmsnorm`` on hopper-medium: final loss, loss spikes
  (:func:`loss_spikes`), alignment error over seeds.

Training runs are separate ``runners.train`` processes (two at a time, one torch thread each) under
``runs/bench/radt/<part>/steps<N>-embed<E>``; a run whose directory already holds its results is reused, so an
interrupted benchmark continues where it stopped (and a run of another budget never stands in for one of this).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.common.checkpoint import atomic_write_text
from agents.common.precision import resolve_precision
from agents.common.transformer import KVCache, count_parameters
from agents.radt.models import DecisionTransformer, ReturnAlignedDT
from envs.datasets import dataset_path
from runners.benchkit import describe_machine, mean_std, run_parts, run_processes, timeit, train_all
from runners.cli import parse_bool, parse_int

RUNS = Path("runs") / "bench" / "radt"
PLOTS = Path("results") / "plots"
ALIGNMENT_RECORD = Path("results") / "benchmarks" / "radt_alignment.json"  # the alignment part's measurements
PARTS = ("speed", "alignment", "cla", "norm")
# ../shared/reference/OFFICIAL_TIMINGS.md, section 3 (hopper, batch 64, K = 20)
OFFICIAL = {"radt": (1_205_763, 177.3, 4.2), "dt": (726_147, 142.5, None)}
MODELS = {  # name -> (agent, extra overrides)
    "dt": ("dt", []),
    "radt": ("radt", []),
    "radt_no_seqra": ("radt", ["agent.seqra=false"]),
    "radt_no_stepra": ("radt", ["agent.stepra=false"]),
}
DATASETS = [(env, q) for env in ("hopper", "halfcheetah", "walker2d") for q in ("medium", "medium-replay")]


# ----------------------------------------------------------------------------------------------------------------
# speed
# ----------------------------------------------------------------------------------------------------------------
def _train_step_ms(model: torch.nn.Module, precision: str, batch: int = 64, k: int = 20) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    states, actions = torch.randn(batch, k, 11, generator=g), torch.rand(batch, k, 3, generator=g) * 2 - 1
    rtg, timesteps = torch.randn(batch, k, 1, generator=g), torch.randint(0, 1000, (batch, k), generator=g)
    valid = torch.ones(batch, k, dtype=torch.bool)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            predicted = model(states, actions, rtg, timesteps, valid)
        loss = ((predicted.float() - actions) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()

    return timeit(step, repeats=10, warmup=3) * 1000


def _act_ms(model: torch.nn.Module, k: int = 20) -> float:
    """One action from a full window of ``k`` steps (the evaluation path), no grad."""
    model.eval()
    states, actions, rtg = torch.randn(1, k, 11), torch.zeros(1, k, 3), torch.randn(1, k, 1)
    timesteps = torch.arange(k)[None]
    with torch.no_grad():
        return timeit(lambda: model(states, actions, rtg, timesteps), repeats=50, warmup=5) * 1000


def _cache_bytes(model: Any, k: int = 20) -> tuple[int, int]:
    """(cached K/V tensors, bytes) after generating ``k`` steps with the KV cache."""
    model.eval()
    cache = KVCache()
    states, actions, rtg = torch.randn(1, k, 11), torch.zeros(1, k, 3), torch.randn(1, k, 1)
    timesteps = torch.arange(k)[None]
    with torch.no_grad():
        for i in range(k):
            prev = (actions[:, i - 1], rtg[:, i - 1], timesteps[:, i - 1]) if i else None
            model.step(cache, i, states[:, i], rtg[:, i], timesteps[:, i], prev)
    return cache.num_tensors, cache.nbytes


def part_speed() -> str:
    rows = [
        f"torch threads: {torch.get_num_threads()}. Train step = forward + MSE + backward + clip 0.25 + AdamW, "
        "batch 64, K = 20, median of 10 after 3 warm-ups; act = one forward pass over a full window, median of 50.",
        "",
        "| model | parameters | official parameters | train step fp32 (ms) | train step bf16 autocast (ms) | "
        "official train step (ms) | official / ours (best) | act (ms) | official act (ms) |",
        "|-|-|-|-|-|-|-|-|-|",
    ]
    for name, cls in (("dt", DecisionTransformer), ("radt", ReturnAlignedDT)):
        torch.manual_seed(0)
        model = cls(11, 3, embed_dim=128, n_layer=3, n_head=1, context=20)
        fp32, bf16 = _train_step_ms(model, "fp32"), _train_step_ms(model, "bf16")
        params, official_ms, official_act = OFFICIAL[name]
        act = _act_ms(model)
        rows.append(
            f"| {name} | {count_parameters(model):,} | {params:,} | {fp32:.1f} | {bf16:.1f} | {official_ms} | "
            f"{official_ms / min(fp32, bf16):.2f}x | {act:.2f} | {official_act or '-'} |"
        )
    rows += [
        "",
        "KV cache over a full context of 20 steps (batch 1, fp32), 4 layers so that CLA pairs every layer:",
        "",
        "| model | cla_factor | cached K/V tensors | cache bytes |",
        "|-|-|-|-|",
    ]
    for name, cls in (("dt", DecisionTransformer), ("radt", ReturnAlignedDT)):
        for factor in (1, 2):
            tensors, nbytes = _cache_bytes(cls(11, 3, embed_dim=128, n_layer=4, n_head=1, cla_factor=factor))
            rows.append(f"| {name} | {factor} | {tensors} | {nbytes:,} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------------
# training runs and their alignment evaluation
# ----------------------------------------------------------------------------------------------------------------
class Plan:
    """The budget of the training runs (command-line options of the benchmark)."""

    def __init__(self, seeds: int, steps: int, embed: int, episodes: int, datasets: list[tuple[str, str]],
                 workers: int, train: bool = True, first_seed: int = 0, models: list[str] | None = None) -> None:
        self.seeds, self.steps, self.embed, self.episodes = seeds, steps, embed, episodes
        self.datasets, self.workers, self.train, self.first_seed = datasets, workers, train, first_seed
        self.models = list(MODELS) if models is None else models

    def run_dir(self, part: str, *names: str) -> Path:
        """Where a run of ``part`` trains: under a folder of the training budget, so that runs of two budgets never
        share a directory (a finished run is reused as it is)."""
        return RUNS.joinpath(part, f"steps{self.steps}-embed{self.embed}", *names)

    @property
    def seed_range(self) -> range:
        """The seeds trained now: ``first_seed`` .. ``first_seed + seeds - 1`` (a later invocation adds seeds)."""
        return range(self.first_seed, self.first_seed + self.seeds)

    def same_budget(self, entry: Mapping[str, Any]) -> bool:
        """Whether a recorded measurement ran at this plan's budget, so that its seeds and these are pooled."""
        budget = (entry.get("steps"), entry.get("embed"), entry.get("episodes"))
        return budget == (self.steps, self.embed, self.episodes)

    def args(self, model: str, env: str, quality: str, seed: int, run_dir: Path, extra: list[str]) -> list[str]:
        agent, overrides = MODELS[model]
        return [
            f"agent={agent}", f"env={env}", f"agent.dataset={quality}", f"seed={seed}", "preset=cpu",
            f"total_timesteps={self.steps}", f"agent.warmup_steps={max(self.steps // 10, 1)}",
            f"agent.embed_dim={self.embed}", f"save_freq={self.steps}", "eval_freq=0", "eval_episodes=1",
            "torch_threads=1", "progress_bar=false", *overrides, *extra, f"run_dir={run_dir}",
        ]

    def describe(self) -> str:
        return (
            f"Budget per run: {self.steps:,} gradient steps (batch 64, K = 20, embed {self.embed}, 3 layers, 1 head, "
            f"dropout 0.1, AdamW 1e-4 with {max(self.steps // 10, 1):,} warm-up steps, clip 0.25, precision auto: "
            f"{resolve_precision('auto', 'cpu')} on this machine), "
            f"seeds {self.seed_range[0]}..{self.seed_range[-1]}; evaluation: 7 targets x {self.episodes} episodes. "
            "Datasets: 1M transitions generated here (`make datasets`)."
        )


def _evaluate_runs(runs: list[Path], episodes: int, workers: int) -> None:
    """The paper's protocol on every finished run (``alignment.json`` beside it), two processes at a time."""
    jobs = [
        ([f"model={run / 'final'}", "targets=paper", f"episodes={episodes}", f"out={run / 'alignment.json'}"],
         run / "alignment.json")
        for run in runs
        if (run / "results.json").is_file()
    ]
    run_processes(jobs, "runners.evaluate", workers)


def _train_and_evaluate(plan: Plan, runs: dict[tuple, list[str]]) -> dict[tuple, dict[str, Any]]:
    paths = {key: Path(job[-1].split("=", 1)[1]) for key, job in runs.items()}
    if plan.train:  # train=false: report the runs that are complete, start nothing
        train_all(list(runs.values()), plan.workers)
        _evaluate_runs(list(paths.values()), plan.episodes, plan.workers)
    out = {}
    for key, path in paths.items():
        if (path / "alignment.json").is_file():
            out[key] = json.loads((path / "alignment.json").read_text())
            out[key]["train"] = json.loads((path / "results.json").read_text())
            out[key]["run_dir"] = str(path)
    return out


def record_alignment(record: dict[str, Any], plan: Plan, datasets: list[tuple[str, str]],
                     results: dict[tuple, dict[str, Any]], date: str) -> dict[str, Any]:
    """``record`` (dataset -> its measurements, one entry per budget) with the datasets measured now entered.

    An entry keeps, per model, each seed's error, best return and normalized achieved-vs-target curve, with the
    budget and date it was measured at, so that the table and the plots of datasets measured by earlier
    invocations (whose runs may be gone) stay in the report. A dataset measured again at the same budget keeps the
    seeds and models measured before and not now (``first_seed=1 seeds=2`` adds seeds 1 and 2 to an entry of seed
    0; ``models=radt_no_seqra`` adds that model beside the others' measurements of the same seeds), and its date
    lists both; at another budget the new measurement is an entry of its own beside the others."""
    record = {name: list(entries) for name, entries in record.items()}
    for env, q in datasets:
        models = {
            model: [
                {"seed": seed, "mean_absolute_error": r["mean_absolute_error"],
                 "best_normalized_return": r["best_normalized_return"],
                 "normalized_targets": r["normalized_targets"], "normalized_achieved": r["normalized_achieved"]}
                for seed in plan.seed_range
                if model in plan.models and (r := results.get((model, env, q, seed))) is not None
            ]
            for model in MODELS
        }
        if not any(models.values()):
            continue
        entry = {"date": date, "steps": plan.steps, "embed": plan.embed, "episodes": plan.episodes, "models": models}
        entries = record.setdefault(f"{env}-{q}", [])
        same = [i for i, old in enumerate(entries) if plan.same_budget(old)]
        if same:
            old = entries.pop(same[0])
            kept = {m: [r for r in old["models"].get(m, [])
                        if m not in plan.models or r["seed"] not in plan.seed_range] for m in MODELS}
            if any(kept.values()):
                entry["models"] = {m: sorted(kept[m] + models[m], key=lambda r: r["seed"]) for m in MODELS}
                earlier = [d for d in str(old["date"]).split(", ") if d != date]
                entry["date"] = ", ".join([*earlier, date])
                if "note" in old:
                    entry["note"] = old["note"]
        entries.append(entry)
        entries.sort(key=lambda e: (e["steps"], e["embed"], e["episodes"]))
    return record


def budget_label(entry: Mapping[str, Any]) -> str:
    return f"{entry['steps']:,} steps, embed {entry['embed']}, 7 x {entry['episodes']} episodes"


def alignment_table(record: dict[str, Any]) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """The rows of the alignment table over every dataset in ``record`` (in ``DATASETS`` order, a row per budget),
    and per budget how many datasets RADT's error is below DT's on, of those where both were measured."""
    rows = ["| dataset | gradient steps | " + " | ".join(MODELS) + " | RADT below DT | budget (measured) |",
            "|-|-|" + "-|" * len(MODELS) + "-|-|"]
    verdicts: dict[str, tuple[int, int]] = {}
    for env, q in DATASETS:
        for entry in record.get(f"{env}-{q}", []):
            cells, errors = [], {}
            for model in MODELS:
                found = entry["models"].get(model, [])
                errors[model] = [r["mean_absolute_error"] for r in found]
                best = [r["best_normalized_return"] for r in found]
                seeds = f"{len(found)} seed" + ("s" if len(found) > 1 else "")
                cells.append(f"{mean_std(errors[model])} [{mean_std(best)}] ({seeds})" if found else "not run")
            both = bool(errors["dt"]) and bool(errors["radt"])
            better = both and bool(np.mean(errors["radt"]) < np.mean(errors["dt"]))
            label = budget_label(entry)
            wins, compared = verdicts.get(label, (0, 0))
            verdicts[label] = (wins + better, compared + both)
            verdict = ("yes" if better else "no") if both else "not measured"
            budget = f"{label} ({entry['date']}{'; ' + entry['note'] if 'note' in entry else ''})"
            rows.append(f"| {env}-{q} | {entry['steps']:,} | " + " | ".join(cells) + f" | {verdict} | {budget} |")
    return rows, verdicts


def load_alignment_record(path: Path = ALIGNMENT_RECORD) -> dict[str, Any]:
    """The alignment record; a dataset's entry written before budgets had rows of their own (one object rather than
    a list of them) is read as a list of one."""
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {name: entries if isinstance(entries, list) else [entries] for name, entries in record.items()}


def part_alignment(plan: Plan) -> str:
    datasets = [(env, q) for env, q in plan.datasets if dataset_path(env, q).is_file()]
    if not plan.train:
        datasets = [(env, q) for env, q in datasets if plan.run_dir("alignment", f"{env}-{q}").is_dir()]
    runs = {
        (model, env, q, seed): plan.args(
            model, env, q, seed, plan.run_dir("alignment", f"{env}-{q}", f"{model}_s{seed}"), []
        )
        for env, q in datasets
        for model in plan.models
        for seed in plan.seed_range
    }
    results = _train_and_evaluate(plan, runs)
    record = record_alignment(load_alignment_record(), plan, datasets, results, _dt.date.today().isoformat())
    atomic_write_text(ALIGNMENT_RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")
    table, verdicts = alignment_table(record)
    rows = [
        "This invocation: " + plan.describe(),
        f"Measured now: {', '.join(f'{env}-{q}' for env, q in datasets) or 'none'}; the other rows are kept from "
        f"earlier invocations (`{ALIGNMENT_RECORD}`, each at the budget and date in its last column).",
        "",
        "Mean absolute error |achieved - target| in normalized-score units (lower is better), mean +- std over "
        "seeds; in brackets the best normalized return.",
        "",
        *table,
        "",
        "RADT's error is below DT's, of the datasets where both were measured: "
        + "; ".join(f"at {label}: {wins} of {compared}" for label, (wins, compared) in verdicts.items()) + ".",
    ]
    if missing := [f"{env}-{q}" for env, q in DATASETS if f"{env}-{q}" not in record]:
        rows.append(f"Not measured yet: {', '.join(missing)}.")
    for env, q in datasets:  # the plots of the datasets kept from earlier invocations are already there
        entry = next(e for e in record[f"{env}-{q}"] if plan.same_budget(e)) if f"{env}-{q}" in record else None
        if entry is not None:
            _plot(env, q, {m: next((r for r in entry["models"].get(m, []) if r["seed"] == 0), None) for m in MODELS},
                  budget_label(entry))
    rows.append(f"Plots (seed 0, of the budget measured last): `{PLOTS}/radt_alignment_<dataset>.png`.")
    rows.append("Achieved returns per target: "
                "`runs/bench/radt/alignment/steps<N>-embed<E>/<dataset>/<model>_s<seed>/alignment.json`.")
    return "\n".join(rows)


def _plot(env: str, quality: str, results: dict[str, dict[str, Any] | None], budget: str) -> None:
    from agents.radt.alignment import AlignmentResult
    from runners.evaluate import plot_alignment

    curves = {}
    for model, r in results.items():
        if r is not None and "normalized_targets" in r:  # entries kept without their curves are not plotted
            # the normalized values are stored; plot them as they are
            curves[model] = AlignmentResult(r["normalized_targets"], [[a] for a in r["normalized_achieved"]])
    if curves:
        title = f"{env}-{quality}: achieved vs target (normalized score, seed 0; {budget})"
        plot_alignment(curves, PLOTS / f"radt_alignment_{env}-{quality}.png", title)


def part_cla(plan: Plan) -> str:
    runs = {
        (model, factor, seed): plan.args(model, "hopper", "medium", seed,
                                         plan.run_dir("cla", f"{model}_cla{factor}_s{seed}"),
                                         [f"agent.cla_factor={factor}", "agent.n_layer=4"])
        for model in ("dt", "radt")
        for factor in (1, 2)
        for seed in plan.seed_range
    }
    results = _train_and_evaluate(plan, runs)
    rows = [
        plan.describe() + " Here with 4 layers, so that CLA pairs every layer.",
        "",
        "| model | cla_factor | cached K/V tensors (20 steps) | cache bytes | alignment error (hopper-medium) | "
        "best normalized return |",
        "|-|-|-|-|-|-|",
    ]
    for model in ("dt", "radt"):
        cls = DecisionTransformer if model == "dt" else ReturnAlignedDT
        for factor in (1, 2):
            tensors, nbytes = _cache_bytes(cls(11, 3, embed_dim=plan.embed, n_layer=4, n_head=1, cla_factor=factor))
            found = [results[(model, factor, s)] for s in plan.seed_range if (model, factor, s) in results]
            rows.append(
                f"| {model} | {factor} | {tensors} | {nbytes:,} | "
                f"{mean_std([r['mean_absolute_error'] for r in found])} | "
                f"{mean_std([r['best_normalized_return'] for r in found])} |"
            )
    return "\n".join(rows)


NORM_LOG_INTERVAL = 10  # the norm part logs the loss every 10 gradient steps, so that a spike is not averaged away
SPIKE_FACTOR, SPIKE_WINDOW = 2.0, 10


def loss_spikes(losses: np.ndarray, start: int = 0, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> int:
    """How many logged losses from index ``start`` on exceed ``factor`` times the median of the ``window`` logged
    losses before them (a spike stands out of the recent level; a slow drift does not)."""
    return int(sum(
        losses[i] > factor * np.median(losses[i - window:i]) for i in range(max(start, window), len(losses))
    ))


def _loss_stats(run_dir: Path, warmup_steps: int) -> tuple[float, int]:
    """The final loss (mean of the last 10 logged values) and the loss spikes after the warm-up of a run."""
    from agents.common.tblog import read_scalars

    loss = read_scalars(run_dir, ["train/loss"])["train/loss"]
    return float(loss[-10:, 1].mean()), loss_spikes(loss[:, 1], int(np.searchsorted(loss[:, 0], warmup_steps)))


def part_norm(plan: Plan) -> str:
    norms = ("layernorm", "layernorm_nobias", "rmsnorm")
    runs = {
        (model, norm, seed): plan.args(model, "hopper", "medium", seed, plan.run_dir("norm", f"{model}_{norm}_s{seed}"),
                                       [f"agent.norm={norm}", f"agent.log_interval={NORM_LOG_INTERVAL}"])
        for model in ("dt", "radt")
        for norm in norms
        for seed in plan.seed_range
    }
    results = _train_and_evaluate(plan, runs)
    warmup = max(plan.steps // 10, 1)
    rows = [
        plan.describe(),
        "",
        f"Final loss: the mean action MSE of the last {10 * NORM_LOG_INTERVAL} gradient steps. Loss spikes: logged "
        f"losses ({NORM_LOG_INTERVAL}-step means) above {SPIKE_FACTOR:g}x the median of the {SPIKE_WINDOW} before "
        f"them, after the {warmup:,} warm-up steps, summed over seeds. Mean +- std over seeds.",
        "",
        "| model | norm | final loss | loss spikes | alignment error (hopper-medium) | best normalized return "
        "| seeds |",
        "|-|-|-|-|-|-|-|",
    ]
    for model in ("dt", "radt"):
        for norm in norms:
            keys = [(model, norm, s) for s in plan.seed_range if (model, norm, s) in results]
            found = [results[key] for key in keys]
            stats = [_loss_stats(Path(results[key]["run_dir"]), warmup) for key in keys]
            rows.append(
                f"| {model} | {norm} | {mean_std([s[0] for s in stats], 4)} | {sum(s[1] for s in stats)} | "
                f"{mean_std([r['mean_absolute_error'] for r in found])} | "
                f"{mean_std([r['best_normalized_return'] for r in found])} | {len(found)} |"
            )
    return "\n".join(rows)


def run(out_path: str, parts: str = ",".join(PARTS), seeds: str = "3", steps: str = "3000", embed: str = "64",
        episodes: str = "5", datasets: str = "all", workers: str = "2", train: str = "true",
        first_seed: str = "0", models: str = "all") -> str:
    """``datasets``: ``all`` or comma-separated ``<env>-<quality>`` names, e.g. ``hopper-medium,halfcheetah-medium``;
    ``seeds``: how many, from ``first_seed`` on (a later invocation with ``first_seed=`` adds seeds to the record);
    ``models``: ``all`` or comma-separated names of the alignment part's models, e.g. ``dt,radt``."""
    names = {f"{env}-{q}": (env, q) for env, q in DATASETS}
    chosen = list(names) if datasets == "all" else [d for d in datasets.split(",") if d]
    if unknown := [d for d in chosen if d not in names]:
        raise ValueError(f"unknown dataset '{unknown[0]}'; choose from: {', '.join(names)}, all")
    chosen_models = list(MODELS) if models == "all" else [m for m in models.split(",") if m]
    if bad := [m for m in chosen_models if m not in MODELS] if chosen_models else [models]:
        raise ValueError(f"unknown model '{bad[0]}'; choose from: {', '.join(MODELS)}, all")
    plan = Plan(parse_int("seeds", seeds, 1), parse_int("steps", steps, 1), parse_int("embed", embed, 1),
                parse_int("episodes", episodes, 1), [names[d] for d in chosen], parse_int("workers", workers, 1),
                parse_bool("train", train), parse_int("first_seed", first_seed, 0), chosen_models)
    header = [
        "# Decision Transformer and RADT benchmark",
        "",
        "Each part below was measured side by side in one run (`python -m runners.bench radt parts=<part>`), on this "
        "machine:",
        "",
        f"{describe_machine()}.",
        "",
    ]
    titles = {
        "speed": "## Parameters, train step and acting speed at the paper configuration, beside the authors' code",
        "alignment": "## Alignment error: DT vs RADT and its ablations",
        "cla": "## Cross-layer attention: KV cache and alignment",
        "norm": "## Norm choice: layernorm, layernorm without bias, RMSNorm",
    }
    functions = {
        "speed": part_speed,
        "alignment": lambda: part_alignment(plan),
        "cla": lambda: part_cla(plan),
        "norm": lambda: part_norm(plan),
    }
    # the budget options, written into each section's command line so that it reruns as measured
    options = {"seeds": seeds, "steps": steps, "embed": embed, "episodes": episodes, "datasets": datasets,
               "workers": workers, **({"train": train} if train != "true" else {}),
               **({"first_seed": first_seed} if first_seed != "0" else {}),
               **({"models": models} if models != "all" else {})}
    return run_parts("radt", out_path, parts, header, titles, functions, options)
