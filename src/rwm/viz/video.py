"""Offscreen MP4 videos of simulated robots (MuJoCo's renderer, headless via EGL).

MuJoCo picks its OpenGL backend when it is first imported, from ``MUJOCO_GL``. Without a
display the default (GLFW) cannot open a context, so this module sets ``MUJOCO_GL=egl`` when
the variable is unset; commands that render set it before anything imports mujoco. When
mujoco was already imported with the GLFW default on a Linux machine without a display,
:class:`VideoRecorder` switches the renderer to EGL itself.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["VideoRecorder", "tile_frames", "write_mp4"]


def tile_frames(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """Arrange equally sized (H, W, 3) images in a near-square grid; empty cells are black."""
    count = len(tiles)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    h, w, c = tiles[0].shape
    frame = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, q = divmod(k, cols)
        frame[r * h:(r + 1) * h, q * w:(q + 1) * w] = tile
    return frame


def write_mp4(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int) -> Path:
    """Encode (H, W, 3) uint8 frames as H.264 MP4 (odd sizes are padded to even, as the codec needs)."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("no frames to write.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    writer = imageio.get_writer(str(tmp), fps=fps, codec="libx264", macro_block_size=1, quality=7,
                                pixelformat="yuv420p", ffmpeg_log_level="error")
    try:
        for frame in frames:
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
            writer.append_data(frame)
    finally:
        writer.close()
    os.replace(tmp, path)
    return path


def _use_egl_without_display() -> None:
    """If mujoco settled on GLFW (the default) and there is no display, render through EGL instead."""
    if platform.system() != "Linux" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    try:
        from mujoco.rendering.classic import gl_context
    except ImportError:
        return
    if getattr(gl_context, "_MUJOCO_GL", None) in ("", "glfw", "enable", "enabled", "on", "true", "1"):
        try:
            from mujoco.egl import GLContext
        except Exception:  # no EGL either: the renderer's own error will say so
            return
        gl_context.GLContext = GLContext


class VideoRecorder:
    """Renders environments `env_ids` of a MuJoCo batch simulator from a named camera, frame by frame.

    Each environment is materialised from the batch (its own randomised model and its current
    state), forwarded, and drawn; the tiles of one instant form one frame.
    """

    def __init__(self, simulator: Any, env_ids: Sequence[int], width: int = 480, height: int = 360,
                 camera: str = "track"):
        if not env_ids:
            raise ValueError("VideoRecorder needs at least one environment id.")
        self.sim = simulator
        self.env_ids = list(env_ids)
        self.camera = camera
        batch = simulator.batch
        self.models = [batch.get_model(i) for i in self.env_ids]
        self.datas = [mujoco.MjData(model) for model in self.models]
        if mujoco.mj_name2id(self.models[0], mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise ValueError(f"the robot model has no camera named '{camera}'.")
        # the offscreen buffer bounds the image size
        self.models[0].vis.global_.offwidth = max(self.models[0].vis.global_.offwidth, width)
        self.models[0].vis.global_.offheight = max(self.models[0].vis.global_.offheight, height)
        _use_egl_without_display()
        try:
            self.renderer = mujoco.Renderer(self.models[0], height=height, width=width)
        except Exception as error:  # no OpenGL context: say which backend failed
            raise ValueError(f"cannot render offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r} "
                             f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})."
                             ) from None
        # legs and feet exist only as collision geoms (group 3), hidden by default: show them
        self.scene_option = mujoco.MjvOption()
        self.scene_option.geomgroup[:] = 1
        self.frames: list[np.ndarray] = []

    def capture(self) -> np.ndarray:
        """Render the current state of every selected environment as one tiled frame."""
        tiles = []
        for env_id, model, data in zip(self.env_ids, self.models, self.datas):
            self.sim.batch.get_data(env_id, data)
            mujoco.mj_forward(model, data)
            self.renderer.update_scene(data, camera=self.camera, scene_option=self.scene_option)
            tiles.append(self.renderer.render().copy())
        frame = tile_frames(tiles)
        self.frames.append(frame)
        return frame

    def write(self, path: str | os.PathLike, fps: int = 25) -> Path:
        return write_mp4(self.frames, path, fps)

    def close(self) -> None:
        self.renderer.close()
        self.frames.clear()
