"""Crafter (Hafner 2021, Benchmarking the Spectrum of Agent Capabilities) as a gymnasium env, and its score.

``crafter.Env`` speaks the old gym API (``done`` only, no seeding through ``reset``); ``CrafterEnv`` gives it the
gymnasium one: ``terminated`` when the player dies (crafter's ``info["discount"] == 0``), ``truncated`` when the
episode reaches ``length`` steps alive. Registered as ``zoo/Crafter-v1``.

Determinism: crafter 1.8.3 keeps the objects of each world chunk in Python sets and balances creatures by picking
from them, so its dynamics followed the objects' memory addresses (two envs with the same seed and actions parted
after a few dozen steps, even in one process). :func:`deterministic_object_hashes` gives every object a hash that is
its creation index in its world, so the same seed and actions now give the same episode in any process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import crafter
import gymnasium as gym
import numpy as np
from crafter import constants

ENV_ID = "zoo/Crafter-v1"


def deterministic_object_hashes() -> None:
    """Hash crafter's objects by their creation index within their world (see the module docstring); idempotent."""
    from crafter import engine, objects

    if getattr(objects.Object, "_zoo_deterministic", False):
        return
    object_init, world_reset = objects.Object.__init__, engine.World.reset

    def __init__(self: Any, world: Any, pos: Any) -> None:
        object_init(self, world, pos)
        world._zoo_objects_created = getattr(world, "_zoo_objects_created", 0) + 1
        self._zoo_index = world._zoo_objects_created

    def reset(self: Any, seed: Any = None) -> None:
        world_reset(self, seed)
        self._zoo_objects_created = 0

    objects.Object.__init__ = __init__
    objects.Object.__hash__ = lambda self: self._zoo_index
    objects.Object._zoo_deterministic = True
    engine.World.reset = reset


deterministic_object_hashes()
# The 22 achievements of the Crafter paper (Table F.1), in crafter's own order.
CRAFTER_ACHIEVEMENTS: tuple[str, ...] = tuple(constants.achievements)


class CrafterEnv(gym.Env[np.ndarray, np.int64]):
    """Crafter with the gymnasium API: ``uint8 (64, 64, 3)`` frames, ``Discrete(17)`` actions, reward +1 per
    achievement unlocked for the first time in the episode and +/-0.1 per health point gained/lost.

    ``info`` at every step carries crafter's keys: ``achievements`` (dict name -> count this episode),
    ``inventory``, ``discount`` (0 when the player died), ``semantic``, ``player_pos`` and ``reward``.

    :param area: size of the world in cells.
    :param view: the agent's view in cells (the bottom rows show the inventory).
    :param size: the rendered frame size in pixels (the observation is ``size + (3,)``).
    :param reward: when False every reward is 0 (``info["reward"]`` still holds it).
    :param length: episodes are truncated after this many steps (crafter's 10,000 by default).
    :param seed: world seed until ``reset(seed=...)`` gives another one; None draws one at random.
    :param render_mode: only "rgb_array" (``render()`` returns the current frame) or None.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        area: Sequence[int] = (64, 64),
        view: Sequence[int] = (9, 9),
        size: Sequence[int] = (64, 64),
        reward: bool = True,
        length: int = 10_000,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported by Crafter; choose 'rgb_array' or None")
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length={length!r} must be an integer >= 1")
        self._env = crafter.Env(
            area=tuple(area), view=tuple(view), size=tuple(size), reward=reward, length=length, seed=seed
        )
        self.length = length
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (*tuple(size), 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(constants.actions))
        self._obs: np.ndarray | None = None

    @property
    def action_names(self) -> list[str]:
        """Crafter's names of the 17 actions, by index."""
        return list(constants.actions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            # crafter seeds world generation with hash((seed, episode)); pinned crafter==1.8.3 keeps both here.
            self._env._seed = int(seed)
            self._env._episode = 0
        self._obs = self._env.reset()
        return self._obs, {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("CrafterEnv.step() called before reset()")
        obs, reward, done, info = self._env.step(int(action))
        info["player_pos"] = info["player_pos"].copy()  # crafter returns the player's own, mutable array
        terminated = info["discount"] == 0.0  # the player died
        truncated = bool(done) and not terminated  # the length limit ended the episode
        self._obs = obs
        return obs, float(reward), bool(terminated), truncated, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The current frame as an ``uint8 (H, W, 3)`` array (``None`` before the first reset)."""
        return None if self._obs is None else self._obs.copy()


def crafter_score(success_rates_percent: Mapping[str, float] | Sequence[float]) -> float:
    """The Crafter score: ``exp(mean_i ln(1 + s_i)) - 1`` over the success rates ``s_i`` in percent
    (Hafner 2021, Eq. 1), a geometric mean that rewards unlocking hard achievements at all."""
    rates = list(
        success_rates_percent.values() if isinstance(success_rates_percent, Mapping) else success_rates_percent
    )
    if not rates:
        raise ValueError("crafter_score needs at least one success rate (the paper uses all 22 achievements)")
    for rate in rates:
        if not 0.0 <= float(rate) <= 100.0:
            raise ValueError(f"success rate {rate!r} is out of range; rates are percentages in [0, 100]")
    return math.exp(sum(math.log1p(float(r)) for r in rates) / len(rates)) - 1.0


def achievement_success_rates(episode_achievements: Sequence[Mapping[str, int]]) -> dict[str, float]:
    """Percent of the episodes in which each of the 22 achievements was unlocked at least once.

    ``episode_achievements`` holds one dict per episode, ``info["achievements"]`` at the episode's last step.
    """
    if not episode_achievements:
        raise ValueError("achievement_success_rates needs at least one episode, got none")
    unknown = sorted({k for ep in episode_achievements for k in ep} - set(CRAFTER_ACHIEVEMENTS))
    if unknown:
        raise ValueError(f"unknown achievement '{unknown[0]}'; Crafter's are: {', '.join(CRAFTER_ACHIEVEMENTS)}")
    n = len(episode_achievements)
    return {
        name: 100.0 * sum(1 for ep in episode_achievements if ep.get(name, 0) > 0) / n for name in CRAFTER_ACHIEVEMENTS
    }


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.crafter:CrafterEnv")
