"""The simulated surgical needle pick-up and hand-over task (SRT, Kim et al. 2024), registered with gymnasium as
``zoo/NeedleHandover-v0`` on import: :mod:`envs.needle.model` (the MuJoCo scene), :mod:`envs.needle.task` (the env:
spaces, units, ranges, reward), :mod:`envs.needle.expert` (the scripted expert) and :mod:`envs.needle.demos`
(recording and loading demonstrations).
"""

import gymnasium as gym

from envs.needle.demos import ENV_ID, demo_path, load_demos, record_demos, save_demos, stack_views
from envs.needle.expert import NeedleExpert
from envs.needle.model import CAMERAS
from envs.needle.task import CONTROL_HZ, MAX_EPISODE_STEPS, NeedleHandoverEnv

__all__ = [
    "CAMERAS", "CONTROL_HZ", "ENV_ID", "MAX_EPISODE_STEPS", "NeedleExpert", "NeedleHandoverEnv", "demo_path",
    "load_demos", "record_demos", "save_demos", "stack_views",
]

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="envs.needle.task:NeedleHandoverEnv", max_episode_steps=MAX_EPISODE_STEPS)
