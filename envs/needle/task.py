"""``zoo/NeedleHandover-v0``: pick a suture needle up with the left instrument, hand it to the right, lift it into
the target zone (the simulated task of the Surgical Robot Transformer, Kim et al. 2024).

Control: 20 Hz (``CONTROL_HZ``), 25 physics steps of 2 ms each; an episode is truncated after
``MAX_EPISODE_STEPS`` = 150 steps (7.5 s; the scripted expert needs about 75).

Action ``Box(20,)`` float32, per arm (left ``[0:10]``, right ``[10:20]``): tool-tip position in the ENDOSCOPE camera
frame (metres; MuJoCo's camera frame: x right, y up in the image, the camera looks along -z), rot6d of the tool
orientation in that frame, jaw opening in [0, 1] (0 closed). It is an ABSOLUTE target expressed in the MEASURED
kinematics: with a kinematic error ``e(t)`` the tool goes to ``a - e(t)`` in truth. Every step the true target is
clipped to ``MAX_STEP_POS`` (15 mm) and ``MAX_STEP_ROT`` (10 deg) from the current pose and to the workspace box
``WORKSPACE_LOW..WORKSPACE_HIGH`` (world frame); the tool then moves there within the step (mocap, linear in
position, geodesic in rotation). The jaw moves towards its target by at most ``JAW_SPEED`` per step.

Observation ``Dict``: ``endoscope``, ``wrist_left``, ``wrist_right`` uint8 ``(image_size, image_size, 3)``;
``pose`` float32 ``(20,)``: the MEASURED pose of both tools in the action layout (jaw = current opening).

Kinematic error (``kinematic_error`` = k metres, 0 = none): per arm, in the camera frame,
``e(t) = k u + 0.3 k sin(2 pi t / 4 s + phi) v`` with ``u``, ``v`` uniform unit vectors and ``phi`` uniform, drawn
at reset; measured pose = true pose + ``e(t)`` (translation only). So absolute actions miss by ``e``; relative
actions (deltas from the measured pose) do not.

Grasping (as SurRoL does; friction grasps of a 1 mm wire are unreliable): when a jaw is closed below
``GRASP_CLOSE`` with its tip within ``GRASP_DISTANCE`` (4 mm) of the needle's centre line, a weld equality fixes
the needle to that instrument at their current relative pose; it is released when the jaw opens above
``GRASP_RELEASE``. Reset: the needle lies flat on the pad, arc centre uniform in +-2 cm (x and y) around the pad's
centre, yaw uniform in +-45 deg; the tools start at ``HOME``.

Reward: the stage at this step (not the best so far): 0; 1 the left tip within ``TOUCH_DISTANCE`` (5 mm) of the
needle or the left holds it; 2 the left holds it lifted (lowest point ``LIFT_HEIGHT`` = 1 cm above the pad);
3 the right holds it lifted, the left no longer holds it, and the left lifted it earlier in the episode (a
hand-over); 4 as 3 with the arc's midpoint inside the target sphere (``TARGET_CENTER``, radius ``TARGET_RADIUS``).
Stage 4 is success: ``info["is_success"]`` and termination. If the physics diverges (MuJoCo's NaN/inf position,
velocity or acceleration warnings, after which it resets the simulation), the episode is truncated with
``info["sim_unstable"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.needle.model import (
    ARMS,
    CAMERAS,
    JAW_MAX_ANGLE,
    NEEDLE_RADIUS,
    TIMESTEP,
    WIRE_RADIUS,
    arc_point,
    arc_points,
    build_xml,
)
from envs.poses import (
    interpolate_rotation,
    matrix_to_quat,
    matrix_to_rot6d,
    quat_to_matrix,
    rot6d_to_matrix,
    rotation_about,
    rotation_vector,
    slerp,
    tool_rotation,
)

CONTROL_HZ = 20
SUBSTEPS = round(1.0 / (CONTROL_HZ * TIMESTEP))
MAX_EPISODE_STEPS = 150
MAX_STEP_POS = 0.015  # m per control step
MAX_STEP_ROT = np.deg2rad(10.0)  # rad per control step
JAW_SPEED = 0.34  # opening per control step
WORKSPACE_LOW = np.array([-0.08, -0.06, 0.0])
WORKSPACE_HIGH = np.array([0.08, 0.06, 0.10])
GRASP_CLOSE, GRASP_RELEASE = 0.3, 0.5
GRASP_DISTANCE, TOUCH_DISTANCE = 0.004, 0.005
LIFT_HEIGHT = 0.01
NEEDLE_XY_RANGE = 0.02
NEEDLE_YAW_RANGE = np.deg2rad(45.0)
TARGET_CENTER = np.array([0.035, 0.0, 0.055])
TARGET_RADIUS = 0.012
DRIFT_PERIOD, DRIFT_AMPLITUDE = 4.0, 0.3  # s, fraction of kinematic_error
POSE_BOUND = 0.5  # |position| bound of the action/pose spaces, m


_TILT = np.deg2rad(35.0)
HOME = {  # true tool poses at reset (world frame): tip position, rotation; the shafts come from the sides
    arm: (np.array([sign * 0.04, -0.01, 0.05]),
          tool_rotation(np.array([-sign * np.sin(_TILT), 0.0, -np.cos(_TILT)]), np.array([0.0, 1.0, 0.0])))
    for arm, sign in (("left", -1.0), ("right", 1.0))
}



class NeedleHandoverEnv(gym.Env):
    """The needle pick-up and hand-over task (see the module docstring for units, ranges and the reward).

    :param image_size: height and width of every camera view, pixels.
    :param kinematic_error: magnitude of the offset between measured and true tool positions, metres (0 = none).
    :param render_mode: None or "rgb_array" (``render()`` returns the three views side by side).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, image_size: int = 224, kinematic_error: float = 0.0, render_mode: str | None = None) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or not 16 <= image_size <= 1024:
            raise ValueError(f"image_size={image_size!r}; expected an integer in [16, 1024] (pixels)")
        if not np.isfinite(kinematic_error) or not 0.0 <= kinematic_error <= 0.05:
            raise ValueError(f"kinematic_error={kinematic_error!r}; expected metres in [0, 0.05]")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; choose None or 'rgb_array'")
        self.image_size, self.kinematic_error, self.render_mode = int(image_size), float(kinematic_error), render_mode
        self.model = mujoco.MjModel.from_xml_string(build_xml(self.image_size))
        self.data = mujoco.MjData(self.model)
        body = {arm: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, f"{arm}_tool") for arm in ARMS}
        self._mocap = [int(self.model.body_mocapid[body[arm]]) for arm in ARMS]
        self._jaw_qpos = [int(self.model.jnt_qposadr[self.model.joint(f"{arm}_jaw_{s}").id])  # la, lb, ra, rb
                          for arm in ARMS for s in "ab"]
        self._weld = [self.model.equality(f"grasp_{arm}").id for arm in ARMS]
        self._needle_qpos = int(self.model.jnt_qposadr[self.model.joint("needle").id])
        self._needle_dof = int(self.model.jnt_dofadr[self.model.joint("needle").id])
        mujoco.mj_forward(self.model, self.data)
        cam = self.model.camera("endoscope").id
        self.camera_pos = self.data.cam_xpos[cam].copy()  # endoscope frame -> world: p_w = camera_pos + camera_rot p_c
        self.camera_rot = self.data.cam_xmat[cam].reshape(3, 3).copy()
        low = np.tile(np.r_[np.full(3, -POSE_BOUND), -np.ones(6), 0.0], 2).astype(np.float32)
        high = np.tile(np.r_[np.full(3, POSE_BOUND), np.ones(6), 1.0], 2).astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        image = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(
            {**{name: image for name in CAMERAS}, "pose": gym.spaces.Box(low, high, dtype=np.float32)}
        )
        self._renderer: mujoco.Renderer | None = None
        self._images: dict[str, np.ndarray] = {}
        self.t = 0
        self.opening = np.ones(2)
        self.held = [False, False]
        self._left_lifted = False
        self._offset = np.zeros((2, 3))  # k u per arm (camera frame)
        self._drift = np.zeros((2, 3))  # 0.3 k v per arm
        self._phase = np.zeros(2)

    # --- state ---------------------------------------------------------------------------------------------
    def tool_pose(self, arm: int) -> tuple[np.ndarray, np.ndarray]:
        """TRUE pose of tool ``arm`` (0 left, 1 right) in the world: tip position and rotation."""
        m = self._mocap[arm]
        return self.data.mocap_pos[m].copy(), quat_to_matrix(self.data.mocap_quat[m])

    def needle_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TRUE pose of the needle frame (arc centre; arc in its xy plane) in the world."""
        q = self.data.qpos[self._needle_qpos: self._needle_qpos + 7]
        return q[:3].copy(), quat_to_matrix(q[3:])

    def kinematic_offset(self, arm: int, t: int | None = None) -> np.ndarray:
        """``e(t)`` of ``arm`` in the endoscope frame, metres: measured tool position - true tool position."""
        t = self.t if t is None else t
        angle = 2 * np.pi * t / (CONTROL_HZ * DRIFT_PERIOD) + self._phase[arm]
        return self._offset[arm] + self._drift[arm] * np.sin(angle)

    def measured_pose(self) -> np.ndarray:
        """The ``pose`` observation: per arm camera-frame position + e(t), camera-frame rot6d, jaw opening."""
        parts = []
        for arm in range(2):
            p, r = self.tool_pose(arm)
            p_c = self.camera_rot.T @ (p - self.camera_pos) + self.kinematic_offset(arm)
            parts.append(np.r_[p_c, matrix_to_rot6d(self.camera_rot.T @ r), self.opening[arm]])
        return np.concatenate(parts).astype(np.float32)

    def absolute_action(self, poses: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
        """The action that sends each tool to the TRUE world pose ``(p, R, jaw)`` given per arm (adds e(t))."""
        parts = []
        for arm, (p, r, jaw) in enumerate(poses):
            p_c = self.camera_rot.T @ (np.asarray(p) - self.camera_pos) + self.kinematic_offset(arm)
            parts.append(np.r_[p_c, matrix_to_rot6d(self.camera_rot.T @ r), jaw])
        return np.concatenate(parts).astype(np.float32)

    def set_tool(self, arm: int, pos: np.ndarray, rot: np.ndarray, opening: float) -> None:
        """Place tool ``arm`` at a TRUE world pose with a jaw opening (scripted states; call ``update`` after)."""
        m = self._mocap[arm]
        self.data.mocap_pos[m], self.data.mocap_quat[m] = pos, matrix_to_quat(rot)
        self.opening[arm] = float(np.clip(opening, 0.0, 1.0))
        self._set_jaws()

    def set_needle(self, pos: np.ndarray, rot: np.ndarray) -> None:
        """Place the needle frame at a world pose, at rest (scripted states; call ``update`` after)."""
        a = self._needle_qpos
        self.data.qpos[a: a + 3], self.data.qpos[a + 3: a + 7] = pos, matrix_to_quat(rot)
        d = self._needle_dof
        self.data.qvel[d: d + 6] = 0.0

    def needle_distance(self, arm: int) -> float:
        """Distance from the tip of ``arm`` to the needle's centre line, metres."""
        p_n, r_n = self.needle_pose()
        q = r_n.T @ (self.tool_pose(arm)[0] - p_n)
        theta = np.arctan2(q[1], q[0])
        theta = theta if theta >= 0 else (0.0 if q[0] > 0 else np.pi)
        return float(np.linalg.norm(q - arc_point(theta)[0]))

    def needle_points(self, n: int = 16) -> np.ndarray:
        """``n`` points of the needle's centre line in the world, ``[n, 3]``."""
        p_n, r_n = self.needle_pose()
        return p_n + arc_points(n) @ r_n.T

    def stage(self) -> int:
        """The stage of the current state, 0..4 (see the module docstring); ``update`` keeps the hand-over memory."""
        lifted = self.needle_points().min(axis=0)[2] - WIRE_RADIUS > LIFT_HEIGHT
        left, right = self.held
        if right and not left and lifted and self._left_lifted:
            p_n, r_n = self.needle_pose()
            midpoint = p_n + r_n @ np.array([0.0, NEEDLE_RADIUS, 0.0])
            return 4 if np.linalg.norm(midpoint - TARGET_CENTER) < TARGET_RADIUS else 3
        if left and lifted:
            return 2
        return 1 if left or self.needle_distance(0) < TOUCH_DISTANCE else 0

    def update(self) -> int:
        """Recompute kinematics, grasp or release by the jaw rules, and return the stage."""
        mujoco.mj_forward(self.model, self.data)
        for arm in range(2):
            weld = self._weld[arm]
            if self.held[arm] and self.opening[arm] > GRASP_RELEASE:
                self.data.eq_active[weld], self.held[arm] = 0, False
            elif not self.held[arm] and self.opening[arm] < GRASP_CLOSE and self.needle_distance(arm) < GRASP_DISTANCE:
                (p_t, r_t), (p_n, r_n) = self.tool_pose(arm), self.needle_pose()
                self.model.eq_data[weld, :3] = 0.0  # anchor at the needle's origin
                self.model.eq_data[weld, 3:6] = r_t.T @ (p_n - p_t)  # needle pose in the tool frame
                self.model.eq_data[weld, 6:10] = matrix_to_quat(r_t.T @ r_n)
                self.model.eq_data[weld, 10] = 1.0
                self.data.eq_active[weld], self.held[arm] = 1, True
        self._set_jaws()
        stage = self.stage()
        self._left_lifted |= stage == 2
        return stage

    def _set_jaws(self) -> None:
        angles = np.maximum(self.opening * JAW_MAX_ANGLE, np.where(self.held, 0.1, 0.0))  # closed on the wire
        self.data.qpos[self._jaw_qpos] = np.repeat(angles, 2)

    # --- gymnasium -----------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        mujoco.mj_resetData(self.model, self.data)
        xy = rng.uniform(-NEEDLE_XY_RANGE, NEEDLE_XY_RANGE, 2)
        yaw = rng.uniform(-NEEDLE_YAW_RANGE, NEEDLE_YAW_RANGE)
        directions = rng.normal(size=(2, 2, 3))
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        self._phase = rng.uniform(0.0, 2 * np.pi, 2)
        self._offset = self.kinematic_error * directions[:, 0]
        self._drift = DRIFT_AMPLITUDE * self.kinematic_error * directions[:, 1]
        self.set_needle(np.r_[xy, WIRE_RADIUS + 1e-4], rotation_about(np.array([0.0, 0.0, 1.0]), yaw))
        self.held, self._left_lifted, self.t = [False, False], False, 0
        self.data.eq_active[:] = 0
        for arm, name in enumerate(ARMS):
            self.set_tool(arm, *HOME[name], 1.0)
        for _ in range(50):  # let the needle settle on the pad (0.1 s)
            mujoco.mj_step(self.model, self.data)
        self.update()
        return self._observation(), {"is_success": False, "stage": 0}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.asarray(action, np.float64).reshape(2, 10)
        starts = [self.tool_pose(arm) for arm in range(2)]
        goals = [self._true_target(arm, action[arm], *starts[arm]) for arm in range(2)]
        jaw0 = self.opening.copy()
        jaw1 = jaw0 + np.clip(np.clip(np.nan_to_num(action[:, 9], nan=1.0), 0, 1) - jaw0, -JAW_SPEED, JAW_SPEED)
        f = (np.arange(1, SUBSTEPS + 1) / SUBSTEPS)[:, None]  # the tools move within the step, in SUBSTEPS
        pos = np.stack([p0 + f * (p1 - p0) for (p0, _), (p1, _) in zip(starts, goals, strict=True)], axis=1)
        quat = np.stack([slerp(matrix_to_quat(r0), matrix_to_quat(r1), f[:, 0])
                         for (_, r0), (_, r1) in zip(starts, goals, strict=True)], axis=1)
        openings = jaw0 + f * (jaw1 - jaw0)  # [SUBSTEPS, 2]
        angles = np.repeat(np.maximum(openings * JAW_MAX_ANGLE, np.where(self.held, 0.1, 0.0)), 2, axis=1)
        unstable_before = self._divergences()
        for i in range(SUBSTEPS):
            self.data.mocap_pos[self._mocap], self.data.mocap_quat[self._mocap] = pos[i], quat[i]
            self.data.qpos[self._jaw_qpos] = angles[i]
            mujoco.mj_step(self.model, self.data)
        self.opening = jaw1
        self.t += 1
        if self._divergences() > unstable_before:
            # MuJoCo found NaN/inf positions, velocities or accelerations and reset the simulation: nothing after this
            # is the episode any more, so it is cut (truncated, never a success) and flagged
            return self._observation(), 0.0, False, True, {"is_success": False, "stage": 0, "sim_unstable": True}
        stage = self.update()
        success = stage == 4
        return self._observation(), float(stage), success, False, {"is_success": success, "stage": stage}

    def _divergences(self) -> int:
        """How often MuJoCo has found NaN/inf (or huge) positions, velocities or accelerations and reset."""
        w = mujoco.mjtWarning
        return sum(int(self.data.warning[k].number) for k in (w.mjWARN_BADQPOS, w.mjWARN_BADQVEL, w.mjWARN_BADQACC))

    def _true_target(self, arm: int, a: np.ndarray, p0: np.ndarray, r0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World pose the tool goes to this step: ``a`` minus e(t), clipped per step and to the workspace."""
        p, r = p0, r0
        if np.isfinite(a[:3]).all():
            p = self.camera_pos + self.camera_rot @ (a[:3] - self.kinematic_offset(arm))
            step = np.linalg.norm(p - p0)
            p = p0 + (p - p0) * min(1.0, MAX_STEP_POS / step) if step > 0 else p
            p = np.clip(p, WORKSPACE_LOW, WORKSPACE_HIGH)
        c0, c1 = a[3:6], a[6:9]  # a degenerate rot6d (zero or parallel columns) keeps the orientation
        spread = np.linalg.norm(np.cross(c0, c1)) if np.isfinite(a[3:9]).all() else 0.0
        if spread > 1e-6 * np.linalg.norm(c0) * np.linalg.norm(c1):
            r = self.camera_rot @ rot6d_to_matrix(a[3:9])
            angle = np.linalg.norm(rotation_vector(r0.T @ r))
            r = interpolate_rotation(r0, r, MAX_STEP_ROT / angle) if angle > MAX_STEP_ROT else r
        return p, r

    def _observation(self) -> dict[str, np.ndarray]:
        if self._renderer is None:  # one renderer per env, reused for every view and step
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        for name in CAMERAS:
            self._renderer.update_scene(self.data, camera=name)
            self._images[name] = self._renderer.render()
        return {**self._images, "pose": self.measured_pose()}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return np.concatenate([self._images[name] for name in CAMERAS], axis=1)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
