"""Offline trainers of the Decision Transformer (``dt``) and RADT (``radt``) as SB3 algorithms.

``learn(total_timesteps=n)`` takes ``n`` gradient steps on windows of ``K`` steps drawn from an offline dataset
(D4RL layout, read into the shared :class:`~agents.common.episode_buffer.EpisodeBuffer`). Batches are drawn as in
the DT/RADT code (github.com/CyberAgentAILab/radt, gym/experiment.py ``get_batch``): an episode with probability
proportional to its length, a start ``s`` uniform inside it, the steps ``[s, s + K)`` that exist, left-padded to
``K``; states normalized by the dataset's mean and std, returns-to-go (undiscounted, from each step to the end of
the episode) divided by ``return_scale``. Loss: mean squared error of the predicted actions at the real steps.
AdamW (``optimizer=``: or Adam, or AdEMAMix) with linear warm-up of the learning rate and gradient-norm clipping.

The agent acts in a :class:`~envs.return_to_go.ReturnToGoVecEnv` (the target return is a property of the env);
constructing or loading it with a plain env wraps the env, conditioned on ``target_return`` (default: the 95th
percentile of the dataset's episode returns, the top of the paper's evaluation targets).

Usage::

    env = make_vec_env(hopper_cfg, n_envs=1, seed=0)
    model = RADT("MultiInputPolicy", env, dataset="datasets/hopper-medium.npz")
    model.learn(100_000)               # gradient steps
    model.save("runs/radt_hopper")
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.common.episode_buffer import EpisodeBuffer
from agents.common.gradient_steps import GradientStepAlgorithm
from agents.common.hyperparams import encode_hyperparams
from agents.common.optim import check_optimizer_kwargs, optimizer_class
from agents.common.persistence import RUNTIME_ARGS
from agents.common.precision import autocast, check_precision
from agents.radt.policy import SequencePolicy
from envs.datasets import episode_returns, load_dataset
from envs.return_to_go import OBS_KEY, ReturnToGoVecEnv, unwrap_conditioning

PAD_ACTION = -10.0  # the DT code pads actions with -10 (never attended to: padded keys are masked)


def returns_to_go(rewards: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
    """Undiscounted return from each step to the end of its episode, ``[N]`` float32."""
    out = np.empty(len(rewards), np.float64)
    bounds = np.append(episode_starts, len(rewards))
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        out[s:e] = np.cumsum(rewards[s:e][::-1], dtype=np.float64)[::-1]
    return out.astype(np.float32)


class SequenceAgent(GradientStepAlgorithm):
    """Shared trainer of :class:`DT` and :class:`RADT`; subclasses set ``model_name`` and their model's options.

    :param dataset: path of the offline dataset (.npz, D4RL layout; the runners resolve ``medium`` etc.)
    :param learning_rate: peak learning rate of AdamW (after ``warmup_steps`` of linear warm-up)
    :param batch_size: windows per gradient step
    :param context: ``K``, steps per window
    :param embed_dim, n_layer, n_head, dropout: transformer size
    :param norm: ``layernorm`` | ``layernorm_nobias`` | ``rmsnorm``
    :param cla_factor: layers per shared K/V projection (cross-layer attention); 1 = none
    :param weight_decay, warmup_steps, grad_clip: optimization (AdamW, linear warm-up, clip of the global norm)
    :param optimizer: ``adamw`` (the papers'), ``adam`` or ``ademamix`` (:mod:`agents.common.optim`); its weight
        decay is ``weight_decay`` (decoupled for AdamW and AdEMAMix, an L2 term for Adam)
    :param optimizer_kwargs: the optimizer's other arguments (``betas``, ``eps``, AdEMAMix's ``alpha`` and
        ``T_alpha_beta3``)
    :param return_scale: returns-to-go are divided by it
    :param max_ep_len: episode timesteps beyond it share the last timestep embedding
    :param target_return: return the eval env is conditioned on (None: the dataset's 95th percentile)
    :param precision: ``fp32``, ``bf16`` (the training forward pass under bfloat16 autocast; weights, optimizer and
        acting stay fp32; about 1.8x faster on CPUs with AMX, 10x slower on AVX2-only CPUs, where torch emulates it)
        or ``auto`` (bf16 where native: :mod:`agents.common.precision`)
    :param log_interval: gradient steps between two dumps of the ``train/*`` logs
    """

    model_name: ClassVar[str] = ""
    data_info_attr: ClassVar[str] = "dataset_info"
    policy_aliases: ClassVar[dict[str, type]] = {
        "MultiInputPolicy": SequencePolicy, "SequencePolicy": SequencePolicy,
    }

    def __init__(
        self,
        policy: str | type[SequencePolicy],
        env: VecEnv | None,
        dataset: str | None = None,
        learning_rate: float = 1e-4,
        batch_size: int = 64,
        context: int = 20,
        embed_dim: int = 128,
        n_layer: int = 3,
        n_head: int = 1,
        dropout: float = 0.1,
        norm: str = "layernorm",
        cla_factor: int = 1,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        optimizer_kwargs: dict[str, Any] | None = None,
        warmup_steps: int = 10_000,
        grad_clip: float = 0.25,
        return_scale: float = 1000.0,
        max_ep_len: int = 1000,
        target_return: float | None = None,
        precision: str = "fp32",
        log_interval: int = 100,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
        **model_options: Any,
    ) -> None:
        hyperparams = {k: v for k, v in locals().items() if k not in ("self", "__class__", "model_options")}
        for name, value in (("batch_size", batch_size), ("context", context), ("embed_dim", embed_dim),
                            ("n_layer", n_layer), ("n_head", n_head), ("max_ep_len", max_ep_len)):
            if int(value) < 1:
                raise ValueError(f"{name}={value}; expected an integer >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout}; expected a value in [0, 1)")
        check_precision(precision)
        if return_scale <= 0:
            raise ValueError(f"return_scale={return_scale}; expected a positive number")
        optimizer_class(optimizer)  # a name it knows
        if "weight_decay" in (optimizer_kwargs or {}):
            raise ValueError("optimizer_kwargs.weight_decay: set weight_decay= instead (the agent's own argument)")
        check_optimizer_kwargs(optimizer, optimizer_kwargs or {})
        self.hyperparams = encode_hyperparams(
            {k: v for k, v in {**hyperparams, **model_options}.items() if k not in RUNTIME_ARGS}
        )
        self.zoo_config = None
        if policy == "MlpPolicy":  # the registry's name for a Box env; the agent sees {observation, return_to_go}
            policy = "MultiInputPolicy"
        if env is not None and isinstance(env.observation_space, spaces.Box):
            env = ReturnToGoVecEnv(env, target_return or 0.0)
        BaseAlgorithm.__init__(  # not ZooAlgorithm.__init__: the hyperparameters are this constructor's, set above
            self, policy, env, learning_rate, policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log,
            verbose=verbose, device=device, support_multi_env=True, seed=seed,
            supported_action_spaces=(spaces.Box,),
        )
        self.dataset = dataset
        self.batch_size, self.context = int(batch_size), int(context)
        self.weight_decay, self.warmup_steps, self.grad_clip = weight_decay, int(warmup_steps), grad_clip
        self.return_scale, self.target_return, self.log_interval = return_scale, target_return, int(log_interval)
        self.precision = precision
        self.optimizer_name, self.optimizer_kwargs = optimizer, dict(optimizer_kwargs or {})
        self.model_kwargs = dict(
            embed_dim=embed_dim, n_layer=n_layer, n_head=n_head, context=context, max_ep_len=max_ep_len,
            dropout=dropout, norm=norm, cla_factor=cla_factor, **model_options,
        )
        self.dataset_info: dict[str, Any] | None = None
        self.buffer: EpisodeBuffer | None = None
        self._sampler = np.random.default_rng(seed)
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        kwargs = dict(self.policy_kwargs)
        kwargs.setdefault("optimizer_class", optimizer_class(self.optimizer_name))
        kwargs.setdefault("optimizer_kwargs", {"weight_decay": self.weight_decay, **self.optimizer_kwargs})
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, model=self.model_name,
            model_kwargs=self.model_kwargs, return_scale=self.return_scale, **kwargs,
        ).to(self.device)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    @classmethod
    def load(cls, path: str | Path, env: VecEnv | None = None, device: torch.device | str = "auto", **kwargs: Any):
        """Load a checkpoint; a plain env is wrapped in a :class:`ReturnToGoVecEnv` on the stored target return."""
        if env is not None and isinstance(env.observation_space, spaces.Box):
            env = ReturnToGoVecEnv(env, 0.0)
        model = super().load(path, env=env, device=device, **kwargs)
        if isinstance(model.env, ReturnToGoVecEnv):
            model.env.set_target_return(model.default_target_return())
        return model

    def wrap_env(self, env: VecEnv, target_return: float | None = None) -> ReturnToGoVecEnv:
        """``env`` conditioned on ``target_return`` (default: :meth:`default_target_return`)."""
        target = self.default_target_return() if target_return is None else float(target_return)
        info = self.dataset_info
        if info is not None and not info["return_min"] <= target <= info["return_max"]:
            warnings.warn(
                f"target_return={target:g} is outside the dataset's episode returns "
                f"[{info['return_min']:.1f}, {info['return_max']:.1f}]",
                stacklevel=2,
            )
        return ReturnToGoVecEnv(unwrap_conditioning(env), target)

    def default_target_return(self) -> float:
        if self.target_return is not None:
            return float(self.target_return)
        if self.dataset_info is not None:
            return float(self.dataset_info["return_p95"])
        return 0.0

    # ------------------------------------------------------------------ data
    def load_dataset(self) -> EpisodeBuffer:
        """Read the dataset (once), check it against the spaces, and set the normalization from it (first time)."""
        if self.buffer is not None:
            return self.buffer
        if not self.dataset:
            raise ValueError(f"{type(self).__name__} learns from a dataset: pass dataset=<path of a .npz>")
        data = load_dataset(self.dataset, self.observation_space[OBS_KEY], self.action_space)
        data["infos/rtg"] = returns_to_go(data["rewards"], data["episode_starts"])
        self.buffer = EpisodeBuffer.from_d4rl_dict(data)
        returns = episode_returns(data)
        info = {
            "path": str(self.dataset), "episodes": int(len(returns)), "transitions": int(len(data["rewards"])),
            "return_min": float(returns.min()), "return_max": float(returns.max()),
            "return_mean": float(returns.mean()), "return_p5": float(np.percentile(returns, 5)),
            "return_p95": float(np.percentile(returns, 95)),
        }
        if self.dataset_info is None:  # a new model: normalization from this dataset
            obs = data["observations"].astype(np.float64)
            self.policy.state_mean.copy_(torch.as_tensor(obs.mean(0), dtype=torch.float32))
            self.policy.state_std.copy_(torch.as_tensor(obs.std(0) + 1e-6, dtype=torch.float32))
            self.dataset_info = info
        if isinstance(self.env, ReturnToGoVecEnv):
            self.env.set_target_return(self.default_target_return())
        return self.buffer

    load_data = load_dataset  # what GradientStepAlgorithm.learn reads first

    def sample_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """``batch_size`` left-padded windows of ``K`` steps as tensors (see the module docstring)."""
        buffer, k = self.load_dataset(), self.context
        ids, starts = buffer.sample_steps(batch_size, self._sampler)  # episode ∝ length, start uniform
        seg = buffer.get_segments(ids, starts, k)  # right-padded: steps [s, s + K)
        shift = k - seg.mask.sum(1)  # move the real steps to the end of the window
        cols = (np.arange(k)[None, :] - shift[:, None]) % k
        rows = np.arange(batch_size)[:, None]

        def left(arr: np.ndarray) -> np.ndarray:
            return arr[rows, cols]

        valid = left(seg.mask)
        offsets = np.arange(k)[None, :] - shift[:, None]
        timesteps = np.minimum(starts[:, None] + offsets, self.policy.model.max_ep_len - 1)
        policy = self.policy
        states = policy.normalize_states(torch.as_tensor(left(seg.obs), dtype=torch.float32, device=self.device))
        actions = policy.to_unit_actions(torch.as_tensor(left(seg.act), dtype=torch.float32, device=self.device))
        valid_t = torch.as_tensor(valid, device=self.device)
        return {
            "states": torch.where(valid_t[..., None], states, 0.0),
            "actions": torch.where(valid_t[..., None], actions, PAD_ACTION),
            "returns_to_go": torch.as_tensor(left(seg.extras["rtg"]), device=self.device)[..., None]
            / self.return_scale,
            "timesteps": torch.as_tensor(np.where(valid, timesteps, 0), device=self.device),
            "valid": valid_t,
        }

    # ------------------------------------------------------------------ training
    def current_learning_rate(self) -> float:
        """Linear warm-up from ``lr / warmup_steps`` to ``lr`` (LambdaLR ``min((step + 1) / warmup, 1)``)."""
        lr = self.lr_schedule(self._current_progress_remaining)
        return lr * min((self._n_updates + 1) / max(self.warmup_steps, 1), 1.0)

    def train_on_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on ``batch`` (:meth:`sample_batch`); returns the loss and the gradient norm before
        clipping. Distributed: the forward pass runs through DDP, the loss is the mean over every rank's real steps."""
        self.policy.set_training_mode(True)
        lr = self.current_learning_rate()
        for group in self.policy.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.precision, self.device):
            predicted = self.ddp(self.policy.model)(
                batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"], batch["valid"]
            )
        loss = self.batch_mean(((predicted.float() - batch["actions"]) ** 2)[batch["valid"]])
        self.policy.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        self.policy.optimizer.step()
        self._n_updates += 1
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "learning_rate": lr}

class DT(SequenceAgent):
    """Decision Transformer (Chen et al. 2021), registered as ``dt``."""

    agent_id = "dt"
    model_name = "dt"

    def __init__(self, policy: Any, env: Any, activation: str = "gelu", **kwargs: Any) -> None:
        super().__init__(policy, env, activation=activation, **kwargs)


class RADT(SequenceAgent):
    """Return-Aligned Decision Transformer (Tanaka et al. 2024), registered as ``radt``.

    :param seqra: cross-attention to the returns with a zero-initialized gate (False: the "w/o SeqRA" ablation)
    :param stepra: adaptive layer norm from the step's return (False: the "w/o StepRA" ablation)
    """

    agent_id = "radt"
    model_name = "radt"

    def __init__(self, policy: Any, env: Any, seqra: bool = True, stepra: bool = True, **kwargs: Any) -> None:
        super().__init__(policy, env, seqra=seqra, stepra=stepra, **kwargs)
