"""Rotation helpers of the needle task beside :mod:`envs.poses`: tool frames, rotation vectors and geodesic
interpolation (slerp) for moving the instruments and planning the expert's waypoints."""

from __future__ import annotations

import numpy as np

from envs.poses import matrix_to_quat, rotation_about


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
    """Quaternions ``[n, 4]`` the given ``fractions`` ``[n]`` of the way from ``q0`` to ``q1`` (shortest arc)."""
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
