"""DIAMOND (Alonso et al., NeurIPS 2024, "Diffusion for World Modeling: Visual Details Matter in Atari",
arXiv 2405.12399) as an SB3 algorithm, registered as ``diamond``.

``learn(total_timesteps=n)`` runs the paper's loop (``src/trainer.py`` of github.com/eloialonso/diamond;
:mod:`agents.diamond.loop`): a random initial collection (``initial_collect_steps``, extended until ``threshold_rew``
minority-reward steps), then epochs that collect ``collect_steps`` steps with the current policy (``epsilon`` random
actions) and train the denoiser, the reward/end model and the actor-critic ``train_steps`` steps each
(``first_epoch_train_steps`` in the first), then ``num_final_epochs`` epochs of training alone. Callbacks see the
steps at epoch ends, so checkpoints fall between epochs and a resumed run repeats no epoch and skips none; a
checkpoint holds everything the loop carries (the last observation and the collection LSTM state, the imagination's
envs and LSTM state, the episodes being collected with ``replay_buffer=True``, every RNG), so that
``learn(n); save; load(force_reset=False); learn(m)`` in one process gives the weights of ``learn(m)``. The reward/end
model sees each episode's real final observation after a termination (official ``Segment.info``). World-model batches
are segments of the shared :class:`~agents.common.episode_buffer.EpisodeBuffer` drawn with DIAMOND's recency weights;
the actor-critic learns from ``imagination_batch_size`` imagined rollouts of ``horizon`` steps started from real
4-frame contexts (:mod:`world_models.imagination`, :mod:`agents.common.actor_critic`). Each model has its AdamW
(lr 1e-4, eps 1e-8, its own weight decay, linear warm-up over ``warmup_steps``) and its gradient-norm clip;
``optimizer=adam|ademamix`` (:mod:`agents.common.optim`) replaces the three AdamW, with the same per-component
weight decay (decoupled for AdEMAMix, an L2 term for Adam, torch's meanings), learning rate and warm-up.

Data-parallel training under ``torchrun`` (``distributed=true``, :class:`~agents.common.epoch_loop.EpochLoop`):
every rank collects its own episodes (the initial collection too) into its own buffer and trains the three components
on its own segments and imagined rollouts, DDP averaging the gradients, so each update sees ``world_size x
batch_size`` segments (``world_size x imagination_batch_size`` rollouts); rank 0 alone logs, evaluates and saves. A
rank's loss is the mean over its own unpadded frames, so the update is the combined batch's exactly when the ranks'
segments hold equally many (else each rank's frames weigh ``1 / (world_size x its count)``).

Evaluation: ``predict(deterministic=True)`` takes the argmax of the policy, as SB3's contract says; the official test
collector samples from the policy (``epsilon`` 0 but ``Categorical(logits).sample()``, ``src/coroutines/env_loop.py``).
The runners follow the official protocol by default (``deterministic=auto`` of ``runners.evaluate``, ``enjoy``,
``play`` and ``zoo add``, ``eval_deterministic=auto`` of the training's evaluations, resolved from
:attr:`Diamond.official_eval_deterministic` by :func:`~agents.common.evaluation.resolve_deterministic`): they sample;
``deterministic=true`` forces the argmax.

Usage::

    model = Diamond("CnnPolicy", make_vec_env(breakout_cfg), size="tiny")
    model.learn(2_000)
    model.save("runs/diamond_breakout", replay_buffer=True)   # with the episode buffer
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.common.actor_critic import ImaginationLoop, actor_critic_loss
from agents.common.episode_buffer import EpisodeBuffer
from agents.common.episode_sampling import draw_event_segment_starts
from agents.common.hyperparams import encode_hyperparams
from agents.common.optim import check_optimizer_kwargs, optimizer_class
from agents.common.persistence import RUNTIME_ARGS, ZooAlgorithm
from agents.diamond.loop import DiamondLoop
from agents.diamond.policy import DiamondPolicy
from world_models.diamond import batch_from_segment, frames_to_tensor
from world_models.diamond.reward_end import event_sampling_logit_offsets
from world_models.imagination import WorldModelEnv

COMPONENTS = ("denoiser", "rew_end_model", "actor_critic")


def per_component(name: str, value: Any, kind: type) -> list[Any]:
    """``value`` for every component: one value for all three, or a list of one per component."""
    values = list(value) if isinstance(value, list | tuple) else [value] * len(COMPONENTS)
    if len(values) != len(COMPONENTS):
        raise ValueError(f"{name}={list(value)} needs one value for all components or one per component: "
                         f"{', '.join(COMPONENTS)}")
    return [kind(v) for v in values]


class Diamond(ZooAlgorithm, DiamondLoop, BaseAlgorithm):
    """DIAMOND: an EDM diffusion world model and an actor-critic trained in its imagination.

    :param size: networks, ``paper`` or ``tiny``
    :param learning_rate: of the three optimizers (1e-4), or one per component ``[denoiser, rew_end_model,
        actor_critic]``
    :param optimizer: ``adamw`` (the paper's) | ``adam`` | ``ademamix`` (:mod:`agents.common.optim`), one per component
    :param optimizer_kwargs: its other arguments but ``weight_decay`` (``betas``, ``eps`` (default 1e-8), AdEMAMix's
        ``alpha`` and ``T_alpha_beta3``)
    :param weight_decay: per component ``[denoiser, rew_end_model, actor_critic]`` (``[1e-2, 1e-2, 0]``), or one
        value for all three (as ``grad_clip`` and ``first_epoch_train_steps``)
    :param warmup_steps: linear learning-rate warm-up of each component, in its own updates (100)
    :param grad_clip: max gradient norm per component (``[1.0, 100.0, 100.0]``)
    :param batch_size: segments per world-model step (32)
    :param rew_end_seq_length: frames per reward/end segment (19 = horizon 15 + 4 context frames)
    :param rew_end_event_fraction: share of each reward/end batch drawn around a rare event (0: the paper's
        sampling, every segment drawn like the denoiser's). ``round(fraction x batch_size)`` segments each hold a
        step drawn from one kind of event, the kinds (negative reward, positive reward, end) drawn with equal
        probability among those the buffer holds; the rest are drawn as in the paper. ``preset=cpu`` keeps 0
        (measured on Breakout in its file)
    :param rew_end_logit_adjustment: with ``rew_end_event_fraction > 0``, add ``log(batch prior / buffer prior)`` of
        each class to the logits in the loss (:func:`~world_models.diamond.reward_end.event_sampling_logit_offsets`)
        so the model keeps the buffer's base rates instead of the event-rich batches' (True); no effect at fraction 0
    :param initial_collect_steps: random env steps of the initial collection at least (5000, ``first_epoch.min``)
    :param initial_collect_max_steps: the initial collection stops there even below ``threshold_rew`` (10000,
        ``first_epoch.max``; None: no maximum)
    :param threshold_rew: the initial collection goes on (``collect_steps`` at a time) until this many collected
        steps carry a minority reward sign (10, ``first_epoch.threshold_rew``)
    :param collect_steps: env steps per epoch (100)
    :param train_steps: updates of each component per epoch (400), or one per component
    :param first_epoch_train_steps: updates per component in the first epoch (``[10000, 10000, 5000]``)
    :param num_final_epochs: epochs of training without collection after the budget (50; all three models train)
    :param imagination_batch_size: parallel imagined rollouts (32)
    :param horizon: imagination horizon and backup length (15)
    :param gamma, lam: discount and lambda of the lambda-returns (0.985, 0.95)
    :param weight_value_loss, weight_entropy_loss: (1.0, 0.001)
    :param epsilon: random-action probability while collecting (0.01)
    :param sample_weights: episode weights of the buffer (``recency``: DIAMOND's [0.1, 0.1, 0.1, 0.7])
    :param num_denoising_steps: sampler steps in imagination (3)
    :param diffusion: ``edm`` or ``ddpm``
    :param buffer_capacity: env steps kept in the episode buffer (None: all)
    :param log_interval: epochs between two dumps of the logs
    """

    agent_id = "diamond"
    #: the official test-time policy samples (see the module docstring), and so do the runners' evaluations by default
    official_eval_deterministic: ClassVar[bool] = False
    policy_aliases: ClassVar[dict[str, type]] = {"CnnPolicy": DiamondPolicy, "DiamondPolicy": DiamondPolicy}
    policy: DiamondPolicy

    def __init__(
        self,
        policy: str | type[DiamondPolicy],
        env: VecEnv | None,
        size: str = "paper",
        learning_rate: float | list[float] | tuple[float, ...] = 1e-4,
        optimizer: str = "adamw",
        optimizer_kwargs: dict[str, Any] | None = None,
        weight_decay: float | list[float] | tuple[float, ...] = (1e-2, 1e-2, 0.0),
        warmup_steps: int = 100,
        grad_clip: float | list[float] | tuple[float, ...] = (1.0, 100.0, 100.0),
        batch_size: int = 32,
        rew_end_seq_length: int = 19,
        rew_end_event_fraction: float = 0.0,
        rew_end_logit_adjustment: bool = True,
        initial_collect_steps: int = 5000,
        initial_collect_max_steps: int | None = 10000,
        threshold_rew: int = 10,
        collect_steps: int = 100,
        train_steps: int | list[int] | tuple[int, ...] = 400,
        first_epoch_train_steps: int | list[int] | tuple[int, ...] = (10000, 10000, 5000),
        num_final_epochs: int = 50,
        imagination_batch_size: int = 32,
        horizon: int = 15,
        gamma: float = 0.985,
        lam: float = 0.95,
        weight_value_loss: float = 1.0,
        weight_entropy_loss: float = 1e-3,
        epsilon: float = 0.01,
        sample_weights: str | list[float] = "recency",
        num_denoising_steps: int = 3,
        diffusion: str = "edm",
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
        learning_rates = per_component("learning_rate", learning_rate, float)
        train_steps_each = per_component("train_steps", train_steps, int)
        weight_decays = per_component("weight_decay", weight_decay, float)
        grad_clips = per_component("grad_clip", grad_clip, float)
        first_epoch_steps = per_component("first_epoch_train_steps", first_epoch_train_steps, int)
        if min(learning_rates) <= 0 or min(train_steps_each) < 0:
            raise ValueError(f"learning_rate={learning_rate} must be > 0 and train_steps={train_steps} >= 0")
        if int(initial_collect_steps) < 1 or int(collect_steps) < 1:
            raise ValueError(f"initial_collect_steps={initial_collect_steps} and collect_steps={collect_steps} "
                             "must be >= 1")
        if not 0.0 <= float(rew_end_event_fraction) <= 1.0:
            raise ValueError(f"rew_end_event_fraction={rew_end_event_fraction} must be in [0, 1]")
        if int(threshold_rew) < 0 or int(num_final_epochs) < 0:
            raise ValueError(f"threshold_rew={threshold_rew} and num_final_epochs={num_final_epochs} must be >= 0")
        optimizer_class(optimizer)  # a name it knows
        if "weight_decay" in (optimizer_kwargs or {}):
            raise ValueError("optimizer_kwargs.weight_decay: set weight_decay= instead (the agent's own argument)")
        check_optimizer_kwargs(optimizer, optimizer_kwargs or {})
        self.hyperparams = encode_hyperparams({k: v for k, v in args.items() if k not in RUNTIME_ARGS})
        self.zoo_config = None
        BaseAlgorithm.__init__(  # not ZooAlgorithm.__init__: the hyperparameters are this constructor's, set above
            self, policy, env, learning_rates[2], policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log,
            verbose=verbose, device=device, support_multi_env=True, seed=seed,
            supported_action_spaces=(spaces.Discrete,),
        )
        self.size, self.num_denoising_steps, self.diffusion = size, int(num_denoising_steps), diffusion
        self.optimizer_name, self.optimizer_kwargs = optimizer, dict(optimizer_kwargs or {})
        self.weight_decay, self.grad_clip = weight_decays, grad_clips
        self.warmup_steps, self.batch_size, self.rew_end_seq_length = int(warmup_steps), int(batch_size), \
            int(rew_end_seq_length)
        self.rew_end_event_fraction = float(rew_end_event_fraction)
        self.rew_end_logit_adjustment = bool(rew_end_logit_adjustment)
        self.initial_collect_steps, self.collect_steps = int(initial_collect_steps), int(collect_steps)
        self.initial_collect_max_steps = None if initial_collect_max_steps is None else int(initial_collect_max_steps)
        self.threshold_rew, self.num_final_epochs = int(threshold_rew), int(num_final_epochs)
        self.learning_rates = dict(zip(COMPONENTS, learning_rates, strict=True))  # SB3's learning_rate: the policy's
        self.train_steps, self.first_epoch_train_steps = train_steps_each, first_epoch_steps
        self.imagination_batch_size, self.horizon = int(imagination_batch_size), int(horizon)
        self.gamma, self.lam = float(gamma), float(lam)
        self.weight_value_loss, self.weight_entropy_loss = float(weight_value_loss), float(weight_entropy_loss)
        self.epsilon, self.sample_weights = float(epsilon), sample_weights
        self.buffer_capacity, self.log_interval = buffer_capacity, int(log_interval)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        kwargs = {"size": self.size, "num_denoising_steps": self.num_denoising_steps, "diffusion": self.diffusion,
                  **self.policy_kwargs}
        self.policy = self.policy_class(self.observation_space, self.action_space, **kwargs).to(self.device)
        self.optimizers = {}
        options = {"eps": 1e-8, **self.optimizer_kwargs}  # official AdamW eps (torch's default too)
        for name, wd in zip(COMPONENTS, self.weight_decay, strict=True):
            params = getattr(self.policy, name).parameters()
            opt = optimizer_class(self.optimizer_name)(params, lr=self.learning_rates[name], weight_decay=wd,
                                                       **options)
            setattr(self, f"optimizer_{name}", opt)
            self.optimizers[name] = opt
        self.updates = dict.fromkeys(COMPONENTS, 0)
        self.epoch, self.final_epochs_done = 0, 0
        self.reward_counts = np.zeros(3, np.int64)  # collected steps per reward sign -1, 0, 1
        self._step_reports: list[tuple[np.ndarray, list[dict]]] = []  # env steps not yet shown to the callbacks
        self._imagination_state: dict[str, torch.Tensor] | None = None  # a loaded checkpoint's, until used
        self.episode_buffer = EpisodeBuffer((*self.observation_space.shape[1:], 3), np.uint8, (), np.int64,
                                            capacity_steps=self.buffer_capacity)
        self._sampler = np.random.default_rng(self.seed)
        self._imagination: ImaginationLoop | None = None
        self._collect_hidden: Any = None

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", *(f"optimizer_{name}" for name in COMPONENTS)], []

    # ------------------------------------------------------------------ training
    def _update(self, name: str, loss: torch.Tensor, clip: float) -> float:
        """One optimizer step of ``name`` with linear warm-up; returns the gradient norm before clipping."""
        opt, self.updates[name] = self.optimizers[name], self.updates[name] + 1
        for group in opt.param_groups:
            group["lr"] = self.learning_rates[name] * min(1.0, self.updates[name] / max(1, self.warmup_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(getattr(self.policy, name).parameters(), clip)
        opt.step()
        return float(norm)

    def _segments(self, batch_size: int, seq_len: int, beyond_end: bool, extra: Any = None) -> Any:
        seg = self.episode_buffer.sample_segments(batch_size, seq_len, self._sampler, beyond_end,
                                                  weights=self.sample_weights, counter_key="diamond", extra=extra)
        return batch_from_segment(seg, self.device, final_obs=seg.final_obs)

    def _events(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The buffer's steps of each kind of rare event: negative rewards, positive rewards, ends."""
        buffer = self.episode_buffer
        return [buffer.find_steps("rew", lambda r: r < 0), buffer.find_steps("rew", lambda r: r > 0),
                buffer.find_steps("end", lambda e: e)]

    def _rew_end_segments(self) -> Any:
        """A reward/end batch: the paper's segments, ``rew_end_event_fraction`` of them drawn around rare events."""
        seq_len, n_event = self.rew_end_seq_length, round(self.rew_end_event_fraction * self.batch_size)
        events = self._events() if n_event else []
        if not any(len(ids) for ids, _ in events):  # fraction 0, or no event collected yet
            return self._segments(self.batch_size, seq_len, True)
        return self._segments(self.batch_size - n_event, seq_len, True,
                              extra=lambda rng: draw_event_segment_starts(events, n_event, seq_len, rng))

    def _rew_end_logit_offsets(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The logit adjustment of :meth:`_rew_end_segments`' batches (None where they follow the buffer's rates)."""
        n_event = round(self.rew_end_event_fraction * self.batch_size)
        if not (n_event and self.rew_end_logit_adjustment):
            return None
        (neg, _), (pos, _), (end, _) = self._events()
        return event_sampling_logit_offsets(self.episode_buffer.num_steps, len(neg), len(pos), len(end),
                                            n_event / self.batch_size, self.rew_end_seq_length)

    def _contexts(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        seg = self.episode_buffer.sample_segments(n, self.policy.denoiser.cfg.unet.num_steps_conditioning,
                                                  self._sampler, False, weights=self.sample_weights,
                                                  counter_key="diamond")
        mask = torch.as_tensor(seg.mask, device=self.device)
        obs = frames_to_tensor(seg.obs).to(self.device) * mask[:, :, None, None, None]
        return obs, torch.as_tensor(seg.act, device=self.device).long()

    def train(self, steps: tuple[int, int, int]) -> dict[str, float]:
        """``steps`` updates of the denoiser, the reward/end model and the actor-critic, in that order; returns the
        means of what they log."""
        self.policy.set_training_mode(True)
        sums: dict[str, list[float]] = {}

        def add(logs: dict[str, float]) -> None:
            for key, value in logs.items():
                sums.setdefault(key, []).append(value)

        for _ in range(steps[0]):
            add(self._denoiser_step(self._segments(self.batch_size, self.policy.denoiser.cfg.seq_length, False)))
        for _ in range(steps[1]):
            add(self._rew_end_step(self._rew_end_segments(), self._rew_end_logit_offsets()))
        self.policy.denoiser.eval()  # the world model only imagines from here on
        self.policy.rew_end_model.eval()
        for _ in range(steps[2]):
            if not self._all_true(all(np.isfinite(values[-1]) for values in sums.values())):  # NaN weights stay NaN
                break  # imagining from NaN weights fails (NaN logits); the NaN guard stops the run at the epoch's end
            add(self._actor_critic_step())
        self._n_updates += sum(steps)
        return {key: float(np.mean(values)) for key, values in sums.items()}

    def _denoiser_step(self, batch: Any) -> dict[str, float]:
        """One update of the denoiser on ``batch`` (a ``WorldModelBatch``); returns what it logs."""
        loss, _ = self._pass("denoiser", self.policy.denoiser.loss, batch)
        return {"world_model/loss_denoising": loss.item(),
                "world_model/grad_norm_denoising": self._update("denoiser", loss, self.grad_clip[0])}

    def _rew_end_step(self, batch: Any, logit_offsets: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> dict[str, float]:
        """One update of the reward/end model on ``batch`` (its loss's ``logit_offsets``); returns what it logs."""
        loss, logs = self._pass("rew_end_model", self.policy.rew_end_model.loss, batch, logit_offsets)
        return {"world_model/loss_rew": logs["loss_rew"], "world_model/loss_end": logs["loss_end"],
                "world_model/grad_norm_rew_end": self._update("rew_end_model", loss, self.grad_clip[1])}

    def _actor_critic_step(self) -> dict[str, float]:
        """One update of the actor-critic on ``horizon`` more steps of its imagined rollouts; returns what it logs."""
        loss, logs = self._pass("actor_critic", self._imagined_loss)
        logs["train/grad_norm"] = self._update("actor_critic", loss, self.grad_clip[2])
        return logs

    def _imagined_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The actor-critic's loss on the next ``horizon`` steps of its ``imagination_batch_size`` rollouts in the
        world model (started from real contexts, continued across calls), and what it logs."""
        if self._imagination is None:
            self._imagination = self._make_imagination()
        rollout = self._imagination.collect(self.horizon)
        loss, logs = actor_critic_loss(rollout, self.gamma, self.lam, self.weight_value_loss, self.weight_entropy_loss)
        out = {"imagination/return": rollout.rew.sum(1).mean().item(),
               "imagination/entropy": logs.pop("policy_entropy"),
               "imagination/lambda_return": logs.pop("lambda_return")}
        return loss, {**out, **{f"train/{key}": value for key, value in logs.items()}}

    # ------------------------------------------------------------------ state
    IMAGINATION_STATE = ("env.obs_buffer", "env.act_buffer", "env.hidden_h", "env.hidden_c", "env.ep_len",
                         "loop.obs", "loop.hidden_h", "loop.hidden_c")

    def _make_imagination(self) -> ImaginationLoop:
        """The imagined envs and the actor-critic's rollout loop, continuing a loaded checkpoint's when it had one."""
        wm_env = WorldModelEnv(self.policy.sampler, self.policy.rew_end_model, self._contexts, self.horizon,
                               self.imagination_batch_size)
        loop = ImaginationLoop(wm_env, self.policy.actor_critic)
        if (saved := self._imagination_state) is not None:
            t = {k: saved[k].to(self.device) for k in self.IMAGINATION_STATE}
            wm_env.obs_buffer, wm_env.act_buffer, wm_env.ep_len = t["env.obs_buffer"], t["env.act_buffer"], \
                t["env.ep_len"]
            wm_env.hidden, wm_env.num_envs = (t["env.hidden_h"], t["env.hidden_c"]), t["env.obs_buffer"].shape[0]
            loop.obs, loop.hidden = t["loop.obs"], (t["loop.hidden_h"], t["loop.hidden_c"])
            self._imagination_state = None
        return loop

    def _zoo_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        state = super()._zoo_state(tensors)
        state.update(epoch=self.epoch, final_epochs_done=self.final_epochs_done, updates=dict(self.updates),
                     sampler=self._sampler.bit_generator.state, reward_counts=self.reward_counts.tolist())
        if self._last_obs is not None:  # where collection stands, for load(force_reset=False) with the same env
            tensors["collect.last_obs"] = torch.as_tensor(np.asarray(self._last_obs)).clone()
            state["last_episode_starts"] = np.asarray(self._last_episode_starts, bool).tolist()
            if self._collect_hidden is not None:
                tensors["collect.hidden_h"], tensors["collect.hidden_c"] = (torch.as_tensor(h).clone()
                                                                            for h in self._collect_hidden)
        loop = self._imagination
        if loop is not None and loop.obs is not None:
            env = loop.env
            values = (env.obs_buffer, env.act_buffer, *env.hidden, env.ep_len, loop.obs, *loop.hidden)
            for key, value in zip(self.IMAGINATION_STATE, values, strict=True):
                tensors[f"imagination.{key}"] = value.detach().cpu().clone()
        elif self._imagination_state is not None:
            tensors.update({f"imagination.{k}": v for k, v in self._imagination_state.items()})
        return state

    def _zoo_set_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super()._zoo_set_state(state, tensors)
        self.epoch, self.updates = int(state["epoch"]), {k: int(state["updates"][k]) for k in COMPONENTS}
        self.final_epochs_done = int(state.get("final_epochs_done", 0))
        self.reward_counts = np.asarray(state.get("reward_counts", [0, 0, 0]), np.int64).reshape(3)
        self._sampler = np.random.default_rng()
        self._sampler.bit_generator.state = state["sampler"]
        if "collect.last_obs" in tensors:
            self._last_obs = tensors["collect.last_obs"].numpy()
            self._last_episode_starts = np.asarray(state["last_episode_starts"], bool)
            if "collect.hidden_h" in tensors:
                self._collect_hidden = (tensors["collect.hidden_h"].numpy(), tensors["collect.hidden_c"].numpy())
        if "imagination.loop.obs" in tensors:
            self._imagination_state = {k: tensors[f"imagination.{k}"] for k in self.IMAGINATION_STATE}

    @classmethod
    def load(cls, path: str | Path, env: Any = None, device: torch.device | str = "auto", custom_objects: Any = None,
             print_system_info: bool = False, force_reset: bool = True, **kwargs: Any) -> Diamond:
        """:meth:`ZooAlgorithm.load`; with ``force_reset=False`` and ``env`` (the same env, still running, in the
        same process) collection continues where the checkpoint stopped instead of resetting the env (SB3's
        meaning of ``force_reset``)."""
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        if force_reset or env is None:  # a fresh env: learn() resets it, and every episode starts anew
            model._last_obs, model._collect_hidden = None, None
        return model  # type: ignore[return-value]

    # ------------------------------------------------------------------ play (runners.play)
    #: imagined episodes in play mode never truncate (official ``src/play.py`` sets the horizon by hand)
    PLAY_HORIZON: ClassVar[int] = 10**9

    @property
    def play_context_length(self) -> int:
        """Real frames (and the actions taken in them) an imagined episode starts from: the denoiser's
        ``num_steps_conditioning`` (4). The action of the last frame is the first one played in imagination."""
        return int(self.policy.denoiser.cfg.unet.num_steps_conditioning)

    def play_env(self, num_envs: int = 1) -> WorldModelEnv:
        """``num_envs`` imagined envs of this world model, for :meth:`WorldModelEnv.reset_from` and ``step``: the
        trained sampler (``num_denoising_steps`` Euler steps) and reward/end model in eval mode, no truncation."""
        self.policy.set_training_mode(False)
        return WorldModelEnv(self.policy.sampler, self.policy.rew_end_model, None, self.PLAY_HORIZON, num_envs)

    def obs_to_frames(self, obs: np.ndarray) -> torch.Tensor:
        """uint8 observations ``[..., H, W, 3]`` -> float frames ``[..., 3, H, W]`` in [-1, 1] on the model's
        device (the world model's pixels)."""
        return frames_to_tensor(np.ascontiguousarray(obs)).to(self.device)

    def frames_to_obs(self, frames: torch.Tensor) -> np.ndarray:
        """Inverse of :meth:`obs_to_frames`: frames ``[..., 3, H, W]`` (clamped to [-1, 1]) -> uint8
        ``[..., H, W, 3]``."""
        from world_models.diamond import tensor_to_frames

        return tensor_to_frames(frames)
