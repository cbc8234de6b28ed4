"""The world model's training batch: segments of frames, actions, rewards and ends as torch tensors.

Frames are ``[-1, 1]`` floats ``[B, L, 3, H, W]``; padded positions (``mask`` False) hold 0, the mid-grey frame of
DIAMOND's ``make_segment`` (github.com/eloialonso/diamond, ``src/data/utils.py``, zero padding after the frames are
scaled to [-1, 1]). :func:`batch_from_segment` converts a :class:`~agents.common.episode_buffer.Segment` of uint8
``[B, L, H, W, 3]`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agents.common.episode_buffer import Segment


@dataclass
class WorldModelBatch:
    """``obs [B, L, 3, H, W]`` float in [-1, 1], ``act [B, L]`` int64, ``rew [B, L]`` float, ``end [B, L]`` and
    ``trunc [B, L]`` bool, ``mask [B, L]`` bool (False where padded).

    ``final_obs [B, 3, H, W]`` (optional): for windows whose episode terminates inside them, the observation that
    followed the terminal step (a step the buffer does not store). The reward/end model then sees it as the next frame
    of the terminal transition, as the official ``RewEndModel.forward`` does with ``info["final_observation"]``;
    rows without a termination are ignored. Without it the terminal transition's next frame is the grey padding.
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    mask: torch.Tensor
    final_obs: torch.Tensor | None = None

    def to(self, device: str | torch.device) -> WorldModelBatch:
        move = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return WorldModelBatch(**move)


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames ``[..., H, W, C]`` in [0, 255] -> float ``[..., C, H, W]`` in [-1, 1]."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 in [0, 255], got {x.dtype}")
    return x.movedim(-1, -3).float().div(255).mul(2).sub(1)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`frames_to_tensor`: float ``[..., C, H, W]`` in [-1, 1] -> uint8 ``[..., H, W, C]``."""
    return x.detach().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def batch_from_segment(
    segment: Segment, device: str | torch.device = "cpu", final_obs: np.ndarray | None = None
) -> WorldModelBatch:
    """A :class:`WorldModelBatch` from an EpisodeBuffer segment of uint8 ``[B, L, H, W, 3]`` frames and integer
    actions; ``final_obs [B, H, W, 3]`` uint8 optional (see :class:`WorldModelBatch`)."""
    mask = torch.as_tensor(segment.mask, dtype=torch.bool)
    obs = frames_to_tensor(segment.obs) * mask[:, :, None, None, None]  # padding -> 0, DIAMOND's grey frame
    return WorldModelBatch(
        obs=obs,
        act=torch.as_tensor(segment.act).long().reshape(mask.shape),
        rew=torch.as_tensor(segment.rew, dtype=torch.float32),
        end=torch.as_tensor(segment.end, dtype=torch.bool),
        trunc=torch.as_tensor(segment.trunc, dtype=torch.bool),
        mask=mask,
        final_obs=None if final_obs is None else frames_to_tensor(final_obs),
    ).to(device)
