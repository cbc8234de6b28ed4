"""ACT (Zhao et al. 2023, "Learning Fine-Grained Bimanual Manipulation with Low-Cost Hardware") as used by SRT (Kim et
al. 2024, "Surgical Robot Transformer"), trained from demonstrations as an SB3 algorithm, registered as ``act``.

``learn(total_timesteps=n)`` takes ``n`` gradient steps. A batch is drawn as ACT's ``EpisodicDataset`` does
(``utils.py`` of github.com/tonyzhaozh/act): a demonstration uniformly, a step ``t`` uniformly inside it, the images
at ``t`` and the absolute actions ``a_t .. a_{t+k-1}``, padded past the episode's end (``is_pad``), converted to the
chosen representation (:mod:`agents.act.actions`) with the measured pose at ``t`` and normalized by the dataset's
mean and std of that representation (std clipped at 0.01 as in ACT). Loss: masked L1 + ``kl_weight`` * KL
(:func:`agents.act.model.act_loss`). AdamW, the backbone at its own learning rate, no schedule, no clipping
unless ``grad_clip`` is set (official).

Demonstrations: an :class:`~agents.common.episode_buffer.EpisodeBuffer` (``python -m runners.demos env=needle``)
with ``obs`` uint8 ``[3, H, W, 3]`` (endoscope, wrist_left, wrist_right), absolute ``act [20]`` and the extra
``pose [20]`` (measured pose at each step).

Baselines as hyperparameters: single-step behaviour cloning with the same backbone = ``chunk_size=1,
use_cvae=false``; ACT without temporal ensembling = ``temporal_ensembling=false`` (chunks executed open loop).

Usage::

    model = ACT("MultiInputPolicy", env, demos="datasets/needle/demos-50ep-224px-ke0.0-s0.npz")
    model.learn(10_000)                # gradient steps
    model.save("runs/act_needle")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.act.actions import check_kind, to_representation
from agents.act.model import act_loss
from agents.act.policy import CAMERAS, ACTPolicy, channels_last
from agents.common.episode_buffer import EpisodeBuffer
from agents.common.gradient_steps import GradientStepAlgorithm
from agents.common.hyperparams import encode_hyperparams
from agents.common.optim import check_optimizer_kwargs, optimizer_class
from agents.common.persistence import RUNTIME_ARGS
from agents.common.precision import autocast, check_precision

STD_MIN = 1e-2  # ACT clips the action std at 0.01


class ACT(GradientStepAlgorithm):
    """Action Chunking with Transformers, image-only, with SRT's action representations.

    :param demos: path of the demonstrations (.npz written by ``runners.demos``)
    :param actions: ``absolute`` | ``relative`` | ``hybrid_relative`` (SRT's camera-centric, tool-centric, hybrid)
    :param learning_rate: of the transformer and heads (AdamW, constant: 1e-5 in ACT)
    :param lr_backbone: of the ResNet18 (1e-5 in ACT)
    :param weight_decay: AdamW's (1e-4)
    :param optimizer: ``adamw`` (ACT's) | ``adam`` | ``ademamix`` (:mod:`agents.common.optim`), decay ``weight_decay``
    :param optimizer_kwargs: the optimizer's other arguments (``betas``, ``eps``, AdEMAMix's ``alpha``)
    :param batch_size: samples per gradient step (8)
    :param chunk_size: ``k``, actions predicted at once (100)
    :param hidden_dim, enc_layers, dec_layers, n_heads, dim_feedforward, dropout: transformer (512, 4, 7, 8, 3200, 0.1)
    :param latent_dim: size of the CVAE latent ``z`` (32)
    :param kl_weight: ``beta`` of the KL term (10)
    :param use_cvae: False drops the CVAE encoder (``z = 0`` always; the single-step BC baseline)
    :param decoder_output: ``first`` (the official model reads the first decoder layer's output) | ``last``
    :param backbone_width: channel multiplier of the ResNet18 (1.0)
    :param backbone_stride: its output stride, 32 (ResNet18's) or 16 (``layer4`` unstrided, for small images)
    :param cameras: observation keys of the images the network sees (default: endoscope and both wrists)
    :param image_size: expected image side; the demos and the env must have it (None: whatever they have)
    :param temporal_ensembling: query every step and average the overlapping chunks (False: open loop)
    :param query_every: steps between queries without temporal ensembling (None: ``chunk_size``)
    :param grad_clip: clip of the global gradient norm (None or 0: none, as in ACT)
    :param precision: ``fp32``, ``bf16`` (the training forward pass under bfloat16 autocast; weights, optimizer and
        acting stay fp32; about 1.8x faster on CPUs with AMX, 10x slower on AVX2-only CPUs, where torch emulates it)
        or ``auto`` (bf16 where native: :mod:`agents.common.precision`)
    :param log_interval: gradient steps between two dumps of the ``train/*`` logs
    """

    agent_id = "act"
    data_info_attr: ClassVar[str] = "demos_info"
    policy_aliases: ClassVar[dict[str, type]] = {"MultiInputPolicy": ACTPolicy, "ACTPolicy": ACTPolicy}

    def __init__(
        self,
        policy: str | type[ACTPolicy],
        env: VecEnv | None,
        demos: str | None = None,
        actions: str = "hybrid_relative",
        learning_rate: float = 1e-5,
        lr_backbone: float = 1e-5,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        optimizer_kwargs: dict[str, Any] | None = None,
        batch_size: int = 8,
        chunk_size: int = 100,
        hidden_dim: int = 512,
        enc_layers: int = 4,
        dec_layers: int = 7,
        n_heads: int = 8,
        dim_feedforward: int = 3200,
        dropout: float = 0.1,
        latent_dim: int = 32,
        kl_weight: float = 10.0,
        use_cvae: bool = True,
        decoder_output: str = "first",
        backbone_width: float = 1.0,
        backbone_stride: int = 32,
        cameras: list[str] | tuple[str, ...] = CAMERAS,
        image_size: int | None = None,
        temporal_ensembling: bool = True,
        query_every: int | None = None,
        grad_clip: float | None = None,
        precision: str = "fp32",
        log_interval: int = 100,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        hyperparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        check_precision(precision)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size}; expected an integer >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout}; expected a value in [0, 1)")
        optimizer_class(optimizer)  # a name it knows
        if "weight_decay" in (optimizer_kwargs or {}):
            raise ValueError("optimizer_kwargs.weight_decay: set weight_decay= instead (the agent's own argument)")
        check_optimizer_kwargs(optimizer, optimizer_kwargs or {})
        self.hyperparams = encode_hyperparams({k: v for k, v in hyperparams.items() if k not in RUNTIME_ARGS})
        self.zoo_config = None
        BaseAlgorithm.__init__(  # not ZooAlgorithm.__init__: the hyperparameters are this constructor's, set above
            self, policy, env, learning_rate, policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log,
            verbose=verbose, device=device, support_multi_env=True, seed=seed,
            supported_action_spaces=(spaces.Box,),
        )
        self.demos, self.actions = demos, check_kind(actions)
        self.lr_backbone, self.weight_decay, self.batch_size = float(lr_backbone), weight_decay, int(batch_size)
        self.kl_weight, self.grad_clip, self.precision = float(kl_weight), grad_clip, precision
        self.cameras, self.image_size, self.log_interval = tuple(cameras), image_size, int(log_interval)
        self.temporal_ensembling, self.query_every = bool(temporal_ensembling), query_every
        self.optimizer_name, self.optimizer_kwargs = optimizer, dict(optimizer_kwargs or {})
        self.model_kwargs = dict(
            chunk_size=int(chunk_size), hidden_dim=int(hidden_dim), enc_layers=int(enc_layers),
            dec_layers=int(dec_layers), n_heads=int(n_heads), dim_feedforward=int(dim_feedforward),
            dropout=float(dropout), latent_dim=int(latent_dim), backbone_width=float(backbone_width),
            backbone_stride=int(backbone_stride), use_cvae=bool(use_cvae), decoder_output=decoder_output,
        )
        self.demos_info: dict[str, Any] | None = None
        self.buffer: EpisodeBuffer | None = None
        self._chunks_source: list[tuple[np.ndarray, np.ndarray]] = []  # per demo: absolute actions, measured poses
        self._sampler = np.random.default_rng(seed)
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.image_size is not None:
            shape = channels_last(self.observation_space[self.cameras[0]].shape)
            if tuple(shape[:2]) != (self.image_size, self.image_size):
                raise ValueError(f"image_size={self.image_size} but the env's images are {shape[0]}x{shape[1]}; "
                                 f"make the env with image_size={self.image_size}")
        kwargs = dict(self.policy_kwargs)
        kwargs.setdefault("optimizer_class", optimizer_class(self.optimizer_name))
        kwargs.setdefault("optimizer_kwargs", {"weight_decay": self.weight_decay, **self.optimizer_kwargs})
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, model_kwargs=self.model_kwargs,
            actions=self.actions, cameras=self.cameras, temporal_ensembling=self.temporal_ensembling,
            query_every=self.query_every, lr_backbone=self.lr_backbone, **kwargs,
        ).to(self.device)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    # ------------------------------------------------------------------ data
    def load_demos(self) -> EpisodeBuffer:
        """Read the demonstrations (once), check them against the spaces, and set the action normalization from
        them (first time only: a loaded model keeps its own)."""
        if self.buffer is not None:
            return self.buffer
        if not self.demos:
            raise ValueError("ACT learns from demonstrations: pass demos=<path of a .npz> "
                             "(record them with python -m runners.demos env=needle episodes=50)")
        if not Path(self.demos).is_file():
            raise ValueError(f"demos={self.demos}: no such file (record it with python -m runners.demos env=needle)")
        buffer = EpisodeBuffer.load(self.demos)
        obs_shape, act_shape = buffer.spec["obs"][0], buffer.spec["act"][0]
        image_shape = channels_last(self.observation_space[self.cameras[0]].shape)
        if "pose" not in buffer.extra_names:
            raise ValueError(f"demos={self.demos} has no per-step 'pose' extra; record them with runners.demos")
        if tuple(obs_shape) != (len(CAMERAS), *image_shape):
            raise ValueError(f"demos={self.demos} hold images {tuple(obs_shape)} (cameras, H, W, 3); the env's are "
                             f"{(len(CAMERAS), *image_shape)}: record demos at the env's image_size or change it")
        if tuple(act_shape) != self.action_space.shape:
            raise ValueError(f"demos={self.demos} hold actions of shape {tuple(act_shape)}; the env's are "
                             f"{self.action_space.shape}")
        self.buffer = buffer
        episodes = (buffer.episode(e) for e in range(buffer.num_episodes))
        self._chunks_source = [(ep.act.astype(np.float64), ep.extras["pose"].astype(np.float64)) for ep in episodes]
        if self.demos_info is None:  # a new model: normalization from these demonstrations
            mean, std = self._representation_stats()
            self.policy.action_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.policy.action_std.copy_(torch.as_tensor(std, dtype=torch.float32))
            lengths = buffer.lengths
            self.demos_info = {"path": str(self.demos), "episodes": int(buffer.num_episodes),
                               "transitions": int(lengths.sum()), "mean_length": float(lengths.mean())}
        return buffer

    load_data = load_demos  # what GradientStepAlgorithm.learn reads first

    def _representation_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (clipped at 0.01) of every real (unpadded) action of every chunk, in the representation."""
        k, total, sq, count = self.policy.chunk_size, 0.0, 0.0, 0
        for act, pose in self._chunks_source:
            n = len(act)
            idx = np.arange(n)[:, None] + np.arange(k)[None, :]  # [T, k]
            valid = idx < n
            rep = to_representation(act[np.minimum(idx, n - 1)], pose, self.actions)[valid]
            total, sq, count = total + rep.sum(0), sq + (rep**2).sum(0), count + len(rep)
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
        return mean, np.clip(std, STD_MIN, np.inf)

    def sample_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Images ``[B, C, H, W, 3]`` at ``t``, normalized chunks ``[B, k, 20]`` and ``is_pad [B, k]``."""
        buffer, k = self.load_demos(), self.policy.chunk_size
        ids = self._sampler.integers(0, buffer.num_episodes, batch_size)  # an episode uniformly (EpisodicDataset)
        starts = self._sampler.integers(0, buffer.lengths[ids])  # a step uniformly inside it
        images = buffer.get_segments(ids, starts, 1).obs[:, 0]  # [B, 3, H, W, 3] at t
        act, pose, pad = np.empty((batch_size, k, self.action_space.shape[0])), [], np.empty((batch_size, k), bool)
        for b, (e, t) in enumerate(zip(ids, starts, strict=True)):
            ep_act, ep_pose = self._chunks_source[e]
            idx = t + np.arange(k)
            pad[b] = idx >= len(ep_act)  # past the episode's end
            act[b] = ep_act[np.minimum(idx, len(ep_act) - 1)]  # edge padding (masked everywhere)
            pose.append(ep_pose[t])
        rep = to_representation(act, np.stack(pose), self.actions)
        cams = [CAMERAS.index(c) for c in self.cameras]
        is_pad = torch.as_tensor(pad, device=self.device)
        chunk = self.policy.normalize_actions(torch.as_tensor(rep, dtype=torch.float32, device=self.device))
        return {
            "images": torch.as_tensor(images[:, cams], device=self.device),
            "actions": torch.where(is_pad[..., None], 0.0, chunk),
            "is_pad": is_pad,
        }

    # ------------------------------------------------------------------ training
    def train_on_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on ``batch`` (:meth:`sample_batch`); returns the loss terms and the gradient norm (before
        clipping, if any). Distributed: the forward pass runs through DDP (the loss averages a fixed count per rank)."""
        self.policy.set_training_mode(True)
        lr = self.lr_schedule(self._current_progress_remaining)
        for group in self.policy.optimizer.param_groups:
            group["lr"] = self.lr_backbone if group.get("name") == "backbone" else lr
        with autocast(self.precision, self.device):
            a_hat, mu, logvar = self.ddp(self.policy.model)(batch["images"], batch["actions"], batch["is_pad"])
        loss, l1, kl = act_loss(a_hat, batch["actions"], batch["is_pad"], mu, logvar, self.kl_weight)
        self.policy.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        clip = float(self.grad_clip) if self.grad_clip else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.policy.optimizer.step()
        self._n_updates += 1
        return {"loss": float(loss.detach()), "l1": float(l1.detach()), "kl": float(kl.detach()),
                "grad_norm": float(grad_norm), "learning_rate": lr}
