"""Issue 9, item 5: a checkpoint save that fails (a full disk: OSError ENOSPC injected into the safetensors writer,
since the tests run as root and chmod would not stop them) leaves the previous checkpoint valid.

A periodic checkpoint that fails is reported on one warning line naming the step and the intact previous checkpoint,
and training goes on; a final model that cannot be written stops the run with one error line (exit 1) naming the
last good checkpoint to resume from. No temporary directory is left behind either way.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

import agents.common.checkpoint as checkpoint
from agents.common.callbacks import checkpoint_dirs
from agents.common.checkpoint import verify_checkpoint
from agents.common.registry import load_agent
from runners import train
from runners.cli import run_main
from tests.reliability.conftest import TINY_RUNS, TinyRuns

AGENTS = ("dqn", "ppo", "sac", "dt", "act")


def full_disk_from(monkeypatch: pytest.MonkeyPatch, first: int, last: int | None = None) -> None:
    """The ``first``-th to ``last``-th checkpoint writes (every later one when ``last`` is None) fail with ENOSPC."""
    original = checkpoint.save_file
    calls = {"n": 0}

    def save_file(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= first and (last is None or calls["n"] <= last):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)


def save_steps(agent: str) -> tuple[int, int]:
    """The steps of the first two periodic checkpoints of the agent's tiny run."""
    freq = int(next(a for a in TINY_RUNS[agent][1] if a.startswith("save_freq=")).split("=")[1])
    return freq, 2 * freq


def no_leftovers(run_dir: Path) -> None:
    hidden = [p.name for p in run_dir.rglob(".*") if ".tmp-" in p.name]
    assert hidden == [], hidden


@pytest.mark.parametrize("agent", AGENTS)
def test_failed_periodic_save_keeps_the_previous_checkpoint_and_training_goes_on(
    agent: str, runs: TinyRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = save_steps(agent)
    full_disk_from(monkeypatch, first=2, last=2)  # the second periodic checkpoint fails, the final model is written
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert run_main(train.main, runs.args(agent, run_dir)) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: checkpoint")]
    previous = run_dir / "checkpoints" / f"step_{first:010d}"
    assert warnings == [f"warning: checkpoint at step {second} failed ([Errno 28] No space left on device); "
                        f"the previous checkpoint {previous} is intact"]
    assert [p for _, p in checkpoint_dirs(run_dir)] == [previous]
    assert verify_checkpoint(previous) and verify_checkpoint(run_dir / "final")
    assert load_agent(previous, device="cpu").num_timesteps == first
    no_leftovers(run_dir)


@pytest.mark.parametrize("agent", AGENTS)
def test_a_disk_that_stays_full_stops_the_run_at_the_final_save_naming_the_checkpoint_to_resume(
    agent: str, runs: TinyRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = save_steps(agent)
    full_disk_from(monkeypatch, first=2)
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert run_main(train.main, runs.args(agent, run_dir)) == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    previous = run_dir / "checkpoints" / f"step_{first:010d}"
    assert last_line == (f"error: saving the final model failed ([Errno 28] No space left on device); the last "
                         f"checkpoint {previous} is intact; resume with resume={run_dir}")
    assert verify_checkpoint(previous) and not (run_dir / "final").exists()
    no_leftovers(run_dir)
