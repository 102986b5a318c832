"""Velocity commands (docs/architecture.md#commands, Isaac Lab's UniformVelocityCommand with heading control)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rwm.config import check
from rwm.sim.state import RobotState


@dataclass
class CommandCfg:
    """Uniform (vx*, vy*, wz*) commands, resampled every `resampling_time_s`."""

    resampling_time_s: tuple[float, float] = (10.0, 10.0)  # s a command lasts, drawn uniformly from the range
    lin_vel_x: tuple[float, float] = (-1.0, 1.0)  # m/s
    lin_vel_y: tuple[float, float] = (-1.0, 1.0)  # m/s
    ang_vel_z: tuple[float, float] = (-1.0, 1.0)  # rad/s; also the clip of heading control
    standing_fraction: float = 0.02  # share of environments commanded to stand still
    heading_control: bool = True  # wz* = clip(stiffness * wrap(heading* - heading))
    heading: tuple[float, float] = (-math.pi, math.pi)  # rad, range of heading targets
    heading_stiffness: float = 0.5  # 1/s, gain of heading control
    # An episode's first command lasts a uniform share of its resampling time, so that imagined
    # episodes (shorter than a command) also see commands change under the policy's gait.
    random_first_duration: bool = False
    # Share of resampled commands drawn from the part of the box at `fast_speed` or faster, where
    # policies fall most (docs/results.md); evaluation always draws uniformly (fast_share = 0).
    fast_share: float = 0.0
    fast_speed: float = 1.0  # m/s, the planar speed from which a command counts as fast (fast_share)

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
        check(0.0 <= self.fast_share <= 1.0, f"commands.fast_share = {self.fast_share}; expected a value in [0, 1].")
        # at most 0.9 of the way to the box's farthest corner, so that rejection sampling finds the
        # fast commands in a few rounds (2 % of the default box lies beyond 0.9 of its corner)
        fastest = 0.9 * max(math.hypot(x, y) for x in self.lin_vel_x for y in self.lin_vel_y)
        check(math.isfinite(self.fast_speed) and 0 <= self.fast_speed <= fastest,
              f"commands.fast_speed = {self.fast_speed}; expected a speed in [0, {fastest:.3g}] m/s, at most 0.9 "
              "of the command box's farthest corner.")


FAST_CANDIDATES = 64  # rejection-sampling draws per fast command


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
        if self.cfg.fast_share > 0:  # only then, so runs without it keep their random streams
            fast = ids[torch.rand(n, generator=self.generator, device=self.device) < self.cfg.fast_share]
            self.command[fast, :2] = self._fast_planar(len(fast))

    def _fast_planar(self, n: int) -> torch.Tensor:
        """(n, 2) planar velocities uniform over the part of the box at `fast_speed` or faster:
        rejection sampling from the box, `FAST_CANDIDATES` draws per row at a time, until every row
        has one fast enough."""
        planar = torch.empty(n, 2, device=self.device)
        pending = torch.arange(n, device=self.device)
        while len(pending):
            m = len(pending)
            candidates = torch.stack((self._uniform(m * FAST_CANDIDATES, self.cfg.lin_vel_x),
                                      self._uniform(m * FAST_CANDIDATES, self.cfg.lin_vel_y)), dim=1).view(m, -1, 2)
            fast_enough = candidates.norm(dim=2) >= self.cfg.fast_speed  # (m, FAST_CANDIDATES)
            found = fast_enough.any(dim=1)
            first = fast_enough.float().argmax(dim=1)
            planar[pending[found]] = candidates[found, first[found]]
            pending = pending[~found]
        return planar

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
