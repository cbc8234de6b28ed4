"""Environments of the zoo. Importing the package registers the ALE games and ``zoo/Crafter-v1`` with gymnasium.

Build envs with ``envs.factory.make_env`` / ``make_vec_env`` (the one env factory), from an env config.
"""

import ale_py
import gymnasium as gym

import envs.crafter  # noqa: F401  (registers zoo/Crafter-v1)
import envs.large_action  # noqa: F401  (registers zoo/LargeAction-v0)

gym.register_envs(ale_py)
