"""Δ-IRIS (Micheli, Alonso, Fleuret, ICML 2024, "Efficient World Models with Context-Aware Tokenization",
arXiv 2406.19320) as an SB3 algorithm, registered as ``delta_iris``.

``learn(total_timesteps=n)`` runs the paper's loop (``src/trainer.py`` and ``config/params/crafter.yaml`` of
github.com/vmicheli/delta-iris; the shared :class:`~agents.common.epoch_loop.EpochLoop`):

- **Collection**: epoch 1 collects ``num_steps_first_epoch`` (100,000) random steps; later epochs ``num_steps``
  (10,000) with the policy, sampling at ``temperature`` 1 with ``epsilon`` 0.01 random actions, until the budget is
  reached (or ``stop_after_epochs``); then ``num_final_epochs`` epochs train without collecting (official: 1000 epochs,
  collection stops after 991). At the start of each policy collection the LSTM reads the last ``burn_in_length`` frames
  of each env's ongoing episode (zero frames before its start), as the official collector does.
- **Training**, per epoch and in this order: the tokenizer, the world model and the actor-critic, each from epoch
  ``start_after_epochs + 1`` on, ``steps_first_epoch`` updates in epoch 1 and ``steps_per_epoch`` later (Crafter
  5000/500, 2500/500, 500/500); tokenizer and world model on ``batch_size`` (32) segments of ``sequence_length`` (21)
  steps under ``precision`` (bf16 autocast where native, official ``use_mixed_precision``), the actor-critic on
  ``batch_size[2]`` (86) imagined trajectories of ``horizon`` (15) steps from real ``burn_in_length + 1`` (6) frame
  segments (:mod:`agents.delta_iris.actor_critic`), its EMA target updated at every step.
- **Replay**: one shared :class:`~agents.common.episode_buffer.EpisodeBuffer`; each component draws episodes with
  ``p ∝ (1 / (1 + count))^priority_alpha`` over its own draw counts (alpha 5 Crafter, 1 Atari), counted from epoch 2 on
  (official ``should_update_counts=(epoch > 1)``); tokenizer and world-model segments may pad on both sides of an
  episode, actor-critic segments only before its start.
- **Optimizers**: ``optimizer`` (AdamW, lr 1e-4) per component, with minGPT decay groups (decay on the weights of
  Linear layers only: no decay on biases, norms, embeddings and convolutions, official ``configure_optimizer``) and
  ``weight_decay`` ``[0.01, 0.01, 0]`` (Atari ``[0, 0.01, 0]``; AdamW without decay is the official Adam of the
  actor-critic); gradients clipped to ``grad_clip`` (10).

Data-parallel training under ``torchrun`` (``distributed=true``, :class:`~agents.common.epoch_loop.EpochLoop`):
every rank collects its own episodes (the random first epoch too) into its own buffer, with its own draw counts, and
trains the three components on its own segments, DDP averaging the gradients, so each update sees ``world_size x
batch_size`` samples; the codebook's EMA sums its statistics over the ranks (:mod:`world_models.delta_iris.quantizer`),
the EMA target follows the same weights on every rank; rank 0 alone logs, evaluates and saves. A rank's loss is the
mean over its own unpadded steps, so the update is the combined batch's exactly when the ranks' segments hold equally
many.

Callbacks see the steps at epoch ends, so checkpoints fall between epochs; a checkpoint holds everything the loop
carries (the last observation, each env's last frames for the burn-in, the episodes being collected with
``replay_buffer=True``, the draw counts, every RNG), so that ``learn(n); save; load(force_reset=False); learn(m)`` in
one process gives the weights of ``learn(m)``. The official dataset also holds the unfinished episodes being
collected; here episodes are sampled once they end.

Evaluation: ``predict(deterministic=True)`` takes the argmax, as SB3's contract says; the official test collector
samples (``should_sample: true``), and so do the runners by default (``deterministic=auto`` /
``eval_deterministic=auto``, resolved from :attr:`DeltaIris.official_eval_deterministic`); ``deterministic=true``
forces the argmax.

Usage::

    model = DeltaIris("CnnPolicy", make_vec_env(crafter_cfg), size="tiny")
    model.learn(2_000)
    model.save("runs/delta_iris_crafter", replay_buffer=True)   # with the episode buffer
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from agents.common.distributed import DistributedContext
from agents.common.episode_buffer import EpisodeBuffer
from agents.common.episode_sampling import draw_segment_starts
from agents.common.epoch_loop import EpochLoop
from agents.common.hyperparams import encode_hyperparams
from agents.common.optim import check_optimizer_kwargs, optimizer_class
from agents.common.persistence import RUNTIME_ARGS, ZooAlgorithm
from agents.common.precision import autocast, check_precision
from agents.delta_iris.actor_critic import actor_critic_loss, imagine, mask_after_first_end
from agents.delta_iris.policy import DeltaIrisPolicy
from world_models.delta_iris.world_model_env import DeltaIrisWorldModelEnv

COMPONENTS = ("tokenizer", "world_model", "actor_critic")


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """minGPT's parameter groups (official ``configure_optimizer``): ``weight_decay`` on the weights of Linear and
    Conv1d layers, none on anything else (biases, norms, embeddings, 2-D convolutions)."""
    decay, no_decay = [], []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            if p.requires_grad:  # not the EMA target of the actor-critic
                (decay if name == "weight" and isinstance(m, nn.Linear | nn.Conv1d) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _triple(name: str, value: Any, kind: type = int) -> list:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"{name}={value!r} needs one value per component: {', '.join(COMPONENTS)}")
    return [kind(v) for v in value]


class DeltaIris(ZooAlgorithm, EpochLoop, BaseAlgorithm):
    """Δ-IRIS: a context-aware tokenizer, a transformer world model and an actor-critic trained in its imagination.

    Per-component lists are ``[tokenizer, world_model, actor_critic]``; defaults are ``config/params/crafter.yaml``.

    :param size: networks: ``crafter``, ``atari`` (the official configurations; ``atari`` has a scalar critic and
        3-class rewards) or ``tiny``; ``policy_kwargs`` ``{tokenizer: {...}, world_model: {...}, actor_critic: {...}}``
        override their config fields
    :param learning_rate: of every component (1e-4)
    :param optimizer: ``adamw`` | ``adam`` | ``ademamix`` (:mod:`agents.common.optim`), one per component
    :param optimizer_kwargs: its other arguments (``betas``, ``eps``, AdEMAMix's ``alpha``)
    :param weight_decay: per component, on Linear weights only (``[0.01, 0.01, 0.0]``)
    :param grad_clip: max gradient norm per component (``[10, 10, 10]``)
    :param batch_size: segments per step of tokenizer and world model, imagined trajectories per actor-critic step
        (``[32, 32, 86]``)
    :param sequence_length: steps per segment of tokenizer and world model (``[21, 21]``); the world model holds
        ``sequence_length[1]`` blocks
    :param steps_first_epoch: updates per component in the first epoch (``[5000, 2500, 500]``; the actor-critic has
        none officially, i.e. its ``steps_per_epoch``)
    :param steps_per_epoch: updates per component in later epochs (``[500, 500, 500]``)
    :param start_after_epochs: a component trains from epoch ``start_after_epochs + 1`` (``[0, 0, 0]``)
    :param priority_alpha: exponent of the count-based episode weights (5)
    :param num_steps_first_epoch: random env steps of the first epoch (100,000)
    :param num_steps: env steps per later epoch (10,000)
    :param stop_after_epochs: no collection after this epoch even below the budget (None: the budget decides)
    :param num_final_epochs: epochs of training without collection after the budget (9 = 1000 - 991)
    :param burn_in_length: real frames the world model and the policy read before imagining (5)
    :param horizon: imagined steps (15)
    :param gamma, lam: of the lambda-returns (0.997, 0.95)
    :param entropy_weight: (0.001)
    :param tau: EMA rate of the target actor-critic (0.995)
    :param epsilon: random-action probability while collecting (0.01)
    :param temperature: of the policy's sampling while collecting (1.0)
    :param precision: ``auto`` (bf16 autocast for tokenizer and world model where bf16 is native, as the official
        ``use_mixed_precision`` on its GPUs; fp32 on CPUs that would emulate it 10x slower:
        :mod:`agents.common.precision`), ``bf16`` or ``fp32``
    :param buffer_capacity: env steps kept in the episode buffer (None: all)
    :param log_interval: epochs between two dumps of the logs
    """

    agent_id = "delta_iris"
    #: the official test collector samples from the policy, and so do the runners' evaluations by default
    official_eval_deterministic: ClassVar[bool] = False
    policy_aliases: ClassVar[dict[str, type]] = {"CnnPolicy": DeltaIrisPolicy, "DeltaIrisPolicy": DeltaIrisPolicy}
    policy: DeltaIrisPolicy

    def __init__(
        self,
        policy: str | type[DeltaIrisPolicy],
        env: VecEnv | None,
        size: str = "crafter",
        learning_rate: float = 1e-4,
        optimizer: str = "adamw",
        optimizer_kwargs: dict[str, Any] | None = None,
        weight_decay: list[float] | tuple[float, ...] = (0.01, 0.01, 0.0),
        grad_clip: list[float] | tuple[float, ...] = (10.0, 10.0, 10.0),
        batch_size: list[int] | tuple[int, ...] = (32, 32, 86),
        sequence_length: list[int] | tuple[int, ...] = (21, 21),
        steps_first_epoch: list[int] | tuple[int, ...] = (5000, 2500, 500),
        steps_per_epoch: list[int] | tuple[int, ...] = (500, 500, 500),
        start_after_epochs: list[int] | tuple[int, ...] = (0, 0, 0),
        priority_alpha: float = 5.0,
        num_steps_first_epoch: int = 100_000,
        num_steps: int = 10_000,
        stop_after_epochs: int | None = None,
        num_final_epochs: int = 9,
        burn_in_length: int = 5,
        horizon: int = 15,
        gamma: float = 0.997,
        lam: float = 0.95,
        entropy_weight: float = 1e-3,
        tau: float = 0.995,
        epsilon: float = 0.01,
        temperature: float = 1.0,
        precision: str = "auto",
        buffer_capacity: int | None = None,
        log_interval: int = 1,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.weight_decay = _triple("weight_decay", weight_decay, float)
        self.grad_clip = _triple("grad_clip", grad_clip, float)
        self.batch_size = _triple("batch_size", batch_size)
        self.steps_first_epoch = _triple("steps_first_epoch", steps_first_epoch)
        self.steps_per_epoch = _triple("steps_per_epoch", steps_per_epoch)
        self.start_after_epochs = _triple("start_after_epochs", start_after_epochs)
        if not isinstance(sequence_length, list | tuple) or len(sequence_length) != 2:
            raise ValueError(f"sequence_length={sequence_length!r} needs two values: tokenizer, world_model")
        self.sequence_length = [int(s) for s in sequence_length]
        if min(self.batch_size) < 1 or min(self.sequence_length) < 2:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1 and sequence_length={self.sequence_length} "
                             ">= 2 (a segment holds at least one transition)")
        for name in ("weight_decay", "grad_clip", "steps_first_epoch", "steps_per_epoch", "start_after_epochs"):
            if min(getattr(self, name)) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if int(num_steps_first_epoch) < 1 or int(num_steps) < 1:
            raise ValueError(f"num_steps_first_epoch={num_steps_first_epoch} and num_steps={num_steps} must be >= 1")
        if int(num_final_epochs) < 0 or (stop_after_epochs is not None and int(stop_after_epochs) < 1):
            raise ValueError(f"num_final_epochs={num_final_epochs} must be >= 0 and stop_after_epochs="
                             f"{stop_after_epochs} >= 1 (or null)")
        if int(burn_in_length) < 0 or int(horizon) < 1:
            raise ValueError(f"burn_in_length={burn_in_length} must be >= 0 and horizon={horizon} >= 1")
        if int(burn_in_length) + 1 + int(horizon) > self.sequence_length[1]:
            raise ValueError(f"burn_in_length={burn_in_length} + 1 + horizon={horizon} frames must fit in the world "
                             f"model's sequence_length[1]={self.sequence_length[1]} blocks")
        for name, value in (("gamma", gamma), ("lam", lam), ("tau", tau), ("epsilon", epsilon)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1]")
        if float(priority_alpha) < 0:  # a negative exponent would favour the episodes drawn most often
            raise ValueError(f"priority_alpha={priority_alpha} must be >= 0 (0: uniform over episodes)")
        if buffer_capacity is not None and int(buffer_capacity) < 1:
            raise ValueError(f"buffer_capacity={buffer_capacity} must be >= 1 env steps (or null: unbounded)")
        check_precision(precision)
        optimizer_class(optimizer)  # a name it knows
        if "weight_decay" in (optimizer_kwargs or {}):
            raise ValueError("optimizer_kwargs.weight_decay: set weight_decay= instead (the agent's own argument)")
        check_optimizer_kwargs(optimizer, optimizer_kwargs or {})
        self.hyperparams = encode_hyperparams({k: v for k, v in args.items() if k not in RUNTIME_ARGS})
        self.zoo_config = None
        BaseAlgorithm.__init__(  # not ZooAlgorithm.__init__: the hyperparameters are this constructor's, set above
            self, policy, env, learning_rate, policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log,
            verbose=verbose, device=device, support_multi_env=True, seed=seed,
            supported_action_spaces=(spaces.Discrete,),
        )
        self.size, self.optimizer_name, self.optimizer_kwargs = size, optimizer, dict(optimizer_kwargs or {})
        self.priority_alpha = float(priority_alpha)
        self.num_steps_first_epoch, self.num_steps = int(num_steps_first_epoch), int(num_steps)
        self.stop_after_epochs = None if stop_after_epochs is None else int(stop_after_epochs)
        self.num_final_epochs, self.burn_in_length, self.horizon = int(num_final_epochs), int(burn_in_length), \
            int(horizon)
        self.gamma, self.lam, self.entropy_weight, self.tau = float(gamma), float(lam), float(entropy_weight), \
            float(tau)
        self.epsilon, self.temperature, self.precision = float(epsilon), float(temperature), precision
        self.buffer_capacity, self.log_interval = buffer_capacity, int(log_interval)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        kwargs = {"size": self.size, "sequence_length": self.sequence_length[1], "temperature": self.temperature,
                  **self.policy_kwargs}
        self.policy = self.policy_class(self.observation_space, self.action_space, **kwargs).to(self.device)
        self.optimizers = {}
        for name, wd in zip(COMPONENTS, self.weight_decay, strict=True):
            groups = decay_groups(getattr(self.policy, name), wd)
            opt = optimizer_class(self.optimizer_name)(groups, lr=self.learning_rate, **self.optimizer_kwargs)
            setattr(self, f"optimizer_{name}", opt)
            self.optimizers[name] = opt
        self.updates = dict.fromkeys(COMPONENTS, 0)
        self.epoch, self.final_epochs_done = 0, 0
        self._step_reports: list[tuple[np.ndarray, list[dict]]] = []  # env steps not yet shown to the callbacks
        h, w = self.observation_space.shape[1:]
        self.episode_buffer = EpisodeBuffer((h, w, 3), np.uint8, (), np.int64, capacity_steps=self.buffer_capacity)
        self._recent = np.zeros((self.n_envs, self.burn_in_length, h, w, 3), np.uint8)  # per env: its last frames
        self._sampler = np.random.default_rng(self.seed)
        self._collect_hidden: Any = None

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", *(f"optimizer_{name}" for name in COMPONENTS)], []

    # ------------------------------------------------------------------ the epoch loop's hooks
    def _collecting(self, total_timesteps: int) -> bool:
        stopped = self.stop_after_epochs is not None and self.epoch >= self.stop_after_epochs
        return self.num_timesteps < total_timesteps and not stopped

    def _collect_epoch(self) -> None:
        if self.epoch == 0:
            self.collect(self.num_steps_first_epoch, random=True)  # official epsilon = 1 in epoch 1
        else:
            self.collect(self.num_steps)

    def _train_epoch(self) -> dict[str, float]:
        first = self.epoch == 0
        steps = [0 if self.epoch < start else (f if first else s)
                 for start, f, s in zip(self.start_after_epochs, self.steps_first_epoch, self.steps_per_epoch,
                                        strict=True)]
        return self.train(tuple(steps), count=not first)

    def _on_collect_step(self, frames: np.ndarray, act: np.ndarray, rew: np.ndarray, dones: np.ndarray) -> None:
        if self.burn_in_length:
            self._recent[:, :-1] = self._recent[:, 1:]
            self._recent[:, -1] = frames
        self._recent[np.asarray(dones, bool)] = 0  # the next frame starts a new episode

    def collect(self, n_steps: int, random: bool = False) -> None:
        """:meth:`EpochLoop.collect`, after the official burn-in of the policy's LSTM on each env's last
        ``burn_in_length`` frames (zeros before the episode's start) when the policy acts."""
        if self._recent.shape[0] != self.env.num_envs:  # type: ignore[union-attr]
            self._recent = np.zeros((self.env.num_envs, *self._recent.shape[1:]), np.uint8)  # type: ignore[union-attr]
        self._recent[np.asarray(self._last_episode_starts, bool)] = 0  # envs reset by learn() start anew
        if not random:
            with torch.no_grad():
                frames = torch.as_tensor(self._recent, device=self.device).permute(0, 1, 4, 2, 3).float() / 255
                hx, cx = self.policy.actor_critic.model.burn_in(frames)
            self._collect_hidden = (hx.cpu().numpy(), cx.cpu().numpy())
        super().collect(n_steps, random)

    def distribute(self, ctx: DistributedContext, seed: int | None = None) -> None:
        """:meth:`EpochLoop.distribute`; the codebook's EMA then sums its batch statistics over the ranks."""
        super().distribute(ctx, seed)
        self.policy.tokenizer.quantizer.all_reduce_statistics = True

    # ------------------------------------------------------------------ training
    def _update(self, name: str, loss: torch.Tensor) -> float:
        """One optimizer step of ``name``; returns the gradient norm before clipping."""
        opt, i = self.optimizers[name], COMPONENTS.index(name)
        self.updates[name] += 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(getattr(self.policy, name).parameters(), self.grad_clip[i])
        opt.step()
        return float(norm)

    def _segments(self, component: str, batch_size: int, seq_len: int, beyond_end: bool,
                  count: bool) -> dict[str, torch.Tensor]:
        """``batch_size`` segments drawn with ``component``'s count-based weights (its counts grow when ``count``),
        as :meth:`_batch`."""
        buffer = self.episode_buffer
        p = buffer.probabilities("count", component, self.priority_alpha)
        ids, starts = draw_segment_starts(buffer.lengths, p, batch_size, seq_len, self._sampler, beyond_end)
        if count:
            buffer.count_draws(ids, component)
        return self._batch(buffer.get_segments(ids, starts, seq_len))

    def _batch(self, seg: Any) -> dict[str, torch.Tensor]:
        """A :class:`~agents.common.episode_buffer.Segment` on the device: ``frames [B, L, 3, H, W]`` in [0, 1],
        ``acts``, ``rews``, ``ends``, ``mask`` ``[B, L]``."""
        frames = torch.as_tensor(seg.obs, device=self.device).permute(0, 1, 4, 2, 3).float().div_(255)
        return {"frames": frames, "acts": torch.as_tensor(seg.act, device=self.device).long(),
                "rews": torch.as_tensor(seg.rew, device=self.device).float(),
                "ends": torch.as_tensor(seg.end, device=self.device),
                "mask": torch.as_tensor(seg.mask, device=self.device)}

    def _autocast(self) -> torch.autocast:
        return autocast(self.precision, self.device)

    def train(self, steps: tuple[int, int, int], count: bool = True) -> dict[str, float]:
        """``steps`` updates of the tokenizer, the world model and the actor-critic, in that order (each component's
        draws counted when ``count``); returns the means of what they log. Nothing trains before an episode ends
        (distributed: on every rank)."""
        if not self._all_true(self.episode_buffer.num_episodes > 0):
            return {}
        policy, sums = self.policy, {}

        def add(logs: dict[str, float]) -> None:
            for key, value in logs.items():
                sums.setdefault(key, []).append(value)

        policy.set_training_mode(True)
        for _ in range(steps[0]):
            add(self._tokenizer_step(self._segments("tokenizer", self.batch_size[0], self.sequence_length[0], True,
                                                    count)))
        policy.tokenizer.eval()  # frozen from here on: the world model's targets, then imagination
        for _ in range(steps[1]):
            add(self._world_model_step(self._segments("world_model", self.batch_size[1], self.sequence_length[1],
                                                      True, count)))
        policy.world_model.eval()
        for _ in range(steps[2]):
            if not self._all_true(all(np.isfinite(values[-1]) for values in sums.values())):  # NaN weights stay NaN
                break  # imagining from NaN weights fails (NaN logits); the NaN guard stops the run at the epoch's end
            add(self._actor_critic_step(self._segments("actor_critic", self.batch_size[2], self.burn_in_length + 1,
                                                       False, count)))
        self._n_updates += sum(steps)
        return {key: float(np.mean(values)) for key, values in sums.items()}

    def _tokenizer_step(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """One update of the tokenizer on segments ``b`` (its codebook's EMA too, in training mode); returns what
        it logs."""
        tokenizer = self.policy.tokenizer
        with self._autocast():
            loss, logs = self._pass("tokenizer", tokenizer.loss, b["frames"], b["acts"], b["mask"])
        if self._distributed is not None and tokenizer.training and not (b["mask"][:, :-1] & b["mask"][:, 1:]).any():
            # no pair of frames here, so no codebook update: take part, with nothing, in the other ranks' statistics
            quantizer = tokenizer.quantizer
            quantizer.update_codebook(quantizer.codebook.new_zeros(0, quantizer.codebook.size(1)),
                                      torch.zeros(0, dtype=torch.long, device=self.device))
        out = {f"world_model/tokenizer_{key}": value for key, value in logs.items()}
        out["world_model/grad_norm_tokenizer"] = self._update("tokenizer", loss)
        return out

    def _world_model_step(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """One update of the world model on segments ``b`` (the tokenizer gives its targets); returns what it logs."""
        with self._autocast():
            loss, logs = self._pass("world_model", self.policy.world_model.loss, **b, tokenizer=self.policy.tokenizer)
        out = {f"world_model/{key}": value for key, value in logs.items()}
        out["world_model/grad_norm"] = self._update("world_model", loss)
        return out

    def _actor_critic_step(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """One update of the actor-critic on trajectories imagined from the real segments ``b`` (its EMA target
        first); returns what it logs."""
        loss, logs = self._pass("actor_critic", self._imagined_loss, b)
        self.policy.actor_critic.update_target(self.tau)  # official: in compute_loss, before the optimizer's step
        logs["train/grad_norm"] = self._update("actor_critic", loss)
        return logs

    def _imagined_loss(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The actor-critic's loss on ``horizon`` steps imagined from the last frame of each segment of ``b`` (its
        first ``burn_in_length`` frames read by the LSTMs), and what it logs."""
        policy, ac = self.policy, self.policy.actor_critic
        env = DeltaIrisWorldModelEnv(policy.tokenizer, policy.world_model, None, self.horizon, b["frames"].size(0),
                                     memory=0)
        imagined = imagine(ac, env, b["frames"], b["acts"], self.horizon)
        loss, logs = actor_critic_loss(imagined, self.gamma, self.lam, self.entropy_weight, ac.cfg.two_hot_returns)
        mask = mask_after_first_end(imagined.end)
        out = {"imagination/return": (imagined.rew * mask).sum(1).mean().item(),
               "imagination/end_rate": imagined.end.any(1).float().mean().item(),
               "imagination/entropy": logs.pop("policy_entropy"),
               "imagination/lambda_return": logs.pop("lambda_return"),
               "imagination/value": logs.pop("value")}
        return loss, {**out, **{f"train/{key}": value for key, value in logs.items()}}

    # ------------------------------------------------------------------ state
    def _zoo_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        state = super()._zoo_state(tensors)
        state.update(epoch=self.epoch, final_epochs_done=self.final_epochs_done, updates=dict(self.updates),
                     sampler=self._sampler.bit_generator.state)
        if self._last_obs is not None:  # where collection stands, for load(force_reset=False) with the same env
            tensors["collect.last_obs"] = torch.as_tensor(np.asarray(self._last_obs)).clone()
            tensors["collect.recent"] = torch.as_tensor(self._recent).clone()
            state["last_episode_starts"] = np.asarray(self._last_episode_starts, bool).tolist()
        return state

    def _zoo_set_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super()._zoo_set_state(state, tensors)
        self.epoch, self.updates = int(state["epoch"]), {k: int(state["updates"][k]) for k in COMPONENTS}
        self.final_epochs_done = int(state.get("final_epochs_done", 0))
        self._sampler = np.random.default_rng()
        self._sampler.bit_generator.state = state["sampler"]
        if "collect.last_obs" in tensors:
            self._last_obs = tensors["collect.last_obs"].numpy()
            self._recent = tensors["collect.recent"].numpy().copy()
            self._last_episode_starts = np.asarray(state["last_episode_starts"], bool)

    @classmethod
    def load(cls, path: str | Path, env: Any = None, device: torch.device | str = "auto", custom_objects: Any = None,
             print_system_info: bool = False, force_reset: bool = True, **kwargs: Any) -> DeltaIris:
        """:meth:`ZooAlgorithm.load`; with ``force_reset=False`` and ``env`` (the same env, still running, in the
        same process) collection continues where the checkpoint stopped instead of resetting the env (SB3's
        meaning of ``force_reset``)."""
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        if force_reset or env is None:  # a fresh env: learn() resets it, and every episode starts anew
            model._last_obs = None
        return model  # type: ignore[return-value]

    # ------------------------------------------------------------------ play (runners.play)
    #: imagined episodes in play mode never truncate
    PLAY_HORIZON: ClassVar[int] = 10**9

    @property
    def play_context_length(self) -> int:
        """Real frames (and the actions taken in them) an imagined episode starts from: ``burn_in_length`` (5).
        The action of the last frame is the first one played in imagination."""
        return self.burn_in_length

    def play_env(self, num_envs: int = 1) -> DeltaIrisWorldModelEnv:
        """``num_envs`` imagined envs of this tokenizer and world model (eval mode, no truncation), for
        :meth:`DeltaIrisWorldModelEnv.reset_from` and ``step``."""
        self.policy.set_training_mode(False)
        return DeltaIrisWorldModelEnv(self.policy.tokenizer, self.policy.world_model, None, self.PLAY_HORIZON,
                                      num_envs)

    def obs_to_frames(self, obs: np.ndarray) -> torch.Tensor:
        """uint8 observations ``[..., H, W, 3]`` -> float frames ``[..., 3, H, W]`` in [0, 1] on the model's device."""
        return torch.as_tensor(np.ascontiguousarray(obs), device=self.device).movedim(-1, -3).float() / 255

    def frames_to_obs(self, frames: torch.Tensor) -> np.ndarray:
        """Inverse of :meth:`obs_to_frames`: frames ``[..., 3, H, W]`` (clamped to [0, 1]) -> uint8
        ``[..., H, W, 3]``."""
        return frames.detach().clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()
