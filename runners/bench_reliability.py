"""Reliability summary (issue 9): runs the fault-injection suite ``tests/reliability`` and counts, per category and
per agent, the faults tried and the faults survived (refused or stopped as designed, nothing lost); its ``memory``
part measures the peak RSS of training runs (:mod:`runners.reliability_memory`, item 7); its ``determinism`` part
trains every agent for 1,000 steps twice in two processes and compares the runs
(:mod:`runners.reliability_determinism`, item 2 at the issue's length).

    python -m runners.bench reliability [workers=2] [part=all|faults|determinism|memory] [seconds=120] [agents=a,b]

A part other than ``all`` reruns that part and keeps the other parts' sections of the existing file; ``agents=``
(memory, determinism) measures those agents only and replaces their rows of the existing table, keeping the others.

Each parametrized test case is one fault: its category is its test file, its agent the registry id in its test id
(bad-configuration cases are counted per runner instead).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from agents.common.manifest import machine
from agents.common.registry import REGISTRY
from runners.cli import UsageError, parse_int

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = {
    "test_kill_resume": "1. kill and resume",
    "test_determinism": "2. determinism",
    "test_hostile_files": "3. hostile files",
    "test_numerical_faults": "4. numerical faults",
    "test_disk_faults": "5. disk faults",
    "test_bad_config": "6. bad configuration",
}
# issue 9's list of agents: any not in the registry yet is named in the summary
PLANNED_AGENTS = ("dqn", "ppo", "sac", "stochdqn", "stochddqn", "dt", "radt", "diamond", "delta_iris", "act")
DETERMINISM_HEADING = "## 2. Determinism over the first 1,000 steps"
MEMORY_HEADING = "## 7. Memory (peak RSS)"
KILL_NOTE = ("A case of *1. kill and resume* is a whole scenario: per agent, one case SIGKILLs its training three "
             "times (at a random step after the first checkpoint, in the middle of a checkpoint write, at a random "
             "step after the resume point) and resumes after each kill with `resume=`; the other compares a loaded "
             "checkpoint's weights, optimizer state and counters with the saved ones.")
PARTS = ("all", "faults", "determinism", "memory")


def run_suite(workers: int) -> list[tuple[str, str, bool]]:
    """(category, test id, passed) of every case of tests/reliability."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", *(["-n", str(workers), "--dist", "loadgroup"] if workers > 1 else [])]
        subprocess.run(command, cwd=ROOT, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
                       check=False, capture_output=True)
        return read_junit(report)


def read_junit(report: Path) -> list[tuple[str, str, bool]]:
    """(category, test id, passed) of the cases of a junit report of tests/reliability; skipped cases are left out
    and the "@group" that ``--dist loadgroup`` appends to a test id (tests/conftest.py) is removed."""
    cases = []
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        if module in CATEGORIES and not skipped:
            name = re.sub(r"@[^\[\]]*$", "", case.get("name", ""))
            cases.append((CATEGORIES[module], name, not failed))
    return cases


def agent_of(category: str, name: str) -> str:
    params = re.search(r"\[(.*)\]$", name)
    if category.startswith("6."):
        return f"runners.{params.group(1).split('-')[1]}" if params and params.group(1).count("-") >= 2 else "(all)"
    tokens = re.split(r"[-\[\]]", name)
    found = [t for t in tokens if t in REGISTRY]
    return found[0] if found else "(agent-independent)"


def uncovered(per_agent: Counter[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(category, registered agents without a case in it), for the categories counted per agent."""
    categories = sorted({c for c, _ in per_agent if not c.startswith("6.")})
    missing = [(c, sorted(set(REGISTRY) - {a for cc, a in per_agent if cc == c})) for c in categories]
    return [(c, agents) for c, agents in missing if agents]


def not_covered(per_agent: Counter[tuple[str, str]]) -> list[str]:
    """The summary's lines on agents of issue 9 not registered and registered agents without a case in a category."""
    lines = []
    planned = [a for a in PLANNED_AGENTS if a not in REGISTRY]
    if planned:
        lines.append(f"- Agents of issue 9 not in the registry yet: {', '.join(planned)}.")
    lines += [f"- {category}: no test case of {', '.join(agents)}" for category, agents in uncovered(per_agent)]
    return lines or ["- Every registered agent has test cases in every category counted per agent."]


def render(cases: list[tuple[str, str, bool]], workers: int) -> str:
    tried = Counter(c for c, _, _ in cases)
    survived = Counter(c for c, _, ok in cases if ok)
    per_agent: Counter[tuple[str, str]] = Counter()
    per_agent_ok: Counter[tuple[str, str]] = Counter()
    for category, name, ok in cases:
        key = (category, agent_of(category, name))
        per_agent[key] += 1
        per_agent_ok[key] += ok
    lines = [
        "# Reliability: fault injection (issue 9)",
        "",
        f"Command: `python -m runners.bench reliability workers={workers}` (runs `pytest tests/reliability`). "
        f"Machine: {machine()}. Date: {_dt.date.today().isoformat()}.",
        "",
        "A fault *survived* means its test passed: the input was refused with one clear line (exit 2), or the run "
        "stopped or went on as designed, with nothing executed, nothing overwritten and the last good checkpoint "
        "intact.",
        "",
        KILL_NOTE,
        "",
        "| category | faults tried | survived |",
        "|-|-|-|",
        *(f"| {c} | {tried[c]} | {survived[c]} |" for c in sorted(tried)),
        f"| **total** | **{sum(tried.values())}** | **{sum(survived.values())}** |",
        "",
        "## Per agent (bad configuration: per runner)",
        "",
        "| category | agent / runner | tried | survived |",
        "|-|-|-|-|",
        *(f"| {c} | {a} | {per_agent[(c, a)]} | {per_agent_ok[(c, a)]} |" for c, a in sorted(per_agent)),
        "",
        "## Not covered yet, and what does not apply",
        "",
        *not_covered(per_agent),
        "- Kill and resume: online agents do not resume bit-exactly (the env's internal state is not in a "
        "checkpoint, so a resumed run starts a new episode); offline agents (dt, radt, act) do. The world-model "
        "agents (diamond, delta_iris) checkpoint at epoch ends, after the epoch's training, with the episode being "
        "collected: a resumed run ends with the uninterrupted run's epoch, update counts and buffered steps.",
        "- Determinism in `make test` runs each agent's tiny run (80 to 2,000 steps), what fits in CI. Same seed, two "
        "processes, CPU, one torch thread: identical env trajectories and allclose (rtol 1e-6) losses and weights "
        "for every agent (delta_iris on Crafter: bit-identical, since envs/crafter.py hashes crafter's objects by "
        "creation index). The issue's first 1,000 steps of every agent are checked the same way by "
        "`part=determinism`, in the section below.",
        "- 4. numerical faults: tabular stochq has no loss, no gradient and Discrete observations (no NaN possible): "
        "its TD error is guarded instead (a NaN reward stops the run). diamond and delta_iris take uint8 frames, "
        "which hold no NaN: an env with float frames is refused (exit 2); their NaN losses stop the run at the end "
        "of the epoch, before its checkpoint. No agent defines skipping a non-finite update: every case stops.",
        "",
    ]
    failed = [f"{c}: {n}" for c, n, ok in cases if not ok]
    if failed:
        lines += ["## Failed", "", *(f"- {f}" for f in failed), ""]
    return "\n".join(lines)


def split_sections(text: str) -> tuple[str, str, str]:
    """(fault part, determinism part, memory part) of an existing summary; a part it lacks is ""."""
    text, memory = text.split(MEMORY_HEADING, 1) if MEMORY_HEADING in text else (text, None)
    faults, determinism = text.split(DETERMINISM_HEADING, 1) if DETERMINISM_HEADING in text else (text, None)
    return (faults.rstrip() + "\n" if faults.strip() else "",
            DETERMINISM_HEADING + determinism.rstrip() + "\n" if determinism is not None else "",
            MEMORY_HEADING + memory if memory is not None else "")


def merge_rows(old: str, new: str, agents: list[str], order: Sequence[str]) -> str:
    """``old``'s section with the table rows of ``agents`` taken from ``new`` (a row's first cell is its agent),
    in the order of ``order``; the rest of ``old`` (its method paragraph) is kept."""
    def rows(text: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in text.splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) > 2 and cells[1] in order:
                out.setdefault(cells[1], []).append(line)
        return out

    if not old:
        return new
    merged = {**rows(old), **{a: r for a, r in rows(new).items() if a in agents}}
    lines, table_done = [], False
    for line in old.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1] in order:
            if not table_done:  # the whole table body at the first row, in the order of ``order``
                lines += [r for agent in order for r in merged.get(agent, [])]
                table_done = True
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def run(out_path: str, workers: str = "2", part: str = "all", seconds: str = "120", agents: str = "all") -> str:
    from runners.reliability_determinism import DETERMINISM_RUNS
    from runners.reliability_determinism import measure_all as measure_determinism
    from runners.reliability_determinism import render as render_determinism
    from runners.reliability_memory import MEMORY_RUNS, measure_all
    from runners.reliability_memory import render as render_memory

    n = parse_int("workers", workers, minimum=1)
    duration = parse_int("seconds", seconds, minimum=1)
    if part not in PARTS:
        raise UsageError(f"part={part}: choose one of {', '.join(PARTS)}")
    chosen = None if agents == "all" else [a for a in agents.split(",") if a]
    known = DETERMINISM_RUNS if part == "determinism" else MEMORY_RUNS
    for agent in chosen or []:
        if agent not in known:
            raise UsageError(f"agents: unknown agent '{agent}'; choose from: {', '.join(known)}, all")
    path = Path(out_path)
    faults, determinism, memory = split_sections(path.read_text() if path.exists() else "")  # parts not rerun stay
    if part in ("all", "faults"):
        faults = render(run_suite(n), n)
    if part in ("all", "determinism"):
        new = render_determinism(measure_determinism(chosen), DETERMINISM_HEADING)
        determinism = merge_rows(determinism, new, chosen, list(DETERMINISM_RUNS)) if chosen else new
    if part in ("all", "memory"):
        new = render_memory(measure_all(duration, chosen), duration)
        memory = merge_rows(memory, new, chosen, list(MEMORY_RUNS)) if chosen else new
    text = "\n".join(section.rstrip() + "\n" for section in (faults, determinism, memory) if section)
    path.write_text(text)
    return text
