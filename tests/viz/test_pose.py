"""Posing the imagined robot: world path and orientation reconstructed from predicted base-frame states."""

from __future__ import annotations

import math

import numpy as np

from rwm.sim.mujoco import quat_to_rotmat
from rwm.sim.state import STATE_DIM, STATE_SLICES
from rwm.viz.side_by_side import (
    GhostPose,
    integrate_poses,
    quat_from_euler,
    roll_pitch_from_gravity,
    world_yaw_rate,
)

DT = 0.02


def _states(lin_vel, ang_vel, gravity, steps: int) -> np.ndarray:
    """(1, steps, 45) constant predicted states."""
    state = np.zeros((1, steps, STATE_DIM))
    state[..., STATE_SLICES["base_lin_vel"]] = lin_vel
    state[..., STATE_SLICES["base_ang_vel"]] = ang_vel
    state[..., STATE_SLICES["projected_gravity"]] = gravity
    return state


def test_constant_forward_speed_and_yaw_rate_give_a_circular_path():
    v, w, yaw0, steps = 0.8, 0.6, 0.3, 151  # 3 s
    start = np.array([[1.0, -2.0, 0.55]])
    pos, quat, yaw = integrate_poses(_states([v, 0, 0], [0, 0, w], [0, 0, -1], steps), DT, start, np.array([yaw0]))
    t = np.arange(steps) * DT
    heading = yaw0 + w * t
    expected_x = start[0, 0] + v / w * (np.sin(heading) - math.sin(yaw0))
    expected_y = start[0, 1] - v / w * (np.cos(heading) - math.cos(yaw0))
    np.testing.assert_allclose(yaw[0], heading, atol=1e-9)
    np.testing.assert_allclose(pos[0, :, 0], expected_x, atol=2e-4)
    np.testing.assert_allclose(pos[0, :, 1], expected_y, atol=2e-4)
    np.testing.assert_allclose(pos[0, :, 2], start[0, 2], atol=1e-12)  # level: no vertical drift
    # the body's x axis points along the path
    rot = quat_to_rotmat(quat[0])
    np.testing.assert_allclose(np.arctan2(rot[:, 1, 0], rot[:, 0, 0]), np.angle(np.exp(1j * heading)), atol=1e-9)


def test_sideways_velocity_is_rotated_into_the_world():
    pos, _, _ = integrate_poses(_states([0, 0.5, 0], [0, 0, 0], [0, 0, -1], 51), DT, np.zeros((1, 3)),
                                np.array([math.pi / 2]))
    np.testing.assert_allclose(pos[0, -1], [-0.5, 0.0, 0.0], atol=1e-9)  # facing +y, the left is -x


def test_projected_gravity_round_trip_through_roll_and_pitch():
    rng = np.random.default_rng(0)
    roll, pitch, yaw = rng.uniform(-1.2, 1.2, 200), rng.uniform(-1.3, 1.3, 200), rng.uniform(-3, 3, 200)
    quat = quat_from_euler(roll, pitch, yaw)
    np.testing.assert_allclose(np.linalg.norm(quat, axis=-1), 1.0, atol=1e-12)
    rot = quat_to_rotmat(quat)
    gravity = -rot[:, 2, :]  # world (0, 0, -1) in the base frame, as the simulator reports it
    r, p = roll_pitch_from_gravity(gravity)
    np.testing.assert_allclose(r, roll, atol=1e-9)
    np.testing.assert_allclose(p, pitch, atol=1e-9)
    np.testing.assert_allclose(np.arctan2(rot[:, 1, 0], rot[:, 0, 0]), yaw, atol=1e-9)  # the heading is the yaw
    # a predicted gravity that is not unit length gives the same angles
    r2, p2 = roll_pitch_from_gravity(1.3 * gravity)
    np.testing.assert_allclose(r2, roll, atol=1e-9)
    np.testing.assert_allclose(p2, pitch, atol=1e-9)


def test_world_yaw_rate_of_a_tilted_robot_turning_about_the_vertical():
    quat = quat_from_euler(np.array([0.3]), np.array([-0.4]), np.array([1.0]))
    rot = quat_to_rotmat(quat)[0]
    ang_vel_b = rot.T @ np.array([0.0, 0.0, 0.7])  # turning at 0.7 rad/s about world z
    np.testing.assert_allclose(world_yaw_rate(ang_vel_b, -rot[2, :]), 0.7, atol=1e-12)


def test_inactive_robots_keep_their_pose():
    states = _states([1.0, 0, 0], [0, 0, 0.5], [0, 0, -1], 2)
    two = np.concatenate([states, states])  # (2, 2, 45)
    ghost = GhostPose(DT, np.zeros((2, 3)), np.zeros(2), two[:, 0])
    ghost.advance(two[:, 1], active=np.array([True, False]))
    assert ghost.pos[0, 0] > 0.019 and ghost.yaw[0] > 0.0099
    np.testing.assert_array_equal(ghost.pos[1], 0.0)
    assert ghost.yaw[1] == 0.0
