"""Environments of the zoo. Importing the package registers the ALE games, ``zoo/Crafter-v1``,
``zoo/LargeAction-v0`` and ``zoo/NeedleHandover-v0`` with gymnasium.

Build envs with ``envs.factory.make_env`` / ``make_vec_env`` (the one env factory), from an env config.
"""

import os

# headless offscreen rendering (the needle task's cameras) unless the user chose a backend: read at `import mujoco`
if "DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")

import ale_py  # noqa: E402
import gymnasium as gym

import envs.crafter  # noqa: F401  (registers zoo/Crafter-v1)
import envs.large_action  # noqa: F401  (registers zoo/LargeAction-v0)
import envs.needle  # noqa: F401  (registers zoo/NeedleHandover-v0)

gym.register_envs(ale_py)
