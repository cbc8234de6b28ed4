"""Benchmarks: ``python -m runners.bench <name>|all`` writes ``results/benchmarks/<name>.md``.

Each benchmark module ``runners/bench_<name>.py`` exposes ``run(out_path, **options) -> str`` (options are the
command's ``key=value`` arguments, as strings) and measures the things it
compares side by side in one run, on this machine, stating the command and the machine in its report.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from runners.cli import UsageError, parse_args, run_main

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    positional, pairs = parse_args(argv, allow_positional=True)
    names = available()
    if len(positional) > 1:
        given = " ".join(positional)
        raise UsageError(f"one benchmark at a time, not {given!r}; choose one of: {', '.join(names)}, all")
    if len(positional) != 1 or positional[0] not in [*names, "all"]:
        given = positional[0] if positional else "nothing"
        raise UsageError(f"unknown benchmark '{given}'; choose one of: {', '.join(names)}, all")
    if pairs and positional[0] == "all":
        raise UsageError("options (key=value) apply to one benchmark; name it instead of 'all'")
    for name in names if positional[0] == "all" else positional:
        out = RESULTS / f"{name}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        run = importlib.import_module(f"runners.bench_{name}").run
        allowed = [p for p in inspect.signature(run).parameters if p != "out_path"]
        if unknown := [k for k in pairs if k not in allowed]:
            raise UsageError(f"unknown option '{unknown[0]}' for benchmark {name}; its options: {', '.join(allowed)}")
        run(str(out), **pairs)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
