"""envs.poses: rotation representations and SE(3) composition against hand-worked values."""

from __future__ import annotations

import numpy as np

from envs.poses import compose, invert, matrix_to_quat, matrix_to_rot6d, quat_to_matrix, rot6d_to_matrix, rotation_about


def random_rotations(n: int, seed: int = 0) -> np.ndarray:
    return quat_to_matrix(np.random.default_rng(seed).normal(size=(n, 4)))


def test_quarter_turn_about_z_by_hand():
    # cos 90 = 0, sin 90 = 1: x -> y, y -> -x; its quaternion is (cos 45, 0, 0, sin 45)
    r = rotation_about([0.0, 0.0, 1.0], np.pi / 2)
    np.testing.assert_allclose(r, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(r), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(matrix_to_rot6d(r), [0, 1, 0, -1, 0, 0], atol=1e-12)


def test_representations_round_trip():
    r = random_rotations(200)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(r)), r, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(r)), r, atol=1e-12)
    half_turns = np.stack([rotation_about(axis, np.pi) for axis in np.eye(3)])  # the trace <= 0 branches
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(half_turns)), half_turns, atol=1e-12)


def test_rot6d_is_orthonormalized():
    # columns (2, 0, 0) and (1, 3, 0): Gram-Schmidt gives x, then y; the third column is their cross product z
    np.testing.assert_allclose(rot6d_to_matrix(np.array([2.0, 0, 0, 1, 3, 0])), np.eye(3), atol=1e-12)


def test_compose_and_invert():
    rng = np.random.default_rng(1)
    r, p = random_rotations(50, 1), rng.normal(size=(50, 3))
    p_inv, r_inv = invert(p, r)
    p_id, r_id = compose(p, r, p_inv, r_inv)
    np.testing.assert_allclose(p_id, 0.0, atol=1e-12)
    np.testing.assert_allclose(r_id, np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    # by hand: frame a at (1, 0, 0) turned 90 deg about z; b = (1, 0, 0) in a's frame is (1, 1, 0) outside it
    p_ab, _ = compose(np.array([1.0, 0, 0]), rotation_about([0, 0, 1.0], np.pi / 2), np.array([1.0, 0, 0]), np.eye(3))
    np.testing.assert_allclose(p_ab, [1, 1, 0], atol=1e-12)
