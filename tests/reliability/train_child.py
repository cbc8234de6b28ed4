"""Training processes for the kill-and-resume and determinism tests: ``runners.train`` with test hooks.

:func:`start` runs ``runners.train`` in a separate process forked from a fork server that has imported the zoo
once (``tests/forkserver.py``: a fresh interpreter, not the pytest process), so that a test can start dozens of runs
without paying the imports each time. Two hooks, set per process:

- ``progress=<file>``: every callback step writes ``num_timesteps`` into ``<file>`` (12 digits, in place), so that
  the parent knows how far the run got when it killed it; ``step_delay=<s>`` sleeps that long per step, so that
  a run of a fast agent lasts long enough to be killed at a random point.
- ``slow_save=<s>``: each checkpoint write sleeps that long after writing its tensors, while its hidden temporary
  directory exists, so that the parent can kill the process in the middle of a checkpoint write.
"""

from __future__ import annotations

import os
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tests.forkserver import context


def install_hooks(progress: Path | None, step_delay: float, slow_save: float) -> None:
    import agents.common.checkpoint as checkpoint
    from agents.common.callbacks import CheckpointCallback

    if progress is not None:
        fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644)
        on_step = CheckpointCallback._on_step

        def reporting_on_step(self: CheckpointCallback) -> bool:
            os.pwrite(fd, f"{self.model.num_timesteps:012d}".encode(), 0)
            if step_delay:
                time.sleep(step_delay)
            return on_step(self)

        CheckpointCallback._on_step = reporting_on_step  # type: ignore[method-assign]
    if slow_save:
        save_file = checkpoint.save_file

        def slow_save_file(*args: Any, **kwargs: Any) -> None:
            save_file(*args, **kwargs)
            time.sleep(slow_save)

        checkpoint.save_file = slow_save_file


def _train(args: list[str], out: Path, progress: Path | None, step_delay: float, slow_save: float) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered: a killed run has printed what it did
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    install_hooks(progress, step_delay, slow_save)
    from runners.cli import run_main
    from runners.train import main

    code = run_main(main, args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start(args: list[str], out: Path, progress: Path | None = None, step_delay: float = 0.0,
          slow_save: float = 0.0) -> BaseProcess:
    """Start ``python -m runners.train <args>`` (stdout and stderr to ``out``); returns the running process."""
    process = context().Process(target=_train, args=(args, out, progress, step_delay, slow_save), daemon=True)
    process.start()
    return process
