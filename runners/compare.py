"""Compare agents from their TensorBoard logs: one plot (PNG) and one markdown table, same tag, budgets and seeds.

    python -m runners.compare <run dirs or globs ...> [tag=eval/mean_reward] [out=results/plots/<name>.png]
                              [table=<path.md>] [x=steps]

Positional arguments are run directories (``runs/<agent>/<env>/<date>_<seed>/``), glob patterns
(``'runs/*/cartpole/*'``) or folders holding run directories (``runs/``). Runs are grouped by (env, agent):
one subplot per env, one curve per agent (mean +- std over seeds, interpolated onto a common grid of env steps
that stops at the shortest seed of the group). The table gives per (env, agent) the seeds, the env steps reached
(min over seeds), the final value (the tag's last logged value per seed, mean +- std over seeds) and, from three
seeds on, the interquartile mean with a 95% stratified bootstrap CI (rliable; Agarwal et al., NeurIPS 2021).
"""

from __future__ import annotations

import glob
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.common.tblog import CONFIG_FILE, TB_DIR, Run, missing_tag_message, read_run
from runners.cli import UsageError, check_keys, parse_args, run_main

KEYS = ("tag", "out", "table", "x", "debug")
X_AXES = ("steps",)
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
DEFAULT_TAG = "eval/mean_reward"
PLOT_DIR = Path("results/plots")
MIN_SEEDS_IQM = 3
BOOTSTRAP_REPS = 2000
MAX_GRID_POINTS = 500


@dataclass
class Row:
    """One line of the table: an agent on an env, summarized over its seeds."""

    env: str
    agent: str
    seeds: int
    env_steps: int
    final_mean: float
    final_std: float
    iqm: tuple[float, float, float] | None  # (point, CI low, CI high); None under MIN_SEEDS_IQM seeds


def find_runs(patterns: list[str]) -> list[Path]:
    """Expand run directories, glob patterns and folders of runs into run directories, in order, without repeats.

    :raises ValueError: when a pattern matches nothing
    """
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise ValueError(f"no runs matched '{pattern}'")
        for match in map(Path, matches):
            if match.is_dir() and not (match / CONFIG_FILE).is_file():
                nested = sorted(c.parent for c in match.rglob(CONFIG_FILE) if (c.parent / TB_DIR).is_dir())
                found.update(dict.fromkeys(nested or [match]))  # none nested: read_run names what is missing
            else:
                found[match] = None
    return list(found)


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """env -> agent -> runs (seeds), both levels sorted by name."""
    groups: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        groups.setdefault(run.env, {}).setdefault(run.agent, []).append(run)
    return {env: dict(sorted(agents.items())) for env, agents in sorted(groups.items())}


def mean_curve(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std (ddof=0) over seeds of ``[n, 2]`` (step, value) curves, on a step grid they all cover.

    The grid is the union of the logged steps between the latest first step and the earliest last step
    (thinned to ``MAX_GRID_POINTS`` evenly spaced steps when longer); each curve is linearly interpolated onto it.
    """
    high = min(c[-1, 0] for c in curves)
    low = min(max(c[0, 0] for c in curves), high)
    steps = np.unique(np.concatenate([c[:, 0] for c in curves]))
    grid = steps[(steps >= low) & (steps <= high)]
    if len(grid) > MAX_GRID_POINTS:
        grid = np.linspace(low, high, MAX_GRID_POINTS)
    values = np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
    return grid, values.mean(axis=0), values.std(axis=0)


def iqm_with_ci(finals: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> tuple[float, float, float]:
    """Interquartile mean of per-seed final values and its 95% stratified bootstrap CI (rliable)."""
    try:  # slow to import; only needed from three seeds on
        from rliable import library, metrics
    except Exception as e:  # arch 7.x breaks on import under pandas 3; arch 8 drops what rliable 1.2.0 passes
        raise RuntimeError(f"rliable failed to import ({e}); rliable 1.2.0 needs arch<8 and pandas<3") from e

    scores = {"run": np.asarray(finals, dtype=np.float64).reshape(-1, 1)}  # (num_runs, num_tasks=1)
    with warnings.catch_warnings():  # rliable 1.2.0 still seeds arch's bootstrap through the deprecated random_state
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = library.get_interval_estimates(
            scores,
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return float(points["run"][0]), float(intervals["run"][0, 0]), float(intervals["run"][1, 0])


def summarize(groups: dict[str, dict[str, list[Run]]], tag: str) -> list[Row]:
    """One table row per (env, agent): seeds, env steps reached, final value mean +- std, IQM with CI."""
    rows = []
    for env, agents in groups.items():
        for agent, runs in agents.items():
            finals = np.array([run.scalars[tag][-1, 1] for run in runs])
            rows.append(
                Row(
                    env=env,
                    agent=agent,
                    seeds=len(runs),
                    env_steps=min(run.last_step for run in runs),
                    final_mean=float(finals.mean()),
                    final_std=float(finals.std()),
                    iqm=iqm_with_ci(finals) if len(runs) >= MIN_SEEDS_IQM else None,
                )
            )
    return rows


def format_table(rows: list[Row], tag: str) -> str:
    """The markdown table, preceded by one line stating the tag and how each column is computed."""
    lines = [
        f"Tag `{tag}`: final value = its last logged value in each seed, mean ± std over seeds (ddof=0); "
        f"IQM over seeds with 95% stratified bootstrap CI (rliable, {BOOTSTRAP_REPS} reps) "
        f"from {MIN_SEEDS_IQM} seeds on.",
        "",
        f"| env | agent | seeds | env steps | final {tag} (mean ± std) | IQM [95% CI] |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        iqm = (
            f"{row.iqm[0]:.2f} [{row.iqm[1]:.2f}, {row.iqm[2]:.2f}]"
            if row.iqm is not None
            else f"n/a (<{MIN_SEEDS_IQM} seeds)"
        )
        lines.append(
            f"| {row.env} | {row.agent} | {row.seeds} | {row.env_steps} "
            f"| {row.final_mean:.2f} ± {row.final_std:.2f} | {iqm} |"
        )
    return "\n".join(lines) + "\n"


def _seeds_label(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return f"{low} seed{'s' if high > 1 else ''}" if low == high else f"{low}-{high} seeds"


def plot(groups: dict[str, dict[str, list[Run]]], tag: str, out: Path) -> None:
    """One subplot per env, one mean +- std curve per agent (same colour for an agent in every subplot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents = sorted({agent for by_agent in groups.values() for agent in by_agent})
    colours = {agent: plt.get_cmap("tab10")(i % 10) for i, agent in enumerate(agents)}
    cols = min(len(groups), 3)
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.0 * rows), squeeze=False)
    for ax, (env, by_agent) in zip(axes.flat, groups.items(), strict=False):
        for agent, runs in by_agent.items():
            grid, mean, std = mean_curve([run.scalars[tag] for run in runs])
            label = f"{agent} ({_seeds_label([len(runs)])})"
            ax.plot(grid, mean, color=colours[agent], label=label, marker="o" if len(grid) == 1 else None)
            ax.fill_between(grid, mean - std, mean + std, color=colours[agent], alpha=0.2, linewidth=0)
        ax.set_title(f"{env} ({_seeds_label([len(r) for r in by_agent.values()])})")
        ax.set_xlabel("env steps")
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(f"{tag}: mean ± std over seeds")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _default_plot_path(groups: dict[str, dict[str, list[Run]]], tag: str) -> Path:
    return PLOT_DIR / f"{'+'.join(groups)}_{tag.replace('/', '_')}.png"


def _main(argv: list[str]) -> int:
    patterns, pairs = parse_args(argv, allow_positional=True)
    check_keys(pairs, KEYS, "runners.compare")
    if not patterns:
        raise UsageError("no run directories given; e.g. python -m runners.compare 'runs/*/cartpole/*'")
    tag = pairs.get("tag", DEFAULT_TAG)
    if pairs.get("x", "steps") not in X_AXES:
        raise UsageError(f"x={pairs['x']!r} is not supported; choose one of: {', '.join(X_AXES)}")
    out = Path(pairs["out"]) if "out" in pairs else None
    if out is not None and out.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"out={pairs['out']!r} must end with one of: {', '.join(PLOT_SUFFIXES)}")

    runs = [read_run(path) for path in find_runs(patterns)]
    for run in runs:
        if tag not in run.scalars:
            raise ValueError(missing_tag_message(run.path, tag, list(run.scalars)))
    groups = group_runs(runs)
    out = out or _default_plot_path(groups, tag)
    table_path = Path(pairs["table"]) if "table" in pairs else out.with_suffix(".md")

    table = format_table(summarize(groups, tag), tag)
    plot(groups, tag, out)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(table)
    print(table)
    print(f"wrote {out}\nwrote {table_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns 0, or 2 after one ``error: ...`` line on stderr for bad input."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
