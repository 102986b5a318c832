"""The side-by-side video's frame: the imagined twin beside the real robot, each labelled where it is drawn."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from rwm.viz.side_by_side import CAMERA_AZIMUTH_OFFSET_DEG, draw_labels, project_to_pixels, twin_offset


def test_the_twin_starts_square_to_the_line_of_sight_on_the_right():
    heading = np.array([0.0, 1.0, -2.5])
    offset = twin_offset(heading, 1.4)
    azimuth = heading + math.radians(CAMERA_AZIMUTH_OFFSET_DEG)
    forward = np.stack([np.cos(azimuth), np.sin(azimuth)], axis=-1)  # where the camera looks, seen from above
    np.testing.assert_allclose(np.sum(offset[:, :2] * forward, axis=-1), 0.0, atol=1e-12)  # neither in front
    np.testing.assert_allclose(np.linalg.norm(offset, axis=-1), 1.4)
    assert np.all(forward[:, 0] * offset[:, 1] - forward[:, 1] * offset[:, 0] < 0)  # to the camera's right
    assert np.all(offset[:, 2] == 0)


def test_project_to_pixels_follows_the_camera_frustum():
    camera = mujoco.MjvGLCamera()
    camera.pos[:], camera.forward[:], camera.up[:] = (0, 0, 0), (1, 0, 0), (0, 0, 1)
    camera.frustum_near, camera.frustum_bottom, camera.frustum_top, camera.frustum_center = 1.0, -1.0, 1.0, 0.0
    points = np.array([[2.0, 0.0, 0.0], [2.0, 0.0, 2.0], [2.0, -2.0, 0.0], [-1.0, 0.0, 0.0]])
    pixels = project_to_pixels(camera, points, width=200, height=100)
    np.testing.assert_allclose(pixels[0], (100, 50))  # on the axis: the centre
    np.testing.assert_allclose(pixels[1], (100, 0))  # at the top of the frustum: the top row
    np.testing.assert_allclose(pixels[2], (150, 50))  # to the right (-y): half-width = height's half x aspect 2
    assert np.isnan(pixels[3]).all()  # behind the camera


def test_labels_are_written_above_their_point_or_at_the_edge():
    image = np.zeros((120, 240, 3), dtype=np.uint8)
    labelled = draw_labels(image, [("real", np.array([60.0, 100.0]), (255, 255, 255)),
                                   ("imagined", np.array([900.0, 100.0]), (120, 180, 255))])
    white = np.argwhere((labelled > 200).all(axis=-1))  # antialiased text: near its colour
    assert len(white) > 20 and white[:, 0].max() < 100 and abs(white[:, 1].mean() - 60) < 15  # above (60, 100)
    blue = np.argwhere((labelled[..., 2].astype(int) - labelled[..., 0] > 80) & (labelled[..., 2] > 200))
    assert len(blue) > 20 and blue[:, 1].max() < 240 and blue[:, 1].min() > 100  # off the image: at its right edge


def test_a_rendered_frame_shows_the_twin_beside_the_real_robot_with_labels():
    from rwm.config import apply_overrides
    from rwm.tasks import make_env, make_task_cfg
    from rwm.training.visualize import GHOST_OFFSET_M, VISUALIZE_TASK
    from rwm.viz.side_by_side import GhostPose, SideBySideRecorder, pose_qpos

    env = make_env(apply_overrides(make_task_cfg(VISUALIZE_TASK), ["num_envs=1", "sim.num_threads=1"]))
    heading = env.state.heading.cpu().numpy().astype(np.float64)
    offset = twin_offset(heading, GHOST_OFFSET_M)
    ghost = GhostPose(env.step_dt, env.sim.base_pos_w + offset, heading,
                      env.get_observations()["system_state"].cpu().numpy())
    try:
        recorder = SideBySideRecorder(env.sim, [0])
    except ValueError as error:
        pytest.skip(str(error))
    frame = recorder.capture(pose_qpos(env.sim.model, ghost.pos, ghost.quat, ghost.joint_pos), offset, heading)
    recorder.close()
    r, b = frame[..., 0].astype(int), frame[..., 2].astype(int)
    twin, real = np.argwhere(b - r > 80), np.argwhere(r - b > 80)  # transparent blue twin, orange real robot
    assert len(twin) > 2000 and len(real) > 2000
    assert twin[:, 1].mean() - real[:, 1].mean() > 100  # side by side: the twin on the right
    assert abs(twin[:, 0].mean() - real[:, 0].mean()) < 40  # ... at the same depth, not in front
    text = np.argwhere((frame > 240).all(axis=-1))  # the white "real" label above the real robot
    assert len(text) > 20 and text[:, 0].mean() < real[:, 0].min()


def test_a_label_that_would_cover_another_moves_below_it():
    image = np.zeros((120, 240, 3), dtype=np.uint8)
    labelled = draw_labels(image, [("real", np.array([100.0, 60.0]), (255, 255, 255)),
                                   ("imagined", np.array([110.0, 62.0]), (120, 180, 255))])
    white = np.argwhere((labelled > 200).all(axis=-1))
    blue = np.argwhere((labelled[..., 2].astype(int) - labelled[..., 0] > 80) & (labelled[..., 2] > 200))
    assert blue[:, 0].min() > white[:, 0].max()
