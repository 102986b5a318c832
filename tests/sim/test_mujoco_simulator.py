"""The real simulator: standing, falling, actuation, randomisation ranges, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rwm.config import ConfigError
from rwm.envs.scripted_policies import StandingPolicy
from rwm.sim.mujoco import MujocoSimCfg, MujocoSimulator, RandomizationCfg, load_model
from rwm.sim.state import DEFAULT_JOINT_POS, JOINT_NAMES
from tests.conftest import make_quiet_env


def test_model_matches_anymal_d_data():
    model = load_model(MujocoSimCfg())
    assert model.body_mass.sum() == pytest.approx(51.5, abs=0.3)
    assert model.nu == 12 and model.njnt == 13
    assert model.opt.timestep == pytest.approx(0.005)
    # HAA limits from the URDF: left legs [-0.785, 0.611], right legs [-0.611, 0.785]
    assert model.joint("LF_HAA").range == pytest.approx([-0.785, 0.611])
    assert model.joint("RH_HAA").range == pytest.approx([-0.611, 0.785])


def test_holding_the_default_pose_for_5_s_every_robot_stays_up():
    env = make_quiet_env(num_envs=8)
    policy = StandingPolicy(env.num_envs, dt=env.step_dt)
    obs = env.get_observations()["policy"]
    settle = round(0.5 / env.step_dt)  # spawned at 0.6 m, the feet touch down within 0.5 s
    for step in range(round(5.0 / env.step_dt)):
        observations, _, dones, _ = env.step(policy(obs))
        obs = observations["policy"]
        state = env.state
        assert not dones.any(), "a standing robot fell or timed out"
        assert not state.base_contact.any()
        assert not state.thigh_contact.any()
        if step >= settle:
            assert state.foot_contact.all()
        height = env.sim.base_pos_w[:, 2]
        assert np.all((height > 0.5) & (height < 0.66)), height


def test_actuators_follow_the_dc_motor_pd_law():
    """Applied torque = clip(40 (q* - q) - 5 qd, DC-motor torque-speed limits, +-80) at the last substep."""
    sim = MujocoSimulator(MujocoSimCfg(randomization=RandomizationCfg.none(), num_threads=1), 16, seed=1)
    actions = torch.linspace(-2.0, 2.0, 16 * 12).reshape(16, 12)
    sim.step(actions)  # the torque is computed at the start of the last substep, from that state
    data = [sim.batch.get_data(i) for i in range(16)]
    q_target = np.asarray(DEFAULT_JOINT_POS) + 0.5 * actions.numpy()
    sim_model = sim.model
    for i, d in enumerate(data):
        import mujoco

        mujoco.mj_forward(sim_model, d)  # torque the actuators apply at the current state
        q = d.qpos[sim.joint_qpos_ids]
        qd = d.qvel[sim.joint_qvel_ids]
        tau = 40.0 * (q_target[i] - q) - 5.0 * qd
        upper = np.clip(120.0 * (1 - qd / 7.5), 0.0, 80.0)
        lower = np.clip(120.0 * (-1 - qd / 7.5), -80.0, 0.0)
        np.testing.assert_allclose(d.actuator_force, np.clip(tau, lower, upper), atol=1e-9)
        assert np.abs(d.actuator_force).max() <= 80.0 + 1e-9


def test_dropped_on_its_back_base_contact_fires_and_terminates():
    env = make_quiet_env(num_envs=2)
    sim = env.sim
    qpos = np.zeros((1, sim.model.nq))
    qpos[0, 2] = 0.35
    qpos[0, 3:7] = [0.0, 1.0, 0.0, 0.0]  # rolled by pi: upside down
    qpos[0, sim.joint_qpos_ids] = DEFAULT_JOINT_POS
    env.state = sim.write_state(np.array([0]), qpos, np.zeros((1, sim.model.nv)))
    terminated = False
    for _ in range(50):
        _, _, dones, extras = env.step(torch.zeros(2, 12))
        if dones[0]:
            terminated = True
            assert not extras["time_outs"][0], "a fall must not be reported as a time-out"
            assert extras["log"]["Episode_Termination/base_contact"] == 1.0
            terminal = extras["terminal"]
            assert terminal["ids"].tolist() == [0]
            assert terminal["system_termination"].tolist() == [[1.0]], "the fallen state is kept for the world model"
            assert env.get_observations()["system_termination"][0, 0] == 0.0, "the returned obs is the new episode's"
            break
    assert terminated, "base contact never terminated the upside-down robot"
    assert not dones[1]


def test_time_outs_are_flagged_as_time_outs_not_terminations():
    env = make_quiet_env(num_envs=4, episode_length_s=0.2)
    policy = StandingPolicy(4, dt=env.step_dt)
    obs = env.get_observations()["policy"]
    for step in range(1, env.max_episode_length + 1):
        observations, _, dones, extras = env.step(policy(obs))
        obs = observations["policy"]
        if step < env.max_episode_length:
            assert not dones.any()
    assert dones.all() and extras["time_outs"].all()
    assert extras["log"]["Episode_Termination/time_out"] == 4.0
    assert extras["log"]["Episode_Termination/base_contact"] == 0.0
    assert (env.episode_length_buf == 0).all()


def test_reset_randomisation_stays_inside_its_ranges():
    cfg = MujocoSimCfg(num_threads=1)
    r = cfg.randomization
    sim = MujocoSimulator(cfg, 256, seed=3)
    qpos, qvel = sim.qpos.copy(), sim.qvel.copy()
    assert np.all(np.abs(qpos[:, :2]) <= r.base_pos_xy[1])
    assert np.allclose(qpos[:, 2], cfg.spawn_height)
    yaw = 2 * np.arctan2(qpos[:, 6], qpos[:, 3])
    yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
    assert np.all(np.abs(yaw) <= r.base_yaw[1] + 1e-9) and yaw.std() > 1.0
    assert np.all(np.abs(qvel[:, :6]) <= r.base_vel[1]) and qvel[:, :6].std() > 0.2
    assert np.all(qvel[:, 6:] == 0)
    joint = qpos[:, sim.joint_qpos_ids]
    default = np.asarray(DEFAULT_JOINT_POS)
    moving = default != 0
    scale = joint[:, moving] / default[moving]
    assert np.all((scale >= 0.5 - 1e-9) & (scale <= 1.5 + 1e-9)) and scale.std() > 0.2
    assert np.all((joint >= sim.soft_limits[0]) & (joint <= sim.soft_limits[1]))
    # start-up randomisation: per-environment base mass and centre of mass
    base = sim.base_body
    added = sim.batch.expanded("body_mass")[:, base] - sim.model.body_mass[base]
    assert np.all(np.abs(added) <= 5.0) and added.std() > 1.0
    com = sim.batch.expanded("body_ipos")[:, base] - sim.model.body_ipos[base]
    assert np.all(np.abs(com[:, :2]) <= 0.05 + 1e-12) and np.all(np.abs(com[:, 2]) <= 0.01 + 1e-12)


def test_friction_randomisation_writes_per_environment_values():
    cfg = MujocoSimCfg(num_threads=1, randomization=RandomizationCfg(friction=(0.4, 1.2)))
    sim = MujocoSimulator(cfg, 32, seed=0)
    friction = sim.batch.expanded("geom_friction")[:, sim.robot_geoms, 0]
    assert np.all((friction >= 0.4) & (friction <= 1.2)) and friction.std() > 0.1
    assert np.all(friction == friction[:, :1]), "all geoms of one robot share its friction"


def test_interval_pushes_change_base_velocity():
    cfg = MujocoSimCfg(num_threads=1, randomization=RandomizationCfg.none())
    cfg.randomization.push, cfg.randomization.push_interval_s = True, (0.02, 0.02)
    cfg.randomization.push_vel_xy = (0.5, 0.5)  # every step, +0.5 m/s to world vx, vy
    sim = MujocoSimulator(cfg, 4, seed=0)
    sim.step(torch.zeros(4, 12))
    world_vel = sim.qvel[:, :2]
    assert np.all(world_vel > 0.3), world_vel


def test_same_seed_gives_bit_identical_trajectories():
    def rollout(seed: int) -> torch.Tensor:
        sim = MujocoSimulator(MujocoSimCfg(num_threads=2), 16, seed=seed)
        from rwm.envs.locomotion_env import LocomotionEnv, LocomotionEnvCfg

        env = LocomotionEnv(LocomotionEnvCfg(), sim, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        frames = []
        for _ in range(60):
            obs, rewards, _, _ = env.step(torch.rand(16, 12, generator=generator) * 2 - 1)
            frames.append(torch.cat([obs["policy"], obs["system_state"], rewards[:, None]], dim=1))
        return torch.stack(frames)

    first, second, other = rollout(7), rollout(7), rollout(8)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_bad_simulator_config_values_raise_value_error():
    with pytest.raises(ValueError, match="decimation"):
        MujocoSimCfg(decimation=0)
    with pytest.raises(ConfigError, match="joint_pos_scale"):
        RandomizationCfg(joint_pos_scale=(1.5, 0.5))
    with pytest.raises(ValueError, match="num_envs"):
        MujocoSimulator(MujocoSimCfg(), 0)


def test_joint_order_is_the_policy_order():
    sim = MujocoSimulator(MujocoSimCfg(num_threads=1), 1)
    import mujoco

    names = tuple(mujoco.mj_id2name(sim.model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(12))
    assert names == JOINT_NAMES
    assert JOINT_NAMES[:4] == ("LF_HAA", "LH_HAA", "RF_HAA", "RH_HAA")
    assert math.isclose(sim.step_dt, 0.02)


def test_a_diverging_simulation_ends_its_episode_as_a_fall(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warning log into the working directory
    env = make_quiet_env(num_envs=3)
    env.sim.qvel[1, 6:] = 1e12  # an exploding joint velocity: MuJoCo resets that simulation
    _, _, dones, extras = env.step(torch.zeros(3, 12))
    assert dones.tolist() == [False, True, False]
    assert not extras["time_outs"][1]
    assert env.sim.num_failed_simulations == 1
    assert env.episode_length_buf[1] == 0
