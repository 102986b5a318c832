"""The robot-state record shared by every simulator, and the one place its flat layouts live.

A simulator (MuJoCo, or the learned world model) hands the task a `RobotState`; the task
computes commands, observations, rewards and terminations from it alone. The world model
sees the same quantities as three flat vectors (docs/architecture.md#observations):

    system_state (45)       lin vel (3) | ang vel (3) | projected gravity (3)
                            | joint pos - default (12) | joint vel (12) | joint torque (12)
    system_contact (8)      thigh contacts LF, LH, RF, RH | foot contacts LF, LH, RF, RH
    system_termination (1)  base contact

`to_system_vectors` and `from_system_vectors` are the only functions that know these offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

LEGS = ("LF", "LH", "RF", "RH")
# Policy / actuator joint order: grouped by joint type, then by leg (docs/architecture.md#conventions).
JOINT_NAMES = tuple(f"{leg}_{joint}" for joint in ("HAA", "HFE", "KFE") for leg in LEGS)
NUM_JOINTS = len(JOINT_NAMES)
# Isaac Lab's ANYmal-D default pose in JOINT_NAMES order.
DEFAULT_JOINT_POS = (0.0, 0.0, 0.0, 0.0, 0.4, -0.4, 0.4, -0.4, -0.8, 0.8, -0.8, 0.8)

STATE_DIM = 45
CONTACT_DIM = 8
TERMINATION_DIM = 1
ACTION_DIM = NUM_JOINTS

# Slices of system_state, by quantity.
STATE_SLICES = {
    "base_lin_vel": slice(0, 3),
    "base_ang_vel": slice(3, 6),
    "projected_gravity": slice(6, 9),
    "joint_pos": slice(9, 21),
    "joint_vel": slice(21, 33),
    "joint_torque": slice(33, 45),
}
CONTACT_SLICES = {"thigh_contact": slice(0, 4), "foot_contact": slice(4, 8)}


@dataclass
class RobotState:
    """Batched state of N robots; every field is a torch tensor with leading dim N.

    Velocities are in the base frame; joint quantities follow JOINT_NAMES order; contacts
    follow LEGS order and are True when the net contact force exceeded 1 N within the last
    three physics steps. `heading` (yaw in the world frame) is not part of the model's state
    vector: the real simulator reads it, a learned one integrates it, and heading-controlled
    commands need it.
    """

    base_lin_vel: torch.Tensor  # (N, 3) m/s
    base_ang_vel: torch.Tensor  # (N, 3) rad/s
    projected_gravity: torch.Tensor  # (N, 3) unit vector
    joint_pos: torch.Tensor  # (N, 12) rad, relative to DEFAULT_JOINT_POS
    joint_vel: torch.Tensor  # (N, 12) rad/s
    joint_torque: torch.Tensor  # (N, 12) N m, applied by the actuators
    thigh_contact: torch.Tensor  # (N, 4) bool
    foot_contact: torch.Tensor  # (N, 4) bool
    base_contact: torch.Tensor  # (N,) bool
    heading: torch.Tensor  # (N,) rad

    @property
    def num_envs(self) -> int:
        return self.base_lin_vel.shape[0]

    def clone(self) -> "RobotState":
        return RobotState(**{f.name: getattr(self, f.name).clone() for f in fields(self)})

    def index(self, ids: torch.Tensor) -> "RobotState":
        """The sub-batch of environments `ids`."""
        return RobotState(**{f.name: getattr(self, f.name)[ids] for f in fields(self)})


def to_system_vectors(state: RobotState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(system_state (N, 45), system_contact (N, 8), system_termination (N, 1)) as float32."""
    system_state = torch.cat([getattr(state, name) for name in STATE_SLICES], dim=-1)
    system_contact = torch.cat([state.thigh_contact, state.foot_contact], dim=-1).float()
    system_termination = state.base_contact.float().unsqueeze(-1)
    return system_state, system_contact, system_termination


def from_system_vectors(
    system_state: torch.Tensor,
    system_contact: torch.Tensor,
    system_termination: torch.Tensor,
    heading: torch.Tensor,
) -> RobotState:
    """Inverse of `to_system_vectors`; contact inputs may be probabilities (threshold 0.5)."""
    if system_state.shape[-1] != STATE_DIM:
        raise ValueError(f"system_state has {system_state.shape[-1]} columns; expected {STATE_DIM}.")
    if system_contact.shape[-1] != CONTACT_DIM:
        raise ValueError(f"system_contact has {system_contact.shape[-1]} columns; expected {CONTACT_DIM}.")
    contact = system_contact > 0.5
    return RobotState(
        **{name: system_state[..., sl] for name, sl in STATE_SLICES.items()},
        thigh_contact=contact[..., CONTACT_SLICES["thigh_contact"]],
        foot_contact=contact[..., CONTACT_SLICES["foot_contact"]],
        base_contact=system_termination.reshape(-1) > 0.5,
        heading=heading,
    )


def check_actions(actions, num_envs: int, device: torch.device | str) -> torch.Tensor:
    """Raw policy actions (num_envs, 12) as float32 on `device`; anything else is a ValueError naming it."""
    expected = (num_envs, ACTION_DIM)
    if not isinstance(actions, torch.Tensor):
        raise ValueError(f"actions must be a torch.Tensor of shape {expected}; got {type(actions).__name__}.")
    if tuple(actions.shape) != expected:
        raise ValueError(f"actions have shape {tuple(actions.shape)}; expected {expected} (num_envs, num_actions).")
    if not actions.is_floating_point():
        raise ValueError(f"actions have dtype {actions.dtype}; expected a floating-point dtype.")
    if not bool(torch.isfinite(actions).all()):
        bad = torch.nonzero(~torch.isfinite(actions).all(dim=1)).flatten()[:5].tolist()
        raise ValueError(f"actions contain NaN or infinite values (environments {bad}); expected finite values.")
    return actions.detach().to(device, torch.float32)
