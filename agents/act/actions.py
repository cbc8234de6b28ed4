"""SRT's action representations (Kim et al. 2024, "Surgical Robot Transformer", Sec. 3) for the two-arm layout.

An action is ``[20]``: per arm (left ``[0:10]``, right ``[10:20]``) the tool-tip position in the endoscope camera
frame ``[0:3]``, the tool orientation in the camera frame as rot6d ``[3:9]`` (:mod:`envs.poses`) and the jaw
opening ``[9]``. The policy predicts a chunk ``a_{t..t+k-1}`` in one of three representations, given the measured
pose ``(p_t, R_t)`` of the tool when the chunk is predicted:

- ``absolute`` (camera-centric): ``p' = p_{t+i}``, ``R' = R_{t+i}``, unchanged;
- ``relative`` (tool-centric): ``T' = T_t^{-1} T_{t+i}``, i.e. ``p' = R_t^T (p_{t+i} - p_t)``, ``R' = R_t^T R_{t+i}``;
- ``hybrid_relative``: translation relative in the camera frame, ``p' = p_{t+i} - p_t``; rotation relative in the
  tool frame, ``R' = R_t^T R_{t+i}``.

The jaw stays absolute in all three. :func:`from_representation` is the exact inverse of
:func:`to_representation` (up to float64 rounding) for orthonormal rot6d; a rot6d predicted by the network is
first projected onto a rotation by Gram-Schmidt (:func:`envs.poses.rot6d_to_matrix`).
"""

from __future__ import annotations

import numpy as np

from envs.poses import compose, invert, matrix_to_rot6d, rot6d_to_matrix

ACTION_KINDS = ("absolute", "relative", "hybrid_relative")
ARM_DIM = 10  # position 3, rot6d 6, jaw 1
ACTION_DIM = 2 * ARM_DIM
POS, ROT, JAW = slice(0, 3), slice(3, 9), 9


def check_kind(kind: str) -> str:
    if kind not in ACTION_KINDS:
        raise ValueError(f"actions={kind!r} is not allowed; choose one of: {', '.join(ACTION_KINDS)}")
    return kind


def _arms(x: np.ndarray) -> np.ndarray:
    """``[..., 20]`` -> ``[..., 2, 10]`` (left, right)."""
    x = np.asarray(x, np.float64)
    if x.shape[-1] != ACTION_DIM:
        raise ValueError(f"actions and poses have {ACTION_DIM} entries (2 arms x [pos 3, rot6d 6, jaw 1]); "
                         f"got shape {x.shape}")
    return x.reshape(*x.shape[:-1], 2, ARM_DIM)


def _convert(chunk: np.ndarray, pose: np.ndarray, kind: str, inverse: bool) -> np.ndarray:
    check_kind(kind)
    arms = _arms(chunk)  # [..., k, 2, 10]
    if kind == "absolute":
        return arms.reshape(*arms.shape[:-2], ACTION_DIM)
    ref = _arms(pose)[..., None, :, :]  # [..., 1, 2, 10]: the pose at prediction time, for every step of the chunk
    p_t, r_t = ref[..., POS], rot6d_to_matrix(ref[..., ROT])
    p, r = arms[..., POS], rot6d_to_matrix(arms[..., ROT])
    if not inverse:  # absolute -> representation
        inv_p, inv_r = invert(p_t, r_t)
        rel_p, rel_r = compose(inv_p, inv_r, p, r)  # T_t^-1 T_{t+i}
        if kind == "hybrid_relative":
            rel_p = p - p_t  # translation in the camera frame
    else:  # representation -> absolute
        rel_p, rel_r = compose(p_t, r_t, p, r)  # T_t T'
        if kind == "hybrid_relative":
            rel_p = p_t + p
    out = np.concatenate([rel_p, matrix_to_rot6d(rel_r), arms[..., JAW:JAW + 1]], axis=-1)
    return out.reshape(*out.shape[:-2], ACTION_DIM)


def to_representation(chunk: np.ndarray, pose: np.ndarray, kind: str) -> np.ndarray:
    """Absolute actions ``[..., k, 20]`` -> the representation ``kind``, relative to ``pose [..., 20]`` (float64)."""
    return _convert(chunk, pose, kind, inverse=False)


def from_representation(chunk: np.ndarray, pose: np.ndarray, kind: str) -> np.ndarray:
    """The inverse of :func:`to_representation`: actions of ``kind`` ``[..., k, 20]`` -> absolute (float64)."""
    return _convert(chunk, pose, kind, inverse=True)
