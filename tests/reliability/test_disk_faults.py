"""Issue 9, item 5: a checkpoint save that fails (a full disk: OSError ENOSPC injected into the safetensors writer,
since the tests run as root and chmod would not stop them) leaves the previous checkpoint valid.

The same on a real file system where the machine lets the tests mount one: the run directory on a small tmpfs that
fills up, or is remounted read-only, in the middle of the run; the OS itself refuses the writes (skipped, with the
reason, where mounting is not permitted).

A periodic checkpoint that fails is reported on one warning line naming the step and the intact previous checkpoint,
and training goes on; a final model that cannot be written stops the run with one error line (exit 1) naming the
last good checkpoint to resume from. No temporary directory is left behind either way. Every agent of
``conftest.TINY_RUNS``. The disk may also fill up later in a write, while the replay or episode buffer (the largest
file of a checkpoint, written after the tensors) is written: the same warning, the same intact previous checkpoint.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import agents.common.checkpoint as checkpoint
from agents.common.callbacks import checkpoint_dirs
from agents.common.checkpoint import verify_checkpoint
from agents.common.registry import load_agent
from runners import train
from runners.cli import run_main
from tests.filesystems import fill, remount, small_tmpfs
from tests.reliability.conftest import AGENTS, TINY_RUNS, TinyRuns


def full_disk_from(monkeypatch: pytest.MonkeyPatch, first: int, last: int | None = None,
                   writer: tuple[Any, str] = (checkpoint, "save_file")) -> None:
    """The ``first``-th to ``last``-th calls of ``writer`` (every later one when ``last`` is None) fail with ENOSPC:
    by default the safetensors writer of the checkpoints' tensors."""
    owner, name = writer
    original = getattr(owner, name)
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= first and (last is None or calls["n"] <= last):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def save_steps(agent: str) -> tuple[int, int]:
    """The steps of the first two periodic checkpoints of the agent's tiny run (DIAMOND's and Δ-IRIS's epochs end at
    these steps: see ``conftest.TINY_RUNS``)."""
    freq = int(next(a for a in TINY_RUNS[agent][1] if a.startswith("save_freq=")).split("=")[1])
    return freq, 2 * freq


def no_leftovers(run_dir: Path) -> None:
    hidden = [p.name for p in run_dir.rglob(".*") if ".tmp-" in p.name]
    assert hidden == [], hidden


# agents whose periodic checkpoints hold a buffer (replay_buffer.npz or episode_buffer.npz, written with np.savez;
# the final model holds none)
BUFFER_AGENTS = ("dqn", "sac", "stochdqn", "stochddqn", "fulldqn", "fullddqn", "diamond", "delta_iris")
CASES = [*((agent, "tensors") for agent in AGENTS), *((agent, "buffer") for agent in BUFFER_AGENTS)]


@pytest.mark.parametrize(("agent", "part"), CASES, ids=[f"{agent}-{part}" for agent, part in CASES])
def test_failed_periodic_save_keeps_the_previous_checkpoint_and_training_goes_on(
    agent: str, part: str, runs: TinyRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = save_steps(agent)
    # the second periodic checkpoint fails (its tensors, or its buffer once the tensors are written); the final
    # model is written
    full_disk_from(monkeypatch, first=2, last=2, writer=(checkpoint, "save_file") if part == "tensors" else (
        np, "savez"))
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


def test_a_zoo_add_that_fails_leaves_the_earlier_entry_and_its_files_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runners.zoo add`` stages the new files, evaluates them there and swaps them in with their manifest entry last:
    an evaluation that raises, or a manifest that cannot be written (full disk), keeps the entry already in the zoo
    verifiable, and leaves no staging directory."""
    from agents.common.manifest import read_manifest, verify_entry
    from runners import zoo

    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    monkeypatch.setattr(zoo, "ZOO_DIR", zoo_dir)
    for seed in (0, 1):  # the zoo's entry from seed 0, then a failed replacement by seed 1's other weights
        assert train.main(["agent=ppo", "env=cartpole", "total_timesteps=64", "agent.n_steps=32", f"seed={seed}",
                           "agent.batch_size=32", "eval_freq=0", "eval_episodes=1", "progress_bar=false",
                           f"run_dir={tmp_path / f'run{seed}'}"]) == 0
    assert zoo.main(["add", "name=ppo-test", f"run={tmp_path / 'run0'}", "episodes=1"]) == 0
    add = ["add", "name=ppo-test", f"run={tmp_path / 'run1'}", "episodes=1"]
    entry = read_manifest(zoo_dir)["ppo-test"]
    files = {p.name: p.read_bytes() for p in (zoo_dir / "ppo-test").iterdir()}

    def kept() -> None:
        assert read_manifest(zoo_dir)["ppo-test"] == entry
        verify_entry(entry, zoo_dir)  # every file against its sha256 in the manifest
        assert {p.name: p.read_bytes() for p in (zoo_dir / "ppo-test").iterdir()} == files
        assert sorted(p.name for p in zoo_dir.iterdir()) == ["manifest.json", "ppo-test"]  # no staging left

    def broken_evaluation(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the evaluation env crashed")

    with monkeypatch.context() as m:
        m.setattr(zoo, "evaluate", broken_evaluation)
        with pytest.raises(RuntimeError, match="evaluation env crashed"):
            zoo.main(add)
    kept()
    with monkeypatch.context() as m:
        full_disk_from(m, 1, writer=(zoo, "write_entry"))
        with pytest.raises(OSError, match="No space left"):
            zoo.main(add)
    kept()


# ----------------------------------------------------------------------------------------------------------------
# A real file system: a tmpfs that fills up or turns read-only during the run
# ----------------------------------------------------------------------------------------------------------------
REAL_FS_AGENTS = ("dqn", "dt", "diamond")  # SB3 loop with a replay buffer; an offline learner; the epoch loop


# TensorBoard's writer thread meets the same refusals: its traceback must not precede the trainer's one line
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("fault", ["full", "read-only"])
@pytest.mark.parametrize("agent", REAL_FS_AGENTS)
def test_a_real_disk_that_fills_up_or_turns_read_only_mid_run_keeps_the_last_checkpoint_and_resumes(
    agent: str, fault: str, runs: TinyRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = save_steps(agent)
    with small_tmpfs(tmp_path) as mount_point:
        run_dir = mount_point / "run"
        # the disk fills up (or turns read-only) as the second periodic checkpoint starts writing its tensors; from
        # there on the OS refuses the writes, the final model's included
        original, calls = checkpoint.save_file, {"n": 0}

        def fault_at_second_save(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                filler = fill(mount_point) if fault == "full" else remount(mount_point, "ro")
                calls["filler"] = filler
            return original(*args, **kwargs)

        monkeypatch.setattr(checkpoint, "save_file", fault_at_second_save)
        capsys.readouterr()
        assert run_main(train.main, runs.args(agent, run_dir)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        reason = "[Errno 28] No space left on device" if fault == "full" else "[Errno 30] Read-only file system"
        previous = run_dir / "checkpoints" / f"step_{first:010d}"
        assert f"warning: checkpoint at step {second} failed ({reason}); the previous checkpoint {previous} is " \
               "intact" in err
        # the run stops at the next write it cannot skip: the final model, or the logs of an epoch (the world-model
        # agents dump them after their checkpoint); the OS may name the file it refused
        assert err[-1].startswith((f"error: saving the final model failed ({reason}",
                                   f"error: writing the run's logs failed ({reason}")), err[-1]
        assert err[-1].endswith(f"); the last checkpoint {previous} is intact; resume with resume={run_dir}")
        assert [p for _, p in checkpoint_dirs(run_dir)] == [previous]
        assert verify_checkpoint(previous) and not (run_dir / "final").exists()
        assert load_agent(previous, device="cpu").num_timesteps == first

        # space comes back (or the file system is writable again): resume= finishes the run from that checkpoint
        monkeypatch.setattr(checkpoint, "save_file", original)
        if fault == "full":
            calls["filler"].unlink()
        else:
            remount(mount_point, "rw")
        assert run_main(train.main, [f"resume={run_dir}", "progress_bar=false"]) == 0
        assert verify_checkpoint(run_dir / "final")
        assert load_agent(run_dir / "final", device="cpu").num_timesteps == load_agent(
            runs[agent] / "final", device="cpu").num_timesteps
        no_leftovers(run_dir)  # a read-only disk kept the second save's temporary directory; the resume removed it
