"""DIAMOND (Alonso et al., NeurIPS 2024, "Diffusion for World Modeling: Visual Details Matter in Atari",
arXiv 2405.12399) as an SB3 algorithm, registered as ``diamond``.

``learn(total_timesteps=n)`` runs the paper's loop (``src/trainer.py`` of github.com/eloialonso/diamond) until ``n``
env steps: epoch 0 collects ``initial_collect_steps`` random steps, later epochs ``collect_steps`` steps with the
current policy (``epsilon`` random actions); after each collection the denoiser, the reward/end model and the
actor-critic train ``train_steps`` steps each (``first_epoch_train_steps`` in epoch 0). World-model batches are
segments of the shared :class:`~agents.common.episode_buffer.EpisodeBuffer` drawn with DIAMOND's recency weights;
the actor-critic learns from ``imagination_batch_size`` imagined rollouts of ``horizon`` steps started from real
4-frame contexts (:mod:`world_models.imagination`, :mod:`agents.common.actor_critic`). Each model has its AdamW
(lr 1e-4, eps 1e-8, linear warm-up over ``warmup_steps``) and its gradient-norm clip.

Usage::

    model = Diamond("CnnPolicy", make_vec_env(breakout_cfg), size="tiny")
    model.learn(2_000)
    model.save("runs/diamond_breakout", replay_buffer=True)   # with the episode buffer
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.common.actor_critic import ImaginationLoop, actor_critic_loss
from agents.common.episode_buffer import EpisodeBuffer
from agents.common.hyperparams import encode_hyperparams
from agents.common.persistence import RUNTIME_ARGS, ZooAlgorithm
from agents.diamond.policy import DiamondPolicy
from world_models.diamond import batch_from_segment, frames_to_tensor
from world_models.imagination import WorldModelEnv

COMPONENTS = ("denoiser", "rew_end_model", "actor_critic")


class _EpochLoop:
    """DIAMOND's ``learn`` (placed after :class:`ZooAlgorithm`, which times it)."""

    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int | None = None,
              tb_log_name: str = "", reset_num_timesteps: bool = True, progress_bar: bool = False) -> Any:
        """Train until ``total_timesteps`` env steps: collect, then train the three models, epoch after epoch."""
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                                      progress_bar)
        callback.on_training_start(locals(), globals())
        interval, started, start_steps = log_interval or self.log_interval, time.time(), self.num_timesteps
        while self.num_timesteps < total_timesteps:
            first = self.epoch == 0
            n = self.initial_collect_steps if first else self.collect_steps
            if not self.collect(min(n, total_timesteps - self.num_timesteps), first, callback):
                break
            logs = self.train(tuple(self.first_epoch_train_steps) if first else (self.train_steps,) * 3)
            self.epoch += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if self.epoch % interval == 0:
                for key, value in logs.items():
                    self.logger.record(key, value)
                if self.ep_info_buffer:
                    self.logger.record("rollout/ep_rew_mean", float(np.mean([e["r"] for e in self.ep_info_buffer])))
                    self.logger.record("rollout/ep_len_mean", float(np.mean([e["l"] for e in self.ep_info_buffer])))
                self.logger.record("time/fps", (self.num_timesteps - start_steps) / max(time.time() - started, 1e-9))
                self.logger.record("time/epochs", self.epoch)
                self.logger.record("train/n_updates", self._n_updates)
                self.logger.dump(self.num_timesteps)
        callback.on_training_end()
        return self



class Diamond(ZooAlgorithm, _EpochLoop, BaseAlgorithm):
    """DIAMOND: an EDM diffusion world model and an actor-critic trained in its imagination.

    :param size: networks, ``paper`` or ``tiny``
    :param learning_rate: of the three AdamW optimizers (1e-4)
    :param weight_decay: AdamW's, per component ``[denoiser, rew_end_model, actor_critic]`` (``[1e-2, 1e-2, 0]``)
    :param warmup_steps: linear learning-rate warm-up of each component, in its own updates (100)
    :param grad_clip: max gradient norm per component (``[1.0, 100.0, 100.0]``)
    :param batch_size: segments per world-model step (32)
    :param rew_end_seq_length: frames per reward/end segment (19 = horizon 15 + 4 context frames)
    :param initial_collect_steps: random env steps of epoch 0 (5000)
    :param collect_steps: env steps per later epoch (100)
    :param train_steps: updates of each component per epoch (400)
    :param first_epoch_train_steps: updates per component in epoch 0 (``[10000, 10000, 5000]``)
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
    policy_aliases: ClassVar[dict[str, type]] = {"CnnPolicy": DiamondPolicy, "DiamondPolicy": DiamondPolicy}
    policy: DiamondPolicy

    def __init__(
        self,
        policy: str | type[DiamondPolicy],
        env: VecEnv | None,
        size: str = "paper",
        learning_rate: float = 1e-4,
        weight_decay: list[float] | tuple[float, ...] = (1e-2, 1e-2, 0.0),
        warmup_steps: int = 100,
        grad_clip: list[float] | tuple[float, ...] = (1.0, 100.0, 100.0),
        batch_size: int = 32,
        rew_end_seq_length: int = 19,
        initial_collect_steps: int = 5000,
        collect_steps: int = 100,
        train_steps: int = 400,
        first_epoch_train_steps: list[int] | tuple[int, ...] = (10000, 10000, 5000),
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
        if len(weight_decay) != 3 or len(grad_clip) != 3 or len(first_epoch_train_steps) != 3:
            raise ValueError(f"weight_decay={list(weight_decay)}, grad_clip={list(grad_clip)} and "
                             f"first_epoch_train_steps={list(first_epoch_train_steps)} need one value per component: "
                             f"{', '.join(COMPONENTS)}")
        if int(initial_collect_steps) < 1 or int(collect_steps) < 1:
            raise ValueError(f"initial_collect_steps={initial_collect_steps} and collect_steps={collect_steps} "
                             "must be >= 1")
        self.hyperparams = encode_hyperparams({k: v for k, v in args.items() if k not in RUNTIME_ARGS})
        self.zoo_config = None
        BaseAlgorithm.__init__(  # not ZooAlgorithm.__init__: the hyperparameters are this constructor's, set above
            self, policy, env, learning_rate, policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log,
            verbose=verbose, device=device, support_multi_env=True, seed=seed,
            supported_action_spaces=(spaces.Discrete,),
        )
        self.size, self.num_denoising_steps, self.diffusion = size, int(num_denoising_steps), diffusion
        self.weight_decay, self.grad_clip = [float(w) for w in weight_decay], [float(c) for c in grad_clip]
        self.warmup_steps, self.batch_size, self.rew_end_seq_length = int(warmup_steps), int(batch_size), \
            int(rew_end_seq_length)
        self.initial_collect_steps, self.collect_steps = int(initial_collect_steps), int(collect_steps)
        self.train_steps, self.first_epoch_train_steps = int(train_steps), [int(s) for s in first_epoch_train_steps]
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
        for name, wd in zip(COMPONENTS, self.weight_decay, strict=True):
            params = getattr(self.policy, name).parameters()
            opt = torch.optim.AdamW(params, lr=self.learning_rate, eps=1e-8, weight_decay=wd)
            setattr(self, f"optimizer_{name}", opt)
            self.optimizers[name] = opt
        self.updates = dict.fromkeys(COMPONENTS, 0)
        self.epoch = 0
        self.episode_buffer = EpisodeBuffer((*self.observation_space.shape[1:], 3), np.uint8, (), np.int64,
                                            capacity_steps=self.buffer_capacity)
        self._sampler = np.random.default_rng(self.seed)
        self._imagination: ImaginationLoop | None = None
        self._collect_hidden: Any = None

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", *(f"optimizer_{name}" for name in COMPONENTS)], []

    # ------------------------------------------------------------------ collection
    def _hwc(self, obs: np.ndarray) -> np.ndarray:
        return np.moveaxis(obs, 1, -1) if obs.shape[1:] == self.observation_space.shape else obs

    def collect(self, n_steps: int, random: bool, callback: Any) -> bool:
        """``n_steps`` env steps (per env of the VecEnv: ``ceil(n / n_envs)``) into the episode buffer."""
        env, n = self.env, self.env.num_envs  # type: ignore[union-attr]
        for _ in range(-(-n_steps // n)):
            obs = self._last_obs
            if random:
                act = np.array([self.action_space.sample() for _ in range(n)])
            else:
                act, self._collect_hidden = self.policy.predict(obs, self._collect_hidden, self._last_episode_starts)
                explore = self._sampler.random(n) < self.epsilon
                act = np.where(explore, self._sampler.integers(0, self.action_space.n, n), act)
            new_obs, rew, dones, infos = env.step(act)
            frames = self._hwc(obs)
            for i in range(n):
                trunc = bool(dones[i]) and bool(infos[i].get("TimeLimit.truncated", False))
                self.episode_buffer.add_step(i, frames[i], act[i], float(rew[i]), bool(dones[i]) and not trunc, trunc)
            self.num_timesteps += n
            self._update_info_buffer(infos, dones)
            self._last_obs, self._last_episode_starts = new_obs, dones
            callback.update_locals(locals())
            if not callback.on_step():
                return False
        return True

    # ------------------------------------------------------------------ training
    def _update(self, name: str, loss: torch.Tensor, clip: float) -> float:
        """One AdamW step of ``name`` with linear warm-up; returns the gradient norm before clipping."""
        opt, self.updates[name] = self.optimizers[name], self.updates[name] + 1
        for group in opt.param_groups:
            group["lr"] = self.learning_rate * min(1.0, self.updates[name] / max(1, self.warmup_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(getattr(self.policy, name).parameters(), clip)
        opt.step()
        return float(norm)

    def _segments(self, batch_size: int, seq_len: int, beyond_end: bool) -> Any:
        seg = self.episode_buffer.sample_segments(batch_size, seq_len, self._sampler, beyond_end,
                                                  weights=self.sample_weights, counter_key="diamond")
        return batch_from_segment(seg, self.device)

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

        def add(key: str, value: float) -> None:
            sums.setdefault(key, []).append(value)

        for _ in range(steps[0]):
            loss, _ = self.policy.denoiser.loss(self._segments(self.batch_size, self.policy.denoiser.cfg.seq_length,
                                                               False))
            add("world_model/loss_denoising", loss.item())
            add("world_model/grad_norm_denoising", self._update("denoiser", loss, self.grad_clip[0]))
        for _ in range(steps[1]):
            loss, logs = self.policy.rew_end_model.loss(self._segments(self.batch_size, self.rew_end_seq_length, True))
            add("world_model/loss_rew", logs["loss_rew"])
            add("world_model/loss_end", logs["loss_end"])
            self._update("rew_end_model", loss, self.grad_clip[1])
        if steps[2] and self._imagination is None:
            self.policy.denoiser.eval()
            self.policy.rew_end_model.eval()
            wm_env = WorldModelEnv(self.policy.sampler, self.policy.rew_end_model, self._contexts, self.horizon,
                                   self.imagination_batch_size)
            self._imagination = ImaginationLoop(wm_env, self.policy.actor_critic)
        for _ in range(steps[2]):
            rollout = self._imagination.collect(self.horizon)  # type: ignore[union-attr]
            loss, logs = actor_critic_loss(rollout, self.gamma, self.lam, self.weight_value_loss,
                                           self.weight_entropy_loss)
            add("imagination/return", rollout.rew.sum(1).mean().item())
            add("imagination/entropy", logs.pop("policy_entropy"))
            add("imagination/lambda_return", logs.pop("lambda_return"))
            for key, value in logs.items():
                add(f"train/{key}", value)
            add("train/grad_norm", self._update("actor_critic", loss, self.grad_clip[2]))
        self._n_updates += sum(steps)
        return {key: float(np.mean(values)) for key, values in sums.items()}

    # ------------------------------------------------------------------ state
    def _zoo_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        state = super()._zoo_state(tensors)
        state.update(epoch=self.epoch, updates=dict(self.updates), sampler=self._sampler.bit_generator.state)
        return state

    def _zoo_set_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super()._zoo_set_state(state, tensors)
        self.epoch, self.updates = int(state["epoch"]), {k: int(state["updates"][k]) for k in COMPONENTS}
        self._sampler = np.random.default_rng()
        self._sampler.bit_generator.state = state["sampler"]
