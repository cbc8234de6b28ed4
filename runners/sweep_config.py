"""The config of ``hydra/sweeper=optuna`` in the zoo (runners/sweep.py): hydra-optuna-sweeper's own config with the
zoo's sweeper as target, ``direction: maximize``, ``n_jobs: 1``, and a pruner chosen with ``hydra/sweeper/pruner=``
(Optuna's pruners; their steps are env steps). Importing this module registers the configs in Hydra's ConfigStore,
under names that the plugin's own registration (re-run when Hydra scans its plugins) does not overwrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import Direction, OptunaSweeperConf
from omegaconf import MISSING

SWEEPER = "zoo_optuna"  # what hydra/sweeper=optuna composes


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class PercentilePrunerConf:
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class ThresholdPrunerConf:
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


PRUNERS = {"median": MedianPrunerConf, "percentile": PercentilePrunerConf, "successive_halving":
           SuccessiveHalvingPrunerConf, "hyperband": HyperbandPrunerConf, "threshold": ThresholdPrunerConf,
           "nop": NopPrunerConf}


@dataclass
class ZooOptunaSweeperConf(OptunaSweeperConf):
    """The plugin's ``hydra/sweeper=optuna`` config with the zoo's sweeper, a pruner and the zoo's defaults."""

    _target_: str = "runners.sweep.ZooOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    direction: Any = Direction.maximize
    n_jobs: int = 1  # trials asked at a time; they run one after another in this process
    pruner: Any = MISSING


ConfigStore.instance().store(group="hydra/sweeper", name=SWEEPER, node=ZooOptunaSweeperConf, provider="zoo")
for _name, _node in PRUNERS.items():
    ConfigStore.instance().store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="zoo")
