"""The SB3 policy of ACT: predicts action chunks from the camera images and executes them with temporal ensembling.

Observations are the needle task's dict: one uint8 ``[H, W, 3]`` image per camera (or ``[3, H, W]`` after SB3's
``VecTransposeImage``, which SB3 wraps the training env in; both are accepted) and the measured ``pose [20]`` of
both tools. The network sees only the images (SRT); the pose converts each predicted chunk from its
representation (:mod:`agents.act.actions`) to ABSOLUTE actions with the pose measured when the chunk was predicted,
so a relative chunk keeps meaning what it meant at prediction time while it is being executed.

Execution (``imitate_episodes.py`` of the official code):

- temporal ensembling: the policy is queried at every step; the action at step ``t`` averages every stored
  prediction for ``t``, weighted ``w_i = exp(-m i)`` (``m = 0.01``), ``i = 0`` for the OLDEST prediction, weights
  normalized (:func:`ensemble_weights`, :func:`ensemble`);
- without it: a chunk is predicted every ``query_every`` steps (default ``chunk_size``) and executed open loop.

The recurrent ``state`` that ``predict`` takes and returns (as SB3's recurrent policies do) is a
:class:`ChunkState`: the stored absolute chunks of every env, the step each was predicted at, and the steps taken;
``episode_start`` clears an env's state, so ``evaluate_policy`` drives it like any recurrent policy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from agents.act.actions import check_kind, from_representation
from agents.act.model import DETRVAE, ACTConfig

CAMERAS = ("endoscope", "wrist_left", "wrist_right")  # the order of the demonstrations' stacked images
POSE_KEY = "pose"
ENSEMBLE_M = 0.01  # ACT's k in exp(-k * i)


def channels_last(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(H, W, 3)`` of an image space, which SB3 may have transposed to ``(3, H, W)`` (VecTransposeImage)."""
    shape = tuple(int(x) for x in shape)
    return (shape[1], shape[2], 3) if shape[0] == 3 and shape[-1] != 3 else shape  # type: ignore[return-value]


class ChunkState(NamedTuple):
    """Per env: ``chunks [n, m, k, 20]`` absolute predictions (the oldest first), ``made_at [n, m]`` the step each
    was predicted at (-1: empty slot) and ``steps [n]`` the steps taken in the episode."""

    chunks: np.ndarray
    made_at: np.ndarray
    steps: np.ndarray


def ensemble_weights(n: int, m: float = ENSEMBLE_M) -> np.ndarray:
    """Normalized ``exp(-m * i)``, ``i = 0..n-1``, ``i = 0`` for the oldest prediction."""
    w = np.exp(-m * np.arange(n))
    return w / w.sum()


def ensemble(predictions: np.ndarray, m: float = ENSEMBLE_M) -> np.ndarray:
    """Weighted mean of ``predictions [n, D]`` for one step, ordered oldest first."""
    return (ensemble_weights(len(predictions), m)[:, None] * predictions).sum(0)


class ACTPolicy(BasePolicy):
    """A :class:`~agents.act.model.DETRVAE` with the dataset's action normalization and chunk execution.

    :param model_kwargs: fields of :class:`~agents.act.model.ACTConfig` (sizes, ``use_cvae``, ``decoder_output``)
    :param actions: the representation the network predicts: ``absolute`` | ``relative`` | ``hybrid_relative``
    :param cameras: observation keys of the images the network sees, in order
    :param temporal_ensembling: query every step and average (True), or execute chunks open loop (False)
    :param query_every: steps between two queries without ensembling (None: ``chunk_size``)
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Any,
        model_kwargs: dict[str, Any] | None = None,
        actions: str = "hybrid_relative",
        cameras: tuple[str, ...] | list[str] = CAMERAS,
        temporal_ensembling: bool = True,
        query_every: int | None = None,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
        lr_backbone: float | None = None,
    ) -> None:
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs or {})
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"ACT needs a Dict observation space with {', '.join(CAMERAS)} and '{POSE_KEY}'")
        missing = [k for k in (*cameras, POSE_KEY) if k not in observation_space.spaces]
        if missing:
            raise ValueError(f"the observation space lacks {missing}; it has {list(observation_space.spaces)}")
        self.actions, self.cameras = check_kind(actions), tuple(cameras)
        self.temporal_ensembling = bool(temporal_ensembling)
        self.image_shape = channels_last(observation_space[self.cameras[0]].shape)
        self.model_kwargs = dict(model_kwargs or {})
        self.config = ACTConfig(action_dim=action_space.shape[0], n_cameras=len(self.cameras), **self.model_kwargs)
        self.chunk_size = self.config.chunk_size
        self.query_every = int(query_every or self.chunk_size)
        if not 1 <= self.query_every <= self.chunk_size:
            raise ValueError(f"query_every={query_every}; expected 1..chunk_size={self.chunk_size}")
        self.model = DETRVAE(self.config)
        dim = action_space.shape[0]
        self.register_buffer("action_mean", torch.zeros(dim))  # of the chosen representation, from the demos
        self.register_buffer("action_std", torch.ones(dim))
        self.lr_backbone = lr_schedule(1) if lr_backbone is None else float(lr_backbone)
        backbone = list(self.model.backbone.parameters())
        ids = {id(p) for p in backbone}
        groups = [{"params": [p for p in self.parameters() if id(p) not in ids], "name": "transformer"},
                  {"params": backbone, "lr": self.lr_backbone, "name": "backbone"}]
        self.optimizer = self.optimizer_class(groups, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model_kwargs=self.model_kwargs, actions=self.actions, cameras=list(self.cameras),
                    temporal_ensembling=self.temporal_ensembling, query_every=self.query_every,
                    lr_backbone=self.lr_backbone)
        return data

    # --- conversions ---------------------------------------------------------------------------------------------
    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_mean) / self.action_std

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return actions * self.action_std + self.action_mean

    def stack_images(self, observation: dict[str, Any]) -> torch.Tensor:
        """The cameras' uint8 images ``[n, C, H, W, 3]`` as a tensor on the policy's device."""
        h, w, _ = self.image_shape
        images = []
        for key in self.cameras:
            image = np.asarray(observation[key], np.uint8)
            if image.shape[-3:] == (3, h, w) and image.shape[-1] != 3:  # SB3's VecTransposeImage: channels first
                image = np.moveaxis(image, -3, -1)
            images.append(image.reshape(-1, *self.image_shape))
        return torch.as_tensor(np.stack(images, axis=1), device=self.device)

    def predict_chunk(self, observation: dict[str, Any]) -> np.ndarray:
        """ABSOLUTE action chunks ``[n, k, 20]`` (float64) predicted from the images with ``z = 0``, converted with
        the measured pose of this step."""
        self.set_training_mode(False)
        with torch.no_grad():
            rep = self.unnormalize_actions(self.model(self.stack_images(observation))[0].float())
        pose = np.asarray(observation[POSE_KEY], np.float64).reshape(-1, self.action_space.shape[0])
        return from_representation(rep.cpu().numpy(), pose, self.actions)

    # --- acting --------------------------------------------------------------------------------------------------
    def initial_state(self, n_envs: int) -> ChunkState:
        m = self.chunk_size if self.temporal_ensembling else 1
        return ChunkState(np.zeros((n_envs, m, self.chunk_size, self.action_space.shape[0])),
                          np.full((n_envs, m), -1, np.int64), np.zeros(n_envs, np.int64))

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError("ACTPolicy executes chunks: call predict(obs, state, episode_start)")

    def predict(  # type: ignore[override]
        self,
        observation: dict[str, np.ndarray],
        state: ChunkState | tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, ChunkState]:
        """The absolute action ``[n_envs, 20]`` of this step and the updated :class:`ChunkState`.

        The model is deterministic at test time (``z = 0``, no dropout), so ``deterministic`` changes nothing.
        """
        if not isinstance(observation, dict) or POSE_KEY not in observation:
            raise ValueError(f"ACT acts on dict observations with {', '.join(self.cameras)} and '{POSE_KEY}'")
        n = len(np.asarray(observation[POSE_KEY]).reshape(-1, self.action_space.shape[0]))
        st = self.initial_state(n) if state is None else ChunkState(*(np.array(a, copy=True) for a in state))
        if len(st.steps) != n:
            raise ValueError(f"the state holds {len(st.steps)} envs; the observation has {n}")
        if episode_start is not None:
            for i in np.flatnonzero(np.asarray(episode_start, bool)):
                st.chunks[i], st.made_at[i], st.steps[i] = 0.0, -1, 0
        t = st.steps
        if self.temporal_ensembling:
            query = np.ones(n, bool)
        else:
            query = (st.made_at[:, 0] < 0) | (t - st.made_at[:, 0] >= self.query_every)
        if query.any():
            sub = {k: np.asarray(v)[query] if np.ndim(v) and len(v) == n else v for k, v in observation.items()}
            chunks = self.predict_chunk(sub)
            # the oldest slot makes room: slots stay ordered oldest first
            st.chunks[query] = np.concatenate([st.chunks[query][:, 1:], chunks[:, None]], axis=1)
            st.made_at[query] = np.concatenate([st.made_at[query][:, 1:], t[query][:, None]], axis=1)
        actions = np.empty((n, self.action_space.shape[0]))
        for i in range(n):
            age = t[i] - st.made_at[i]  # row of each stored chunk that is meant for this step
            live = (st.made_at[i] >= 0) & (age < self.chunk_size)
            rows = st.chunks[i][live, age[live]]  # oldest first
            actions[i] = ensemble(rows) if self.temporal_ensembling else rows[-1]
        st.steps[:] += 1
        return np.clip(actions, self.action_space.low, self.action_space.high).astype(np.float32), st
