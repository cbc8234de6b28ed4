"""The MuJoCo scene of the needle hand-over task, built as an MJCF string in Python, and its fixed geometry.

Units are SI: metres, radians, seconds. The world frame has z up; the top of the tissue pad is the plane z = 0,
centred on the origin. The scene holds:

- a tissue pad (box, 12 x 9 cm, 8 mm thick) on a table;
- a curved suture needle: a half circle of arc radius ``NEEDLE_RADIUS`` (12 mm) and wire radius ``WIRE_RADIUS``
  (1 mm), ``NEEDLE_SEGMENTS`` capsules on one free body whose origin is the centre of the circle; the arc lies in
  the body's xy plane at angles ``theta`` in [0, pi] (point ``r (cos theta, sin theta, 0)``); only the needle and
  the pad collide;
- two laparoscopic instruments, ``left`` and ``right``: each a mocap body whose frame is the TOOL TIP (the grasp
  point between the jaws), with the shaft along the tool's -z (the tool points along +z), two jaws hinged about
  the tool's y axis 8 mm behind the tip that open in the tool's xz plane, and a wrist camera on the shaft looking
  at the jaws. The jaws are kinematic (their hinge angles are set by the task), nothing of an instrument collides;
- two weld equalities ``grasp_left`` / ``grasp_right`` (instrument -> needle), inactive until the task grasps;
- an endoscope camera above the pad looking down at the workspace (``ENDOSCOPE_POS`` -> ``ENDOSCOPE_TARGET``).

Rendering is offscreen at ``image_size`` pixels: the offscreen buffer is sized to the image and shadows are off,
which keeps llvmpipe (software EGL) at well under a millisecond per view at 64-96 px.
"""

from __future__ import annotations

import numpy as np

from envs.poses import matrix_to_quat

ARMS = ("left", "right")
CAMERAS = ("endoscope", "wrist_left", "wrist_right")

TIMESTEP = 0.002  # physics step, s
PAD_HALF = (0.06, 0.045, 0.004)  # tissue pad half sizes, m; its top is z = 0
NEEDLE_RADIUS = 0.012  # arc radius, m
WIRE_RADIUS = 0.001  # needle wire radius, m
NEEDLE_SEGMENTS = 10
JAW_LENGTH = 0.0105  # hinge to jaw end, m
JAW_PIVOT = 0.008  # hinge distance behind the tool tip, m
JAW_MAX_ANGLE = 0.5  # half opening of the fully open jaw, rad
SHAFT_LENGTH = 0.16
ENDOSCOPE_POS = np.array([0.0, -0.075, 0.14])
ENDOSCOPE_TARGET = np.array([0.0, 0.0, 0.02])
ENDOSCOPE_FOVY = 50.0
WRIST_CAMERA_POS = np.array([0.0, -0.018, -0.04])  # in the tool frame
WRIST_FOVY = 70.0
TOOL_COLORS = {"left": "0.25 0.3 0.55 1", "right": "0.25 0.5 0.3 1"}


def look_at(pos: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """Rotation of a MuJoCo camera at ``pos`` looking at ``target`` (camera looks along its -z, image up = +y)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return np.stack([x, y, -forward], axis=-1)


def arc_points(n: int) -> np.ndarray:
    """``n`` points along the needle's centre line in the needle frame, from theta = 0 to pi, ``[n, 3]``."""
    theta = np.linspace(0.0, np.pi, n)
    return NEEDLE_RADIUS * np.stack([np.cos(theta), np.sin(theta), np.zeros(n)], axis=-1)


def arc_point(theta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point, unit tangent (increasing theta) and outward radial direction of the arc at ``theta``, needle frame."""
    c, s = np.cos(theta), np.sin(theta)
    return NEEDLE_RADIUS * np.array([c, s, 0.0]), np.array([-s, c, 0.0]), np.array([c, s, 0.0])


def _fmt(values: np.ndarray) -> str:
    return " ".join(f"{v:.6g}" for v in np.ravel(values))


def _instrument(arm: str) -> str:
    r_cam = look_at(WRIST_CAMERA_POS, np.array([0.0, 0.0, 0.002]), up=np.array([0.0, 1.0, 0.0]))
    jaws = []
    for side, sign in (("a", 1.0), ("b", -1.0)):
        jaws.append(f"""
      <body name="{arm}_jaw_{side}" pos="0 0 {-JAW_PIVOT}" gravcomp="1">
        <joint name="{arm}_jaw_{side}" type="hinge" axis="0 {sign:g} 0" range="-0.1 {JAW_MAX_ANGLE + 0.1}"/>
        <geom type="capsule" fromto="{sign * 0.0011:g} 0 0 {sign * 0.0011:g} 0 {JAW_LENGTH}" size="0.0009"
              material="jaw" mass="0.001"/>
      </body>""")
    return f"""
    <body name="{arm}_tool" mocap="true">
      <geom type="cylinder" fromto="0 0 {-JAW_PIVOT - 0.002} 0 0 {-SHAFT_LENGTH}" size="0.0025"
            rgba="{TOOL_COLORS[arm]}"/>
      <geom type="sphere" pos="0 0 {-JAW_PIVOT}" size="0.0022" material="jaw"/>
      <camera name="wrist_{arm}" pos="{_fmt(WRIST_CAMERA_POS)}" quat="{_fmt(matrix_to_quat(r_cam))}"
              fovy="{WRIST_FOVY}"/>{"".join(jaws)}
    </body>"""


def build_xml(image_size: int) -> str:
    """The MJCF of the whole scene, with the offscreen buffer sized for ``image_size`` x ``image_size`` views."""
    points = arc_points(NEEDLE_SEGMENTS + 1)
    needle = "\n".join(
        f'      <geom type="capsule" fromto="{_fmt(a)} {_fmt(b)}" size="{WIRE_RADIUS}" material="needle"/>'
        for a, b in zip(points[:-1], points[1:], strict=True)
    )
    r_endo = look_at(ENDOSCOPE_POS, ENDOSCOPE_TARGET, up=np.array([0.0, 1.0, 0.0]))
    welds = "\n".join(
        f'    <weld name="grasp_{arm}" body1="{arm}_tool" body2="needle" active="false" solref="0.004 1"/>'
        for arm in ARMS
    )
    return f"""<mujoco model="needle_handover">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" gravity="0 0 -9.81" cone="elliptic"/>
  <visual>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6" numquads="1"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.4 0.4 0.4" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="tissue" type="2d" builtin="checker" rgb1="0.82 0.48 0.47" rgb2="0.76 0.42 0.42"
             width="64" height="64"/>
    <material name="tissue" texture="tissue" texrepeat="6 5"/>
    <material name="needle" rgba="0.85 0.85 0.9 1" specular="0.8" shininess="0.8"/>
    <material name="jaw" rgba="0.7 0.7 0.72 1" specular="0.5"/>
  </asset>
  <default>
    <geom contype="0" conaffinity="0" friction="0.8 0.02 0.001"/>
    <default class="needle"><geom contype="1" conaffinity="1" density="7800" condim="4"/></default>
  </default>
  <worldbody>
    <light pos="0 0 0.5" dir="0 0 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="table" type="plane" pos="0 0 {-2 * PAD_HALF[2]}" size="0.3 0.3 0.01" rgba="0.3 0.32 0.35 1"/>
    <geom name="pad" type="box" pos="0 0 {-PAD_HALF[2]}" size="{_fmt(np.array(PAD_HALF))}" material="tissue"
          contype="1" conaffinity="1"/>
    <camera name="endoscope" pos="{_fmt(ENDOSCOPE_POS)}" quat="{_fmt(matrix_to_quat(r_endo))}"
            fovy="{ENDOSCOPE_FOVY}"/>
    <body name="needle" pos="0 0 {WIRE_RADIUS}" childclass="needle">
      <freejoint name="needle"/>
{needle}
    </body>{"".join(_instrument(arm) for arm in ARMS)}
  </worldbody>
  <equality>
{welds}
  </equality>
</mujoco>
"""
