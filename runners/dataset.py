"""Generate the zoo's offline datasets (D4RL layout) and manage their behaviour policies.

    python -m runners.dataset env=<hopper|halfcheetah|walker2d> quality=<medium|medium-replay|expert|medium-expert>
                              [size=1000000] [seed=0] [out=datasets/<env>-<quality>.npz]
    python -m runners.dataset env=hopper behaviour=runs/behaviour/sac-hopper   # register a SAC run's policies
    python -m runners.dataset env=hopper references=true [episodes=100]         # random and expert returns

Datasets are rolled out from the behaviour policies in ``results/zoo`` (verified by sha256), so a fresh clone
regenerates them all, identically for the same seed: ``make datasets``. See :mod:`envs.datasets`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from envs.datasets import (
    ENVS,
    QUALITIES,
    dataset_path,
    episode_returns,
    generate_dataset,
    measure_reference_returns,
    register_behaviour,
    save_dataset,
    save_reference_returns,
)
from runners.cli import UsageError, check_keys, parse_args, parse_bool, parse_int, run_main

KEYS = ("env", "quality", "size", "seed", "out", "behaviour", "references", "episodes", "progress", "debug")


def main(argv: list[str]) -> int:
    _, pairs = parse_args(argv)
    check_keys(pairs, KEYS, "runners.dataset")
    env = pairs.get("env")
    if env not in ENVS:
        raise UsageError(f"env={env!r}; choose one of: {', '.join(ENVS)}")
    if "behaviour" in pairs:
        run = Path(pairs["behaviour"])
        if not (run / "results.json").is_file():
            raise UsageError(f"behaviour={run}: not a finished training run (no results.json)")
        for quality, name in register_behaviour(run, env).items():
            print(f"{quality}: zoo:{name}")
        return 0
    if parse_bool("references", pairs.get("references", "false")):
        episodes = parse_int("episodes", pairs.get("episodes", "100"), minimum=1)
        values = measure_reference_returns(env, episodes, parse_int("seed", pairs.get("seed", "0"), minimum=0))
        save_reference_returns(env, values)
        print(f"{env}: random {values['random']['mean']:.1f}, expert {values['expert']['mean']:.1f} "
              f"over {episodes} episodes")
        return 0
    quality = pairs.get("quality")
    if quality not in QUALITIES:
        raise UsageError(f"quality={quality!r}; choose one of: {', '.join(QUALITIES)}")
    size = parse_int("size", pairs.get("size", "1000000"), minimum=1)
    seed = parse_int("seed", pairs.get("seed", "0"), minimum=0)
    out = Path(pairs.get("out", str(dataset_path(env, quality))))
    data = generate_dataset(env, quality, size, seed, progress=parse_bool("progress", pairs.get("progress", "true")))
    save_dataset(data, out)
    returns = episode_returns(data)
    print(f"{out}: {len(data['rewards']):,} transitions, {len(returns):,} episodes, return mean {returns.mean():.1f} "
          f"min {returns.min():.1f} max {returns.max():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
