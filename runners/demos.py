"""Record scripted-expert demonstrations of the needle hand-over (for the ``act`` agent).

    python -m runners.demos env=needle episodes=50 [seed=0] [image_size=224] [kinematic_error=0]
                            [out=datasets/needle/demos-<episodes>ep-<image_size>px-ke<kinematic_error>-s<seed>.npz]
                            [progress=true]

Only successful episodes are kept (a failed seed is skipped and counted); the file is an
``agents.common.episode_buffer.EpisodeBuffer`` .npz with a JSON sidecar beside it, both written atomically.
See :mod:`envs.needle.demos` for the layout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runners.cli import UsageError, check_keys, parse_args, parse_bool, parse_float, parse_int, run_main

ENVS = ("needle",)
KEYS = ("env", "episodes", "seed", "image_size", "kinematic_error", "out", "progress", "debug")


def main(argv: list[str]) -> int:
    _, pairs = parse_args(argv)
    check_keys(pairs, KEYS, "runners.demos")
    env = pairs.get("env")
    if env not in ENVS:
        raise UsageError(f"env={env!r}; choose one of: {', '.join(ENVS)}")
    episodes = parse_int("episodes", pairs.get("episodes", "50"), minimum=1)
    seed = parse_int("seed", pairs.get("seed", "0"), minimum=0)
    image_size = parse_int("image_size", pairs.get("image_size", "224"), minimum=16)
    if image_size > 1024:
        raise UsageError(f"image_size={image_size} must be <= 1024")
    kinematic_error = parse_float("kinematic_error", pairs.get("kinematic_error", "0"))
    if not 0.0 <= kinematic_error <= 0.05:
        raise UsageError(f"kinematic_error={kinematic_error:g} must be in [0, 0.05] (metres)")
    progress = parse_bool("progress", pairs.get("progress", "true"))

    from envs.needle import demo_path, record_demos, save_demos

    out = Path(pairs.get("out") or demo_path(episodes, image_size, kinematic_error, seed))
    buffer, sidecar = record_demos(episodes, seed, image_size, kinematic_error, progress=progress)
    save_demos(buffer, sidecar, out)
    print(f"{out}: {buffer.num_episodes} episodes, {buffer.num_steps} steps (mean length "
          f"{sidecar['mean_length']:.1f}), expert success {sidecar['success_rate']:.0%} "
          f"({len(sidecar['failed_seeds'])} failed of {sidecar['attempts']} attempts), "
          f"{out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
