"""runners.compare and agents.common.tblog on run directories in the trainer's format (config.yaml + tb/ events).

The runs here are made by hand with known values (a unit test of the reader, plotter and table); the end-to-end
test from real training lives with the trainer's tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from agents.common.tblog import read_run, read_scalars
from runners.compare import main, mean_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(
    root: Path, agent: str, env: str, seed: int, curve: dict[int, float], tag: str = "eval/mean_reward"
) -> Path:
    """A run directory as runners.train writes it: ``config.yaml`` and ``tb/`` with ``tag`` logged at env steps."""
    run_dir = root / agent / env / f"2024-01-01_{seed}"
    run_dir.mkdir(parents=True)
    config = {"agent": {"id": agent}, "env": {"name": env}, "seed": seed, "total_timesteps": max(curve)}
    OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
    writer = SummaryWriter(str(run_dir / "tb"))
    for step, value in curve.items():
        writer.add_scalar(tag, value, step)
        writer.add_scalar("time/fps", 100.0, step)
    writer.close()
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """cartpole: dqn x 3 seeds (finals 10, 20, 30), ppo x 3 seeds (finals 1, 2, 6); pendulum: sac x 2 seeds."""
    root = tmp_path / "runs"
    for seed, final in enumerate([10.0, 20.0, 30.0]):
        make_run(root, "dqn", "cartpole", seed, {0: 0.0, 500: final / 2, 1000: final})
    for seed, final in enumerate([1.0, 2.0, 6.0]):
        make_run(root, "ppo", "cartpole", seed, {0: 0.0, 400: 0.5, 800: final})
    for seed, final in enumerate([-100.0, -300.0]):
        make_run(root, "sac", "pendulum", seed, {0: -1000.0, 200: final})
    return root


def test_table_has_hand_computed_final_mean_std_and_iqm(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plots" / "cmp.png"
    assert main([str(runs / "*" / "*" / "*"), f"out={out}"]) == 0

    table = out.with_suffix(".md").read_text()
    assert "Tag `eval/mean_reward`" in table
    # dqn finals 10, 20, 30: mean 20, std (ddof=0) sqrt(200/3) = 8.165; IQM of 3 values trims none -> 20.
    assert "| cartpole | dqn | 3 | 1000 | 20.00 ± 8.16 | 20.00 [" in table
    # ppo finals 1, 2, 6: mean 3, std sqrt((4 + 1 + 9) / 3) = 2.160
    assert "| cartpole | ppo | 3 | 800 | 3.00 ± 2.16 | 3.00 [" in table
    # sac finals -100, -300: mean -200, std 100, too few seeds for an IQM
    assert "| pendulum | sac | 2 | 200 | -200.00 ± 100.00 | n/a (<3 seeds) |" in table

    dqn_row = next(line for line in table.splitlines() if "| dqn |" in line)
    low, high = (float(v) for v in dqn_row.split("[")[1].rstrip(" |]").split(","))
    assert 10.0 <= low <= 20.0 <= high <= 30.0  # a bootstrap CI of the IQM lies within the seeds' range

    assert out.read_bytes()[:8] == PNG_SIGNATURE
    printed = capsys.readouterr().out
    assert "| cartpole | dqn |" in printed
    assert f"wrote {out}" in printed and f"wrote {out.with_suffix('.md')}" in printed


def test_explicit_table_path_and_folder_of_runs(runs: Path, tmp_path: Path) -> None:
    out, table = tmp_path / "a.png", tmp_path / "tables" / "b.md"
    assert main([str(runs), "tag=time/fps", f"out={out}", f"table={table}", "x=steps"]) == 0
    assert "Tag `time/fps`" in table.read_text() and "| 100.00 ± 0.00 |" in table.read_text()
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_mean_curve_stops_at_shortest_seed() -> None:
    short = np.array([[0, 0.0], [100, 10.0]])
    long = np.array([[0, 0.0], [50, 10.0], [200, 40.0]])
    grid, mean, std = mean_curve([short, long])
    np.testing.assert_array_equal(grid, [0, 50, 100])
    # long interpolated at 100: 10 + 30 * 50/150 = 20; short at 50: 5
    np.testing.assert_allclose(mean, [0.0, 7.5, 15.0])
    np.testing.assert_allclose(std, [0.0, 2.5, 5.0])


def test_resumed_run_drops_purged_steps(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "dqn", "cartpole", 0, {s: float(s) for s in range(0, 101, 10)})
    resumed = SummaryWriter(str(run_dir / "tb"), purge_step=60)  # resume from the checkpoint at step 60
    for step in range(60, 151, 10):
        resumed.add_scalar("eval/mean_reward", 1000.0 + step, step)
    resumed.close()

    curve = read_scalars(run_dir, ["eval/mean_reward"])["eval/mean_reward"]
    steps, values = curve[:, 0], curve[:, 1]
    assert np.all(np.diff(steps) > 0)
    np.testing.assert_array_equal(steps, np.arange(0, 151, 10))
    np.testing.assert_array_equal(values[steps < 60], np.arange(0, 51, 10))
    np.testing.assert_array_equal(values[steps >= 60], 1000.0 + np.arange(60, 151, 10))

    run = read_run(run_dir)
    assert (run.agent, run.env, run.seed, run.last_step) == ("dqn", "cartpole", 0, 150)
    assert set(run.scalars) == {"eval/mean_reward", "time/fps"}


def test_missing_tag_exits_2_listing_the_tags_the_run_has(runs: Path, tmp_path: Path, capsys) -> None:
    assert main([str(runs / "dqn" / "*" / "*"), "tag=eval/score", f"out={tmp_path / 'x.png'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'eval/score'" in err
    assert "it has: eval/mean_reward, time/fps" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_pattern_matching_nothing_exits_2(tmp_path: Path, capsys) -> None:
    pattern = str(tmp_path / "runs" / "*" / "nowhere" / "*")
    assert main([pattern]) == 2
    assert capsys.readouterr().err.strip() == f"error: no runs matched '{pattern}'"


def test_bad_key_and_non_run_directory_exit_2(runs: Path, tmp_path: Path, capsys) -> None:
    assert main([str(runs), "colour=red"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown key 'colour' for runners.compare; allowed:")
    assert main([str(runs), "x=walltime"]) == 2
    assert "choose one of: steps" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert capsys.readouterr().err.strip() == f"error: no config.yaml in {empty}; is it a run directory?"

    (empty / "config.yaml").write_text("agent: {id: dqn}\nenv: {name: cartpole}\nseed: 0\n")
    with pytest.raises(ValueError, match=r"no TensorBoard events under .*tb; is it a run directory\?"):
        read_run(empty)
