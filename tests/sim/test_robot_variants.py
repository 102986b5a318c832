"""Changed robots (sim.robot_variant, sim.robot): each change alters the simulated robot as stated."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from rwm.config import ConfigError, apply_overrides, to_dict
from rwm.sim.mujoco import MODEL_PATH, MujocoSimCfg, MujocoSimulator, RandomizationCfg, load_model
from rwm.sim.robot_variant import FOOT_GEOMS, NOMINAL, PRESETS, RobotCfg, resolve
from rwm.sim.state import DEFAULT_JOINT_POS
from rwm.tasks.anymal_d_flat import TaskCfg, stored_task_cfg


def changed(variant: str = "nominal", randomization: RandomizationCfg | None = None, **robot) -> MujocoSimCfg:
    return MujocoSimCfg(robot_variant=variant, robot=RobotCfg(**robot), num_threads=1,
                        randomization=randomization or RandomizationCfg.none())


def actuator_force(model: mujoco.MjModel, target_error: float, joint_vel: float) -> np.ndarray:
    """(12,) torques of the actuators in the default pose, every joint at `joint_vel` and its target `target_error` ahead."""
    data = mujoco.MjData(model)
    data.qpos[:] = model.key("default").qpos
    actuated = model.actuator_trnid[:, 0]
    data.qvel[model.jnt_dofadr[actuated]] = joint_vel
    data.ctrl[:] = data.qpos[model.jnt_qposadr[actuated]] + target_error
    mujoco.mj_forward(model, data)
    return data.actuator_force.copy()


def test_defaults_leave_the_model_unchanged():
    nominal = mujoco.MjModel.from_xml_path(str(MODEL_PATH))
    model = load_model(MujocoSimCfg())
    nominal.opt.timestep = model.opt.timestep  # the simulator's timing and solver are its own settings
    differing = [name for name in dir(model) if not name.startswith("_")
                 and isinstance(getattr(model, name, None), np.ndarray)
                 and not np.array_equal(getattr(model, name), getattr(nominal, name))]
    assert differing == []
    assert resolve("nominal", RobotCfg()) == NOMINAL
    assert MujocoSimulator(MujocoSimCfg(num_threads=1), 2).latency_steps == 0


def test_payload_raises_the_mass_and_shifts_the_centre_of_mass():
    nominal, model = load_model(MujocoSimCfg()), load_model(changed(payload_mass=20.0, payload_offset=(0.15, 0.0, 0.2)))
    base = model.body("base").id
    assert model.body_subtreemass[base] == pytest.approx(nominal.body_subtreemass[base] + 20.0)
    assert model.body_mass.sum() == pytest.approx(nominal.body_mass.sum() + 20.0)

    def centre_of_mass(m: mujoco.MjModel) -> np.ndarray:
        data = mujoco.MjData(m)
        data.qpos[:] = m.key("default").qpos
        data.qpos[:3] = 0.0  # base at the origin, unrotated: world = base frame
        mujoco.mj_forward(m, data)
        return data.subtree_com[base].copy()

    mass = nominal.body_subtreemass[base]
    expected = (mass * centre_of_mass(nominal) + 20.0 * np.array([0.15, 0.0, 0.2])) / (mass + 20.0)
    np.testing.assert_allclose(centre_of_mass(model), expected, atol=1e-12)


def test_payload_and_mass_randomisation_both_act():
    cfg = changed("payload", randomization=RandomizationCfg(added_base_mass=(-5.0, 5.0)))
    sim = MujocoSimulator(cfg, 16, seed=0)
    base, payload = sim.base_body, sim.model.body("payload").id
    masses = sim.batch.expanded("body_mass")
    assert np.all(masses[:, payload] == PRESETS["payload"]["payload_mass"])
    added = masses[:, base] - sim.model.body_mass[base]
    assert np.all(np.abs(added) <= 5.0) and added.std() > 1.0


def test_motor_strength_scales_the_torque_saturation():
    nominal, weak = load_model(MujocoSimCfg()), load_model(changed(motor_strength=0.5))
    # far from its target at rest: the effort limit (80 N m) bounds the torque
    assert actuator_force(nominal, 3.0, 0.0) == pytest.approx(np.full(12, 80.0))
    assert actuator_force(weak, 3.0, 0.0) == pytest.approx(np.full(12, 40.0))
    # at 5 rad/s the torque-speed line 120 (1 - 5 / 7.5) = 40 N m bounds it
    assert actuator_force(nominal, 3.0, 5.0) == pytest.approx(np.full(12, 40.0))
    assert actuator_force(weak, 3.0, 5.0) == pytest.approx(np.full(12, 20.0))
    # below the limits the PD law is untouched
    assert actuator_force(weak, 0.1, 0.0) == pytest.approx(actuator_force(nominal, 0.1, 0.0))


def test_pd_gain_scale_scales_the_torque_for_the_same_target_error():
    nominal, soft = load_model(MujocoSimCfg()), load_model(changed(pd_gain_scale=0.5))
    assert actuator_force(nominal, 0.1, 0.0) == pytest.approx(np.full(12, 4.0))  # 40 N m/rad x 0.1 rad
    assert actuator_force(soft, 0.1, 0.0) == pytest.approx(np.full(12, 2.0))
    assert actuator_force(soft, 0.0, 1.0) == pytest.approx(np.full(12, -2.5))  # damping 5 x 0.5 against 1 rad/s


def test_joint_damping_and_friction_enter_the_leg_joints():
    model = load_model(changed(joint_damping=1.5, joint_friction=2.0))
    legs = model.jnt_dofadr[model.actuator_trnid[:, 0]]
    assert np.all(model.dof_damping[legs] == 1.5) and np.all(model.dof_frictionloss[legs] == 2.0)
    assert np.all(model.dof_damping[:6] == 0) and np.all(model.dof_frictionloss[:6] == 0), "the free base joint"


def test_foot_friction_sets_the_feet_and_friction_randomisation_scales_it():
    model = load_model(changed("slippery"))
    feet = [model.geom(name).id for name in FOOT_GEOMS]
    assert np.all(model.geom_friction[feet, 0] == 0.3)
    others = np.setdiff1d(np.flatnonzero(model.geom_bodyid != 0), feet)
    assert np.all(model.geom_friction[others, 0] == 0.8)

    sim = MujocoSimulator(changed("slippery", randomization=RandomizationCfg(friction=(0.4, 1.2))), 16, seed=0)
    friction = sim.batch.expanded("geom_friction")[:, :, 0]
    draw = friction[:, others[0]]
    assert draw.std() > 0.1 and np.all(friction[:, others] == draw[:, None])
    np.testing.assert_allclose(friction[:, feet], np.broadcast_to(draw[:, None] * 0.3 / 0.8, (16, 4)))


@pytest.mark.parametrize("latency", [1, 3])
def test_latency_delays_the_applied_targets_by_its_control_steps(latency):
    delayed = MujocoSimulator(changed(latency_steps=latency), 2, seed=0)
    held = MujocoSimulator(changed(), 2, seed=0)  # the nominal robot, never sent the step
    default = np.broadcast_to(np.asarray(DEFAULT_JOINT_POS), (2, 12))
    switch = 3  # the policy's targets jump by 0.5 rad at this step
    for step in range(switch + latency + 2):
        actions = torch.full((2, 12), float(step >= switch))
        state = delayed.step(actions)
        reference = held.step(torch.zeros(2, 12))
        responded = step >= switch + latency
        np.testing.assert_array_equal(delayed.ctrl, default + 0.5 * responded)
        torques_equal = torch.equal(state.joint_torque, reference.joint_torque)
        assert torques_equal != responded, f"step {step}: the torque responded {'late' if responded else 'early'}"

    # a reset forgets targets still in flight: the reset robot holds the default pose for `latency` steps
    delayed.reset(np.array([0]))
    for _ in range(latency):
        delayed.step(torch.full((2, 12), -1.0))
        np.testing.assert_array_equal(delayed.ctrl[0], default[0])
        np.testing.assert_array_equal(delayed.ctrl[1], default[1] + 0.5)
    delayed.step(torch.full((2, 12), -1.0))
    np.testing.assert_array_equal(delayed.ctrl, default - 0.5)


def test_explicit_fields_win_over_the_preset_in_any_order():
    for overrides in (["sim.robot_variant=payload", "sim.robot.payload_mass=5"],
                      ["sim.robot.payload_mass=5", "sim.robot_variant=payload"]):
        robot = apply_overrides(TaskCfg(), overrides).sim.robot_params
        assert robot.payload_mass == 5.0
        assert robot.payload_offset == PRESETS["payload"]["payload_offset"]  # the preset's, not set explicitly
        assert robot.motor_strength == 1.0  # neither sets it: nominal
    # an explicit nominal value undoes a preset's change
    assert apply_overrides(TaskCfg(), ["sim.robot_variant=worn", "sim.robot.latency_steps=0"]).sim.robot_params \
        .latency_steps == 0


def test_every_preset_changes_the_robot_and_is_valid():
    for name, changes in PRESETS.items():
        robot = resolve(name, RobotCfg())
        assert {key for key, value in to_dict(robot).items() if value != to_dict(NOMINAL)[key]} == set(changes), name
        RobotCfg(**to_dict(robot))  # within the checked ranges


def test_an_unknown_preset_fails_with_one_sentence_naming_the_known_ones():
    with pytest.raises(ConfigError) as error:
        apply_overrides(TaskCfg(), ["sim.robot_variant=heavy"])
    message = str(error.value)
    assert "'heavy'" in message and all(name in message for name in PRESETS)
    assert message.count(". ") == 0 and "\n" not in message
    with pytest.raises(ConfigError, match="sim.robot.motor_strength"):
        apply_overrides(TaskCfg(), ["sim.robot.motor_strength=0"])
    with pytest.raises(ConfigError, match="sim.robot.latency_steps"):
        RobotCfg(latency_steps=-1)


def test_the_variant_is_stored_with_the_config_and_old_configs_load_nominal():
    cfg = apply_overrides(TaskCfg(), ["sim.robot_variant=worn", "sim.robot.foot_friction=0.5"])
    stored = to_dict(cfg)
    assert stored["sim"]["robot_variant"] == "worn" and stored["sim"]["robot"]["foot_friction"] == 0.5
    reloaded = stored_task_cfg(stored, "config.yaml")
    assert reloaded == cfg and reloaded.sim.robot_params == cfg.sim.robot_params

    old = to_dict(TaskCfg())
    del old["sim"]["robot_variant"], old["sim"]["robot"]  # written before robot variants existed
    assert stored_task_cfg(old, "model_600.pt").sim.robot_params == NOMINAL
