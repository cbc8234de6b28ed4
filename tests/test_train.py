"""The training runner end to end: tiny real runs, bad input, interruption and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agents.common.registry import REGISTRY, load_agent
from agents.common.tblog import read_scalars
from envs.factory import make_vec_env
from runners.cli import run_main
from runners.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def train(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.train", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("agent", "env"),
    [("dqn", "cartpole"), ("ppo", "cartpole"), ("sac", "pendulum")],
)
def test_baseline_trains_saves_loads_and_acts_the_same(tmp_path: Path, agent: str, env: str) -> None:
    run_dir = tmp_path / agent
    code = run_main(
        train_main,
        [f"agent={agent}", f"env={env}", "preset=tiny", "total_timesteps=600", "eval_freq=300", "save_freq=300",
         "n_envs=1", "progress_bar=false", f"run_dir={run_dir}"],
    )
    assert code == 0
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["num_timesteps"] >= 600
    assert sorted(p.name for p in (run_dir / "final").iterdir()) == ["meta.json", "model.safetensors"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))

    env_cfg = load_agent(run_dir / "final").zoo_config["env"]
    vec_env = make_vec_env(env_cfg, n_envs=1, seed=0, training=False)
    first, second = load_agent(run_dir / "final", env=vec_env), load_agent(run_dir / "final", env=vec_env)
    observations = np.stack([vec_env.observation_space.sample() for _ in range(16)])
    np.testing.assert_array_equal(first.predict(observations, deterministic=True)[0],
                                  second.predict(observations, deterministic=True)[0])
    assert first.num_timesteps == summary["num_timesteps"]
    scalars = read_scalars(run_dir)
    assert "eval/mean_reward" in scalars
    np.testing.assert_array_equal(scalars["eval/mean_reward"][:2, 0], [300, 600])
    # the best periodic evaluation's model (rl-zoo3's best_model): the first one, replaced only by a better one
    best = json.loads((run_dir / "best.json").read_text())
    first_mean = scalars["eval/mean_reward"][0, 1]
    assert best["step"] in (300, 600) and load_agent(run_dir / "best").num_timesteps == best["step"]
    if best["step"] == 300:
        assert best["eval"]["mean_reward"] == pytest.approx(first_mean)
    else:
        assert best["eval"]["mean_reward"] > first_mean


def test_tiny_dqn_run_from_the_command_line_writes_tensorboard_events(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train("agent=dqn", "env=cartpole", "preset=tiny", f"run_dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "eval" in result.stdout and "tensorboard --logdir" in result.stdout
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").is_file()


def test_tensorboard_writer_thread_disk_faults_are_kept_quiet_and_other_exceptions_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread's refused write is raised again by the training loop's next write (the trainer's one line);
    its own traceback is dropped. Any other exception, of that thread or another, still reaches the hook."""
    import errno
    import threading

    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    from agents.common.logger import configure_logger

    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    configure_logger(tmp_path / "tb")
    writer_thread = _AsyncWriterThread.__new__(_AsyncWriterThread)
    cases = [
        (writer_thread, OSError(errno.ENOSPC, "No space left on device"), False),
        (writer_thread, OSError(errno.EROFS, "Read-only file system"), False),
        (writer_thread, OSError(errno.EACCES, "Permission denied"), True),
        (writer_thread, ValueError("a bug"), True),
        (threading.current_thread(), OSError(errno.ENOSPC, "No space left on device"), True),
    ]
    for thread, error, reported in cases:
        seen.clear()
        threading.excepthook(threading.ExceptHookArgs((type(error), error, None, thread)))
        assert seen == ([error] if reported else []), (thread, error)


def test_unknown_agent_exits_2_and_lists_the_agents(tmp_path: Path) -> None:
    result = train("agent=nope", "env=cartpole", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: unknown agent 'nope'; choose one of: {', '.join(sorted(REGISTRY))}"


BAD_INPUTS = [
    (["agent=nope", "env=cartpole"], f"unknown agent 'nope'; choose one of: {', '.join(sorted(REGISTRY))}"),
    (["agent=stochdqn", "env=pendulum"], "discretize its Box actions with env.discretize=<levels per dimension>"),
    (["agent=dqn", "env=nope"], "unknown env 'nope'; choose a config (acrobot"),
    (["env=cartpole"], "missing agent="),
    (["agent=dqn"], "missing env="),
    (["agent=dqn", "env=halfcheetah"], "dqn needs a Discrete action space; HalfCheetah-v5 has Box(-1.0, 1.0, (6,)"),
    (["agent=sac", "env=cartpole"], "sac needs a Box action space; CartPole-v1 has Discrete(2)"),
    (["agent=dqn", "env=cartpole", "preset=huge"], "unknown preset 'huge'; choose one of: cpu, default, paper, tiny"),
    (["agent=dqn", "env=cartpole", "foo=1"], "unknown key 'foo' for train; allowed: agent, debug, device"),
    (["agent=dqn", "env=cartpole", "agent.foo=1"], "unknown key 'agent.foo' for 'agent' of agent dqn; allowed:"),
    (["agent=dqn", "env=cartpole", "env.foo=1"], "unknown key 'env.foo' for 'env'; allowed: family, id"),
    (["agent=dqn", "env=cartpole", "total_timesteps=abc"], "total_timesteps='abc' has the wrong type: expected int"),
    (["agent=dqn", "env=cartpole", "total_timesteps=-5"], "total_timesteps=-5 must be a positive integer"),
    (["agent=dqn", "env=cartpole", "n_envs=0"], "n_envs=0 must be a positive integer"),
    (["agent=dqn", "env=cartpole", "eval_episodes=0"], "eval_episodes=0 must be a positive integer"),
    (["agent=dqn", "env=cartpole", "seed=1.5"], "seed=1.5 has the wrong type: expected int"),
    (["agent=dqn", "env=cartpole", "learning_rate=fast"], "agent.learning_rate='fast' has the wrong type"),
    (["agent=dqn", "env=cartpole", "batch_size=0"], "agent.batch_size=0 must be > 0"),
    (["agent=dqn", "env=cartpole", "gamma=1.5"], "agent.gamma=1.5 must be in (0, 1]"),
    (["agent=dqn", "env=cartpole", "device=tpu"], "device='tpu' is not allowed; choose one of: auto, cpu, cuda"),
    (["agent=dqn", "env=cartpole", "vec_env=threads"], "vec_env='threads' is not allowed; choose one of: dummy"),
    (["agent=dqn", "env=cartpole", "progress_bar=maybe"], "progress_bar='maybe' has the wrong type: expected bool"),
    (["agent=dqn", "env=cartpole", "agent.policy_kwargs.activation_fn=swish"], "unknown activation_fn 'swish'"),
    (["agent=dqn", "env=cartpole", "learning_rate=lin_x"], "'x' is not a number; write e.g. lin_3e-4"),
    (["agent=dqn", "env=cartpole", "agent.policy_kwargs={activation_fn: swish}"], "unknown activation_fn 'swish'"),
    (["agent=dqn", "env=cartpole", "+extra=1"], "adding or deleting keys is not supported"),
    (["agent=dqn", "env=cartpole", "junk"], "'junk' is not a key=value argument"),
    (["agent=stochdqn", "env=ant", "env.discretize=1000"], "1000 levels x 8 dims = 1000^8 actions overflows int64"),
    (["agent=stochdqn", "env=hopper", "env.discretize=1"], "env.discretize=1 must be an integer >= 2"),
    (["agent=stochdqn", "env=breakout", "env.discretize=4"], "unknown key 'env.discretize' for 'env'; allowed:"),
    (["resume=/nonexistent/run"], "resume=/nonexistent/run: no config.yaml there"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_naming_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = run_main(train_main, [*argv, f"run_dir={tmp_path / 'run'}"] if "resume" not in argv[0] else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err, err
    assert "\n" not in err
    assert not (tmp_path / "run").exists()  # nothing is written before the input is known to be good


def test_existing_run_dir_is_refused_and_left_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("precious: true\n")
    code = run_main(train_main, ["agent=dqn", "env=cartpole", "preset=tiny", f"run_dir={run_dir}"])
    assert code == 2
    assert f"run_dir={run_dir} already holds a run; continue it with resume={run_dir}" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "precious: true\n"


def test_killed_run_resumes_from_its_last_checkpoint_with_a_continuous_curve(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["agent=dqn", "env=cartpole", "preset=tiny", "total_timesteps=50000", "save_freq=500", "eval_freq=250",
            "eval_episodes=1", "progress_bar=false", f"run_dir={run_dir}"]
    process = subprocess.Popen([sys.executable, "-m", "runners.train", *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "step_0000001500").exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.time() < deadline, "no checkpoint at step 1500 within 120 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    result = train(f"resume={run_dir}", "total_timesteps=3000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    resumed_from = int(result.stdout.split("(step ")[1].split(")")[0])
    assert resumed_from >= 1500 and resumed_from % 500 == 0
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["num_timesteps"] == 3000
    steps = read_scalars(run_dir, ["eval/mean_reward"])["eval/mean_reward"][:, 0]
    # every evaluation point once, none missing and none twice: 250, 500, ..., 3000 and the final evaluation
    np.testing.assert_array_equal(np.unique(steps), np.arange(250, 3001, 250))
    assert np.all(np.diff(steps) > 0)
    exploration = load_agent(run_dir / "final").exploration_rate
    assert exploration == pytest.approx(0.04)  # dqn_cartpole: final eps reached after 16% of 3000 steps


def test_best_model_is_replaced_only_by_a_better_evaluation_and_a_resumed_run_keeps_the_bar(tmp_path: Path) -> None:
    from agents.baselines import DQN
    from agents.common.callbacks import EvalCallback

    cfg = {"name": "cartpole", "family": "gym", "id": "CartPole-v1", "kwargs": {}, "max_episode_steps": 20}
    eval_env = make_vec_env(cfg, n_envs=1, seed=0, training=False)
    model = DQN("MlpPolicy", make_vec_env(cfg, n_envs=1, seed=0), learning_starts=10, seed=0)
    model.learn(40)
    best, record = tmp_path / "best", tmp_path / "best.json"

    def evaluate_at(step: int) -> None:  # a fresh callback, as a (resumed) run builds it, evaluating at `step`
        evaluation = EvalCallback(eval_env, cfg, eval_freq=10, n_episodes=2, best_dir=best)
        evaluation.init_callback(model)
        model.num_timesteps = step
        evaluation.on_step()

    evaluate_at(50)  # the first evaluation is the best so far
    assert json.loads(record.read_text())["step"] == 50 and load_agent(best).num_timesteps == 50
    first = json.loads(record.read_text())
    assert first["key"] == [first["eval"]["mean_reward"]] * 2  # CartPole has no score of its own: the mean return
    record.write_text(json.dumps({**first, "key": [1e9, 1e9]}))  # a bar no evaluation reaches
    evaluate_at(60)
    assert json.loads(record.read_text())["step"] == 50 and load_agent(best).num_timesteps == 50
    record.write_text(json.dumps({**first, "key": [-1e9, -1e9]}))  # a bar every evaluation beats
    evaluate_at(70)
    assert json.loads(record.read_text())["step"] == 70 and load_agent(best).num_timesteps == 70


def test_a_kill_between_saving_the_best_model_and_its_record_leaves_them_matching(tmp_path: Path) -> None:
    """save_best writes best.pending.json, then best/, then renames the record: a resumed run promotes a pending
    record whose model is in place, and drops one whose model never arrived (the old pair stays)."""
    from agents.baselines import DQN
    from agents.common.callbacks import BEST_PENDING, EvalCallback

    cfg = {"name": "cartpole", "family": "gym", "id": "CartPole-v1", "kwargs": {}, "max_episode_steps": 20}
    eval_env = make_vec_env(cfg, n_envs=1, seed=0, training=False)
    model = DQN("MlpPolicy", make_vec_env(cfg, n_envs=1, seed=0), learning_starts=10, seed=0)
    model.learn(40)
    best, record, pending = tmp_path / "best", tmp_path / "best.json", tmp_path / BEST_PENDING

    def resume() -> EvalCallback:
        evaluation = EvalCallback(eval_env, cfg, eval_freq=10, n_episodes=2, best_dir=best)
        evaluation.init_callback(model)
        return evaluation

    evaluation = resume()
    model.num_timesteps = 50
    evaluation.on_step()  # the first evaluation: best/ at step 50 and its record
    assert json.loads(record.read_text())["step"] == 50 and not pending.exists()
    # killed after best/ was replaced (step 60) but before the record was renamed
    model.num_timesteps = 60
    model.save(best, replay_buffer=False)
    pending.write_text(json.dumps({"step": 60, "key": [7.0, 7.0], "eval": {}}))
    assert resume().best_key == (7.0, 7.0)
    assert json.loads(record.read_text())["step"] == 60 and not pending.exists()
    # killed before best/ was replaced: the pending record of step 80 describes no saved model
    pending.write_text(json.dumps({"step": 80, "key": [9.0, 9.0], "eval": {}}))
    assert resume().best_key == (7.0, 7.0)
    assert json.loads(record.read_text())["step"] == 60 and not pending.exists()
    assert load_agent(best).num_timesteps == 60


def test_final_evaluation_is_reused_only_when_the_model_did_not_change_since() -> None:
    """DIAMOND's final epochs and SB3's off-policy updates come after the last step's callbacks: the final
    evaluation must then see the trained model, not reuse the periodic one taken before those updates."""
    from agents.baselines import DQN
    from agents.common.callbacks import EvalCallback

    cfg = {"name": "cartpole", "family": "gym", "id": "CartPole-v1", "kwargs": {}, "max_episode_steps": 20}
    eval_env = make_vec_env(cfg, n_envs=1, seed=0, training=False)
    model = DQN("MlpPolicy", make_vec_env(cfg, n_envs=1, seed=0), learning_starts=10, seed=0)
    evaluation = EvalCallback(eval_env, cfg, eval_freq=100, n_episodes=1)
    evaluation.init_callback(model)
    assert not evaluation.is_current()  # never evaluated
    model.learn(40)
    evaluation.evaluate_now()
    assert evaluation.is_current()
    model._n_updates += 1  # an update after the evaluation, at the same env step
    assert not evaluation.is_current()
    model._n_updates -= 1
    model.num_timesteps += 1
    assert not evaluation.is_current()
