"""Item 1 of issue 9: SIGKILL a training process at random points, resume it with ``resume=<run dir>``.

Every registered agent is trained in a separate process (:mod:`tests.reliability.train_child`: ``runners.train``
with a progress file) and killed three times: at a random step, in the middle of a checkpoint write (the write is slowed
down and the kill lands while its hidden temporary directory exists), and at a random step again; each time the run
is resumed. The resumed run must start from the last complete checkpoint, lose at most one save interval of work,
leave no temporary directory behind, and end with the same step count, update count, schedules and buffer fill as
the uninterrupted reference run, with every evaluation point of the TensorBoard curve present exactly once.
Offline agents (dt, radt, act) end with exactly the reference's weights. Online agents do not: the env's own state
is not in a checkpoint, so a resumed run starts a new episode (see ``test_determinism.py``). The world-model agents
(DIAMOND, Δ-IRIS) checkpoint at epoch ends, with the episode being collected: the resumed run keeps its steps (cut
where the env was reset), ends with the reference's epoch and per-component update counts, and its episode buffer
holds every env step, as the reference's does.
"""

from __future__ import annotations

import json
import re
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common.callbacks import checkpoint_dirs, latest_checkpoint
from agents.common.checkpoint import load_checkpoint
from agents.common.registry import load_agent
from agents.common.tblog import read_scalars
from tests.reliability.conftest import LONG_AGENTS, LONG_RUNS, LongRuns, arg_value
from tests.reliability.train_child import start

EXACT_RESUME = ("dt", "radt", "act")  # learn from a fixed dataset: nothing outside the checkpoint


class Child:
    """One training process (:func:`train_child.start`) writing its progress (num_timesteps) to a file."""

    def __init__(self, args: list[str], workdir: Path, name: str, delay: float, slow_save: float = 0.0) -> None:
        self.progress, self.out = workdir / f"{name}.progress", workdir / f"{name}.out"
        self.process = start(args, self.out, self.progress, delay, slow_save)

    def step(self) -> int:
        text = self.progress.read_text() if self.progress.exists() else ""
        return int(text) if text.strip() else 0

    def wait_until(self, ready: Callable[[], object], what: str, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while not ready():
            assert self.process.is_alive(), f"the run ended before {what}:\n{self.out.read_text()[-2000:]}"
            assert time.time() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.005)

    def kill(self) -> int:
        self.process.kill()  # SIGKILL
        self.process.join()
        assert self.process.exitcode == -signal.SIGKILL
        return self.step()

    def finish(self) -> str:
        self.process.join(timeout=300)
        assert self.process.exitcode == 0, self.out.read_text()[-3000:]
        return self.out.read_text()


def resumed_from(output: str) -> int:
    found = re.search(r"resuming .* from step_\d+ \(step (\d+)\)", output)
    assert found, output[-2000:]
    return int(found.group(1))


def last_complete(run_dir: Path) -> int:
    last = latest_checkpoint(run_dir)
    assert last is not None
    return int(last.name.split("_")[1])


def temp_dirs(run_dir: Path) -> list[Path]:
    return list((run_dir / "checkpoints").glob(".step_*.tmp-*"))


def final_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "final" / "meta.json").read_text())["state"]


def held_steps(episode_buffer: Path) -> int:
    """Env steps in an episode buffer file: its episodes' and those of the episodes still being collected (whose
    stored open copies, ``pending.open_episode``, are not counted twice)."""
    with np.load(episode_buffer) as f:
        lengths = f["lengths"]
        if "pending.lengths" not in f.files:
            return int(lengths.sum())
        opened = f["pending.open_episode"]
        return int(lengths.sum()) + int(f["pending.lengths"].sum()) - int(lengths[opened[opened >= 0]].sum())


@pytest.mark.parametrize("agent", LONG_AGENTS)
def test_run_killed_three_times_resumes_from_its_last_complete_checkpoint(
    agent: str, long_runs: LongRuns, tmp_path: Path
) -> None:
    _, args, delay = LONG_RUNS[agent]
    total, save_freq = arg_value(args, "total_timesteps"), arg_value(args, "save_freq")
    rng = np.random.default_rng(zlib.crc32(agent.encode()))
    run_dir = tmp_path / "run"
    resume = [f"resume={run_dir}", "progress_bar=false"]
    kills: list[tuple[int, int]] = []  # (step reached when killed, step of the checkpoint the next process resumed)

    # kill 1: at a random step after the first checkpoint
    child = Child(long_runs.args(agent, run_dir), tmp_path, "first", delay)
    target = int(rng.integers(save_freq + 1, total // 3))
    child.wait_until(lambda: child.step() >= target and checkpoint_dirs(run_dir), f"step {target}")
    reached = child.kill()
    expected = last_complete(run_dir)

    # kill 2: in the middle of a checkpoint write (its tensors written, its meta.json not yet)
    child = Child(resume, tmp_path, "second", delay, slow_save=0.3)
    child.wait_until(lambda: any((d / "model.safetensors").exists() for d in temp_dirs(run_dir)),
                     "checkpoint write")
    writing = int(re.match(r"\.step_(\d+)", temp_dirs(run_dir)[0].name).group(1))  # type: ignore[union-attr]
    reached_2 = child.kill()
    kills.append((reached, resumed_from(child.out.read_text())))
    assert kills[-1][1] == expected
    assert temp_dirs(run_dir), "the killed write left its temporary directory (the previous checkpoint is intact)"
    assert latest_checkpoint(run_dir) is not None and latest_checkpoint(run_dir).name != f"step_{writing:010d}"
    expected = last_complete(run_dir)
    assert expected == writing - save_freq

    # kill 3: at a random step after the resumed run passed its resume point
    child = Child(resume, tmp_path, "third", delay)
    target = int(rng.integers(expected + 1, max(expected + 2, total - save_freq)))
    child.wait_until(lambda: child.step() >= target, f"step {target}")
    reached_3 = child.kill()
    kills.append((reached_2, resumed_from(child.out.read_text())))
    assert kills[-1][1] == expected
    expected = last_complete(run_dir)

    output = Child(resume, tmp_path, "last", 0.0).finish()
    kills.append((reached_3, resumed_from(output)))
    assert kills[-1][1] == expected
    assert not temp_dirs(run_dir), "a resumed run removes the temporary directory of a killed write"
    for reached_at, resumed_at in kills:  # at most one save interval of work lost per kill
        assert 0 <= reached_at - resumed_at <= save_freq, kills

    reference = long_runs[agent]
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["num_timesteps"] == total
    state, reference_state = final_state(run_dir), final_state(reference)
    for counter in ("num_timesteps", "_n_updates", "exploration_rate", "_current_progress_remaining", "epoch",
                    "updates"):
        if counter in reference_state:
            assert state[counter] == pytest.approx(reference_state[counter]), counter
    eval_freq = arg_value(args, "eval_freq")
    if eval_freq:  # every evaluation point once, none missing, none twice
        steps = read_scalars(run_dir, ["eval/mean_reward"])["eval/mean_reward"][:, 0]
        np.testing.assert_array_equal(steps, np.arange(eval_freq, total + 1, eval_freq))
    for tag, values in read_scalars(run_dir).items():  # no tag has a step twice or going back
        assert np.all(np.diff(values[:, 0]) > 0), tag
    last = checkpoint_dirs(run_dir)[-1][1]
    if (last / "replay_buffer.npz").exists():  # the buffer continued: as full as the uninterrupted run's
        ref_last = checkpoint_dirs(reference)[-1][1]
        assert last.name == ref_last.name
        model, ref_model = load_agent(last, device="cpu"), load_agent(ref_last, device="cpu")
        assert model.replay_buffer.size() == ref_model.replay_buffer.size()
    if (last / "episode_buffer.npz").exists():  # every env step kept: ended episodes and the one being collected
        ref_last = checkpoint_dirs(reference)[-1][1]
        assert last.name == ref_last.name
        assert held_steps(last / "episode_buffer.npz") == held_steps(ref_last / "episode_buffer.npz")
        assert held_steps(last / "episode_buffer.npz") == int(last.name.split("_")[1])
    if agent in EXACT_RESUME:  # nothing outside the checkpoint: the resumed run is the uninterrupted one
        weights, _ = load_checkpoint(run_dir / "final")
        ref_weights, _ = load_checkpoint(reference / "final")
        assert weights.keys() == ref_weights.keys()
        for key in ref_weights:  # weights, optimizer moments, RNG states
            torch.testing.assert_close(weights[key], ref_weights[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("agent", LONG_AGENTS)
def test_a_loaded_checkpoint_holds_exactly_the_saved_weights_optimizer_and_counters(
    agent: str, long_runs: LongRuns, tmp_path: Path
) -> None:
    checkpoint = checkpoint_dirs(long_runs[agent])[-1][1]
    model = load_agent(checkpoint, device="cpu")
    model.save(tmp_path / "again", replay_buffer=True)
    saved, meta = load_checkpoint(checkpoint)
    again, meta_again = load_checkpoint(tmp_path / "again")
    # DIAMOND also saves where collection stood in the env it was running (collect.*), for a load into that same
    # running env (force_reset=False); a load into a fresh env drops it, as the env restarts an episode
    saved = {k: v for k, v in saved.items() if not k.startswith("collect.")}
    meta["state"].pop("last_episode_starts", None)
    assert sorted(saved) == sorted(again)
    for key in saved:  # weights, optimizer moments and step counts, RNG states
        torch.testing.assert_close(again[key], saved[key], rtol=0, atol=0, msg=key)
    state, state_again = meta["state"], meta_again["state"]
    state.pop("train_wall_time_s"), state_again.pop("train_wall_time_s")
    assert state_again == state
    assert sorted(meta_again["files"]) == sorted(meta["files"])
    for name in meta["files"]:
        if name.endswith(".npz"):  # the buffer, array by array
            with np.load(checkpoint / name) as a, np.load(tmp_path / "again" / name) as b:
                assert a.files == b.files
                for array in a.files:
                    np.testing.assert_array_equal(a[array], b[array], err_msg=f"{name}:{array}")
