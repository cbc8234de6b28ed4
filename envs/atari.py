"""Atari environments: the Atari 100k preprocessing of DIAMOND/IRIS, SB3's standard preset, human-normalized scores.

Both presets start from the same ``<Game>NoFrameskip-v4`` env (no sticky actions, minimal action set, one frame
per ``step``) with SB3's ``Monitor`` directly above it, so ``info["episode"]`` always holds the true, unclipped
return of a whole game, however the layers above end episodes or clip rewards.

- ``"atari100k"`` (DIAMOND, Alonso et al. 2024; IRIS, Micheli et al. 2023): gymnasium's ``AtariPreprocessing``
  (1-30 no-ops at reset, action repeat 4 with a max over the last two frames, RGB resized to 64x64 with
  ``cv2.INTER_AREA``) -> ``uint8 (64, 64, 3)``. Rewards are not clipped here (agents clip or sign them).
- ``"sb3"``: SB3's ``AtariWrapper`` (84x84 grey, fire reset, clipped rewards when training); frames are stacked
  at the VecEnv level by ``envs.factory.make_vec_env``.

In both, a life loss ends the episode only for training envs. As in DIAMOND (``src/envs/env.py``, which warns that
gymnasium's ``terminal_on_life_loss=True`` would reset the game and show only the first life), the game then goes
on after the life loss: SB3's ``EpisodicLifeEnv`` reports ``terminated`` and its ``reset`` continues the game
(one no-op step) instead of restarting it, so every life is played and the true return reaches ``Monitor``.
"""

from __future__ import annotations

import ale_py
import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing
from stable_baselines3.common.atari_wrappers import AtariWrapper, EpisodicLifeEnv
from stable_baselines3.common.monitor import Monitor

gym.register_envs(ale_py)

PREPROCESSINGS = ("atari100k", "sb3")
DEFAULT_FRAME_SIZE = {"atari100k": 64, "sb3": 84}

# Random and human scores (random, human) of the 26 Atari 100k games, from DQN Zoo's Atari-57 table
# (google-deepmind/dqn_zoo, dqn_zoo/atari_data.py; Mnih et al. 2015, Badia et al. 2020), the same values as
# in the IRIS and DIAMOND papers. Human-normalized score = (score - random) / (human - random).
ATARI_RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "DemonAttack": (152.1, 1971.0),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Hero": (1027.0, 30826.4),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MsPacman": (307.3, 6951.6),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "RoadRunner": (11.5, 7845.0),
    "Seaquest": (68.4, 42054.7),
    "UpNDown": (533.4, 11693.2),
}

_SUFFIX = "NoFrameskip-v4"


def _known_games() -> dict[str, str]:
    """Lower-case game name without separators -> the game's CamelCase name, for every ``*NoFrameskip-v4`` id."""
    games = [k[: -len(_SUFFIX)] for k in gym.registry if k.endswith(_SUFFIX) and "/" not in k]
    return {g.lower(): g for g in games}


def atari_game(game_id: str) -> str:
    """The CamelCase game name of ``game_id``: "breakout", "Breakout", "BreakoutNoFrameskip-v4",
    "ALE/Breakout-v5" and "ms_pacman" all give "Breakout" / "MsPacman"; unknown games raise ValueError."""
    if not isinstance(game_id, str) or not game_id:
        raise ValueError(f"Atari game {game_id!r} must be a non-empty string like 'breakout' or 'ALE/Breakout-v5'")
    name = game_id.split("/")[-1]
    for suffix in (_SUFFIX, "Deterministic-v4", "-v4", "-v5", "-v0"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    key = name.replace("_", "").replace("-", "").lower()
    games = _known_games()
    if key not in games:
        few = ", ".join(sorted(g.lower() for g in ATARI_RANDOM_HUMAN)[:8])
        raise ValueError(
            f"unknown Atari game '{game_id}'; choose one of the {len(games)} ALE games, e.g. {few}, ... "
            "(as 'breakout', 'Breakout', 'BreakoutNoFrameskip-v4' or 'ALE/Breakout-v5')"
        )
    return games[key]


def atari_env_id(game_id: str) -> str:
    """The ``<Game>NoFrameskip-v4`` id of ``game_id`` (see ``atari_game``)."""
    return atari_game(game_id) + _SUFFIX


def make_atari(
    game_id: str,
    *,
    preprocessing: str = "atari100k",
    training: bool,
    seed: int,
    frame_size: int | None = None,
    noop_max: int = 30,
    frame_skip: int = 4,
    max_episode_frames: int = 108_000,
    frame_stack: int = 4,
    render_mode: str | None = None,
) -> gym.Env:
    """One preprocessed Atari env (see the module docstring), seeded with ``reset(seed=seed)``.

    :param game_id: the game, e.g. "breakout", "BreakoutNoFrameskip-v4" or "ALE/Breakout-v5".
    :param preprocessing: "atari100k" (64x64 RGB, DIAMOND/IRIS) or "sb3" (SB3's ``AtariWrapper``, 84x84 grey).
    :param training: a training env ends episodes on life loss (and, for "sb3", clips rewards to their sign);
        an evaluation env plays whole games with raw rewards.
    :param seed: seeds the emulator, the no-op starts and the action space.
    :param frame_size: side of the square frames; ``None`` picks 64 for "atari100k" and 84 for "sb3".
    :param noop_max: at most this many no-op actions at reset (1 to ``noop_max``; 0 disables them).
    :param frame_skip: each action is repeated this many frames (max-pooling the last two).
    :param max_episode_frames: the ALE truncates an episode after this many emulator frames (108,000 = 30 min).
    :param frame_stack: frames stacked by ``make_vec_env`` for "sb3" (``VecFrameStack``); "atari100k" envs return
        single frames (the world-model agents condition on their own history). Checked here, used there.
    :param render_mode: passed to the ALE ("rgb_array" or "human").
    """
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"unknown Atari preprocessing '{preprocessing}'; choose one of: {', '.join(PREPROCESSINGS)}")
    for key, value, low in (
        ("noop_max", noop_max, 0),
        ("frame_skip", frame_skip, 1),
        ("max_episode_frames", max_episode_frames, 1),
        ("frame_stack", frame_stack, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key}={value!r} must be an integer >= {low}")
    size = DEFAULT_FRAME_SIZE[preprocessing] if frame_size is None else frame_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"frame_size={frame_size!r} must be an integer >= 8 (or null for the preset's default)")
    env = gym.make(
        atari_env_id(game_id),
        max_num_frames_per_episode=max_episode_frames,
        repeat_action_probability=0.0,
        full_action_space=False,
        frameskip=1,
        render_mode=render_mode,
    )
    env = Monitor(env)
    if preprocessing == "atari100k":
        env = AtariPreprocessing(
            env,
            noop_max=noop_max,
            frame_skip=frame_skip,
            screen_size=size,
            terminal_on_life_loss=False,
            grayscale_obs=False,
            scale_obs=False,
        )
        if training:
            env = EpisodicLifeEnv(env)
    else:
        env = AtariWrapper(
            env,
            noop_max=noop_max,
            frame_skip=frame_skip,
            screen_size=size,
            terminal_on_life_loss=training,
            clip_reward=training,
        )
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def human_normalized_score(game: str, score: float) -> float:
    """``(score - random) / (human - random)`` for one of the 26 Atari 100k games (0 = random, 1 = human)."""
    name = atari_game(game)
    if name not in ATARI_RANDOM_HUMAN:
        raise ValueError(
            f"no random/human scores for Atari game '{game}'; the table covers the 26 Atari 100k games: "
            f"{', '.join(sorted(ATARI_RANDOM_HUMAN))}"
        )
    random, human = ATARI_RANDOM_HUMAN[name]
    return (float(score) - random) / (human - random)
