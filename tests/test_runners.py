"""evaluate, enjoy, compare, zoo and bench on real tiny runs, and their answers to bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import imageio.v2 as imageio
import pytest

from runners import bench, compare, enjoy, evaluate, train, zoo
from runners.cli import run_main


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny real runs on CartPole: dqn and ppo."""
    root = tmp_path_factory.mktemp("runs")
    for agent in ("dqn", "ppo"):
        args = [f"agent={agent}", "env=cartpole", "preset=tiny", "n_envs=1", "total_timesteps=1024",
                "eval_freq=256", "save_freq=512", "progress_bar=false", f"run_dir={root / agent}"]
        assert run_main(train.main, args) == 0
    return {"dqn": root / "dqn", "ppo": root / "ppo"}


def test_compare_writes_a_png_and_a_table_from_two_tiny_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plots" / "cartpole.png"
    assert compare.main([str(runs["dqn"]), str(runs["ppo"]), "tag=eval/mean_reward", f"out={out}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.with_suffix(".md").read_text()
    assert "eval/mean_reward" in table
    assert "| dqn |" in table and "| ppo |" in table
    assert "n/a (<3 seeds)" in table


def test_evaluate_prints_mean_and_std_as_json(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(evaluate.main, [f"model={runs['dqn'] / 'final'}", "episodes=3", "json=true"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agent"] == "dqn" and report["env"] == "CartPole-v1"
    assert report["episodes"] == 3 and len(report["returns"]) == 3
    assert report["mean_reward"] == pytest.approx(sum(report["returns"]) / 3)


def test_enjoy_records_a_video_of_whole_episodes(runs: dict[str, Path], tmp_path: Path) -> None:
    video = tmp_path / "ppo.mp4"
    assert run_main(enjoy.main, [f"model={runs['ppo'] / 'final'}", f"video={video}", "max_steps=300"]) == 0
    frames = imageio.mimread(video, memtest=False)
    assert len(frames) >= 8 and frames[0].ndim == 3


def test_every_shipped_zoo_checkpoint_matches_its_sha256(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(zoo.main, ["verify"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("ok") for line in lines)
    assert run_main(zoo.main, ["list"]) == 0
    assert "ppo-cartpole" in capsys.readouterr().out


def test_shipped_ppo_cartpole_balances_the_pole() -> None:
    model, env, env_cfg = evaluate.load_for_eval("zoo:ppo-cartpole", device="cpu", seed=123)
    result = evaluate.evaluate(model, env, 3, env_cfg)
    assert result.mean >= 475.0  # CartPole-v1 is solved at 475


def test_evaluate_applies_env_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    # the same checkpoint under a 50-step time limit: every episode is cut at 50, so each return is exactly 50
    argv = ["model=zoo:ppo-cartpole", "episodes=2", "device=cpu", "json=true", "env.max_episode_steps=50"]
    assert run_main(evaluate.main, argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["returns"] == [50.0, 50.0] and report["env_overrides"] == {"env.max_episode_steps": "50"}


@pytest.mark.parametrize(("model", "given", "used"), [
    ("zoo:ppo-cartpole", None, True),  # SB3's evaluate_policy default: the argmax action
    ("zoo:diamond-breakout", None, False),  # DIAMOND's official test collector samples from the policy
    ("zoo:diamond-breakout", "true", True),
    ("zoo:ppo-cartpole", "false", False),
])
def test_evaluate_follows_the_agents_official_test_protocol_unless_told(
    model: str, given: str | None, used: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [f"model={model}", "episodes=1", "device=cpu", "json=true", "env.max_episode_steps=30"]
    argv += [f"deterministic={given}"] if given is not None else []
    assert run_main(evaluate.main, argv) == 0
    assert json.loads(capsys.readouterr().out)["deterministic"] is used


def test_training_evaluations_follow_eval_deterministic(runs: dict[str, Path], tmp_path: Path) -> None:
    # the module's runs evaluate as DQN's official protocol does (argmax); eval_deterministic=false samples
    assert json.loads((runs["dqn"] / "results.json").read_text())["eval"]["deterministic"] is True
    args = ["agent=ppo", "env=cartpole", "preset=tiny", "total_timesteps=256", "eval_freq=128", "eval_episodes=2",
            "save_freq=256", "progress_bar=false", "eval_deterministic=false", f"run_dir={tmp_path / 'ppo'}"]
    assert run_main(train.main, args) == 0
    assert json.loads((tmp_path / "ppo" / "results.json").read_text())["eval"]["deterministic"] is False


BAD_INPUTS = [
    (evaluate.main, ["episodes=3"], "missing model="),
    (evaluate.main, ["model=zoo:nope"],
     "unknown zoo checkpoint 'nope'; choose one of: act-needle, "),  # the zoo's names follow, sorted
    (evaluate.main, ["model=/nonexistent/ckpt"], "no checkpoint at '/nonexistent/ckpt'"),
    (evaluate.main, ["model=zoo:ppo-cartpole", "episodes=0"], "episodes=0 must be >= 1"),
    (evaluate.main, ["model=zoo:ppo-cartpole", "episodes=many"], "episodes='many' is not an integer"),
    (evaluate.main, ["model=zoo:ppo-cartpole", "json=perhaps"], "json='perhaps' is not a boolean"),
    (evaluate.main, ["model=zoo:ppo-cartpole", "colour=red"], "unknown key 'colour' for runners.evaluate"),
    (evaluate.main, ["model=zoo:ppo-cartpole", "env.colour=red"], "unknown env key 'env.colour'; the stored env"),
    (evaluate.main, ["model=zoo:ppo-cartpole", "env.name.x=1"], "env.name.x=1: the env config has no mapping 'name'"),
    (enjoy.main, ["model=zoo:ppo-cartpole", "video=out.avi"], "video=out.avi: the file must end in .mp4 or .gif"),
    (enjoy.main, ["video=out.mp4"], "missing model="),
    (compare.main, ["/nonexistent/runs/*"], "no runs matched '/nonexistent/runs/*'"),
    (compare.main, ["tag=eval/mean_reward"], "no run directories given"),
    (zoo.main, ["destroy"], "usage: python -m runners.zoo <command>; commands: list, verify, add"),
    (zoo.main, ["add", "name=x"], "zoo add needs name=<name> and run=<run dir>"),
    (zoo.main, ["add", "name=x", "run=runs/x", "checkpoint=last"],
     "checkpoint='last' is not allowed; choose one of: final, best"),
    (bench.main, ["nope"], "unknown benchmark 'nope'; choose one of:"),
]


@pytest.mark.parametrize(("runner", "argv", "message"), BAD_INPUTS, ids=[" ".join(a) for _, a, _ in BAD_INPUTS])
def test_runners_answer_bad_input_with_one_line_and_exit_2(
    runner: object, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = runner(argv) if runner is compare.main else run_main(runner, argv)  # type: ignore[operator]
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err, err
    assert "\n" not in err


def test_a_pickle_posing_as_a_checkpoint_is_refused_without_unpickling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    path = tmp_path / "model.zip"
    path.write_bytes(pickle.dumps(Payload()))
    assert run_main(evaluate.main, [f"model={path}"]) == 2
    assert "is a file, not a zoo checkpoint directory" in capsys.readouterr().err
    assert not marker.exists()


def test_reliability_summary_reads_junit_cases_with_and_without_the_loadgroup_suffix(tmp_path: Path) -> None:
    from runners.bench_reliability import agent_of, read_junit

    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.reliability.test_kill_resume" name="test_kill[dqn]@dqn"/>'
        '<testcase classname="tests.reliability.test_disk_faults" name="test_save[radt-tensors]">'
        '<failure message="boom"/></testcase>'
        '<testcase classname="tests.reliability.test_disk_faults" name="test_zoo_add_fails"/>'
        '<testcase classname="tests.reliability.test_determinism" name="test_same[act]"><skipped/></testcase>'
        '<testcase classname="tests.test_runners" name="test_other"/>'
        "</testsuite></testsuites>"
    )
    cases = read_junit(report)
    assert cases == [
        ("1. kill and resume", "test_kill[dqn]", True),
        ("5. disk faults", "test_save[radt-tensors]", False),
        ("5. disk faults", "test_zoo_add_fails", True),
    ]
    assert [agent_of(category, name) for category, name, _ in cases] == ["dqn", "radt", "(agent-independent)"]


def test_reliability_summary_keeps_the_parts_not_rerun_and_merges_rows_by_agent() -> None:
    from runners.bench_reliability import DETERMINISM_HEADING, MEMORY_HEADING, merge_rows, split_sections

    faults = "# Reliability\n\n| a | b |\n"
    determinism = f"{DETERMINISM_HEADING}\n\nold method\n\n| agent | x |\n|-|-|\n| dqn | 1 |\n| sac | 2 |\n"
    memory = f"{MEMORY_HEADING}\n\n| agent | mb |\n| ppo | 3 |\n"
    assert split_sections(faults + "\n" + determinism + "\n" + memory) == (faults, determinism, memory)
    assert split_sections(faults + "\n" + memory) == (faults, "", memory)
    assert split_sections("") == ("", "", "")

    new = f"{DETERMINISM_HEADING}\n\nnew method\n\n| agent | x |\n|-|-|\n| act | 9 |\n| sac | 8 |\n| dqn | 7 |\n"
    merged = merge_rows(determinism, new, ["sac", "act"], ["dqn", "sac", "act"])
    # dqn kept from the old table, sac replaced, act added; rows in the given order; the old method text kept
    table = "| agent | x |\n|-|-|\n| dqn | 1 |\n| sac | 8 |\n| act | 9 |\n"
    assert merged == f"{DETERMINISM_HEADING}\n\nold method\n\n{table}"
    assert merge_rows("", new, ["sac"], ["dqn", "sac", "act"]) == new
