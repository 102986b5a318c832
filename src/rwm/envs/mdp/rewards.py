"""Reward terms (docs/architecture.md#rewards), each a function of one `RewardContext`.

The context holds only what a learned simulator can also provide (a `RobotState`, the command,
the actions, and quantities the task derives from consecutive states), so the same functions
score real and imagined rollouts. The task multiplies each term by its weight and by dt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rwm.sim.state import RobotState


@dataclass
class RewardContext:
    state: RobotState  # state after the step
    command: torch.Tensor  # (N, 3) command in effect during the step
    action: torch.Tensor  # (N, 12) raw action applied in the step
    last_action: torch.Tensor  # (N, 12) raw action of the step before (zero after a reset)
    joint_acc: torch.Tensor  # (N, 12) finite difference of joint velocities over the step
    first_contact: torch.Tensor  # (N, 4) bool: foot touched down in this step
    last_air_time: torch.Tensor  # (N, 4) s, duration of each foot's last swing
    soft_joint_pos_limits: torch.Tensor  # (2, 12) lower/upper, relative to the default pose
    feet_air_time_threshold: float = 0.5  # s
    tracking_std: float = 0.5  # sqrt(0.25), the tracking kernels' width


def track_lin_vel_xy_exp(ctx: RewardContext) -> torch.Tensor:
    error = torch.sum(torch.square(ctx.command[:, :2] - ctx.state.base_lin_vel[:, :2]), dim=1)
    return torch.exp(-error / ctx.tracking_std**2)


def track_ang_vel_z_exp(ctx: RewardContext) -> torch.Tensor:
    error = torch.square(ctx.command[:, 2] - ctx.state.base_ang_vel[:, 2])
    return torch.exp(-error / ctx.tracking_std**2)


def lin_vel_z_l2(ctx: RewardContext) -> torch.Tensor:
    return torch.square(ctx.state.base_lin_vel[:, 2])


def ang_vel_xy_l2(ctx: RewardContext) -> torch.Tensor:
    return torch.sum(torch.square(ctx.state.base_ang_vel[:, :2]), dim=1)


def dof_torques_l2(ctx: RewardContext) -> torch.Tensor:
    return torch.sum(torch.square(ctx.state.joint_torque), dim=1)


def dof_acc_l2(ctx: RewardContext) -> torch.Tensor:
    return torch.sum(torch.square(ctx.joint_acc), dim=1)


def action_rate_l2(ctx: RewardContext) -> torch.Tensor:
    return torch.sum(torch.square(ctx.action - ctx.last_action), dim=1)


def feet_air_time(ctx: RewardContext) -> torch.Tensor:
    """Rewards swings longer than the threshold, paid at touch-down, only when asked to move."""
    swing = (ctx.last_air_time - ctx.feet_air_time_threshold) * ctx.first_contact
    moving = torch.norm(ctx.command[:, :2], dim=1) > 0.1
    return torch.sum(swing, dim=1) * moving


def undesired_contacts(ctx: RewardContext) -> torch.Tensor:
    return torch.sum(ctx.state.thigh_contact.float(), dim=1)


def flat_orientation_l2(ctx: RewardContext) -> torch.Tensor:
    return torch.sum(torch.square(ctx.state.projected_gravity[:, :2]), dim=1)


def dof_pos_limits(ctx: RewardContext) -> torch.Tensor:
    lower, upper = ctx.soft_joint_pos_limits
    below = (lower - ctx.state.joint_pos).clamp(min=0.0)
    above = (ctx.state.joint_pos - upper).clamp(min=0.0)
    return torch.sum(below + above, dim=1)


def stand_still(ctx: RewardContext) -> torch.Tensor:
    """Penalises leaving the default pose while the whole 3-D command is (near) zero."""
    standing = torch.norm(ctx.command, dim=1) < 0.05
    return torch.sum(torch.abs(ctx.state.joint_pos), dim=1) * standing


def termination_penalty(ctx: RewardContext) -> torch.Tensor:
    """1 in the step the robot fell (base contact), as Isaac Lab's ``is_terminated`` term.

    Off (weight 0) in the simulator tasks, as in Isaac Lab's ANYmal velocity tasks. In imagination
    it is needed: every other term is a penalty until the policy tracks, and a world model offers
    cheap ways to end an episode (actions it predicts a fall for), so without a price on falling
    PPO learns to end imagined episodes at once (measured: imagined episodes shrank from 256 to
    under 50 steps and the real fall rate rose to 0.9).
    """
    return ctx.state.base_contact.float()


REWARD_TERMS: dict[str, Callable[[RewardContext], torch.Tensor]] = {
    fn.__name__: fn
    for fn in (track_lin_vel_xy_exp, track_ang_vel_z_exp, lin_vel_z_l2, ang_vel_xy_l2, dof_torques_l2,
               dof_acc_l2, action_rate_l2, feet_air_time, undesired_contacts, flat_orientation_l2,
               dof_pos_limits, stand_still, termination_penalty)
}

# Weights per mode (docs/architecture.md#rewards). Init keeps Isaac Lab's rough-terrain weights
# (and stand_still); Pretrain, Finetune and Visualize use the flat task's.
INIT_REWARD_WEIGHTS = {
    "track_lin_vel_xy_exp": 1.0, "track_ang_vel_z_exp": 0.5, "lin_vel_z_l2": -2.0, "ang_vel_xy_l2": -0.05,
    "dof_torques_l2": -1.0e-5, "dof_acc_l2": -2.5e-7, "action_rate_l2": -0.01, "feet_air_time": 0.125,
    "undesired_contacts": -1.0, "flat_orientation_l2": 0.0, "dof_pos_limits": 0.0, "stand_still": -1.0,
    "termination_penalty": 0.0,
}
# The price of a fall in imagination (Finetune, Offline): Isaac Lab's termination_penalty weight
# (-200, i.e. -4 per fall at dt = 0.02), above the discounted penalties an imagined episode collects.
IMAGINATION_TERMINATION_PENALTY = -200.0
FLAT_REWARD_WEIGHTS = {
    **INIT_REWARD_WEIGHTS, "dof_torques_l2": -2.5e-5, "feet_air_time": 0.5, "flat_orientation_l2": -5.0,
}
