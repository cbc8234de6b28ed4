"""The zoo's agent registry: agent id -> class, default config, and the spaces it can handle.

Adding an agent is one :class:`AgentSpec` entry here plus one config file ``runners/configs/agent/<id>.yaml``
holding its default hyperparameters (the keyword arguments of its constructor). Classes are imported lazily, so
listing the zoo does not import every agent's dependencies.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space

from agents.common.checkpoint import CheckpointError, read_meta
from agents.common.spaces import describe_space


@dataclass(frozen=True)
class AgentSpec:
    """What the zoo knows about an agent before importing it.

    :param id: the registry id used on the command line (``agent=<id>``)
    :param target: ``module:Class`` of the implementation
    :param action_spaces: names of the gymnasium action spaces it supports
    :param learns_from: ``online`` (interacts with the env), ``offline`` (a dataset) or ``demonstrations``
    :param paper: the paper it implements
    :param observation_spaces: names of the observation spaces it supports (None: any)
    :param hint: what to do when the env's action space does not fit (appended to the error)
    :param image_observations: its observations must be uint8 images (a 3-D ``Box`` of 0..255, channels first or
        last): the world-model agents, which store frames as uint8 (a float frame, NaN included, is refused)
    """

    id: str
    target: str
    action_spaces: tuple[str, ...]
    learns_from: str
    paper: str
    observation_spaces: tuple[str, ...] | None = None
    hint: str = ""
    image_observations: bool = False

    @property
    def cls(self) -> type:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


DISCRETIZE_HINT = "; discretize its Box actions with env.discretize=<levels per dimension>"

REGISTRY: dict[str, AgentSpec] = {
    spec.id: spec
    for spec in (
        AgentSpec("dqn", "agents.baselines:DQN", ("Discrete",), "online", "Mnih et al. 2015 (SB3 baseline)"),
        AgentSpec(
            "ppo",
            "agents.baselines:PPO",
            ("Discrete", "Box", "MultiDiscrete", "MultiBinary"),
            "online",
            "Schulman et al. 2017 (SB3 baseline)",
        ),
        AgentSpec("sac", "agents.baselines:SAC", ("Box",), "online", "Haarnoja et al. 2018 (SB3 baseline)"),
        *(
            AgentSpec(agent_id, f"agents.stochdqn.stochdqn:{cls}", ("Discrete",), "online", paper,
                      observation_spaces=("Box",), hint=DISCRETIZE_HINT)
            for agent_id, cls, paper in (
                ("stochdqn", "StochDQN", "Fourati et al. 2024, Stochastic Q-learning (StochDQN)"),
                ("stochddqn", "StochDDQN", "Fourati et al. 2024, Stochastic Q-learning (StochDDQN)"),
                ("fulldqn", "FullDQN", "DQN with the full max on StochDQN's Q-network (baseline)"),
                ("fullddqn", "FullDDQN", "Double DQN with the full max on StochDQN's Q-network (baseline)"),
            )
        ),
        AgentSpec("dt", "agents.radt.agent:DT", ("Box",), "offline", "Chen et al. 2021, Decision Transformer",
                  observation_spaces=("Box",)),
        AgentSpec("radt", "agents.radt.agent:RADT", ("Box",), "offline",
                  "Tanaka et al. 2024, Return-Aligned Decision Transformer", observation_spaces=("Box",)),
        AgentSpec("act", "agents.act.agent:ACT", ("Box",), "demonstrations",
                  "Zhao et al. 2023 (ACT) as in Kim et al. 2024 (SRT)", observation_spaces=("Dict",)),
        AgentSpec("diamond", "agents.diamond.agent:Diamond", ("Discrete",), "online",
                  "Alonso et al. 2024, DIAMOND: Diffusion for World Modeling", observation_spaces=("Box",),
                  image_observations=True),
        AgentSpec("delta_iris", "agents.delta_iris.agent:DeltaIris", ("Discrete",), "online",
                  "Micheli et al. 2024, Δ-IRIS: Efficient World Models with Context-Aware Tokenization",
                  observation_spaces=("Box",), image_observations=True),
        AgentSpec("stochq", "agents.stochdqn.tabular:StochQLearning", ("Discrete",), "online",
                  "Fourati et al. 2024, Stochastic Q-learning (tabular)", observation_spaces=("Discrete",)),
    )
}


class UnknownAgentError(ValueError):
    pass


class IncompatibleEnvError(ValueError):
    pass


def get_spec(agent_id: str) -> AgentSpec:
    if agent_id not in REGISTRY:
        raise UnknownAgentError(f"unknown agent '{agent_id}'; choose one of: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[agent_id]


def check_compatible(agent_id: str, observation_space: spaces.Space, action_space: spaces.Space, env_id: str) -> None:
    """Raise IncompatibleEnvError when the agent cannot act in an env with these spaces."""
    spec = get_spec(agent_id)
    if type(action_space).__name__ not in spec.action_spaces:
        needed = " or ".join(spec.action_spaces)
        hint = spec.hint if isinstance(action_space, spaces.Box) else ""
        raise IncompatibleEnvError(
            f"{agent_id} needs a {needed} action space; {env_id} has {describe_space(action_space)}{hint}"
        )
    if spec.observation_spaces and type(observation_space).__name__ not in spec.observation_spaces:
        needed = " or ".join(spec.observation_spaces)
        raise IncompatibleEnvError(
            f"{agent_id} needs a {needed} observation space; {env_id} has {describe_space(observation_space)}"
        )
    if spec.image_observations and not is_image_space(observation_space, check_channels=False):
        raise IncompatibleEnvError(
            f"{agent_id} needs uint8 image observations (a Box of 0..255 of shape (H, W, 3) or (3, H, W)); {env_id} "
            f"has {describe_space(observation_space)}"
        )


def default_policy(observation_space: spaces.Space) -> str:
    """SB3 policy name for an observation space: CnnPolicy for images, MultiInputPolicy for dicts."""
    if isinstance(observation_space, spaces.Dict):
        return "MultiInputPolicy"
    if is_image_space(observation_space, check_channels=False):
        return "CnnPolicy"
    return "MlpPolicy"


def make_agent(
    agent_id: str, env: Any, hyperparams: dict[str, Any], *, seed: int, device: str = "auto", verbose: int = 0
) -> Any:
    """Build a registered agent for ``env`` from its JSON hyperparameters (``policy: auto`` is resolved here)."""
    spec = get_spec(agent_id)
    check_compatible(agent_id, env.observation_space, env.action_space, _env_name(env))
    hyperparams = dict(hyperparams)
    policy = hyperparams.pop("policy", "auto")
    if policy == "auto":
        policy = default_policy(env.observation_space)
    return spec.cls(policy, env, seed=seed, device=device, verbose=verbose, **hyperparams)


def load_agent(path: str | Path, env: Any = None, device: str = "auto", **kwargs: Any) -> Any:
    """Load any zoo checkpoint: the agent class is taken from its (verified) meta.json."""
    agent_id = read_meta(path)["agent"]
    try:
        spec = get_spec(agent_id)
    except UnknownAgentError as e:
        raise CheckpointError(f"'{path}' holds {e}") from None
    return spec.cls.load(path, env=env, device=device, **kwargs)


def _env_name(env: Any) -> str:
    try:
        spec = env.get_attr("spec")[0] if hasattr(env, "get_attr") else env.spec
        return spec.id if spec is not None else type(env).__name__
    except (AttributeError, IndexError):
        return type(env).__name__
