"""What the benchmarks (``runners/bench_<name>.py``) share: timing, training runs as parallel processes, the machine
line, a random-policy reference and reports written section by section (so one part can be measured again alone).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.common.checkpoint import atomic_write_text
from agents.common.evaluation import RandomPolicy  # noqa: F401  (the benchmarks' random-policy reference)
from agents.common.manifest import machine


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def mean_std(values: list[float], digits: int = 1, single: bool = True) -> str:
    """``"mean +- std"`` of ``values`` (population std, ddof=0) at ``digits`` decimals; ``"-"`` when empty.

    :param single: write ``+- 0.0`` for one value too; ``False`` writes the value alone
    """
    if not len(values):
        return "-"
    mean = f"{np.mean(values):.{digits}f}"
    return mean if len(values) == 1 and not single else f"{mean} +- {np.std(values):.{digits}f}"


def run_dir_of(job: list[str]) -> Path:
    """The ``run_dir=`` of a training command (its last argument)."""
    return Path(job[-1].split("=", 1)[1])


def run_processes(jobs: list[tuple[list[str], Path]], module: str, workers: int = 2) -> None:
    """Run ``python -m <module> <args>`` for every ``(args, done_file)``, ``workers`` at a time, in the given order,
    skipping those whose ``done_file`` exists, so that an interrupted benchmark continues where it stopped."""
    pending = [args for args, done in jobs if not done.is_file()]
    # one thread per process: torch's default (one per core) oversubscribes the cores when workers share them
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < workers:
            running.append(
                subprocess.Popen(
                    [sys.executable, "-m", module, *pending.pop(0)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, env=env,
                )
            )
        time.sleep(1)
        running = [p for p in running if p.poll() is None]


def train_all(jobs: list[list[str]], workers: int = 2) -> None:
    """Train every job (``runners.train`` arguments ending in ``run_dir=<path>``), ``workers`` at a time; finished
    runs (with ``results.json``) are kept, unfinished ones from an earlier try are started again from scratch."""
    pending = [job for job in jobs if not (run_dir_of(job) / "results.json").is_file()]
    for job in pending:
        shutil.rmtree(run_dir_of(job), ignore_errors=True)
    run_processes([(job, run_dir_of(job) / "results.json") for job in pending], "runners.train", workers)


def describe_machine() -> str:
    return (f"{machine()}; python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); load average at start {os.getloadavg()[0]:.1f}")


def read_sections(path: Path) -> dict[str, str]:
    """The sections (by their '## ' title) of an earlier report, so that one part can be measured again alone."""
    if not path.is_file():
        return {}
    sections: dict[str, str] = {}
    for chunk in path.read_text().split("\n## ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[f"## {title}"] = body.strip("\n") + "\n"
    return sections


def run_parts(
    name: str,
    out_path: str,
    parts: str,
    header: list[str],
    titles: dict[str, str],
    functions: dict[str, Callable[[], str]],
    options: dict[str, str] | None = None,
) -> str:
    """Measure the chosen ``parts`` (comma-separated) and rewrite the report, keeping the other parts' sections.

    ``options``: the command's other ``key=value`` arguments, written into each section's command line (the
    seconds shown are those of this invocation: training runs reused from an earlier one are not counted)."""
    chosen = [p for p in parts.split(",") if p]
    unknown = sorted(set(chosen) - set(titles))
    if unknown:
        raise ValueError(f"unknown part '{unknown[0]}'; choose from: {', '.join(titles)}")
    sections: dict[str, str] = {}
    for part in chosen:
        start = time.time()
        table = functions[part]()
        extra = "".join(f" {k}={v}" for k, v in (options or {}).items())
        # read after measuring: another invocation measuring another part meanwhile keeps its section
        sections = {**read_sections(Path(out_path)), **sections}
        sections[titles[part]] = (f"Command: `python -m runners.bench {name} parts={part}{extra}` "
                                  f"({_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
                                  f"{time.time() - start:.0f} s)\n\n{table}\n")
        print(titles[part], table, sep="\n")
    body = [f"{title}\n\n{sections[title]}" for title in titles.values() if title in sections]
    text = "\n".join(header + body)
    atomic_write_text(out_path, text)
    return text
