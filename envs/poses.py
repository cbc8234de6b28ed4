"""Rigid-body pose helpers shared by the needle task and the ACT agent: rotation matrices, the 6D rotation
representation (Zhou et al. 2019, used by SRT for its actions), SE(3) composition, rotation vectors and geodesic
interpolation (slerp) for moving the instruments and planning the expert's waypoints.

Conventions: a pose is ``(p, R)`` with position ``p`` ``[..., 3]`` and rotation matrix ``R`` ``[..., 3, 3]`` that
maps tool-frame vectors into the reference frame. ``rot6d`` is the first two columns of ``R``, concatenated
(``[R[:, 0], R[:, 1]]``); quaternions are MuJoCo's ``(w, x, y, z)``. The conversions and compositions broadcast
over leading dimensions; the motion helpers (``tool_rotation``, ``rotation_vector``, ``slerp``,
``interpolate_rotation``) take one rotation. Everything works in float64.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "compose", "interpolate_rotation", "invert", "matrix_to_quat", "matrix_to_rot6d", "quat_to_matrix",
    "rot6d_to_matrix", "rotation_about", "rotation_vector", "slerp", "tool_rotation",
]


def rot6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """``[..., 6]`` -> ``[..., 3, 3]`` by Gram-Schmidt: the nearest rotation whose first two columns span them."""
    x = np.asarray(rot6d, np.float64)
    a, b = x[..., 0:3], x[..., 3:6]
    c0 = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b - np.sum(c0 * b, axis=-1, keepdims=True) * c0
    c1 = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    c2 = np.cross(c0, c1)
    return np.stack([c0, c1, c2], axis=-1)


def matrix_to_rot6d(matrix: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` -> ``[..., 6]``: the first column, then the second."""
    m = np.asarray(matrix, np.float64)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """MuJoCo quaternion ``(w, x, y, z)`` ``[..., 4]`` (normalized here) -> rotation matrix ``[..., 3, 3]``."""
    q = np.asarray(quat, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quat(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrix ``[..., 3, 3]`` -> quaternion ``(w, x, y, z)`` with ``w >= 0`` (Shepperd's method)."""
    m = np.asarray(matrix, np.float64)
    flat = m.reshape(-1, 3, 3)
    out = np.empty((len(flat), 4))
    for i, r in enumerate(flat):
        trace = r[0, 0] + r[1, 1] + r[2, 2]
        if trace > 0:
            s = 2.0 * np.sqrt(1.0 + trace)
            q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
        else:
            k = int(np.argmax(np.diag(r)))
            j, n = (k + 1) % 3, (k + 2) % 3
            s = 2.0 * np.sqrt(1.0 + r[k, k] - r[j, j] - r[n, n])
            q = [0.0, 0.0, 0.0, 0.0]
            q[0] = (r[n, j] - r[j, n]) / s
            q[1 + k] = 0.25 * s
            q[1 + j] = (r[j, k] + r[k, j]) / s
            q[1 + n] = (r[n, k] + r[k, n]) / s
        q = np.asarray(q)
        out[i] = q if q[0] >= 0 else -q
    return out.reshape(*m.shape[:-2], 4)


def rotation_about(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrix of ``angle`` radians about ``axis`` (Rodrigues); broadcasts over leading dimensions."""
    axis = np.asarray(axis, np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = np.asarray(angle, np.float64)[..., None, None]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def compose(p_a: np.ndarray, r_a: np.ndarray, p_b: np.ndarray, r_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T_a @ T_b``: the pose ``b`` (expressed in frame ``a``) expressed in ``a``'s reference frame."""
    p_a, r_a, p_b, r_b = (np.asarray(v, np.float64) for v in (p_a, r_a, p_b, r_b))
    return p_a + np.einsum("...ij,...j->...i", r_a, p_b), r_a @ r_b


def invert(p: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T^-1`` of the pose ``(p, R)``: ``(-R^T p, R^T)``."""
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    rt = np.swapaxes(r, -1, -2)
    return -np.einsum("...ij,...j->...i", rt, p), rt


def tool_rotation(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The tool rotation with axis ``z`` (normalized) and hinge axis ``y`` (made orthogonal to ``z``): [y x z, y, z]."""
    z = z / np.linalg.norm(z)
    y = y - (y @ z) * z
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z], axis=-1)


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Axis * angle (angle in [0, pi]) of the rotation matrix ``r``."""
    q = matrix_to_quat(r)
    s = np.linalg.norm(q[1:])
    return np.zeros(3) if s < 1e-12 else q[1:] / s * 2.0 * np.arctan2(s, q[0])


def slerp(q0: np.ndarray, q1: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Quaternions ``[n, 4]`` the given ``fractions`` ``[n]`` of the way from ``q0`` to ``q1`` (each ``[4]``; shortest
    arc)."""
    dot = float(q0 @ q1)
    q1 = -q1 if dot < 0 else q1
    angle = np.arccos(min(abs(dot), 1.0))
    f = np.asarray(fractions, np.float64)[:, None]
    if angle < 1e-6:
        out = q0 + f * (q1 - q0)
    else:
        out = (np.sin((1 - f) * angle) * q0 + np.sin(f * angle) * q1) / np.sin(angle)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def interpolate_rotation(r0: np.ndarray, r1: np.ndarray, fraction: float) -> np.ndarray:
    """The rotation a ``fraction`` of the way from ``r0`` to ``r1`` along the geodesic (slerp)."""
    w = rotation_vector(r0.T @ r1)
    angle = np.linalg.norm(w)
    return r1.copy() if angle < 1e-12 else r0 @ rotation_about(w / angle, fraction * angle)
