"""Train any agent of the zoo.

    python -m runners.train agent=<id> env=<name|gymnasium id> [preset=tiny|cpu|paper] [key=value ...]
    python -m runners.train resume=<run dir> [total_timesteps=...]
    python -m runners.train -m agent=<id> env=<name> hydra/sweeper=optuna [key=<sweep> ...]  (runners/sweep.py)

A run directory (``run_dir=``, default ``runs/<agent>/<env>/<time>_s<seed>``) holds ``config.yaml`` (the
resolved config), ``tb/`` (TensorBoard events), ``checkpoints/step_<n>/`` (every ``save_freq`` env steps, with
the replay buffer), ``final/`` (the trained model), ``best/`` with ``best.json`` (the model of the best periodic
evaluation so far and its step, as rl-zoo3's ``best_model``; with ``eval_freq > 0``) and ``results.json`` (the final
evaluation).

Data-parallel (the gradient-step agents dt, radt, act and the world-model agents diamond, delta_iris; see
agents/common/distributed.py and agents/common/epoch_loop.py)::

    torchrun --nproc_per_node=N -m runners.train agent=dt env=hopper distributed=true [device=cuda] [key=value ...]
    torchrun --nproc_per_node=N -m runners.train agent=diamond env=breakout distributed=true [key=value ...]

Every process samples its own batches (the world-model agents: from the episodes it collects itself) and DDP averages
the gradients (effective batch: N x batch_size); rank 0 alone writes the run directory. ``distributed=true`` without
torchrun trains in one process (world size 1).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger

from agents.common.callbacks import CheckpointCallback, EvalCallback, TrainingFault, latest_checkpoint
from agents.common.checkpoint import atomic_write_text
from agents.common.distributed import DistributedContext, distributed_session, torchrun_env
from agents.common.evaluation import conditioned_env, evaluate
from agents.common.logger import DISK_FAULTS, configure_logger, log_text
from agents.common.nan_guard import NanGuardCallback
from agents.common.precision import resolve_precision
from agents.common.registry import REGISTRY, check_compatible, get_spec, make_agent
from envs.datasets import resolve_dataset
from envs.factory import make_vec_env
from runners.cli import UsageError, parse_args, parse_deterministic, run_main
from runners.config import compose_train_config, config_markdown, resume_config


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / cfg.agent.id / cfg.env.name / f"{stamp}_s{cfg.seed}"


def resolve_demos(demos: str | None) -> str:
    """The path of an agent's demonstrations (``demos=<.npz>``), checked before anything is written."""
    if not demos:
        raise UsageError("this agent learns from demonstrations: pass demos=<path of a .npz> "
                         "(record them with python -m runners.demos env=needle episodes=50)")
    if not Path(demos).is_file():
        raise UsageError(f"demos={demos}: no such file; record demonstrations with python -m runners.demos")
    return str(demos)


class Trainer:
    """Builds envs, agent, logger and callbacks from a resolved config, then trains (or resumes)."""

    # callbacks run after evaluation and checkpointing, each made from the run's EvalCallback (a sweep's pruning)
    after_eval: tuple[Callable[[EvalCallback], BaseCallback], ...] = ()

    def __init__(
        self, cfg: DictConfig, resume_from: Path | None = None, dist: DistributedContext | None = None
    ) -> None:
        self.cfg = cfg
        self.dist = dist
        # None: evaluate as the agent's official test protocol does (argmax; DIAMOND and Δ-IRIS sample)
        self.eval_deterministic = parse_deterministic("eval_deterministic", cfg.get("eval_deterministic", "auto"))
        self.writes = dist is None or dist.is_main  # under torchrun rank 0 alone logs, evaluates and saves
        device = str(dist.device) if dist is not None else cfg.device
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.env_cfg: dict[str, Any] = OmegaConf.to_container(cfg.env, resolve=True)  # type: ignore[assignment]
        spec = get_spec(cfg.agent.id)
        self.env = make_vec_env(self.env_cfg, n_envs=cfg.n_envs, seed=cfg.seed, training=True, vec_env=cfg.vec_env)
        check_compatible(spec.id, self.env.observation_space, self.env.action_space, self.env_cfg["id"])
        self.eval_env = make_vec_env(self.env_cfg, n_envs=1, seed=cfg.seed + 10_000, training=False)
        if resume_from is None:
            hyperparams = OmegaConf.to_container(cfg.agent, resolve=True)
            hyperparams.pop("id")  # type: ignore[union-attr]
            if spec.learns_from == "offline":  # a quality name becomes the path of the env's generated dataset
                hyperparams["dataset"] = str(resolve_dataset(hyperparams["dataset"], self.env_cfg["name"]))
            if spec.learns_from == "demonstrations":
                hyperparams["demos"] = resolve_demos(hyperparams.get("demos"))
            self.model = make_agent(
                spec.id, self.env, hyperparams, seed=cfg.seed, device=device, verbose=cfg.verbose  # type: ignore
            )
        else:
            self.model = spec.cls.load(resume_from, env=self.env, device=device)
        if spec.learns_from in ("offline", "demonstrations"):
            self.model.load_data()  # the dataset or demonstrations, checked against the env's spaces before writing
        if dist is not None:
            self.model.distribute(dist, seed=cfg.seed)  # DDP: every rank continues from rank 0's weights
        self.eval_env = conditioned_env(self.model, self.eval_env)
        self.resumed = resume_from is not None

    def attach(self, run_dir: Path) -> None:
        """Point the logger at ``run_dir/tb``; a resumed run continues its curves after the checkpoint's step."""
        self.run_dir = run_dir
        self.model.zoo_config = OmegaConf.to_container(self.cfg, resolve=True)
        if not self.writes:  # a rank > 0: the same steps, nothing written
            self.model.set_logger(Logger(folder=None, output_formats=[]))
            return
        # events after the checkpoint's step were logged by the interrupted process: TensorBoard drops them
        purge_step = self.model.num_timesteps + 1 if self.resumed else None
        self.model.set_logger(configure_logger(run_dir / "tb", purge_step=purge_step, verbose=self.cfg.verbose))
        if not self.resumed:
            log_text(self.model.logger, "config", config_markdown(self.cfg))

    def train(self) -> dict[str, Any]:
        remaining = self.cfg.total_timesteps - self.model.num_timesteps
        checkpoints = CheckpointCallback(
            self.run_dir, self.cfg.save_freq, keep=self.cfg.keep_checkpoints, replay_buffer=self.cfg.save_replay_buffer
        )
        evaluation = EvalCallback(
            self.eval_env, self.env_cfg, self.cfg.eval_freq or self.cfg.total_timesteps, self.cfg.eval_episodes,
            best_dir=self.run_dir / "best", deterministic=self.eval_deterministic,
        )
        # evaluate before checkpointing, so that a checkpoint at step n follows everything logged at step n
        # the NaN guard first: a non-finite value stops the run before any callback can checkpoint it
        callbacks: list[Any] = [NanGuardCallback(self.run_dir)] if self.cfg.get("nan_guard", True) else []
        callbacks += ([evaluation] if self.cfg.eval_freq > 0 else []) + [checkpoints]
        callbacks += [make(evaluation) for make in self.after_eval]
        if remaining > 0:
            try:
                self.model.learn(
                    total_timesteps=remaining,
                    callback=CallbackList(callbacks if self.writes else []),
                    progress_bar=self.cfg.progress_bar and self.writes,
                    reset_num_timesteps=self.model.num_timesteps == 0,
                    tb_log_name="",
                )
            except OSError as e:  # the logs could not be written (a periodic checkpoint only warns and goes on)
                if e.errno not in DISK_FAULTS:
                    raise
                raise self.disk_fault("writing the run's logs", e) from None
        if not self.writes:
            self.dist.barrier()  # type: ignore[union-attr]  # until rank 0 has saved and evaluated the final model
            self.close()
            return {}
        try:
            self.model.save(self.run_dir / "final")
        except OSError as e:  # a full or read-only disk: the periodic checkpoints written so far are intact
            raise self.disk_fault("saving the final model", e) from None
        # the final evaluation, unless the last periodic one saw this very model (same step, no update since); when
        # the model changed after a periodic evaluation logged at this very step (SB3's off-policy update after the
        # step's callbacks, DIAMOND's and Δ-IRIS's final epochs), results.json gets the final model's evaluation and
        # TensorBoard keeps one point per step
        if getattr(evaluation, "model", None) is not None and evaluation.is_current():
            result = evaluation.last_result
        elif evaluation.last_eval_step == self.model.num_timesteps:
            result = evaluate(self.model, self.eval_env, self.cfg.eval_episodes, self.env_cfg, self.eval_deterministic)
        else:
            evaluation.init_callback(self.model)
            result = evaluation.evaluate_now()
        summary = {
            "agent": self.cfg.agent.id,
            "env": self.env_cfg["id"],
            "seed": self.cfg.seed,
            "num_timesteps": int(self.model.num_timesteps),
            "wall_time_s": round(self.model.train_wall_time_s, 1),
            **training_precision(self.model),
            "final_model": str(self.run_dir / "final"),
            "eval": result.as_dict(),
        }
        atomic_write_text(self.run_dir / "results.json", json.dumps(summary, indent=1))
        if self.dist is not None:
            self.dist.barrier()
        self.close()
        return summary

    def disk_fault(self, what: str, error: OSError) -> TrainingFault:
        """The one line for a write the disk refused: what failed, why, and the last checkpoint to resume from. The
        logger is closed without flushing what it could not write."""
        last = latest_checkpoint(self.run_dir)
        kept = f"the last checkpoint {last} is intact; resume with resume={self.run_dir}" if last else (
            "no checkpoint was written")
        try:
            self.close()
        except OSError:
            pass  # the same disk refuses the logger's last flush
        return TrainingFault(f"{what} failed ({error}); {kept}")

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()
        self.model.logger.close()


def main(argv: list[str]) -> int:
    if any(a in ("-m", "--multirun") or a.startswith("hydra") for a in argv):  # a sweep (runners/sweep.py)
        from runners.sweep import sweep_main

        return sweep_main(argv)
    _, pairs = parse_args(argv)
    resume_from = None
    if pairs.get("resume"):
        run_dir = Path(pairs["resume"])
        cfg = resume_config(run_dir, pairs)
        resume_from = latest_checkpoint(run_dir)
        if resume_from is None:
            raise UsageError(f"resume={run_dir}: no complete checkpoint under {run_dir / 'checkpoints'}")
        cfg.resume = str(run_dir)
    else:
        cfg = compose_train_config(argv, pairs)
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        if (run_dir / "config.yaml").exists():
            raise UsageError(
                f"run_dir={run_dir} already holds a run; continue it with resume={run_dir} or choose another run_dir"
            )
    if not cfg.get("distributed"):
        return _train(cfg, run_dir, resume_from)
    spec = get_spec(cfg.agent.id)
    if not getattr(spec.cls, "supports_distributed", False):
        raise UsageError(f"distributed=true: agent {spec.id} does not train data-parallel; agents that do: "
                         f"{', '.join(distributed_agents())}")
    with distributed_session(cfg.device) as dist:  # the process group is destroyed at the end, also on an error
        if torchrun_env() is None:
            print("distributed=true without torchrun: one process (world size 1); start N processes with "
                  "torchrun --nproc_per_node=N -m runners.train ...")
        return _train(cfg, Path(dist.broadcast_object(str(run_dir))), resume_from, dist)  # rank 0's (time stamp)


def distributed_agents() -> list[str]:
    """The agents of the registry that train data-parallel (``supports_distributed``)."""
    found = []
    for agent_id, spec in sorted(REGISTRY.items()):
        try:
            if getattr(spec.cls, "supports_distributed", False):
                found.append(agent_id)
        except Exception:  # noqa: BLE001  (an agent that does not import here: its dependencies, or work in progress)
            continue
    return found


def training_precision(model: Any) -> dict[str, str]:
    """For the agents with a ``precision`` option (DT, RADT, ACT, Δ-IRIS): the option and what it resolved to on the
    model's device (``auto`` is bf16 only where bf16 is native, agents/common/precision.py); else nothing."""
    if not isinstance(getattr(model, "precision", None), str):
        return {}
    return {"precision": resolve_precision(model.precision, model.device), "precision_option": model.precision}


def _train(cfg: DictConfig, run_dir: Path, resume_from: Path | None, dist: DistributedContext | None = None) -> int:
    trainer = Trainer(cfg, resume_from, dist)  # bad input (or a refused checkpoint) fails here, before any write
    if not trainer.writes:
        trainer.attach(run_dir)
        trainer.train()
        return 0
    if resume_from is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.run_dir = str(run_dir)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    trainer.attach(run_dir)
    if resume_from is not None:
        print(f"resuming {run_dir} from {resume_from.name} (step {trainer.model.num_timesteps})")
    if precision := training_precision(trainer.model):
        print(f"precision={precision['precision_option']}: training in {precision['precision']} on "
              f"{trainer.model.device}")
    try:
        summary = trainer.train()
    except ValueError as e:  # a failure inside training is a bug or a fault, not bad input: keep the traceback
        raise RuntimeError(f"training failed: {e}") from e
    result = summary["eval"]
    steps = "gradient steps" if get_spec(cfg.agent.id).learns_from in ("offline", "demonstrations") else "env steps"
    score = f", score {result['score']}" if result["score"] else ""
    print(
        f"{cfg.agent.id} on {summary['env']}: {summary['num_timesteps']} {steps} in {summary['wall_time_s']} s; "
        f"eval {result['mean_reward']:.2f} +- {result['std_reward']:.2f} over {result['episodes']} episodes{score}\n"
        f"run directory: {run_dir}\nTensorBoard: tensorboard --logdir {run_dir / 'tb'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
