"""Return-to-go conditioning for return-conditioned policies (Decision Transformer, RADT).

:class:`ReturnToGoVecEnv` wraps any VecEnv so that each observation comes with the return still to be collected:
``{"observation": obs, "return_to_go": [R]}``, ``R`` = the target at the start of an episode, then reduced by each
reward (``R_{t+1} = R_t - r_t``, as the Decision Transformer's evaluation does). A return-conditioned agent is thus
an ordinary SB3 policy over a Dict observation, and ``evaluate_policy``, the eval callback and the runners work
unchanged: the target return is a property of the env (:meth:`ReturnToGoVecEnv.set_target_return`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

OBS_KEY, RTG_KEY = "observation", "return_to_go"


def conditioned_space(observation_space: spaces.Box) -> spaces.Dict:
    """The Dict space of a return-conditioned observation over ``observation_space``."""
    return spaces.Dict(
        {OBS_KEY: observation_space, RTG_KEY: spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)}
    )


class ReturnToGoVecEnv(VecEnvWrapper):
    """Adds the return-to-go to the observations of ``venv`` (see the module docstring)."""

    def __init__(self, venv: VecEnv, target_return: float) -> None:
        if not isinstance(venv.observation_space, spaces.Box):
            raise TypeError(f"return-to-go conditioning needs a Box observation space, got {venv.observation_space}")
        super().__init__(venv, observation_space=conditioned_space(venv.observation_space))
        self.target_return = float(target_return)
        self.returns_to_go = np.full(self.num_envs, self.target_return, np.float32)

    def set_target_return(self, target_return: float) -> None:
        """Condition the episodes that start from now on on ``target_return``."""
        self.target_return = float(target_return)

    def _conditioned(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {OBS_KEY: obs, RTG_KEY: self.returns_to_go[:, None].copy()}

    def reset(self) -> dict[str, np.ndarray]:
        obs = self.venv.reset()
        self.returns_to_go[:] = self.target_return
        return self._conditioned(obs)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.returns_to_go -= rewards.astype(np.float32)
        for i, info in enumerate(infos):
            if "terminal_observation" in info:
                last = self.returns_to_go[i : i + 1].copy()
                info["terminal_observation"] = {OBS_KEY: info["terminal_observation"], RTG_KEY: last}
        self.returns_to_go[dones] = self.target_return  # the returned observation starts a new episode
        return self._conditioned(obs), rewards, dones, infos


def unwrap_conditioning(venv: VecEnv) -> VecEnv:
    """The env below any :class:`ReturnToGoVecEnv`."""
    while isinstance(venv, ReturnToGoVecEnv):
        venv = venv.venv
    return venv
