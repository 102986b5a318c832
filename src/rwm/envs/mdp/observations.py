"""Observation groups: the policy's 48-vector and the world model's system vectors
(docs/architecture.md#observations)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rwm.config import check
from rwm.sim.state import NUM_JOINTS, RobotState, to_system_vectors

POLICY_OBS_DIM = 48
# Index ranges of the policy observation (docs/architecture.md#observations).
POLICY_SLICES = {
    "base_lin_vel": slice(0, 3),
    "base_ang_vel": slice(3, 6),
    "projected_gravity": slice(6, 9),
    "command": slice(9, 12),
    "joint_pos": slice(12, 24),
    "joint_vel": slice(24, 36),
    "last_action": slice(36, 48),
}


@dataclass
class ObservationNoiseCfg:
    """Additive uniform noise U[-n, n] on the policy observation (none on command and action)."""

    enabled: bool = True  # false: the policy sees exact observations
    base_lin_vel: float = 0.1  # m/s, noise bound n of the base linear velocity
    base_ang_vel: float = 0.2  # rad/s, of the base angular velocity
    projected_gravity: float = 0.05  # of the projected gravity (unit vector)
    joint_pos: float = 0.01  # rad, of the joint positions
    joint_vel: float = 1.5  # rad/s, of the joint velocities

    def __post_init__(self) -> None:
        for key in ("base_lin_vel", "base_ang_vel", "projected_gravity", "joint_pos", "joint_vel"):
            check(getattr(self, key) >= 0, f"noise.{key} = {getattr(self, key)}; expected >= 0.")

    def scale_vector(self) -> torch.Tensor:
        """(48,) half-widths of the noise, zero where no noise is added."""
        scale = torch.zeros(POLICY_OBS_DIM)
        for key in ("base_lin_vel", "base_ang_vel", "projected_gravity", "joint_pos", "joint_vel"):
            scale[POLICY_SLICES[key]] = getattr(self, key)
        return scale


def policy_observation(state: RobotState, command: torch.Tensor, last_action: torch.Tensor) -> torch.Tensor:
    """(N, 48) noise-free policy observation; joint velocities relative to a default of zero."""
    return torch.cat([state.base_lin_vel, state.base_ang_vel, state.projected_gravity, command,
                      state.joint_pos, state.joint_vel, last_action], dim=-1)


def observation_groups(state: RobotState, command: torch.Tensor, last_action: torch.Tensor,
                       noise_scale: torch.Tensor | None, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """All observation groups; `last_action` is the raw action applied in the step that led here."""
    policy = policy_observation(state, command, last_action)
    if noise_scale is not None:
        noise = torch.rand(policy.shape, generator=generator, device=policy.device) * 2.0 - 1.0
        policy = policy + noise * noise_scale
    system_state, system_contact, system_termination = to_system_vectors(state)
    assert last_action.shape[-1] == NUM_JOINTS
    return {
        "policy": policy,
        "system_state": system_state,
        "system_action": last_action.clone(),
        "system_contact": system_contact,
        "system_termination": system_termination,
    }
