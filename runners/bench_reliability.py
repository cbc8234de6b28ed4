"""Reliability summary (issue 9): runs the fault-injection suite ``tests/reliability`` and counts, per category and
per agent, the faults tried and the faults survived (refused or stopped as designed, nothing lost).

    python -m runners.bench reliability [workers=2]

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
from pathlib import Path

from agents.common.manifest import machine
from agents.common.registry import REGISTRY
from runners.cli import parse_int

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = {
    "test_hostile_files": "3. hostile files",
    "test_numerical_faults": "4. numerical faults",
    "test_disk_faults": "5. disk faults",
    "test_bad_config": "6. bad configuration",
}
PLANNED_AGENTS = ("diamond", "delta_iris")  # in issue 9's list; not (all) in the registry yet
NOT_DONE = ("1. kill and resume (SIGKILL at random points, resume)", "2. determinism (same seed, same trajectory)",
            "7. memory (peak RSS of bounded buffers)")


def run_suite(workers: int) -> list[tuple[str, str, bool]]:
    """(category, test id, passed) of every case of tests/reliability."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", *(["-n", str(workers)] if workers > 1 else [])]
        subprocess.run(command, cwd=ROOT, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
                       check=False, capture_output=True)
        tree = ET.parse(report)
    cases = []
    for case in tree.iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        if module in CATEGORIES and not skipped:
            cases.append((CATEGORIES[module], case.get("name", ""), not failed))
    return cases


def agent_of(category: str, name: str) -> str:
    params = re.search(r"\[(.*)\]$", name)
    if category.startswith("6."):
        return f"runners.{params.group(1).split('-')[1]}" if params and params.group(1).count("-") >= 2 else "(all)"
    tokens = re.split(r"[-\[\]]", name)
    found = [t for t in tokens if t in REGISTRY]
    return found[0] if found else "(several)"


def render(cases: list[tuple[str, str, bool]], workers: int) -> str:
    tried = Counter(c for c, _, _ in cases)
    survived = Counter(c for c, _, ok in cases if ok)
    per_agent: Counter[tuple[str, str]] = Counter()
    per_agent_ok: Counter[tuple[str, str]] = Counter()
    for category, name, ok in cases:
        key = (category, agent_of(category, name))
        per_agent[key] += 1
        per_agent_ok[key] += ok
    covered = {agent for (_, agent) in per_agent if agent in REGISTRY}
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
        "## Not covered yet",
        "",
        f"- Agents of issue 9 not in the registry yet: {', '.join(a for a in PLANNED_AGENTS if a not in REGISTRY)}.",
        f"- Registered agents without a fault test of their own: "
        f"{', '.join(sorted(set(REGISTRY) - covered)) or 'none'} (stochddqn, fulldqn and fullddqn share StochDQN's "
        "classes and checkpoint code; stochq is tabular).",
        *(f"- Item {item}: not done yet." for item in NOT_DONE),
        "",
    ]
    failed = [f"{c}: {n}" for c, n, ok in cases if not ok]
    if failed:
        lines += ["## Failed", "", *(f"- {f}" for f in failed), ""]
    return "\n".join(lines)


def run(out_path: str, workers: str = "2") -> str:
    n = parse_int("workers", workers, minimum=1)
    text = render(run_suite(n), n)
    Path(out_path).write_text(text)
    return text
