"""``make demo``: the zoo in a few minutes on a laptop CPU.

1. trains two agents (SB3's DQN and PPO) briefly on CartPole-v1, with progress bars, TensorBoard logs and
   checkpoints, into ``runs/demo/<time>/``;
2. plots their evaluation curves side by side (``runs/demo/<time>/compare.png`` + a markdown table);
3. evaluates a checkpoint shipped in the zoo (``zoo:ppo-cartpole``, verified against its sha256 first);
4. prints how to open TensorBoard.

    python -m runners.demo [steps=20000]
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

from runners import compare, evaluate, train
from runners.cli import check_keys, parse_args, parse_int, run_main

AGENTS = ("dqn", "ppo")


def main(argv: list[str]) -> int:
    _, pairs = parse_args(argv)
    check_keys(pairs, ("steps", "debug"), "runners.demo")
    steps = parse_int("steps", pairs.get("steps", "20000"), minimum=1000)
    root = Path("runs") / "demo" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for agent in AGENTS:
        print(f"\n== training {agent} on CartPole-v1 for {steps} env steps")
        args = [f"agent={agent}", "env=cartpole", f"total_timesteps={steps}", f"eval_freq={steps // 10}",
                "eval_episodes=5", f"save_freq={steps // 2}", f"run_dir={root / agent}"]
        if run_main(train.main, args) != 0:
            return 1
    print("\n== comparing them")
    if compare.main([str(root / a) for a in AGENTS] + ["tag=eval/mean_reward", f"out={root / 'compare.png'}"]) != 0:
        return 1
    print("\n== evaluating a checkpoint from the zoo: zoo:ppo-cartpole")
    if run_main(evaluate.main, ["model=zoo:ppo-cartpole", "episodes=5"]) != 0:
        return 1
    print(f"\nTensorBoard: .venv/bin/tensorboard --logdir {root}   (then open http://localhost:6006)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
