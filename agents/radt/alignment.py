"""RADT's evaluation protocol: how closely does the achieved return follow the target return?

Tanaka et al. 2024 (and github.com/CyberAgentAILab/radt, gym/evaluation/data_infos.json and the experiment configs)
evaluate 7 target returns evenly spaced between the 5th and 95th percentile of the dataset's episode returns, run
episodes at each, and report the absolute error ``|achieved - target|`` averaged over targets, on the normalized
score scale (``100 * (R - R_random) / (R_expert - R_random)``), beside the best normalized return reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.common.evaluation import evaluate

N_PAPER_TARGETS = 7


def paper_targets(dataset_info: dict[str, Any], n: int = N_PAPER_TARGETS) -> list[float]:
    """``n`` targets evenly spaced between the dataset's 5th and 95th percentile of episode returns."""
    return [float(x) for x in np.linspace(dataset_info["return_p5"], dataset_info["return_p95"], n)]


@dataclass
class AlignmentResult:
    """Achieved returns per target and the paper's metrics (normalized units where a normalizer is given)."""

    targets: list[float]
    returns: list[list[float]]  # per target, the return of every episode
    normalize: Callable[[float], float] = field(default=lambda r: r, repr=False)

    @property
    def achieved(self) -> list[float]:
        return [float(np.mean(r)) for r in self.returns]

    @property
    def absolute_errors(self) -> list[float]:
        """``|normalize(achieved) - normalize(target)|`` per target."""
        return [abs(self.normalize(a) - self.normalize(t)) for a, t in zip(self.achieved, self.targets, strict=True)]

    @property
    def mean_absolute_error(self) -> float:
        return float(np.mean(self.absolute_errors))

    @property
    def best_normalized_return(self) -> float:
        return float(max(self.normalize(a) for a in self.achieved))

    def as_dict(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "achieved": self.achieved,
            "achieved_std": [float(np.std(r)) for r in self.returns],
            "episodes_per_target": len(self.returns[0]) if self.returns else 0,
            "normalized_targets": [self.normalize(t) for t in self.targets],
            "normalized_achieved": [self.normalize(a) for a in self.achieved],
            "absolute_errors": self.absolute_errors,
            "mean_absolute_error": self.mean_absolute_error,
            "best_normalized_return": self.best_normalized_return,
        }


def evaluate_alignment(
    model: Any,
    env: Any,
    targets: Sequence[float],
    episodes: int,
    env_cfg: dict[str, Any],
    normalize: Callable[[float], float] | None = None,
) -> AlignmentResult:
    """Run ``episodes`` episodes of ``model`` conditioned on each target in ``targets`` (``model.wrap_env``)."""
    returns = []
    for target in targets:
        conditioned = model.wrap_env(env, target_return=target)
        returns.append(evaluate(model, conditioned, episodes, env_cfg).returns)
    return AlignmentResult(list(map(float, targets)), returns, normalize or (lambda r: r))
