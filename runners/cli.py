"""What every runner shares: ``key=value`` arguments, one-line errors with exit status 2 (bad input) or 1 (a run
stopped by a fault: a NaN, a disk that cannot take the final model), the debug switch."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USAGE = 2
EXIT_FAULT = 1  # a run stopped by a fault (NaN guard, a final model that could not be written)
DEVICES = ("auto", "cpu", "cuda")


class UsageError(ValueError):
    """Bad input from the command line: printed as one line, exit status 2."""


def parse_args(argv: Sequence[str], allow_positional: bool = False) -> tuple[list[str], dict[str, str]]:
    """Split ``argv`` into positional arguments and ``key=value`` pairs (in order, last one wins)."""
    positional: list[str] = []
    pairs: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            if allow_positional:
                positional.append(arg)
                continue
            raise UsageError(f"'{arg}' is not a key=value argument (e.g. agent=dqn)")
        if not key:
            raise UsageError(f"'{arg}' has no key before '='")
        pairs[key] = value
    return positional, pairs


def parse_bool(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise UsageError(f"{key}={value!r} is not a boolean; use true or false")


def parse_deterministic(key: str, value: str | bool) -> bool | None:
    """``auto`` (None: the agent's official test protocol, see ``agents.common.evaluation.resolve_deterministic``),
    true (argmax actions) or false (actions sampled from the policy)."""
    if isinstance(value, bool):
        return value
    if str(value).lower() == "auto":
        return None
    try:
        return parse_bool(key, str(value))
    except UsageError:
        raise UsageError(f"{key}={value!r} is not allowed; use auto (the agent's official test protocol), "
                         "true (argmax actions) or false (sampled actions)") from None


def parse_int(key: str, value: str, minimum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{key}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise UsageError(f"{key}={number} must be >= {minimum}")
    return number


def parse_float(key: str, value: str) -> float:
    try:
        result = float(value)
    except ValueError:
        raise UsageError(f"{key}={value!r}; expected a number") from None
    if result != result or result in (float("inf"), float("-inf")):
        raise UsageError(f"{key}={value!r}; expected a finite number")
    return result


def parse_choice(key: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UsageError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    return value


def parse_device(value: str) -> str:
    """``device=`` of the runners that load a checkpoint: auto, cpu, or cuda where a CUDA device exists."""
    parse_choice("device", value, DEVICES)
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("device=cuda but no CUDA device is available here; use device=auto or device=cpu")
    return value


def parse_out_path(key: str, value: str) -> str:
    """A file to write at the end of a command: its directory must exist now, before any work is done."""
    from pathlib import Path

    parent = Path(value).parent
    if not parent.is_dir():
        raise UsageError(f"{key}={value}: the directory {parent} does not exist")
    return value


def check_keys(pairs: dict[str, str], allowed: Sequence[str], runner: str) -> None:
    unknown = sorted(set(pairs) - set(allowed))
    if unknown:
        raise UsageError(f"unknown key '{unknown[0]}' for {runner}; allowed: {', '.join(sorted(allowed))}")


def run_main(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run a runner's ``main``: bad input (any ValueError, OSError on user paths) -> one line, exit status 2.

    ``debug=true`` among the arguments shows the full traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = any(a.lower() in ("debug=true", "debug=1") for a in args)
    from agents.common.callbacks import TrainingFault

    try:
        result = main(args)
    except TrainingFault as e:  # not bad input: the run stopped (NaN, disk), its last good checkpoint kept
        if debug:
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_FAULT
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0)
