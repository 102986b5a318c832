"""The imagined robot beside the real one: its world pose from predicted states, and both in one video frame.

The world model predicts only what the robot feels (docs/architecture.md#observations): base-frame
velocities, projected gravity and joint states. To show an imagined robot walking, its world pose is
reconstructed from those quantities alone, so any error of the model shows as a visibly different
gait, lean or path:

* roll and pitch from the predicted projected gravity (it fixes both, and nothing else);
* yaw integrated from the predicted world yaw rate, -g_b . w_b (the world z row of R is -g_b),
  from the real robot's heading at the start;
* the base position integrated from the predicted base-frame velocity rotated to the world;
* joint positions = prediction + default, not clamped (see `pose_qpos`).

Both integrals use the trapezoid rule: states are samples at the end of each control step, and
the trapezoid is exact for the constant-velocity, constant-yaw-rate case the tests check.

Rendering is kinematic only (upstream wrote the predictions into a second robot of its physics
scene, docs/architecture.md#visualize): the imagined robot is a separate `MjData` of the same model,
posed by writing `qpos` and running `mj_kinematics`, and its geoms are appended to the real robot's
scene with `mjv_addGeoms`, tinted and transparent. One `mujoco.Renderer` therefore draws both robots
in one image, with a camera that follows the real robot. The twin starts beside the real robot
across the camera's line of sight (`twin_offset`), so the two stand side by side in the picture
instead of one hiding the other, and each is labelled on the frame where it is drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from rwm.sim.mujoco import quat_to_rotmat
from rwm.sim.state import DEFAULT_JOINT_POS, STATE_SLICES
from rwm.viz.video import VideoRecorder, tile_frames

__all__ = ["CAMERA_AZIMUTH_OFFSET_DEG", "ENDED_RGBA", "GHOST_RGBA", "GhostPose", "SideBySideRecorder",
           "integrate_poses", "pose_qpos", "project_to_pixels", "quat_from_euler", "roll_pitch_from_gravity",
           "twin_offset", "world_yaw_rate"]

GHOST_RGBA = (0.25, 0.55, 1.0, 0.45)  # the imagined robot: transparent blue
ENDED_RGBA = (0.55, 0.55, 0.55, 0.3)  # frozen after the real robot's episode ended: faint grey
# The camera looks at the pair from behind, turned this far from the pair's starting heading, so
# the legs show from the side as well.
CAMERA_AZIMUTH_OFFSET_DEG = -35.0
REAL_LABEL, TWIN_LABEL, ENDED_LABEL = "real (simulator)", "imagined (world model)", "imagined: stopped, real fell"
REAL_TEXT_RGB, TWIN_TEXT_RGB, ENDED_TEXT_RGB = (255, 255, 255), (120, 180, 255), (190, 190, 190)


# ----------------------------------------------------------------------------- orientation
def roll_pitch_from_gravity(gravity_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) projected gravity -> (roll (...), pitch (...)) of R = Rz(yaw) Ry(pitch) Rx(roll).

    g_b = -R^T e_z = (sin p, -sin r cos p, -cos r cos p), whatever the yaw. A predicted g_b need
    not be a unit vector; it is normalised first.
    """
    g = np.asarray(gravity_b, dtype=np.float64)
    g = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-9)
    pitch = np.arcsin(np.clip(g[..., 0], -1.0, 1.0))
    roll = np.arctan2(-g[..., 1], -g[..., 2])
    return roll, pitch


def quat_from_euler(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(...) ZYX Euler angles -> (..., 4) unit quaternions (w, x, y, z) of Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = np.cos(np.asarray(roll) / 2), np.sin(np.asarray(roll) / 2)
    cp, sp = np.cos(np.asarray(pitch) / 2), np.sin(np.asarray(pitch) / 2)
    cy, sy = np.cos(np.asarray(yaw) / 2), np.sin(np.asarray(yaw) / 2)
    return np.stack([cr * cp * cy + sr * sp * sy,
                     sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy,
                     cr * cp * sy - sr * sp * cy], axis=-1)


def world_yaw_rate(ang_vel_b: np.ndarray, gravity_b: np.ndarray) -> np.ndarray:
    """(..., 3), (..., 3) -> (...): the world z component of the angular velocity, (R w_b)_z = -g_b . w_b.

    The same rate the imagination simulator integrates its heading from.
    """
    return -np.sum(np.asarray(ang_vel_b, dtype=np.float64) * np.asarray(gravity_b, dtype=np.float64), axis=-1)


# ----------------------------------------------------------------------------- pose integration
class GhostPose:
    """World poses of N imagined robots, advanced one predicted state at a time.

    Args:
        dt: control period (s) between successive states.
        start_pos: (N, 3) world base position at the first state (the real robot's, plus any offset).
        start_yaw: (N,) world yaw at the first state (the real robot's heading).
        system_state: (N, 45) the first state, raw (the layout of docs/architecture.md#observations).
    """

    def __init__(self, dt: float, start_pos: np.ndarray, start_yaw: np.ndarray, system_state: np.ndarray):
        self.dt = float(dt)
        self.pos = np.array(start_pos, dtype=np.float64).reshape(-1, 3)  # (N, 3)
        self.yaw = np.array(start_yaw, dtype=np.float64).reshape(-1)  # (N,) unwrapped
        state = np.asarray(system_state, dtype=np.float64)
        self.joint_pos = state[:, STATE_SLICES["joint_pos"]].copy()  # (N, 12) relative to the default
        self._yaw_rate = world_yaw_rate(state[:, STATE_SLICES["base_ang_vel"]],
                                        state[:, STATE_SLICES["projected_gravity"]])  # (N,)
        self.quat = self._orientation(state, self.yaw)  # (N, 4)
        self._vel_w = self._world_velocity(state, self.quat)  # (N, 3)

    def advance(self, system_state: np.ndarray, active: np.ndarray | None = None) -> None:
        """Move to the next state (N, 45); robots where `active` (N,) is False keep their pose."""
        state = np.asarray(system_state, dtype=np.float64)
        keep = np.zeros(len(self.pos), dtype=bool) if active is None else ~np.asarray(active, dtype=bool)
        rate = world_yaw_rate(state[:, STATE_SLICES["base_ang_vel"]], state[:, STATE_SLICES["projected_gravity"]])
        yaw = self.yaw + 0.5 * self.dt * (self._yaw_rate + rate)
        quat = self._orientation(state, yaw)
        vel_w = self._world_velocity(state, quat)
        pos = self.pos + 0.5 * self.dt * (self._vel_w + vel_w)
        joint_pos = state[:, STATE_SLICES["joint_pos"]]
        for name, new in (("pos", pos), ("yaw", yaw), ("quat", quat), ("_vel_w", vel_w), ("_yaw_rate", rate),
                          ("joint_pos", joint_pos)):
            old = getattr(self, name)
            setattr(self, name, np.where(keep.reshape(-1, *([1] * (old.ndim - 1))), old, new))

    @staticmethod
    def _orientation(state: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        roll, pitch = roll_pitch_from_gravity(state[:, STATE_SLICES["projected_gravity"]])
        return quat_from_euler(roll, pitch, yaw)

    @staticmethod
    def _world_velocity(state: np.ndarray, quat: np.ndarray) -> np.ndarray:
        rot = quat_to_rotmat(quat)  # (N, 3, 3) body -> world
        return np.einsum("nij,nj->ni", rot, state[:, STATE_SLICES["base_lin_vel"]])


def integrate_poses(system_states: np.ndarray, dt: float, start_pos: np.ndarray, start_yaw: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole trajectory (N, T, 45) -> world (pos (N, T, 3), quat (N, T, 4), yaw (N, T)); index 0 = the start."""
    states = np.asarray(system_states, dtype=np.float64)
    ghost = GhostPose(dt, start_pos, start_yaw, states[:, 0])
    pos, quat, yaw = [ghost.pos], [ghost.quat], [ghost.yaw]
    for t in range(1, states.shape[1]):
        ghost.advance(states[:, t])
        pos.append(ghost.pos)
        quat.append(ghost.quat)
        yaw.append(ghost.yaw)
    return np.stack(pos, 1), np.stack(quat, 1), np.stack(yaw, 1)


def pose_qpos(model: mujoco.MjModel, pos: np.ndarray, quat: np.ndarray, joint_pos: np.ndarray) -> np.ndarray:
    """(N, nq) MuJoCo qpos of robots at world `pos` (N, 3), `quat` (N, 4) and joint positions relative to
    the default (N, 12, policy order).

    Joint positions are not clamped. Upstream clamps them to the soft limits because it writes
    them into a physics simulation; a kinematic pose needs no limits, clamping would hide the
    model's errors, and the real robot itself ends up slightly past its joint range at times.
    """
    actuated = model.actuator_trnid[:, 0]
    qpos_ids = model.jnt_qposadr[actuated]  # (12,) policy order -> qpos index
    qpos = np.tile(model.qpos0, (len(pos), 1))
    qpos[:, :3] = pos
    qpos[:, 3:7] = quat
    qpos[:, qpos_ids] = np.asarray(DEFAULT_JOINT_POS) + np.asarray(joint_pos, dtype=np.float64)
    return qpos


# ----------------------------------------------------------------------------- rendering
def twin_offset(heading: np.ndarray, distance: float,
                azimuth_offset_deg: float = CAMERA_AZIMUTH_OFFSET_DEG) -> np.ndarray:
    """(N,) starting headings -> (N, 3) where the imagined robot starts relative to the real one: `distance`
    metres to the right in the picture, square to the camera's line of sight, so neither stands in front."""
    azimuth = np.asarray(heading, dtype=np.float64) + math.radians(azimuth_offset_deg)
    return distance * np.stack([np.sin(azimuth), -np.cos(azimuth), np.zeros_like(azimuth)], axis=-1)


def project_to_pixels(camera: mujoco.MjvGLCamera, points: np.ndarray, width: int, height: int) -> np.ndarray:
    """World points (K, 3) -> (K, 2) pixel (column, row) where `camera` (the scene's, after `update_scene`)
    draws them; NaN for points behind it. The frustum's width follows the image's aspect, as in `mjr_render`."""
    pos, forward, up = (np.asarray(v, dtype=np.float64) for v in (camera.pos, camera.forward, camera.up))
    right = np.cross(forward, up)
    rel = np.asarray(points, dtype=np.float64) - pos
    depth = rel @ forward
    with np.errstate(divide="ignore", invalid="ignore"):
        x = camera.frustum_near * (rel @ right) / depth  # on the near plane
        y = camera.frustum_near * (rel @ up) / depth
    half_height = 0.5 * (camera.frustum_top - camera.frustum_bottom)
    half_width = half_height * width / height
    column = (x - camera.frustum_center + half_width) / (2 * half_width) * width
    row = (1.0 - (y - 0.5 * (camera.frustum_top + camera.frustum_bottom) + half_height) / (2 * half_height)) * height
    pixels = np.stack([column, row], axis=-1)
    pixels[depth <= 0] = np.nan
    return pixels


def draw_labels(image: np.ndarray, labels: Sequence[tuple[str, np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
    """Write each (text, pixel (column, row), colour) centred above its pixel, outlined in black so it
    reads on the floor and the sky alike. A pixel off the image puts its label at the nearest edge,
    marked "out of view" (a drifting twin stays accounted for); one behind the camera is left out. A
    label that would cover an earlier one moves below it."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = image.shape[:2]
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(12, height // 20))
    placed: list[tuple[float, float, float, float]] = []  # (left, top, right, bottom) of the labels so far
    for text, (column, row), colour in labels:
        if not (np.isfinite(column) and np.isfinite(row)):
            continue
        if not (0 <= column < width and 0 <= row < height):
            text = f"{text}, out of view"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = min(max(column - (right - left) / 2, 2), width - (right - left) - 2)
        y = min(max(row - (bottom - top) - 4, 2), height - (bottom - top) - 6)
        for left_, top_, right_, bottom_ in placed:
            if x < right_ and left_ < x + (right - left) and y < bottom_ and top_ < y + bottom + 4:
                y = bottom_ + 2
        placed.append((x, y, x + (right - left), y + bottom + 4))
        draw.text((x, y), text, font=font, fill=colour, stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(picture)


class SideBySideRecorder(VideoRecorder):
    """Frames of real robots (environments `env_ids` of a MuJoCo batch simulator) each with an imagined robot.

    Each tile shows one real robot, drawn from its own (randomised) model and current state, and
    its imagined twin, posed from `qpos` in a kinematics-only `MjData` and added to the same scene
    tinted and transparent. The camera follows the real robot, looking at the middle of the pair
    from behind and to the side of the pair's starting heading.
    """

    def __init__(self, simulator: Any, env_ids: Sequence[int], width: int = 480, height: int = 360,
                 distance: float = 3.6, elevation_deg: float = -20.0,
                 azimuth_offset_deg: float = CAMERA_AZIMUTH_OFFSET_DEG):
        super().__init__(simulator, env_ids, width=width, height=height)
        self.ghost_model = simulator.model  # the nominal robot: its geometry is all that is drawn
        self.ghost_datas = [mujoco.MjData(self.ghost_model) for _ in self.env_ids]
        self.base_body = self.models[0].body("base").id
        self.camera = mujoco.MjvCamera()  # a free camera instead of the model's tracking camera
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.distance = distance
        self.camera.elevation = elevation_deg
        self.azimuth_offset_deg = azimuth_offset_deg
        self.label_height_m = 0.45  # labels float this far above each robot's base

    def capture(self, ghost_qpos: np.ndarray, offset: np.ndarray, heading: np.ndarray,
                ended: np.ndarray | None = None) -> np.ndarray:
        """Render one frame: tile k shows env_ids[k] and an imagined robot at `ghost_qpos[k]` (k, nq).

        `offset` (k, 3) is where the imagined robot was placed relative to the real one (the
        camera looks at the middle); `heading` (k,) the pair's starting yaw (fixes the camera's
        direction); `ended` (k,) greys out imagined robots whose comparison is over.
        """
        ended = np.zeros(len(self.env_ids), dtype=bool) if ended is None else np.asarray(ended, dtype=bool)
        tiles = []
        for k, (env_id, model, data, ghost) in enumerate(zip(self.env_ids, self.models, self.datas,
                                                             self.ghost_datas)):
            self.sim.batch.get_data(env_id, data)
            mujoco.mj_forward(model, data)
            ghost.qpos[:] = ghost_qpos[k]
            mujoco.mj_kinematics(self.ghost_model, ghost)
            self.camera.lookat[:] = data.xpos[self.base_body] + 0.5 * np.asarray(offset[k])
            self.camera.lookat[2] = max(0.2, data.xpos[self.base_body][2] - 0.1)
            self.camera.azimuth = math.degrees(float(heading[k])) + self.azimuth_offset_deg
            self.renderer.update_scene(data, camera=self.camera, scene_option=self.scene_option)
            scene = self.renderer.scene
            first = scene.ngeom
            mujoco.mjv_addGeoms(self.ghost_model, ghost, self.scene_option, mujoco.MjvPerturb(),
                                mujoco.mjtCatBit.mjCAT_DYNAMIC, scene)
            rgba = ENDED_RGBA if ended[k] else GHOST_RGBA
            for g in range(first, scene.ngeom):
                scene.geoms[g].rgba[:] = rgba
            above = np.array([0.0, 0.0, self.label_height_m])
            real_px, twin_px = project_to_pixels(scene.camera[0], np.stack(
                [data.xpos[self.base_body] + above, ghost.xpos[self.base_body] + above]), self.renderer.width,
                self.renderer.height)
            twin = (ENDED_LABEL, twin_px, ENDED_TEXT_RGB) if ended[k] else (TWIN_LABEL, twin_px, TWIN_TEXT_RGB)
            tiles.append(draw_labels(self.renderer.render(), [(REAL_LABEL, real_px, REAL_TEXT_RGB), twin]))
        frame = tile_frames(tiles)
        self.frames.append(frame)
        return frame

