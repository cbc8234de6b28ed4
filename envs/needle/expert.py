"""The scripted expert of the needle hand-over: waypoints planned from the TRUE needle pose at reset, linear
interpolation between them (positions linearly, orientations along the geodesic), actions sent in the MEASURED
frame (the expert knows the kinematic error ``e(t)``, so it succeeds with or without it).

Grasp frames are fixed in the needle frame: the left takes the arc at ``THETA_LEFT`` (150 deg, near the tail),
the right at ``THETA_RIGHT`` (30 deg); the jaws close across the wire (the hinge axis along the tangent) and the
shaft is tilted ``TILT`` (35 deg) from the needle's normal towards the outside of the arc. The plan:

1. left above its grasp point (2 cm back along the shaft), 2. down onto it, 3. close, 4. lift 3 cm, 5. bring the
needle to the meeting pose ``MEETING`` (arc centre, needle flat with yaw 0) while the right comes above its grasp
point there, 6. right down, 7. right closes, 8. left opens, 9. left backs off while the right carries the needle's
midpoint to the target centre, 10. hold. Speeds: ``SPEED`` (6 mm/step), 4 mm/step near the needle,
``TURN`` (0.12 rad/step); about 75 steps (3.8 s at 20 Hz) in all.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.needle.model import NEEDLE_RADIUS, arc_point
from envs.needle.task import TARGET_CENTER, NeedleHandoverEnv
from envs.poses import compose, interpolate_rotation, rotation_vector, tool_rotation

THETA_LEFT, THETA_RIGHT = np.deg2rad(150.0), np.deg2rad(30.0)
TILT = np.deg2rad(35.0)
MEETING = np.array([0.0, -0.006, 0.045])  # needle frame origin at the hand-over, world, m
APPROACH = 0.02  # m back along the shaft before a grasp
LIFT = 0.03  # m
SPEED, SLOW, TURN = 0.006, 0.004, 0.12  # m/step, m/step, rad/step
JAW_STEPS = 4  # steps to close or open (JAW_SPEED allows 3)

Pose = tuple[np.ndarray, np.ndarray, float]  # world position, rotation, jaw opening


def grasp_frame(theta: float, y_sign: float) -> tuple[np.ndarray, np.ndarray]:
    """Tool pose in the needle frame that grasps the arc at ``theta``: tip on the wire, hinge axis along the
    tangent (times ``y_sign``), tool axis down through the needle plane, tilted towards the arc's outside."""
    point, tangent, radial = arc_point(theta)
    z = -np.cos(TILT) * np.array([0.0, 0.0, 1.0]) - np.sin(TILT) * radial
    return point, tool_rotation(z, y_sign * tangent)


def _back(pose: Pose, distance: float) -> Pose:
    """``pose`` moved ``distance`` back along its shaft (the tool's -z)."""
    p, r, jaw = pose
    return p - distance * r[:, 2], r, jaw


class NeedleExpert:
    """Scripted expert for ``zoo/NeedleHandover-v0``: ``reset()`` after ``env.reset()``, then ``expert(obs)`` per step.

    :param env: the env (possibly wrapped); the expert reads the true state of ``env.unwrapped``.
    """

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.base: NeedleHandoverEnv = env.unwrapped  # type: ignore[assignment]
        self.keyframes: list[tuple[int, list[Pose]]] = []

    def reset(self) -> None:
        """Plan the waypoints from the true needle and tool poses (call right after ``env.reset``)."""
        p_n, r_n = self.base.needle_pose()
        left = compose(p_n, r_n, *grasp_frame(THETA_LEFT, -1.0))
        meet_r = np.eye(3)
        meet_left = compose(MEETING, meet_r, *grasp_frame(THETA_LEFT, -1.0))
        meet_right = compose(MEETING, meet_r, *grasp_frame(THETA_RIGHT, 1.0))
        midpoint = MEETING + meet_r @ np.array([0.0, NEEDLE_RADIUS, 0.0])
        shift = TARGET_CENTER - midpoint
        l0, r0 = ((*self.base.tool_pose(arm), 1.0) for arm in range(2))
        gl, gr = (*left, 1.0), (*meet_right, 1.0)
        lift = (gl[0] + [0.0, 0.0, LIFT], gl[1], 0.0)
        ml, mr = (*meet_left, 0.0), (gr[0], gr[1], 0.0)
        plan: list[tuple[list[Pose], float]] = [  # (targets of both arms, speed)
            ([_back(gl, APPROACH), r0], SPEED),
            ([gl, r0], SLOW),
            ([(gl[0], gl[1], 0.0), r0], SPEED),
            ([lift, r0], SPEED),
            ([ml, _back(gr, APPROACH)], SPEED),
            ([ml, gr], SLOW),
            ([ml, mr], SPEED),
            ([(ml[0], ml[1], 1.0), mr], SPEED),
            ([_back((ml[0], ml[1], 1.0), APPROACH), (mr[0] + shift, mr[1], 0.0)], SPEED),
        ]
        self.keyframes = [(0, [l0, r0])]
        for targets, speed in plan:
            steps = max(self._steps(a, b, speed) for a, b in zip(self.keyframes[-1][1], targets, strict=True))
            self.keyframes.append((self.keyframes[-1][0] + steps, targets))

    @staticmethod
    def _steps(a: Pose, b: Pose, speed: float) -> int:
        distance = np.linalg.norm(b[0] - a[0]) / speed
        turn = np.linalg.norm(rotation_vector(a[1].T @ b[1])) / TURN
        jaw = JAW_STEPS if abs(b[2] - a[2]) > 1e-6 else 1
        return int(max(np.ceil(distance), np.ceil(turn), jaw))

    @property
    def length(self) -> int:
        """Steps of the plan (the episode usually ends with success a few steps earlier)."""
        return self.keyframes[-1][0]

    def target(self, t: int) -> list[Pose]:
        """True world targets of both arms at step ``t`` of the plan (held after the last keyframe)."""
        for (t0, a), (t1, b) in zip(self.keyframes[:-1], self.keyframes[1:], strict=True):
            if t < t1:
                f = (t - t0) / (t1 - t0)
                return [(pa + f * (pb - pa), interpolate_rotation(ra, rb, f), ja + f * (jb - ja))
                        for (pa, ra, ja), (pb, rb, jb) in zip(a, b, strict=True)]
        return self.keyframes[-1][1]

    def __call__(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The action of this step: where the plan puts the tools one step later, in the measured frame."""
        return self.base.absolute_action(self.target(self.base.t + 1))
