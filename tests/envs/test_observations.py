"""Observation layouts: every index range of docs/architecture.md#observations holds the quantity it should."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rwm.envs.mdp.observations import POLICY_SLICES
from rwm.sim.mujoco import yaw_to_quat
from rwm.sim.state import DEFAULT_JOINT_POS, STATE_SLICES, from_system_vectors, to_system_vectors
from tests.conftest import make_quiet_env


def place(env, ids, *, quat=(1.0, 0.0, 0.0, 0.0), world_lin_vel=(0.0, 0.0, 0.0), body_ang_vel=(0.0, 0.0, 0.0),
          joint_offset=None, height=0.6):
    sim = env.sim
    qpos = np.zeros((len(ids), sim.model.nq))
    qpos[:, 2] = height
    qpos[:, 3:7] = quat
    joint = np.asarray(DEFAULT_JOINT_POS) + (0.0 if joint_offset is None else np.asarray(joint_offset))
    qpos[:, sim.joint_qpos_ids] = joint
    qvel = np.zeros((len(ids), sim.model.nv))
    qvel[:, :3] = world_lin_vel
    qvel[:, 3:6] = body_ang_vel
    env.state = sim.write_state(np.asarray(ids), qpos, qvel)
    return env._compute_observations()


def test_projected_gravity_follows_tilt():
    env = make_quiet_env(num_envs=2)
    roll = 0.3
    obs = place(env, [0], quat=(math.cos(roll / 2), math.sin(roll / 2), 0.0, 0.0))
    gravity = obs["policy"][0, POLICY_SLICES["projected_gravity"]]
    # rolled by +0.3 about x: world down (0, 0, -1) seen from the base is (0, -sin, -cos)
    torch.testing.assert_close(gravity, torch.tensor([0.0, -math.sin(roll), -math.cos(roll)]), atol=1e-6, rtol=0)
    level = obs["policy"][1, POLICY_SLICES["projected_gravity"]]
    torch.testing.assert_close(level, torch.tensor([0.0, 0.0, -1.0]), atol=1e-6, rtol=0)


def test_base_velocities_are_in_the_base_frame():
    env = make_quiet_env(num_envs=1)
    yaw = math.pi / 2  # facing world +y
    obs = place(env, [0], quat=yaw_to_quat(np.array([yaw]))[0], world_lin_vel=(0.0, 1.0, 0.2),
                body_ang_vel=(0.1, 0.2, 0.3))
    policy = obs["policy"][0]
    # moving along world +y while facing +y is moving forward in the base frame
    torch.testing.assert_close(policy[POLICY_SLICES["base_lin_vel"]], torch.tensor([1.0, 0.0, 0.2]), atol=1e-6, rtol=0)
    torch.testing.assert_close(policy[POLICY_SLICES["base_ang_vel"]], torch.tensor([0.1, 0.2, 0.3]), atol=1e-6, rtol=0)
    assert env.state.heading[0].item() == pytest.approx(yaw, abs=1e-6)


def test_command_joint_state_and_last_action_slots():
    env = make_quiet_env(num_envs=3)
    offset = np.linspace(-0.1, 0.1, 12)
    place(env, [0, 1, 2], joint_offset=offset)
    action = torch.linspace(-1, 1, 36).reshape(3, 12)
    obs, _, _, _ = env.step(action)
    policy = obs["policy"]
    torch.testing.assert_close(policy[:, POLICY_SLICES["command"]], env.command_manager.command)
    torch.testing.assert_close(policy[:, POLICY_SLICES["joint_pos"]], env.state.joint_pos)
    torch.testing.assert_close(policy[:, POLICY_SLICES["joint_vel"]], env.state.joint_vel)
    torch.testing.assert_close(policy[:, POLICY_SLICES["last_action"]], action)
    torch.testing.assert_close(obs["system_action"], action)
    # joint positions are relative to the default pose
    fresh = place(env, [0], joint_offset=offset)
    torch.testing.assert_close(fresh["policy"][0, POLICY_SLICES["joint_pos"]],
                               torch.tensor(offset, dtype=torch.float32), atol=1e-6, rtol=0)


def test_system_groups_hold_the_state_layout():
    env = make_quiet_env(num_envs=2)
    obs, _, _, _ = env.step(torch.zeros(2, 12))
    state = env.state
    for name, sl in STATE_SLICES.items():
        torch.testing.assert_close(obs["system_state"][:, sl], getattr(state, name))
    assert obs["system_state"].shape == (2, 45)
    assert obs["system_contact"].shape == (2, 8) and obs["system_termination"].shape == (2, 1)
    torch.testing.assert_close(obs["system_contact"][:, 4:], state.foot_contact.float())
    torch.testing.assert_close(obs["system_contact"][:, :4], state.thigh_contact.float())
    # the layout round-trips
    back = from_system_vectors(*to_system_vectors(state), heading=state.heading)
    for name in STATE_SLICES:
        torch.testing.assert_close(getattr(back, name), getattr(state, name))
    assert torch.equal(back.foot_contact, state.foot_contact) and torch.equal(back.base_contact, state.base_contact)


def test_noise_only_on_noisy_slots_and_within_bounds():
    env = make_quiet_env(num_envs=64)
    clean = env._compute_observations()["policy"]
    env.noise_scale = env.cfg.noise.scale_vector()
    noisy = env._compute_observations()["policy"]
    diff = (noisy - clean).abs()
    bound = env.noise_scale
    assert torch.all(diff <= bound + 1e-6)
    for name in ("command", "last_action"):
        assert torch.all(diff[:, POLICY_SLICES[name]] == 0)
    assert diff[:, POLICY_SLICES["joint_vel"]].max() > 1.0  # +-1.5 noise on joint velocity is present
