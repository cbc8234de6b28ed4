"""Item 2 of issue 9: the same seed and config give the same run, in two separate processes, on CPU.

The reference run of each agent (``conftest.LONG_RUNS``, trained inside the pytest process) is trained again in a
separate process with the same arguments (forked from a fresh interpreter that imported the zoo, see
``train_child``). The two must agree on the environment trajectories (the replay buffer or
episode buffer, array by array; the episode returns and lengths; the final evaluation) and on every logged scalar
(losses allclose), and end with the same weights. The runs are the length of ``LONG_RUNS`` (80 to 2,000 steps):
shorter than the issue's 1,000 steps for all agents but stochq, because that is what fits in ``make test``. Δ-IRIS
on Crafter (CPU, one torch thread) gave bit-identical weights and scalars: ``envs/crafter.py`` hashes crafter's
objects by creation index, so that the same seed and actions give the same world; the tolerances leave room for
other CPUs' kernels.

What resuming preserves exactly is pinned in ``test_kill_resume.py``: offline agents (dt, radt, act) continue to the
very weights of an uninterrupted run; online agents continue their weights, optimizer, schedules, RNG and buffer,
but not the env's state (a simulator's internals are not in a checkpoint), so a resumed run starts a new episode and
its trajectory differs from the uninterrupted one from there on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common.callbacks import checkpoint_dirs
from agents.common.checkpoint import load_checkpoint
from agents.common.tblog import read_scalars
from tests.reliability.conftest import LONG_AGENTS, LongRuns
from tests.reliability.train_child import start

TIME_TAGS = ("time/", "eval/")  # wall time, and evaluation (compared through results.json below)


def assert_same_arrays(path_a: Path, path_b: Path) -> None:
    with np.load(path_a) as a, np.load(path_b) as b:
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{path_a.name}:{name}")


@pytest.mark.parametrize("agent", LONG_AGENTS)
def test_same_seed_and_config_give_the_same_run_in_another_process(
    agent: str, long_runs: LongRuns, tmp_path: Path
) -> None:
    reference = long_runs[agent]
    run_dir = tmp_path / "run"
    process = start(long_runs.args(agent, run_dir), tmp_path / "train.out")
    process.join(timeout=300)
    assert process.exitcode == 0, (tmp_path / "train.out").read_text()[-3000:]

    # the environment trajectories: every transition stored, and the episodes' returns and lengths
    last, ref_last = checkpoint_dirs(run_dir)[-1][1], checkpoint_dirs(reference)[-1][1]
    assert last.name == ref_last.name
    buffers = [name for name in ("replay_buffer.npz", "episode_buffer.npz") if (ref_last / name).exists()]
    assert buffers or agent in ("ppo", "stochq", "dt", "radt", "act"), "an online agent with a buffer saves it"
    for name in buffers:
        assert_same_arrays(last / name, ref_last / name)
    state = json.loads((last / "meta.json").read_text())["state"]
    ref_state = json.loads((ref_last / "meta.json").read_text())["state"]
    assert state["ep_info_buffer"] and [(e["r"], e["l"]) for e in state["ep_info_buffer"]] == [
        (e["r"], e["l"]) for e in ref_state["ep_info_buffer"]] or agent in ("dt", "radt", "act")
    results = json.loads((run_dir / "results.json").read_text())["eval"]
    assert results == json.loads((reference / "results.json").read_text())["eval"]

    # the losses and every other logged scalar, step by step
    scalars, ref_scalars = read_scalars(run_dir), read_scalars(reference)
    tags = sorted(t for t in ref_scalars if not t.startswith(TIME_TAGS))
    assert sorted(t for t in scalars if not t.startswith(TIME_TAGS)) == tags
    assert any(t.startswith(("train/", "world_model/")) for t in tags)
    for tag in tags:
        np.testing.assert_array_equal(scalars[tag][:, 0], ref_scalars[tag][:, 0], err_msg=tag)
        np.testing.assert_allclose(scalars[tag][:, 1], ref_scalars[tag][:, 1], rtol=1e-6, atol=1e-8, err_msg=tag)

    # and so the same weights and optimizer state
    weights, _ = load_checkpoint(run_dir / "final")
    ref_weights, _ = load_checkpoint(reference / "final")
    assert weights.keys() == ref_weights.keys()
    for key in ref_weights:
        torch.testing.assert_close(weights[key], ref_weights[key], rtol=1e-6, atol=1e-7, msg=key)
