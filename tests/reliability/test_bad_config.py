"""Issue 9, item 6: malformed commands and overrides on every runner exit 2 with one line naming the value and what
is allowed, and write nothing.

One table for all runners (``runners.train``, ``evaluate``, ``enjoy``, ``zoo``, ``dataset``, ``demos``, ``bench``,
``compare``), run in-process through ``runners.cli.run_main`` (fast); a few run as real subprocesses to pin the exit
status and the single stderr line of the real command. Some rows repeat cases of tests/test_train.py,
tests/test_runners.py and tests/test_needle.py so that this table is the one place that counts them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.common.registry import REGISTRY
from runners import bench, compare, dataset, demos, enjoy, evaluate, train, zoo
from runners.cli import run_main

ROOT = Path(__file__).resolve().parents[2]
RUNNERS = {"train": train, "evaluate": evaluate, "enjoy": enjoy, "zoo": zoo, "dataset": dataset, "demos": demos,
           "bench": bench, "compare": compare}
DQN = ["agent=dqn", "env=cartpole"]
PPO = ["agent=ppo", "env=cartpole"]
SAC = ["agent=sac", "env=pendulum"]
DT = ["agent=dt", "env=hopper"]
ACT = ["agent=act", "env=needle"]
DI = ["agent=delta_iris", "env=crafter"]
DIAMOND = ["agent=diamond", "env=breakout"]
PPO_ZOO = "model=zoo:ppo-cartpole"

# (category, runner, argv, the start of the message after "error: " or a part of it after "...")
BAD_CONFIG: list[tuple[str, str, list[str], str]] = [
    # unknown agents, envs, keys
    ("unknown", "train", ["agent=dqnn", "env=cartpole"],
     f"unknown agent 'dqnn'; choose one of: {', '.join(sorted(REGISTRY))}"),
    ("unknown", "train", ["agent=", "env=cartpole"], f"unknown agent ''; choose one of: {', '.join(sorted(REGISTRY))}"),
    ("unknown", "train", ["agent=dqn", "env=CartPole-v99"], "unknown env 'CartPole-v99'; choose a config (acrobot"),
    ("unknown", "train", [*DQN, "preset=huge"], "unknown preset 'huge'; choose one of: cpu, default, paper, tiny"),
    ("unknown", "train", [*DQN, "foo=1"], "unknown key 'foo' for train; allowed: agent, debug, device"),
    ("unknown", "train", [*DQN, "agent.foo=1"], "unknown key 'agent.foo' for 'agent' of agent dqn; allowed:"),
    ("unknown", "train", [*DQN, "env.foo=1"], "unknown key 'env.foo' for 'env'; allowed: family, id"),
    ("unknown", "train", [*DQN, "optimizer=lion"], "unknown optimizer 'lion'; choose one of: adamw, adam, ademamix"),
    ("unknown", "train", [*DQN, "+extra=1"], "'+extra=1': adding or deleting keys is not supported"),
    ("unknown", "train", [*DQN, "junk"], "'junk' is not a key=value argument (e.g. agent=dqn)"),
    ("unknown", "train", ["=dqn"], "'=dqn' has no key before '='"),
    ("unknown", "evaluate", [PPO_ZOO, "colour=red"], "unknown key 'colour' for runners.evaluate; allowed:"),
    ("unknown", "evaluate", [PPO_ZOO, "env.colour=red"], "unknown env key 'env.colour'; the stored env config has:"),
    ("unknown", "evaluate", ["model=zoo:nope"], "unknown zoo checkpoint 'nope'; choose one of: act-needle"),
    ("unknown", "enjoy", [PPO_ZOO, "colour=red"], "unknown key 'colour' for runners.enjoy; allowed: debug"),
    ("unknown", "zoo", ["destroy"], "usage: python -m runners.zoo <command>; commands: list, verify, add"),
    ("unknown", "zoo", ["list", "extra=1"], "unknown key 'extra' for runners.zoo list; allowed: debug"),
    ("unknown", "dataset", ["env=hopper", "colour=1"], "unknown key 'colour' for runners.dataset; allowed:"),
    ("unknown", "dataset", ["env=hopper", "quality=perfect"],
     "quality='perfect'; choose one of: medium, medium-replay"),
    ("unknown", "dataset", ["env=cartpole", "quality=medium"], "env='cartpole'; choose one of: hopper, halfcheetah"),
    ("unknown", "demos", ["env=needel"], "env='needel'; choose one of: needle"),
    ("unknown", "demos", ["env=needle", "frames=3"], "unknown key 'frames' for runners.demos; allowed:"),
    ("unknown", "bench", ["nope"], "unknown benchmark 'nope'; choose one of: act, "),
    ("unknown", "bench", ["diamond", "out=x.md"], "unknown option 'out' for benchmark diamond; its options: parts, "),
    ("unknown", "compare", ["/tmp", "colour=red"], "unknown key 'colour' for runners.compare; allowed: debug"),
    ("unknown", "compare", ["/tmp", "x=episodes"], "x='episodes' is not supported; choose one of: steps"),
    ("unknown", "train", [*DI, "agent.precision=fp16"],
     "precision='fp16' is not allowed; choose one of: fp32, bf16, auto"),
    ("unknown", "train", [*DI, "agent.size=huge"], "size='huge' is not allowed; choose one of: crafter, atari, tiny"),
    ("unknown", "train", [*DI, "agent.policy_kwargs={world_model: {layerz: 2}}"],
     "unknown key 'world_model.layerz'; allowed: num_actions"),
    # wrong types
    ("type", "train", [*DQN, "total_timesteps=abc"], "total_timesteps='abc' has the wrong type: expected int"),
    ("type", "train", [*DQN, "seed=1.5"], "seed=1.5 has the wrong type: expected int like the default 0"),
    ("type", "train", [*DQN, "n_envs=2.5"], "n_envs=2.5 has the wrong type: expected int like the default 1"),
    ("type", "train", [*DQN, "learning_rate=fast"], "agent.learning_rate='fast' has the wrong type: expected float"),
    ("type", "train", [*DQN, "gamma=abc"], "agent.gamma='abc' has the wrong type: expected float"),
    ("type", "train", [*DQN, "progress_bar=maybe"], "progress_bar='maybe' has the wrong type: expected bool"),
    ("type", "train", [*DQN, "debug=perhaps"], "debug='perhaps' has the wrong type: expected bool"),
    ("type", "train", [*DQN, "learning_rate=lin_x"], "learning_rate='lin_x': 'x' is not a number; write e.g. lin_3e-4"),
    ("type", "train", [*DQN, "agent.policy_kwargs.activation_fn=swish"], "unknown activation_fn 'swish'"),
    ("type", "evaluate", [PPO_ZOO, "episodes=many"], "episodes='many' is not an integer"),
    ("type", "evaluate", [PPO_ZOO, "json=perhaps"], "json='perhaps' is not a boolean; use true or false"),
    ("type", "evaluate", [PPO_ZOO, "deterministic=sometimes"],
     "deterministic='sometimes' is not allowed; use auto (the agent's official test protocol), true"),
    ("type", "enjoy", [PPO_ZOO, "deterministic=1.5"], "deterministic='1.5' is not allowed; use auto"),
    ("type", "train", [*DQN, "eval_deterministic=maybe"],
     "eval_deterministic='maybe' is not allowed; use auto (the agent's official test protocol), true"),
    ("type", "evaluate", [PPO_ZOO, "device=tpu"], "device='tpu' is not allowed; choose one of: auto, cpu, cuda"),
    ("type", "enjoy", [PPO_ZOO, "device=tpu"], "device='tpu' is not allowed; choose one of: auto, cpu, cuda"),
    ("type", "enjoy", [PPO_ZOO, "video=out.avi"], "video=out.avi: the file must end in .mp4 or .gif"),
    ("type", "dataset", ["env=hopper", "quality=medium", "seed=x"], "seed='x' is not an integer"),
    ("type", "dataset", ["env=hopper", "references=maybe"], "references='maybe' is not a boolean"),
    ("type", "demos", ["env=needle", "episodes=two"], "episodes='two' is not an integer"),
    ("type", "demos", ["env=needle", "kinematic_error=nan"], "kinematic_error='nan'; expected a finite number"),
    ("type", "demos", ["env=needle", "progress=often"], "progress='often' is not a boolean"),
    ("type", "compare", ["/tmp", "out=plot.txt"], "out='plot.txt' must end with one of: .png, .pdf, .svg"),
    ("type", "train", [*DI, "agent.batch_size=[2,2]"],
     "batch_size=[2, 2] needs one value per component: tokenizer, world_model, actor_critic"),
    ("type", "train", [*DI, "agent.grad_clip=10"],
     "agent.grad_clip=10 has the wrong type: expected ListConfig like the default [10.0, 10.0, 10.0]"),
    # negative, zero or out-of-range sizes
    ("range", "train", [*DQN, "total_timesteps=-5"], "total_timesteps=-5 must be a positive integer"),
    ("range", "train", [*DQN, "total_timesteps=0"], "total_timesteps=0 must be a positive integer"),
    ("range", "train", [*DQN, "n_envs=0"], "n_envs=0 must be a positive integer"),
    ("range", "train", [*DQN, "save_freq=0"], "save_freq=0 must be a positive integer"),
    ("range", "train", [*DQN, "keep_checkpoints=-1"], "keep_checkpoints=-1 must be a positive integer"),
    ("range", "train", [*DQN, "eval_episodes=0"], "eval_episodes=0 must be a positive integer"),
    ("range", "train", [*DQN, "eval_freq=-1"], "eval_freq=-1 must be >= 0"),
    ("range", "train", [*DQN, "seed=-1"], "seed=-1 must be >= 0"),
    ("range", "train", [*DQN, "torch_threads=-2"], "torch_threads=-2 must be >= 0"),
    ("range", "train", [*DQN, "batch_size=0"], "agent.batch_size=0 must be > 0"),
    ("range", "train", [*DQN, "buffer_size=0"], "agent.buffer_size=0 must be > 0"),
    ("range", "train", [*DQN, "learning_rate=-0.1"], "agent.learning_rate=-0.1 must be > 0"),
    ("range", "train", [*DQN, "learning_rate=nan"], "agent.learning_rate=nan must be a finite number"),
    ("range", "train", [*DQN, "learning_rate=inf"], "agent.learning_rate=inf must be a finite number"),
    ("range", "train", [*DQN, "gamma=1.5"], "agent.gamma=1.5 must be in (0, 1]"),
    ("range", "train", [*DIAMOND, "learning_rate=[1e-3,-1e-4,1e-4]"],
     "agent.learning_rate=[0.001, -0.0001, 0.0001] must be > 0"),
    ("range", "train", [*DIAMOND, "train_steps=[28,8,-6]"], "agent.train_steps=[28, 8, -6] must be >= 0"),
    ("type", "train", [*DIAMOND, "learning_rate=1e-3"],
     "agent.learning_rate=0.001 has the wrong type: expected ListConfig like the default [0.0001, 0.0001, 0.0001]"),
    ("range", "train", [*DIAMOND, "rew_end_event_fraction=2"], "agent.rew_end_event_fraction=2 must be in [0, 1]"),
    ("range", "train", [*DQN, "train_freq=0"], "agent.train_freq=0 must be > 0"),
    ("range", "train", [*DQN, "train_freq=-4"], "agent.train_freq=-4 must be > 0"),
    ("range", "train", [*DQN, "target_update_interval=0"], "agent.target_update_interval=0 must be > 0"),
    ("range", "train", [*DQN, "exploration_fraction=2"], "agent.exploration_fraction=2 must be in [0, 1]"),
    ("range", "train", [*DQN, "learning_starts=-1"], "agent.learning_starts=-1 must be >= 0"),
    ("range", "train", [*PPO, "n_steps=0"], "agent.n_steps=0 must be > 0"),
    ("range", "train", [*PPO, "gae_lambda=2"], "agent.gae_lambda=2 must be in [0, 1]"),
    ("range", "train", [*SAC, "tau=0"], "agent.tau=0 must be in (0, 1]"),
    ("range", "train", [*DT, "context=0"], "agent.context=0 must be > 0"),
    ("range", "train", [*DT, "dropout=1.5"], "agent.dropout=1.5 must be in [0, 1]"),
    ("range", "train", [*ACT, "chunk_size=0"], "agent.chunk_size=0 must be > 0"),
    ("range", "train", ["agent=stochdqn", "env=hopper", "env.discretize=1"],
     "env.discretize=1 must be an integer >= 2"),
    ("range", "train", ["agent=stochdqn", "env=ant", "env.discretize=1000"],
     "discretization of 1000 levels x 8 dims = 1000^8"),
    ("range", "evaluate", [PPO_ZOO, "episodes=0"], "episodes=0 must be >= 1"),
    ("range", "evaluate", [PPO_ZOO, "seed=-1"], "seed=-1 must be >= 0"),
    ("range", "evaluate", [PPO_ZOO, "env.max_episode_steps=-1"], "env.max_episode_steps=-1 must be a positive integer"),
    ("range", "enjoy", [PPO_ZOO, "fps=0"], "fps=0 must be >= 1"),
    ("range", "enjoy", [PPO_ZOO, "max_steps=-5"], "max_steps=-5 must be >= 1"),
    ("range", "zoo", ["add", "name=x", "run=/tmp", "episodes=0"], "episodes=0 must be >= 1"),
    ("range", "dataset", ["env=hopper", "quality=medium", "size=0"], "size=0 must be >= 1"),
    ("range", "dataset", ["env=hopper", "quality=medium", "size=-10"], "size=-10 must be >= 1"),
    ("range", "dataset", ["env=hopper", "references=true", "episodes=0"], "episodes=0 must be >= 1"),
    ("range", "demos", ["env=needle", "episodes=0"], "episodes=0 must be >= 1"),
    ("range", "demos", ["env=needle", "image_size=8"], "image_size=8 must be >= 16"),
    ("range", "demos", ["env=needle", "image_size=4096"], "image_size=4096 must be <= 1024"),
    ("range", "demos", ["env=needle", "kinematic_error=-0.01"], "kinematic_error=-0.01 must be in [0, 0.05]"),
    ("range", "demos", ["env=needle", "seed=-3"], "seed=-3 must be >= 0"),
    ("range", "train", [*DI, "agent.batch_size=[0,2,2]"], "agent.batch_size=[0, 2, 2] must be > 0"),
    ("range", "train", [*DI, "agent.sequence_length=[1,21]"],
     "batch_size=[32, 32, 86] must be >= 1 and sequence_length=[1, 21] >= 2"),
    ("range", "train", [*DI, "agent.num_steps=0"], "num_steps_first_epoch=100000 and num_steps=0 must be >= 1"),
    ("range", "train", [*DI, "agent.steps_per_epoch=[1,-1,1]"], "steps_per_epoch=[1, -1, 1] must be >= 0"),
    ("range", "train", [*DI, "agent.priority_alpha=-1"], "priority_alpha=-1"),
    ("range", "train", [*DI, "agent.buffer_capacity=0"], "buffer_capacity=0 must be >= 1 env steps"),
    ("range", "train", [*DI, "agent.epsilon=2"], "epsilon=2"),
    ("range", "train", [*DI, "agent.temperature=0"], "temperature=0"),
    # agents on envs whose spaces they cannot handle
    ("incompatible", "train", ["agent=act", "env=cartpole"],
     "act needs a Box action space; CartPole-v1 has Discrete(2)"),
    ("incompatible", "train", ["agent=act", "env=hopper"], "act needs a Dict observation space; Hopper-v5 has Box("),
    ("incompatible", "train", ["agent=dqn", "env=hopper"], "dqn needs a Discrete action space; Hopper-v5 has Box("),
    ("incompatible", "train", ["agent=radt", "env=breakout"], "radt needs a Box action space; BreakoutNoFrameskip-v4"),
    ("incompatible", "train", ["agent=dt", "env=cartpole"], "dt needs a Box action space; CartPole-v1 has Discrete(2)"),
    ("incompatible", "train", ["agent=sac", "env=cartpole"],
     "sac needs a Box action space; CartPole-v1 has Discrete(2)"),
    ("incompatible", "train", ["agent=sac", "env=large_action"], "sac needs a Box action space; zoo/LargeAction-v0"),
    ("incompatible", "train", ["agent=stochq", "env=cartpole"], "stochq needs a Discrete observation space; CartPole"),
    ("incompatible", "train", ["agent=stochdqn", "env=pendulum"], "stochdqn needs a Discrete action space; Pendulum"),
    ("incompatible", "train", ["agent=stochdqn", "env=breakout", "env.discretize=4"], "unknown key 'env.discretize'"),
    ("incompatible", "train", ["agent=delta_iris", "env=cartpole"], "delta_iris needs uint8 image observations (a Box "
     "of 0..255 of shape (H, W, 3) or (3, H, W)); CartPole-v1 has Box(-inf, inf, (4,), float32)"),
    ("incompatible", "train", ["agent=diamond", "env=mountaincar"], "diamond needs uint8 image observations"),
    ("incompatible", "train", ["agent=delta_iris", "env=pendulum"], "delta_iris needs a Discrete action space; "
     "Pendulum-v1 has Box("),
    ("incompatible", "evaluate", [PPO_ZOO, "env.id=Pendulum-v1"],
     f"'{ROOT}/results/zoo/ppo-cartpole' was trained with observation space Box(-inf, inf, (4,), float32)"),
    ("incompatible", "evaluate", [PPO_ZOO, "targets=paper"],
     "targets= applies to return-conditioned agents (dt, radt)"),
    ("incompatible", "enjoy", [PPO_ZOO, "target=100"], "target= applies to return-conditioned agents (dt, radt); ppo"),
    # missing, contradictory or impossible options
    ("contradictory", "train", ["env=cartpole"], "missing agent=; e.g. python -m runners.train agent=dqn env=cartpole"),
    ("contradictory", "train", ["agent=dqn"], "missing env=; e.g. python -m runners.train agent=dqn env=cartpole"),
    ("contradictory", "train", [*ACT], "this agent learns from demonstrations: pass demos=<path of a .npz>"),
    ("contradictory", "train", [*ACT, "demos=/nonexistent.npz"], "demos=/nonexistent.npz: no such file"),
    ("contradictory", "train", [*DT, "agent.dataset=nope"], "unknown dataset 'nope'; choose a quality (medium,"),
    ("contradictory", "train", [*DT, "agent.dataset=/nonexistent.npz"], "unknown dataset '/nonexistent.npz'"),
    ("contradictory", "train", ["agent=stochq", "env=frozenlake", "optimizer=adam"],
     "'optimizer=adam': agent stochq has no optimizer"),
    ("contradictory", "train", ["resume=/nonexistent/run"], "resume=/nonexistent/run: no config.yaml there"),
    ("contradictory", "evaluate", ["episodes=3"], "missing model=<checkpoint dir or zoo:name>"),
    ("contradictory", "evaluate", ["model=/nonexistent/ckpt"], "no checkpoint at '/nonexistent/ckpt'"),
    ("contradictory", "evaluate", [PPO_ZOO, "out=/nonexistent/dir/x.json"],
     "out=/nonexistent/dir/x.json: the directory"),
    ("contradictory", "enjoy", ["video=out.mp4"], "missing model=<checkpoint dir or zoo:name>"),
    ("contradictory", "zoo", ["list", "verify"], "usage: python -m runners.zoo <command>; commands: list, verify, add"),
    ("contradictory", "zoo", ["add", "name=x"], "zoo add needs name=<name> and run=<run dir>"),
    ("contradictory", "zoo", ["add", "name=../evil", "run=/tmp"], "name='../evil': use letters, digits, '-' and '_'"),
    ("contradictory", "zoo", ["add", "name=x", "run=/nonexistent"], "run=/nonexistent: not a finished training run"),
    ("contradictory", "dataset", ["env=hopper", "behaviour=/nonexistent"], "behaviour=/nonexistent: not a finished"),
    ("contradictory", "bench", ["all", "quick=true"], "options (key=value) apply to one benchmark; name it instead"),
    ("contradictory", "bench", ["stochdqn", "act"], "one benchmark at a time, not 'stochdqn act'; choose one of:"),
    ("contradictory", "compare", ["tag=eval/mean_reward"], "no run directories given"),
    ("contradictory", "compare", ["/nonexistent/runs/*"], "no runs matched '/nonexistent/runs/*'"),
    ("contradictory", "train", [*DI, "agent.horizon=30"],
     "burn_in_length=5 + 1 + horizon=30 frames must fit in the world model's sequence_length[1]=21 blocks"),
    ("contradictory", "train", [*DI, "agent.stop_after_epochs=0"], "num_final_epochs=9 must be >= 0 and "
     "stop_after_epochs=0 >= 1 (or null)"),
    ("contradictory", "train", [*DI, "agent.optimizer_kwargs={weight_decay: 0.1}"],
     "optimizer_kwargs.weight_decay: set weight_decay= instead (the agent's own argument)"),
    ("contradictory", "train", ["agent=delta_iris", "env=breakout", "preset=tiny"],  # the tiny preset is Crafter's
     "env.kwargs {'length': 100} is not used by Atari envs"),
    ("contradictory", "train", ["agent=delta_iris", "env=cartpole", "preset=tiny"],  # ... and not CartPole's either
     "env 'CartPole-v1' does not take env.kwargs ['length']"),
]


def run_in_process(runner: str, argv: list[str], run_dir: Path) -> int:
    module = RUNNERS[runner]
    if runner == "train" and not any(a.startswith("resume=") for a in argv):
        given = {a.split("=", 1)[0] for a in argv}
        defaults = [f"run_dir={run_dir}", "progress_bar=false", "total_timesteps=50", "eval_freq=0"]
        argv = [*argv, *(d for d in defaults if d.split("=", 1)[0] not in given)]  # a short run if one slipped by
    return module.main(argv) if module is compare else run_main(module.main, argv)


@pytest.mark.parametrize(("category", "runner", "argv", "message"), BAD_CONFIG,
                         ids=[f"{c}-{r}-{' '.join(a)}" for c, r, a, _ in BAD_CONFIG])
def test_bad_configuration_exits_2_with_one_line_naming_the_value(
    category: str, runner: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # anything a runner might write by default lands here, where it is checked
    argv = [a.replace("/tmp", str(tmp_path)) if a.startswith(("run=", "/tmp")) else a for a in argv]
    code = run_in_process(runner, argv, tmp_path / "run")
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err, err
    assert err.startswith(f"error: {message}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused command wrote files"


def test_the_table_covers_every_runner_and_at_least_40_cases() -> None:
    assert {runner for _, runner, _, _ in BAD_CONFIG} == set(RUNNERS)
    assert len(BAD_CONFIG) >= 40


SUBPROCESS_CASES = [
    ("train", ["agent=radt", "env=breakout"], "radt needs a Box action space"),
    ("train", [*DQN, "learning_rate=inf"], "agent.learning_rate=inf must be a finite number"),
    ("evaluate", [PPO_ZOO, "device=tpu"], "device='tpu' is not allowed; choose one of: auto, cpu, cuda"),
    ("bench", ["stochdqn", "act"], "one benchmark at a time"),
]


@pytest.mark.parametrize(("runner", "argv", "message"), SUBPROCESS_CASES, ids=[r for r, _, _ in SUBPROCESS_CASES])
def test_real_command_exits_2_with_a_single_stderr_line(runner: str, argv: list[str], message: str,
                                                        tmp_path: Path) -> None:
    extra = [f"run_dir={tmp_path / 'run'}"] if runner == "train" else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", f"runners.{runner}", *argv, *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(("A.L.E", "[Powered"))]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not (tmp_path / "run").exists()
