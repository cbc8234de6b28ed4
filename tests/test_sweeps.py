"""Sweeps (runners/sweep.py): tiny Optuna studies of DQN on CartPole, a second or two per trial.

The objective is the final ``eval/mean_reward``; every periodic evaluation is reported to the trial (and pruned on).
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from agents.common.tblog import read_scalars
from runners.cli import run_main
from runners.train import main as train_main

TOTAL, EVAL_FREQ = 400, 100


def sweep_args(sweep_dir: Path, *extra: str, n_trials: int = 3) -> list[str]:
    return ["-m", "agent=dqn", "env=cartpole", "preset=tiny", f"total_timesteps={TOTAL}", f"eval_freq={EVAL_FREQ}",
            "eval_episodes=2", f"save_freq={TOTAL}", "progress_bar=false", "hydra/sweeper=optuna",
            f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=0", "seed=range(0,1000)", "learning_starts=choice(50,100)", *extra]


def load(sweep_dir: Path, name: str = "dqn_cartpole") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def final_reward(run_dir: Path) -> float:
    return json.loads((run_dir / "results.json").read_text())["eval"]["mean_reward"]


def test_sweep_stores_a_resumable_study_whose_best_value_is_the_best_final_eval(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    assert run_main(train_main, sweep_args(sweep_dir, "hydra/sweeper/pruner=nop")) == 0
    assert (sweep_dir / "optuna.db").is_file()
    study = load(sweep_dir)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    finals = {}
    for trial in trials:
        run_dir = sweep_dir / f"trial_{trial.number}"
        finals[trial.number] = final_reward(run_dir)
        assert trial.value == finals[trial.number]
        # each trial is a normal run: its config holds the sampled values, TensorBoard the reported evaluations
        config = (run_dir / "config.yaml").read_text()
        assert f"seed: {trial.params['seed']}" in config
        assert f"learning_starts: {trial.params['learning_starts']}" in config
        curve = read_scalars(run_dir, ["eval/mean_reward"])["eval/mean_reward"]
        assert sorted(trial.intermediate_values) == [100, 200, 300, 400] == curve[:, 0].tolist()
        np.testing.assert_allclose([trial.intermediate_values[s] for s in (100, 200, 300, 400)], curve[:, 1])
    assert len({t.params["seed"] for t in trials}) == 3
    assert study.best_value == max(finals.values())
    results = (sweep_dir / "optimization_results.yaml").read_text()
    assert f"best_trial: {study.best_trial.number}" in results

    # the same command resumes the study: one trial more for n_trials=4, none when it is reached
    study.ask()  # a trial left running by an interrupted sweep: marked failed, not counted
    assert run_main(train_main, sweep_args(sweep_dir, "hydra/sweeper/pruner=nop", n_trials=4)) == 0
    states = [t.state for t in load(sweep_dir).get_trials()]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.FAIL, TrialState.COMPLETE]
    assert sorted(p.name for p in sweep_dir.glob("trial_*")) == ["trial_0", "trial_1", "trial_2", "trial_4"]
    assert run_main(train_main, sweep_args(sweep_dir, "hydra/sweeper/pruner=nop", n_trials=4)) == 0
    assert len(load(sweep_dir).get_trials()) == 5


def test_an_aggressive_pruner_stops_trials_at_an_evaluation_and_records_them_pruned(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # every reward is below 1000: each trial is pruned at its first evaluation after 150 env steps (step 200)
    args = sweep_args(sweep_dir, "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1000",
                      "hydra.sweeper.pruner.n_warmup_steps=150")
    assert run_main(train_main, args) == 0
    trials = load(sweep_dir).get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3
    for trial in trials:
        run_dir = sweep_dir / f"trial_{trial.number}"
        summary = json.loads((run_dir / "results.json").read_text())
        assert summary["num_timesteps"] == 200 < TOTAL  # stopped cleanly: final model and results written
        assert (run_dir / "final" / "meta.json").is_file()
        assert sorted(trial.intermediate_values) == [100, 200]
        assert trial.value == trial.intermediate_values[200] == summary["eval"]["mean_reward"]
    assert not (sweep_dir / "optimization_results.yaml").exists()  # no complete trial


def test_the_median_pruner_stops_a_trial_whose_best_value_falls_below_the_median_of_complete_trials(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "sweep"
    args = sweep_args(sweep_dir, "hydra.sweeper.pruner.n_startup_trials=1", n_trials=4)  # the default pruner
    assert run_main(train_main, args) == 0
    trials = load(sweep_dir).get_trials()
    # Optuna's rule, worked out again here: at each reported step s before the budget, prune when the best value
    # reported so far is below the median of the complete earlier trials' values at s (once one trial is complete)
    for trial in trials:
        complete = [t for t in trials[: trial.number] if t.state == TrialState.COMPLETE]
        expected = None
        for step in sorted(s for s in trial.intermediate_values if s < TOTAL):
            best = max(v for s, v in trial.intermediate_values.items() if s <= step)
            if complete and best < np.percentile([t.intermediate_values[step] for t in complete], 50):
                expected = step
                break
        assert trial.state == (TrialState.PRUNED if expected else TrialState.COMPLETE)
        assert max(trial.intermediate_values) == (expected or TOTAL)
    assert TrialState.PRUNED in [t.state for t in trials]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["learning_rate=interval(-1,1)"], "agent.learning_rate=-1.0 must be > 0"),
        (["learning_rate=interval(1e-4"], "no viable alternative"),
        (["agent.nosuchkey=choice(1,2)"], "unknown key 'agent.nosuchkey'"),
        (["hydra/sweeper/pruner=nosuch"], "Available options in 'hydra/sweeper/pruner'"),
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 must be >= 1"),
        (["env=cartpole,acrobot"], "a sweep has one env"),
        (["resume=runs/x"], "'resume=' is not for sweeps"),
    ],
)
def test_a_bad_sweep_argument_exits_2_with_one_line_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert run_main(train_main, sweep_args(tmp_path / "sweep", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "sweep").exists()


def test_sweep_options_need_multirun_and_multirun_needs_the_optuna_sweeper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = sweep_args(tmp_path / "sweep")
    assert run_main(train_main, args[1:]) == 2
    assert "configures a sweep: add -m" in capsys.readouterr().err
    assert run_main(train_main, [a for a in args if not a.startswith("hydra")]) == 2
    assert "-m runs a sweep: add hydra/sweeper=optuna" in capsys.readouterr().err
    assert run_main(train_main, [*args, "hydra/sweeper=basic"]) == 2
    assert "hydra/sweeper=basic is not available" in capsys.readouterr().err


def test_a_study_refuses_other_arguments_and_a_second_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    assert run_main(train_main, sweep_args(sweep_dir, n_trials=1)) == 0
    assert run_main(train_main, sweep_args(sweep_dir, "agent.gamma=0.9", n_trials=1)) == 2
    assert "was started with other arguments" in capsys.readouterr().err
    with open(sweep_dir / ".lock", "w") as lock:  # another sweep process holding the directory
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_main(train_main, sweep_args(sweep_dir, n_trials=2)) == 2
    assert "another sweep runs in" in capsys.readouterr().err
    assert len(load(sweep_dir).get_trials()) == 1
