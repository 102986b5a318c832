"""Every reward term against a value computed by hand on a constructed RobotState."""

from __future__ import annotations

import math

import pytest
import torch

from rwm.envs.mdp import rewards as R
from rwm.sim.state import RobotState


def constructed_context(**overrides) -> R.RewardContext:
    """Two robots with chosen numbers; robot 1 is all zeros unless a test sets it."""
    state = RobotState(
        base_lin_vel=torch.tensor([[0.8, -0.2, 0.3], [0.0, 0.0, 0.0]]),
        base_ang_vel=torch.tensor([[0.1, -0.4, 0.5], [0.0, 0.0, 0.0]]),
        projected_gravity=torch.tensor([[0.1, -0.2, -0.97], [0.0, 0.0, -1.0]]),
        joint_pos=torch.zeros(2, 12),
        joint_vel=torch.zeros(2, 12),
        joint_torque=torch.zeros(2, 12),
        thigh_contact=torch.tensor([[True, False, True, False], [False] * 4]),
        foot_contact=torch.tensor([[True, True, False, False], [True] * 4]),
        base_contact=torch.tensor([False, False]),
        heading=torch.zeros(2),
    )
    state.joint_pos[0, :3] = torch.tensor([0.1, -0.2, 0.3])
    state.joint_torque[0, :2] = torch.tensor([10.0, -20.0])
    ctx = R.RewardContext(
        state=state,
        command=torch.tensor([[1.0, 0.0, 0.2], [0.0, 0.0, 0.0]]),
        action=torch.zeros(2, 12),
        last_action=torch.zeros(2, 12),
        joint_acc=torch.zeros(2, 12),
        first_contact=torch.tensor([[True, False, True, False], [True, False, False, False]]),
        last_air_time=torch.tensor([[0.7, 0.9, 0.3, 0.1], [0.8, 0.0, 0.0, 0.0]]),
        soft_joint_pos_limits=torch.tensor([[-0.5] * 12, [0.25] * 12]),
    )
    for key, value in overrides.items():
        setattr(ctx, key, value)
    return ctx


def test_track_lin_vel_xy_exp():
    # robot 0: error (1 - 0.8)^2 + (0 + 0.2)^2 = 0.08 -> exp(-0.08 / 0.25); robot 1: exact -> 1
    value = R.track_lin_vel_xy_exp(constructed_context())
    assert value.tolist() == pytest.approx([math.exp(-0.32), 1.0])


def test_track_ang_vel_z_exp():
    # robot 0: (0.2 - 0.5)^2 = 0.09 -> exp(-0.36)
    assert R.track_ang_vel_z_exp(constructed_context()).tolist() == pytest.approx([math.exp(-0.36), 1.0])


def test_lin_vel_z_and_ang_vel_xy_l2():
    ctx = constructed_context()
    assert R.lin_vel_z_l2(ctx).tolist() == pytest.approx([0.09, 0.0])
    assert R.ang_vel_xy_l2(ctx).tolist() == pytest.approx([0.01 + 0.16, 0.0])


def test_dof_torques_acc_and_action_rate_l2():
    ctx = constructed_context()
    assert R.dof_torques_l2(ctx).tolist() == pytest.approx([100.0 + 400.0, 0.0])
    ctx.joint_acc = torch.zeros(2, 12)
    ctx.joint_acc[1, 5] = 30.0
    assert R.dof_acc_l2(ctx).tolist() == pytest.approx([0.0, 900.0])
    ctx.action = torch.full((2, 12), 0.5)
    ctx.last_action = torch.zeros(2, 12)
    ctx.last_action[0] = 0.25
    assert R.action_rate_l2(ctx).tolist() == pytest.approx([12 * 0.0625, 12 * 0.25])


def test_feet_air_time_pays_long_swings_at_touch_down_only_when_moving():
    ctx = constructed_context(last_air_time=torch.tensor([[0.7, 0.9, 0.6, 0.1], [0.8, 0.0, 0.0, 0.0]]))
    # robot 0: (0.7 - 0.5) + (0.6 - 0.5) = 0.3 (foot 1's 0.9 s swing did not end this step)
    # robot 1: touch-down with a 0.8 s swing, but its command is zero -> 0
    assert R.feet_air_time(ctx).tolist() == pytest.approx([0.3, 0.0])


def test_undesired_contacts_counts_thighs():
    assert R.undesired_contacts(constructed_context()).tolist() == [2.0, 0.0]


def test_termination_penalty_marks_falls_only():
    ctx = constructed_context()
    assert R.termination_penalty(ctx).tolist() == [0.0, 0.0]
    ctx.state.base_contact = torch.tensor([False, True])
    assert R.termination_penalty(ctx).tolist() == [0.0, 1.0]
    # off in the simulator tasks, a price on falling in the imagination ones
    assert R.INIT_REWARD_WEIGHTS["termination_penalty"] == R.FLAT_REWARD_WEIGHTS["termination_penalty"] == 0.0
    from rwm.tasks import make_task_cfg

    for task in ("Velocity-Flat-Anymal-D-Finetune-v0", "Velocity-Flat-Anymal-D-Offline-v0"):
        assert make_task_cfg(task).env.reward_weights["termination_penalty"] == R.IMAGINATION_TERMINATION_PENALTY < 0


def test_flat_orientation_l2():
    assert R.flat_orientation_l2(constructed_context()).tolist() == pytest.approx([0.01 + 0.04, 0.0])


def test_dof_pos_limits_sums_soft_limit_violations():
    ctx = constructed_context()
    # robot 0 joints (0.1, -0.2, 0.3): only 0.3 exceeds the upper soft limit 0.25 by 0.05
    ctx.state.joint_pos[1, 0] = -0.7  # 0.2 below the lower limit
    assert R.dof_pos_limits(ctx).tolist() == pytest.approx([0.05, 0.2])


def test_stand_still_only_under_a_zero_command():
    ctx = constructed_context()
    ctx.state.joint_pos[1, 4] = -0.3
    # robot 0 is commanded to move: no penalty; robot 1 stands: sum |q| = 0.3
    assert R.stand_still(ctx).tolist() == pytest.approx([0.0, 0.3])
    ctx.command[1] = torch.tensor([0.03, 0.0, 0.03])  # |c| = 0.042 < 0.05: still standing
    assert R.stand_still(ctx)[1].item() == pytest.approx(0.3)
    ctx.command[1] = torch.tensor([0.0, 0.0, 0.06])
    assert R.stand_still(ctx)[1].item() == 0.0


def test_reward_weight_tables_match_the_spec():
    assert len([w for w in R.FLAT_REWARD_WEIGHTS.values() if w != 0]) == 11
    assert len([w for w in R.INIT_REWARD_WEIGHTS.values() if w != 0]) == 10
    assert R.FLAT_REWARD_WEIGHTS["dof_torques_l2"] == -2.5e-5 and R.INIT_REWARD_WEIGHTS["dof_torques_l2"] == -1e-5
    assert set(R.FLAT_REWARD_WEIGHTS) == set(R.REWARD_TERMS)


def test_env_reward_is_weighted_sum_times_dt(quiet_env):
    env = quiet_env
    env.step(torch.zeros(env.num_envs, 12))  # settle one step so every term has inputs
    before = {name: sums.clone() for name, sums in env.episode_sums.items()}
    _, rewards, _, _ = env.step(torch.zeros(env.num_envs, 12))
    per_term = sum(env.episode_sums[name] - before[name] for name in before)
    torch.testing.assert_close(rewards, per_term)
    # the tracking term alone, recomputed from the state (xy commands only change every 10 s)
    ctx = R.RewardContext(state=env.state, command=env.command_manager.command, action=env.action,
                          last_action=env.last_action, joint_acc=torch.zeros(env.num_envs, 12),
                          first_contact=torch.zeros(env.num_envs, 4, dtype=torch.bool),
                          last_air_time=env.last_air_time, soft_joint_pos_limits=env.sim.soft_joint_pos_limits)
    expected = R.track_lin_vel_xy_exp(ctx) * env.cfg.reward_weights["track_lin_vel_xy_exp"] * env.step_dt
    delta = env.episode_sums["track_lin_vel_xy_exp"] - before["track_lin_vel_xy_exp"]
    torch.testing.assert_close(delta, expected)
