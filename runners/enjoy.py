"""Watch an agent: roll it out and record a video.

    python -m runners.enjoy model=<checkpoint dir|zoo:name> [video=videos/<name>.mp4] [episodes=1]
                            [max_steps=5000] [seed=0] [deterministic=auto] [fps=30] [target=<return, dt/radt>]

``deterministic=auto`` acts as the agent's official test protocol does (argmax; DIAMOND and Δ-IRIS sample).
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from agents.common.checkpoint import CheckpointError, read_meta
from agents.common.evaluation import conditioned_env, resolve_deterministic
from agents.common.manifest import resolve_model
from agents.common.registry import load_agent
from envs.factory import make_vec_env
from runners.cli import (
    UsageError,
    check_keys,
    parse_args,
    parse_deterministic,
    parse_device,
    parse_float,
    parse_int,
    run_main,
)

KEYS = ("model", "video", "episodes", "max_steps", "seed", "deterministic", "fps", "device", "debug", "target")


def record(model: object, env: object, episodes: int, max_steps: int, deterministic: bool) -> tuple[list, list]:
    """Roll out ``episodes`` episodes; returns the rendered frames and the episode returns."""
    frames, returns = [], []
    obs = env.reset()  # type: ignore[attr-defined]
    state, episode_start = None, np.ones((1,), dtype=bool)
    total = 0.0
    for _ in range(max_steps):
        frames.append(env.render())  # type: ignore[attr-defined]
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        obs, reward, done, infos = env.step(action)  # type: ignore[attr-defined]
        total += float(reward[0])
        episode_start = done
        if done[0] and "episode" in infos[0]:
            returns.append(float(infos[0]["episode"]["r"]))
            total = 0.0
            if len(returns) >= episodes:
                break
    return frames, returns


def main(argv: list[str]) -> int:
    _, pairs = parse_args(argv)
    check_keys(pairs, KEYS, "runners.enjoy")
    if "model" not in pairs:
        raise UsageError("missing model=<checkpoint dir or zoo:name>")
    path = resolve_model(pairs["model"])
    video = Path(pairs.get("video", f"videos/{path.name}.mp4"))
    if video.suffix not in (".mp4", ".gif"):
        raise UsageError(f"video={video}: the file must end in .mp4 or .gif")
    episodes = parse_int("episodes", pairs.get("episodes", "1"), minimum=1)
    max_steps = parse_int("max_steps", pairs.get("max_steps", "5000"), minimum=1)
    fps = parse_int("fps", pairs.get("fps", "30"), minimum=1)
    seed = parse_int("seed", pairs.get("seed", "0"), minimum=0)
    deterministic = parse_deterministic("deterministic", pairs.get("deterministic", "auto"))
    device = parse_device(pairs.get("device", "auto"))
    config = read_meta(path)["config"]
    if not config or "env" not in config:
        raise CheckpointError(f"'{path}' stores no env config; it was not saved by runners.train")
    env = make_vec_env(config["env"], n_envs=1, seed=seed, training=False, render_mode="rgb_array")
    model = load_agent(path, env=env, device=device)
    if "target" in pairs:
        if not hasattr(model, "wrap_env"):
            raise UsageError(f"target= applies to return-conditioned agents (dt, radt); {model.agent_id} is not one")
        env = model.wrap_env(env, target_return=parse_float("target", pairs["target"]))
    else:
        env = conditioned_env(model, env)  # dt/radt: conditioned on their default target return
    frames, returns = record(model, env, episodes, max_steps, resolve_deterministic(model, deterministic))
    env.close()
    video.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(video, [np.asarray(f, dtype=np.uint8) for f in frames], fps=fps)
    shown = ", ".join(f"{r:.1f}" for r in returns) or "no episode finished"
    print(f"wrote {video} ({len(frames)} frames); episode returns: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
