"""Velocity commands (spec §3.3, Isaac Lab's UniformVelocityCommand with heading control)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rwm.config import check
from rwm.sim.state import RobotState


@dataclass
class CommandCfg:
    """Uniform (vx*, vy*, wz*) commands, resampled every `resampling_time_s`."""

    resampling_time_s: tuple[float, float] = (10.0, 10.0)
    lin_vel_x: tuple[float, float] = (-1.0, 1.0)  # m/s
    lin_vel_y: tuple[float, float] = (-1.0, 1.0)  # m/s
    ang_vel_z: tuple[float, float] = (-1.0, 1.0)  # rad/s; also the clip of heading control
    standing_fraction: float = 0.02  # share of environments commanded to stand still
    heading_control: bool = True  # wz* = clip(stiffness * wrap(heading* - heading))
    heading: tuple[float, float] = (-math.pi, math.pi)  # rad, range of heading targets
    heading_stiffness: float = 0.5
    # An episode's first command lasts a uniform share of its resampling time. Imagined episodes
    # (5.12 s) are shorter than the 10 s a command lasts, so without this a policy trained in
    # imagination never sees the command change under its own gait, and falls at the switch when
    # a real 20 s episode brings it.
    random_first_duration: bool = False

    def __post_init__(self) -> None:
        for key in ("resampling_time_s", "lin_vel_x", "lin_vel_y", "ang_vel_z", "heading"):
            low, high = getattr(self, key)
            check(low <= high, f"commands.{key} = {(low, high)} is not a range; expected low <= high.")
        check(self.resampling_time_s[0] > 0,
              f"commands.resampling_time_s = {self.resampling_time_s}; expected positive times.")
        check(0.0 <= self.standing_fraction <= 1.0,
              f"commands.standing_fraction = {self.standing_fraction}; expected a value in [0, 1].")
        check(self.heading_stiffness >= 0,
              f"commands.heading_stiffness = {self.heading_stiffness}; expected >= 0.")


def wrap_to_pi(angle: torch.Tensor) -> torch.Tensor:
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


class VelocityCommand:
    """Per-environment velocity command (N, 3) = (vx*, vy*, wz*) in the base frame."""

    def __init__(self, cfg: CommandCfg, num_envs: int, device: torch.device, generator: torch.Generator):
        self.cfg = cfg
        self.num_envs = num_envs
        self.generator = generator
        self.device = device
        self.command = torch.zeros(num_envs, 3, device=device)
        self.heading_target = torch.zeros(num_envs, device=device)
        self.is_standing = torch.zeros(num_envs, dtype=torch.bool, device=device)
        self.time_left = torch.zeros(num_envs, device=device)

    def _uniform(self, n: int, bounds: tuple[float, float]) -> torch.Tensor:
        low, high = bounds
        return torch.rand(n, generator=self.generator, device=self.device) * (high - low) + low

    def resample(self, ids: torch.Tensor) -> None:
        n = len(ids)
        if n == 0:
            return
        self.time_left[ids] = self._uniform(n, self.cfg.resampling_time_s)
        self.command[ids, 0] = self._uniform(n, self.cfg.lin_vel_x)
        self.command[ids, 1] = self._uniform(n, self.cfg.lin_vel_y)
        self.command[ids, 2] = self._uniform(n, self.cfg.ang_vel_z)
        self.heading_target[ids] = self._uniform(n, self.cfg.heading)
        self.is_standing[ids] = torch.rand(n, generator=self.generator, device=self.device) < self.cfg.standing_fraction

    def reset(self, ids: torch.Tensor) -> None:
        """New commands for episodes that start again."""
        self.resample(ids)
        if self.cfg.random_first_duration and len(ids):
            self.time_left[ids] *= torch.rand(len(ids), generator=self.generator, device=self.device)

    def update(self, state: RobotState, dt: float) -> None:
        """Advance timers by dt, resample the due commands, apply heading control and standing."""
        self.time_left -= dt
        self.resample(torch.nonzero(self.time_left <= 0).flatten())
        if self.cfg.heading_control:
            error = wrap_to_pi(self.heading_target - state.heading)
            self.command[:, 2] = torch.clamp(self.cfg.heading_stiffness * error, *self.cfg.ang_vel_z)
        self.command[self.is_standing] = 0.0
