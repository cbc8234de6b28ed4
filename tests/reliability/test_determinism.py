"""Item 2 of issue 9: the same seed and config give the same run, in two separate processes, on CPU.

The reference run of each agent (``conftest.LONG_RUNS``, trained inside the pytest process) is trained again in a
separate process with the same arguments (forked from a fresh interpreter that imported the zoo, see
``train_child``). The two must agree on the environment trajectories (the replay buffer or
episode buffer, array by array; the episode returns and lengths; the final evaluation) and on every logged scalar
(losses allclose), and end with the same weights. The runs are the length of ``LONG_RUNS`` (80 to 2,000 steps):
shorter than the issue's 1,000 steps for all agents but stochq, because that is what fits in ``make test``; the
1,000-step runs are compared the same way by ``python -m runners.bench reliability part=determinism``. Δ-IRIS
on Crafter (CPU, one torch thread) gave bit-identical weights and scalars: ``envs/crafter.py`` hashes crafter's
objects by creation index, so that the same seed and actions give the same world; the tolerances leave room for
other CPUs' kernels.

What resuming preserves exactly is pinned in ``test_kill_resume.py``: offline agents (dt, radt, act) continue to the
very weights of an uninterrupted run; online agents continue their weights, optimizer, schedules, RNG and buffer,
but not the env's state (a simulator's internals are not in a checkpoint), so a resumed run starts a new episode and
its trajectory differs from the uninterrupted one from there on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runners.reliability_determinism import compare_runs
from tests.reliability.conftest import LONG_AGENTS, LongRuns
from tests.reliability.train_child import start


@pytest.mark.parametrize("agent", LONG_AGENTS)
def test_same_seed_and_config_give_the_same_run_in_another_process(
    agent: str, long_runs: LongRuns, tmp_path: Path
) -> None:
    reference = long_runs[agent]
    run_dir = tmp_path / "run"
    process = start(long_runs.args(agent, run_dir), tmp_path / "train.out")
    process.join(timeout=300)
    assert process.exitcode == 0, (tmp_path / "train.out").read_text()[-3000:]

    # trajectories, final evaluation, every logged scalar and the final weights: runners.reliability_determinism
    compare_runs(agent, run_dir, reference)


def test_the_comparison_tells_a_different_seed_apart(long_runs: LongRuns, tmp_path: Path) -> None:
    """The check can fail: the same config with another seed is a different run (other episodes, losses, weights)."""
    reference = long_runs["dqn"]
    run_dir = tmp_path / "run"
    process = start(long_runs.args("dqn", run_dir, "seed=1"), tmp_path / "train.out")
    process.join(timeout=300)
    assert process.exitcode == 0, (tmp_path / "train.out").read_text()[-3000:]
    with pytest.raises(AssertionError):
        compare_runs("dqn", run_dir, reference)
