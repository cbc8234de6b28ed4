"""Hyperparameter sweeps: an Optuna study of training runs, pruned on ``eval/mean_reward``.

    python -m runners.train -m agent=ppo env=cartpole hydra/sweeper=optuna hydra.sweeper.n_trials=20 \\
        learning_rate='tag(log,interval(1e-4,1e-3))' agent.n_steps='choice(256,512,1024)' [key=value ...]

Every ``key=value`` of a single run is allowed. A value written as a Hydra sweep (``interval(a,b)``,
``tag(log,interval(a,b))``, ``choice(a,b)``, ``range(a,b,step)``, ``a,b,c``) is a dimension of the search space,
read into an Optuna distribution by hydra-optuna-sweeper. The study's options: ``hydra.sweeper.<key>``
(``n_trials``, ``n_jobs``, ``direction``, ``study_name``, ``storage``); ``hydra/sweeper/sampler=tpe|random|cmaes|
grid|...`` with ``hydra.sweeper.sampler.<key>``; the zoo's ``hydra/sweeper/pruner=median`` (the default),
``percentile``, ``successive_halving``, ``hyperband``, ``threshold`` or ``nop`` with ``hydra.sweeper.pruner.<key>``
(runners/sweep_config.py; steps are env steps); ``hydra.sweep.dir`` (default ``runs/sweeps/<study>``).

Under the sweep directory:

- ``optuna.db``: the study (sqlite, unless ``hydra.sweeper.storage`` names another), called ``<agent>_<env>`` unless
  ``hydra.sweeper.study_name`` says otherwise. Running the same command again resumes it: it runs the trials still
  needed for ``n_trials`` finished (complete or pruned) ones. A trial left running by an interrupted sweep is marked
  failed and does not count. The study records the command's arguments and refuses other ones, and one process at
  a time holds the directory (``.lock``).
- ``trial_<n>/``: trial n, a normal run directory (``config.yaml``, ``tb/``, ``checkpoints/``, ``final/``,
  ``results.json``); ``tensorboard --logdir <sweep dir>`` shows the trials side by side.
- ``optimization_results.yaml``: the best trial's parameters, value and run directory.

The objective is the final evaluation's ``eval/mean_reward`` (``results.json``), maximized by default.

How pruning works. hydra-optuna-sweeper asks Optuna for trials, hands them to a Hydra launcher as opaque jobs and
tells Optuna their return values: no job can report an intermediate value or learn that it should stop. So the zoo
runs the jobs itself. :class:`ZooOptunaSweeper` subclasses the plugin's ``OptunaSweeperImpl``, keeping its parsing of
the search space, its samplers (grid included) and its trial configuration, and replaces the launcher by a
:class:`TrialRunner` that trains each trial in this process with :class:`runners.train.Trainer`, adding a
:class:`PruningCallback` after the run's evaluation. At every periodic evaluation the callback reports
``eval/mean_reward`` at that env step to the trial (``trial.report``, written to the study's storage) and asks the
study's pruner (``trial.should_prune``, which compares it with the other trials' values in the storage). When the
pruner says prune, the callback returns False: the learn loop of SB3 (and of every zoo agent) stops after that step,
the run saves its final model and ``results.json`` like any run, and the sweeper tells the study the trial was
PRUNED (its value: the last one reported). A trial stopped by a fault (a NaN) is told FAILED and the sweep goes on;
bad input stops the sweep before any trial (exit 2).

hydra-optuna-sweeper 1.2.0 allows optuna 2.x only, whose sqlite storage needs SQLAlchemy 1.4: setup.cfg pins
``sqlalchemy<2`` beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import Trial, TrialState
from stable_baselines3.common.callbacks import BaseCallback

from agents.common.callbacks import EvalCallback, TrainingFault
from agents.common.checkpoint import atomic_write_text
from runners.cli import UsageError, parse_args
from runners.config import CONFIG_DIR, GROUPS, compose_train_config
from runners.sweep_config import SWEEPER
from runners.train import Trainer

MULTIRUN = ("-m", "--multirun")
HYDRA_KEYS = ("hydra/sweeper", "hydra/sweeper/sampler", "hydra/sweeper/pruner", "hydra.sweeper.<key>",
              "hydra.sweep.dir")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class PruningCallback(BaseCallback):
    """After each periodic evaluation: report ``eval/mean_reward`` to the trial, stop the run if it is to be pruned.

    :param trial: the Optuna trial of this run; :meth:`following` attaches the run's :class:`EvalCallback`
    :param total_timesteps: the run's budget: an evaluation there is reported, but the pruner is not asked (the run
        is complete)
    """

    def __init__(self, trial: Trial, total_timesteps: int) -> None:
        super().__init__()
        self.trial = trial
        self.total_timesteps = total_timesteps
        self.evaluation: EvalCallback | None = None
        self.pruned_at: int | None = None

    def following(self, evaluation: EvalCallback) -> PruningCallback:
        self.evaluation = evaluation
        return self

    def _on_step(self) -> bool:
        evaluation = self.evaluation
        if evaluation is None or evaluation.last_result is None or evaluation.last_eval_step != self.num_timesteps:
            return True  # no evaluation at this step
        self.trial.report(evaluation.last_result.mean, self.num_timesteps)
        if self.num_timesteps < self.total_timesteps and self.trial.should_prune():
            self.pruned_at = self.num_timesteps
            return False
        return True


@dataclass
class TrialOutcome:
    value: float  # the final eval/mean_reward
    pruned_at: int | None  # the env step where the pruner stopped the run, None if it ran to the end
    run_dir: Path


class TrialRunner:
    """Trains the trials of a sweep in this process, each in a normal run directory ``<sweep_dir>/trial_<n>``.

    :param base: the arguments that are not swept or fixed by the sweeper (agent, env, preset)
    """

    def __init__(self, base: dict[str, str], sweep_dir: Path) -> None:
        self.base = base
        self.sweep_dir = sweep_dir

    def config(self, overrides: Sequence[str], run_dir: Path | None = None) -> DictConfig:
        """The run's config (UsageError for a bad value, as for a single run)."""
        pairs = {**self.base, **dict(o.split("=", 1) for o in overrides)}
        if run_dir is not None:
            pairs["run_dir"] = str(run_dir)
        return compose_train_config([], pairs)

    def __call__(self, overrides: Sequence[str], trial: Trial) -> TrialOutcome:
        run_dir = self.sweep_dir / f"trial_{trial.number}"
        cfg = self.config(overrides, run_dir)
        trainer = Trainer(cfg)
        run_dir.mkdir(parents=True, exist_ok=False)  # trial numbers are never reused
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        trainer.attach(run_dir)
        pruning = PruningCallback(trial, cfg.total_timesteps)
        trainer.after_eval = (pruning.following,)
        try:
            summary = trainer.train()
        except BaseException:  # a fault (NaN): the sweep goes on without this trial's env processes
            trainer.close()
            raise
        return TrialOutcome(float(summary["eval"]["mean_reward"]), pruning.pruned_at, run_dir)


def probe_values(distribution: BaseDistribution) -> list[Any]:
    """The values of a search-space dimension that are checked before the study starts: every choice, or both ends."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]  # type: ignore[attr-defined]


class ZooOptunaSweeper(OptunaSweeperImpl):
    """hydra-optuna-sweeper's sweeper, run by the zoo: trials train in this process with pruning (see the module).

    Takes the plugin's arguments plus ``pruner`` (an ``optuna.pruners.BasePruner``). ``setup``'s ``task_function``
    is a :class:`TrialRunner`; ``config.hydra.sweep.dir`` is the sweep directory.
    """

    def __init__(self, *args: Any, pruner: optuna.pruners.BasePruner, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pruner = pruner

    def setup(self, *, hydra_context: Any, task_function: TrialRunner, config: DictConfig) -> None:  # type: ignore
        self.config, self.hydra_context, self.runner = config, hydra_context, task_function
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + arguments)
        space = {name: dist for name, dist in space.items() if name not in fixed}
        self.check(space, fixed)
        grid = isinstance(self.sampler, functools.partial) and self.sampler.func is optuna.samplers.GridSampler
        if grid:  # as the plugin: the grid is built from the discrete dimensions and bounds the number of trials
            choices = {name: self._to_grid_sampler_choices(dist) for name, dist in space.items()}
            self.sampler = self.sampler(choices)
            self.n_trials = min(self.n_trials, math.prod(len(c) for c in choices.values()))
        with hold(self.sweep_dir):
            self.run_study(space, fixed, arguments, grid)

    def run_study(
        self, space: dict[str, BaseDistribution], fixed: dict[str, Any], arguments: list[str], grid: bool
    ) -> None:
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    pruner=self.pruner, directions=self._get_directions(), load_if_exists=True)
        self.check_same_arguments(study, arguments)
        for old in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            print(f"trial {old.number} was interrupted: marked failed")
            study.tell(old.number, state=TrialState.FAIL)
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        print(f"study {study.study_name} ({self.storage}): {done} of {self.n_trials} trials finished")
        todo = self.n_trials - done  # a failed trial is not replaced in this invocation (the next one will)
        while todo > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, todo))]
            for trial, overrides in zip(trials, self._configure_trials(trials, space, fixed), strict=True):
                self.run_trial(study, trial, list(overrides), grid)
            todo -= len(trials)
        self.write_results(study)

    def check(self, space: dict[str, BaseDistribution], fixed: dict[str, Any]) -> None:
        """Compose the config of every choice and both ends of every range, so that a bad value stops the sweep
        here, before the study is touched (UsageError)."""
        first = {name: probe_values(dist)[0] for name, dist in space.items()}
        cfg = self.runner.config([f"{k}={_override_value(v)}" for k, v in {**fixed, **first}.items()])
        for name, dist in space.items():
            for value in probe_values(dist)[1:]:
                self.runner.config([f"{k}={_override_value(v)}" for k, v in {**fixed, **first, name: value}.items()])
        if not 0 < cfg.eval_freq < cfg.total_timesteps:
            print(f"note: eval_freq={cfg.eval_freq} leaves no evaluation before a trial ends: nothing to prune on")

    def check_same_arguments(self, study: optuna.Study, arguments: list[str]) -> None:
        given = sorted([*(f"{k}={v}" for k, v in self.runner.base.items()), *arguments])
        recorded = study.user_attrs.get("zoo_arguments")
        if recorded is None:
            study.set_user_attr("zoo_arguments", given)
        elif recorded != given:
            raise UsageError(f"study {study.study_name} in {self.storage} was started with other arguments "
                             f"({' '.join(recorded)}); rerun those, or choose hydra.sweeper.study_name= or "
                             "hydra.sweep.dir=")

    def run_trial(self, study: optuna.Study, trial: Trial, overrides: list[str], grid: bool) -> None:
        try:
            outcome = self.runner(overrides, trial)
        except TrainingFault as e:  # a NaN, a full disk: this point of the space failed, the sweep goes on
            study.tell(trial, state=TrialState.FAIL)
            print(f"trial {trial.number} failed ({_params(trial)}): {e}")
            return
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        try:
            if outcome.pruned_at is not None:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, outcome.value)
        except RuntimeError as e:  # the grid sampler stops the study once the grid is done (as in the plugin)
            if not (grid and "Study.stop" in str(e)):
                raise
        result = f"pruned at step {outcome.pruned_at}" if outcome.pruned_at is not None else "complete"
        print(f"trial {trial.number} {result}: eval/mean_reward {outcome.value:.2f} ({_params(trial)}); "
              f"run directory {outcome.run_dir}")

    def write_results(self, study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete or len(study.directions) > 1:
            print(f"no complete trial yet in {study.study_name}" if not complete else "several objectives: "
                  "see the study")
            return
        best = study.best_trial
        results = {"name": "optuna", "study_name": study.study_name, "storage": self.storage,
                   "best_trial": best.number, "best_params": best.params, "best_value": best.value,
                   "best_run_dir": str(self.sweep_dir / f"trial_{best.number}")}
        atomic_write_text(self.sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
        print(f"best: trial {best.number}, eval/mean_reward {best.value:.2f}, {best.params}\n"
              f"results: {self.sweep_dir / 'optimization_results.yaml'}\n"
              f"TensorBoard: tensorboard --logdir {self.sweep_dir}")


def _params(trial: Trial) -> str:
    return " ".join(f"{k}={v}" for k, v in trial.params.items())


def _override_value(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _compose_hydra(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=None, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        text = f"{e}\n{e.__cause__ or ''}".split("Config search path")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raise UsageError(" ".join(line for line in lines if not line.startswith(("full_key", "object_type")))) from None


def _hydra_overrides(pairs: dict[str, str]) -> list[str]:
    if pairs.get("hydra/sweeper") != "optuna":
        if "hydra/sweeper" in pairs:
            raise UsageError(f"hydra/sweeper={pairs['hydra/sweeper']} is not available; sweeps use "
                             "hydra/sweeper=optuna")
        raise UsageError("-m runs a sweep: add hydra/sweeper=optuna and a search space, e.g. "
                         "learning_rate='interval(1e-4,1e-3)'")
    overrides = [f"hydra/sweeper={SWEEPER}"]
    for key, value in pairs.items():
        if key.startswith("hydra.sweeper.") or key in ("hydra/sweeper/sampler", "hydra/sweeper/pruner"):
            overrides.append(f"{key}={value}")
        elif key not in ("hydra/sweeper", "hydra.sweep.dir"):
            raise UsageError(f"'{key}={value}' is not a sweep option; allowed: {', '.join(HYDRA_KEYS)}")
    return overrides


def sweep_main(argv: list[str]) -> int:
    """``python -m runners.train -m ...``: run (or resume) the sweep; see the module docstring."""
    _, pairs = parse_args([a for a in argv if a not in MULTIRUN])
    hydra_pairs = {k: v for k, v in pairs.items() if k.startswith("hydra")}
    if not any(a in MULTIRUN for a in argv):
        key = next(iter(hydra_pairs))
        raise UsageError(f"'{key}={hydra_pairs[key]}' configures a sweep: add -m "
                         "(python -m runners.train -m agent=... env=... hydra/sweeper=optuna ...)")
    overrides = _hydra_overrides(hydra_pairs)
    zoo = {k: v for k, v in pairs.items() if k not in hydra_pairs}
    for key in ("resume", "run_dir"):
        if key in zoo:
            raise UsageError(f"'{key}=' is not for sweeps: each trial runs in <sweep dir>/trial_<n>, and running the "
                             "same sweep command again resumes the study (choose the directory with hydra.sweep.dir=)")
    parser = OverridesParser.create()
    try:
        parsed = {key: parser.parse_override(f"{key}={value}") for key, value in zoo.items()}
    except HydraException as e:
        raise UsageError(" ".join(str(e).split())) from None
    for key in GROUPS:
        if key in parsed and parsed[key].is_sweep_override():
            raise UsageError(f"{key}={zoo[key]}: a sweep has one {key}; start one sweep per {key}")
    base = {key: zoo[key] for key in GROUPS if key in zoo}
    reference = compose_train_config([], base)  # agent= and env= are there and valid
    cfg = _compose_hydra(overrides)
    sweeper_cfg = cfg.hydra.sweeper
    study_name = sweeper_cfg.study_name or f"{reference.agent.id}_{reference.env.name}"
    sweep_dir = Path(hydra_pairs.get("hydra.sweep.dir") or Path("runs") / "sweeps" / study_name)
    for key in ("n_trials", "n_jobs"):
        if sweeper_cfg[key] < 1:
            raise UsageError(f"hydra.sweeper.{key}={sweeper_cfg[key]} must be >= 1")
    directions = sweeper_cfg.direction if OmegaConf.is_list(sweeper_cfg.direction) else [sweeper_cfg.direction]
    for direction in directions:
        if getattr(direction, "name", direction) not in ("maximize", "minimize"):
            raise UsageError(f"hydra.sweeper.direction={direction} is not allowed; choose maximize or minimize")
    sweeper_cfg.study_name = study_name
    sweeper_cfg.storage = sweeper_cfg.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    OmegaConf.update(cfg, "hydra.sweep.dir", str(sweep_dir), force_add=True)
    try:
        sweeper = instantiate(sweeper_cfg)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as e:
        raise UsageError(f"hydra.sweeper: {' '.join(str(e).split())}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweeper.setup(hydra_context=None, task_function=TrialRunner(base, sweep_dir), config=cfg)
    sweeper.sweep([f"{k}={v}" for k, v in zoo.items() if k not in base])
    return 0


@contextlib.contextmanager
def hold(sweep_dir: Path) -> Iterator[None]:
    """Create the sweep directory and hold it (``.lock``) for this process, or raise UsageError."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another sweep runs in {sweep_dir}; wait for it or choose hydra.sweep.dir=") from None
        yield
