"""Expert demonstrations of the needle hand-over in the shared EpisodeBuffer format, with a JSON sidecar.

Step ``t`` of an episode holds: ``obs`` uint8 ``[3, H, W, 3]`` (the views in ``CAMERAS`` order: endoscope,
wrist_left, wrist_right) the action was taken in; ``act`` float32 ``[20]``: the expert's ABSOLUTE action in the
measured frame (see :mod:`envs.needle.task`); ``rew``: the stage after the step (0..4); ``end``: success (the
last step of every stored episode), ``trunc``: False; ``extra.pose`` float32 ``[20]``: the measured pose
(``obs["pose"]``) at that step. Only successful episodes are kept: episode seeds run ``seed, seed + 1, ...`` and a
failed seed is skipped (and listed in the sidecar), at most ``MAX_FAILURES`` of them.

The sidecar (same path, ``.json``) records the env id and kwargs, seed, episodes, attempts, failed seeds, success
rate, mean episode length, the camera order and the control rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.common.checkpoint import atomic_write_text
from agents.common.episode_buffer import EpisodeBuffer, EpisodeBuilder
from envs.needle.expert import NeedleExpert
from envs.needle.model import CAMERAS
from envs.needle.task import CONTROL_HZ, MAX_EPISODE_STEPS

ENV_ID = "zoo/NeedleHandover-v0"
DEMO_DIR = Path("datasets") / "needle"
MAX_FAILURES = 20


def demo_path(episodes: int, image_size: int, kinematic_error: float, seed: int) -> Path:
    """Default file: ``datasets/needle/demos-<episodes>ep-<image_size>px-ke<kinematic_error>-s<seed>.npz``."""
    return DEMO_DIR / f"demos-{episodes}ep-{image_size}px-ke{kinematic_error:g}-s{seed}.npz"


def stack_views(obs: dict[str, np.ndarray]) -> np.ndarray:
    """The three camera views of an observation as one uint8 array ``[3, H, W, 3]`` (``CAMERAS`` order)."""
    return np.stack([obs[name] for name in CAMERAS])


def record_demos(
    episodes: int, seed: int = 0, image_size: int = 224, kinematic_error: float = 0.0, progress: bool = True
) -> tuple[EpisodeBuffer, dict[str, Any]]:
    """Roll the scripted expert out until ``episodes`` successful episodes are recorded.

    :return: the buffer and the sidecar dict (see the module docstring).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r}; expected a positive integer")
    from tqdm import tqdm

    kwargs = {"image_size": int(image_size), "kinematic_error": float(kinematic_error)}
    env = gym.make(ENV_ID, **kwargs)
    expert = NeedleExpert(env)
    buffer = EpisodeBuffer((len(CAMERAS), image_size, image_size, 3), np.uint8, (20,), np.float32,
                           extras={"pose": ((20,), np.float32)})
    failed: list[int] = []
    lengths: list[int] = []
    attempt = seed
    bar = tqdm(total=episodes, unit="episode", disable=not progress, desc="needle expert demos")
    try:
        while buffer.num_episodes < episodes:
            if len(failed) > MAX_FAILURES:
                raise RuntimeError(f"the expert failed {len(failed)} episodes (seeds {failed}); not recording more")
            builder, obs = EpisodeBuilder(), env.reset(seed=attempt)[0]
            expert.reset()
            done = info = None
            while not done:
                action = expert(obs)
                next_obs, reward, terminated, truncated, info = env.step(action)
                builder.add(stack_views(obs), action, reward, terminated, truncated, {"pose": obs["pose"]})
                obs, done = next_obs, terminated or truncated
            episode = builder.build()
            if info["is_success"]:
                buffer.add_episode(episode)
                lengths.append(len(episode))
                bar.update(1)
            else:
                failed.append(attempt)
            attempt += 1
    finally:
        bar.close()
        env.close()
    sidecar = {
        "env_id": ENV_ID, "env_kwargs": kwargs, "seed": seed, "episodes": episodes, "attempts": attempt - seed,
        "failed_seeds": failed, "success_rate": episodes / (attempt - seed), "mean_length": float(np.mean(lengths)),
        "max_episode_steps": MAX_EPISODE_STEPS, "control_hz": CONTROL_HZ, "cameras": list(CAMERAS),
    }
    return buffer, sidecar


def save_demos(buffer: EpisodeBuffer, sidecar: dict[str, Any], path: str | Path) -> Path:
    """Write the buffer (``path``, .npz) and its sidecar (``.json`` beside it), each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer.save(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return path


def load_demos(path: str | Path) -> tuple[EpisodeBuffer, dict[str, Any]]:
    """The buffer and sidecar written by :func:`save_demos`; a missing sidecar or a wrong layout is refused."""
    path = Path(path)
    side = path.with_suffix(".json")
    if not side.is_file():
        raise FileNotFoundError(f"no sidecar '{side}' beside the demonstrations '{path}'; record them with "
                                "python -m runners.demos env=needle")
    buffer = EpisodeBuffer.load(path)
    sidecar = json.loads(side.read_text())
    size = sidecar["env_kwargs"]["image_size"]
    expected = {"obs": (len(CAMERAS), size, size, 3), "act": (20,), "extra.pose": (20,)}
    for key, shape in expected.items():
        if buffer.spec[key][0] != shape:
            raise ValueError(f"'{path}': '{key}' has shape {buffer.spec[key][0]} per step; expected {shape}")
    return buffer, sidecar
