"""Evaluation shared by the runners and the eval callback: SB3's ``evaluate_policy`` plus the env's own score.

``evaluate_policy`` counts episodes through the Monitor wrapper, so Atari returns are whole games even where a
training env ends episodes at a life loss. The infos at the end of each episode are kept so that the env family
can compute its own score (human-normalized for Atari, the Crafter score, success rate where ``is_success``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from envs.factory import env_score


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    score: dict[str, float] = field(default_factory=dict)
    deterministic: bool = True  # argmax actions (True) or actions sampled from the policy

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean_reward": self.mean,
            "std_reward": self.std,
            "episodes": len(self.returns),
            "mean_ep_length": float(np.mean(self.lengths)),
            "returns": self.returns,
            "score": self.score,
            "deterministic": self.deterministic,
        }


def resolve_deterministic(model: Any, deterministic: bool | None) -> bool:
    """``deterministic`` as given, or for None the agent's official test protocol: the argmax action (SB3's
    ``evaluate_policy`` default) unless the agent says otherwise (DIAMOND's and Δ-IRIS's test collectors sample)."""
    if deterministic is not None:
        return deterministic
    return bool(getattr(model, "official_eval_deterministic", True))


def evaluate(
    model: Any, env: VecEnv, n_episodes: int, env_cfg: dict[str, Any], deterministic: bool | None = None
) -> EvalResult:
    """Run ``n_episodes`` full episodes of ``model`` in ``env`` and compute returns, lengths and the env's score.

    ``deterministic=None`` follows the agent's official test protocol (:func:`resolve_deterministic`)."""
    deterministic = resolve_deterministic(model, deterministic)
    final_infos: list[dict[str, Any]] = []

    def keep_final_info(local_vars: dict[str, Any], _globals: dict[str, Any]) -> None:
        info = local_vars["info"]
        if "episode" in info:  # Monitor marks the end of a whole episode
            final_infos.append(info)

    returns, lengths = evaluate_policy(
        model,
        env,
        n_eval_episodes=n_episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
        callback=keep_final_info,
        warn=False,
    )
    returns = [float(r) for r in returns]
    return EvalResult(returns, [int(n) for n in lengths], env_score(env_cfg, returns, final_infos), deterministic)


class RandomPolicy:
    """Uniform random actions through SB3's predict interface (the random-policy reference of benchmarks and
    normalized scores)."""

    def __init__(self, action_space: Any) -> None:
        self.action_space = action_space

    def predict(
        self, obs: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        return np.array([self.action_space.sample() for _ in range(len(obs))]), None


def conditioned_env(model: Any, env: VecEnv) -> VecEnv:
    """``env`` as the agent acts in it: return-conditioned agents (DT, RADT) wrap it with their target return."""
    wrap = getattr(model, "wrap_env", None)
    return wrap(env) if callable(wrap) else env


def primary_score(score: dict[str, float]) -> tuple[str, float] | None:
    """The one number that stands for the env's own score (logged as ``eval/score``)."""
    for key in ("human_normalized_score", "crafter_score", "success_rate"):
        if key in score:
            return key, score[key]
    return None
