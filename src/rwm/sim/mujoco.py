"""The real simulator: N ANYmal-D robots in MuJoCo, stepped together in C.

All environments live in one `mujoco.batch.Batch`: each control step is a single call that
runs `decimation` physics substeps for every environment on MuJoCo's thread pool with the GIL
released, and records the contact sensors after every substep (for the 3-sample contact
history, docs/architecture.md#observations). The actuators (PD + DC-motor torque-speed limit)
are MuJoCo `dcmotor` actuators, so no Python runs between substeps.

Randomisation follows docs/architecture.md#the-real-simulator: at start-up, per-environment
friction, added base mass and base centre-of-mass offset (through the batch's per-simulation
model fields); at reset, base pose and velocity and scaled default joint positions; every
10-15 s, a push.

`sim.robot_variant` and `sim.robot` change the robot itself (payload, motors, joints, gains,
latency, feet: rwm.sim.robot_variant); the randomisation acts on the changed robot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import mujoco
import numpy as np
import torch
from mujoco import batch as mj_batch

from rwm.config import check, check_interval
from rwm.sim.robot_variant import NOMINAL_FRICTION, RobotCfg, check_variant, compile_model, resolve
from rwm.sim.state import DEFAULT_JOINT_POS, JOINT_NAMES, LEGS, NUM_JOINTS, RobotState

MODEL_PATH = resources.files("rwm.robots") / "anymal_d" / "anymal_d.xml"


@dataclass
class SolverCfg:
    """MuJoCo solver settings; the defaults are the measured fast-and-stable choice (bench/solver_settings.py)."""

    integrator: Literal["implicitfast", "euler", "implicit", "rk4"] = "implicitfast"  # MuJoCo's integrator
    cone: Literal["pyramidal", "elliptic"] = "pyramidal"  # friction cone model
    iterations: int = 4  # constraint-solver iterations per physics step
    ls_iterations: int = 6  # line-search iterations per solver iteration

    def __post_init__(self) -> None:
        check(self.iterations >= 1, f"solver.iterations = {self.iterations}; expected >= 1.")
        check(self.ls_iterations >= 1, f"solver.ls_iterations = {self.ls_iterations}; expected >= 1.")


@dataclass
class RandomizationCfg:
    """Domain randomisation of the real simulator (docs/architecture.md#the-real-simulator, Isaac Lab
    defaults)."""

    # at reset
    base_pos_xy: tuple[float, float] = (-0.5, 0.5)  # m, added to x and y
    base_yaw: tuple[float, float] = (-3.14, 3.14)  # rad
    base_vel: tuple[float, float] = (-0.5, 0.5)  # m/s and rad/s, each of the 6 components
    joint_pos_scale: tuple[float, float] = (0.5, 1.5)  # multiplies the default joint positions
    # interval pushes
    push: bool = True  # push the robots at intervals
    push_interval_s: tuple[float, float] = (10.0, 15.0)  # s between pushes, drawn uniformly
    push_vel_xy: tuple[float, float] = (-0.5, 0.5)  # m/s added to world-frame vx, vy
    # at start-up, per environment
    # robot geoms (terrain friction 1.0, multiplied); a draw d scales a geom's own coefficient c (0.8 unless
    # sim.robot changes it) to c * d / 0.8
    friction: tuple[float, float] = (NOMINAL_FRICTION, NOMINAL_FRICTION)
    added_base_mass: tuple[float, float] = (-5.0, 5.0)  # kg
    base_com_offset_xy: tuple[float, float] = (-0.05, 0.05)  # m
    base_com_offset_z: tuple[float, float] = (-0.01, 0.01)  # m

    def __post_init__(self) -> None:
        for key in ("base_pos_xy", "base_yaw", "base_vel", "push_vel_xy", "added_base_mass",
                    "base_com_offset_xy", "base_com_offset_z"):
            check_interval(f"randomization.{key}", getattr(self, key))
        check_interval("randomization.joint_pos_scale", self.joint_pos_scale, low=0.0)
        check_interval("randomization.push_interval_s", self.push_interval_s, low=1e-3)
        check_interval("randomization.friction", self.friction, low=0.0)

    @classmethod
    def none(cls) -> "RandomizationCfg":
        """No randomisation at all: every reset is the default standing pose at rest."""
        zero = (0.0, 0.0)
        return cls(base_pos_xy=zero, base_yaw=zero, base_vel=zero, joint_pos_scale=(1.0, 1.0),
                   push=False, friction=(NOMINAL_FRICTION, NOMINAL_FRICTION), added_base_mass=zero,
                   base_com_offset_xy=zero, base_com_offset_z=zero)


@dataclass
class MujocoSimCfg:
    """The real simulator: timing, actuation and contact sensing (docs/architecture.md#conventions,
    docs/architecture.md#the-real-simulator)."""

    physics_dt: float = 0.005  # s, 200 Hz
    decimation: int = 4  # physics steps per control step (50 Hz)
    action_scale: float = 0.5  # joint target = default + action_scale * action
    spawn_height: float = 0.6  # m
    contact_threshold: float = 1.0  # N
    contact_history: int = 3  # physics steps over which the contact force maximum is taken
    num_threads: int = 0  # MuJoCo batch threads; 0 = all CPUs
    solver: SolverCfg = field(default_factory=SolverCfg)  # MuJoCo solver settings
    randomization: RandomizationCfg = field(default_factory=RandomizationCfg)  # domain randomisation
    robot_variant: str = "nominal"  # a named changed robot (rwm.sim.robot_variant.PRESETS); sim.robot fields set win
    robot: RobotCfg = field(default_factory=RobotCfg)  # physical changes of the robot; unset ones follow robot_variant

    def __post_init__(self) -> None:
        check(self.physics_dt > 0, f"sim.physics_dt = {self.physics_dt}; expected > 0.")
        check(self.decimation >= 1, f"sim.decimation = {self.decimation}; expected >= 1.")
        check(1 <= self.contact_history <= self.decimation,
              f"sim.contact_history = {self.contact_history}; expected 1..decimation ({self.decimation}).")
        check(self.contact_threshold >= 0, f"sim.contact_threshold = {self.contact_threshold}; expected >= 0.")
        check(self.num_threads >= 0, f"sim.num_threads = {self.num_threads}; expected >= 0.")
        check(self.spawn_height > 0, f"sim.spawn_height = {self.spawn_height}; expected > 0.")
        check_variant(self.robot_variant)

    @property
    def step_dt(self) -> float:
        return self.physics_dt * self.decimation

    @property
    def robot_params(self) -> RobotCfg:
        """The robot simulated: every `robot` field resolved against the preset `robot_variant`."""
        return resolve(self.robot_variant, self.robot)


def load_model(cfg: MujocoSimCfg) -> mujoco.MjModel:
    """The ANYmal-D MjModel with the configured robot changes, timing and solver."""
    model = compile_model(MODEL_PATH, cfg.robot_params)
    model.opt.timestep = cfg.physics_dt
    model.opt.integrator = getattr(mujoco.mjtIntegrator, f"mjINT_{cfg.solver.integrator.upper()}")
    model.opt.cone = getattr(mujoco.mjtCone, f"mjCONE_{cfg.solver.cone.upper()}")
    model.opt.iterations = cfg.solver.iterations
    model.opt.ls_iterations = cfg.solver.ls_iterations
    return model


def quat_to_rotmat(quat: np.ndarray) -> np.ndarray:
    """(N, 4) unit quaternions (w, x, y, z) -> (N, 3, 3) rotation matrices (body to world)."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    rot = np.empty((quat.shape[0], 3, 3))
    rot[:, 0, 0] = 1 - 2 * (y * y + z * z)
    rot[:, 0, 1] = 2 * (x * y - w * z)
    rot[:, 0, 2] = 2 * (x * z + w * y)
    rot[:, 1, 0] = 2 * (x * y + w * z)
    rot[:, 1, 1] = 1 - 2 * (x * x + z * z)
    rot[:, 1, 2] = 2 * (y * z - w * x)
    rot[:, 2, 0] = 2 * (x * z - w * y)
    rot[:, 2, 1] = 2 * (y * z + w * x)
    rot[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return rot


def yaw_to_quat(yaw: np.ndarray) -> np.ndarray:
    """(N,) yaw angles -> (N, 4) quaternions (w, x, y, z)."""
    return np.stack([np.cos(yaw / 2), np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2)], axis=-1)


def soft_joint_pos_limits(model: mujoco.MjModel | None = None, factor: float = 0.95) -> np.ndarray:
    """(2, 12) absolute (low, high) soft joint-position limits of the actuated joints, in actuator order.

    Isaac Lab's soft limits: ``factor`` of each joint's range around its middle; unlimited joints
    stay free (+-inf). A function of the robot model alone, so the real and the learned simulator
    hand the task the same limits. ``model`` defaults to the packaged ANYmal-D.
    """
    m = model if model is not None else mujoco.MjModel.from_xml_path(str(MODEL_PATH))
    actuated = m.actuator_trnid[:, 0]
    limited = m.jnt_limited[actuated].astype(bool)
    low, high = m.jnt_range[actuated].T
    mid, half = (low + high) / 2, (high - low) / 2
    return np.stack([np.where(limited, mid - factor * half, -np.inf),
                     np.where(limited, mid + factor * half, np.inf)])


# Column blocks of the packed float32 read-out, converted to torch in one transfer per step.
# "contact" follows the sensor order: base, thighs (LF, LH, RF, RH), feet (same order).
_READOUT_WIDTHS = {
    "base_lin_vel": 3, "base_ang_vel": 3, "projected_gravity": 3, "joint_pos": NUM_JOINTS,
    "joint_vel": NUM_JOINTS, "joint_torque": NUM_JOINTS, "contact": 9, "heading": 1,
}
_READOUT_SLICES = {}
_column = 0
for _name, _width in _READOUT_WIDTHS.items():
    _READOUT_SLICES[_name] = slice(_column, _column + _width)
    _column += _width
_READOUT_COLUMNS = _column


class MujocoSimulator:
    """N ANYmal-D environments in one MuJoCo batch; actions in, `RobotState` out.

    `step(actions)` takes raw policy actions (N, 12) in JOINT_NAMES order; the joint targets
    are default + action_scale * action, applied `sim.robot.latency_steps` control steps later
    (at once on the nominal robot). Environments are independent: `reset(ids)` re-draws only
    those. Same seed, same trajectories, bit for bit, at any thread count.
    """

    def __init__(self, cfg: MujocoSimCfg, num_envs: int, device: str | torch.device = "cpu", seed: int = 0):
        check(num_envs >= 1, f"num_envs = {num_envs}; expected >= 1.")
        self.cfg = cfg
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.step_dt = cfg.step_dt
        self.uncertainty: torch.Tensor | None = None  # the real simulator is certain; a learned one reports it here
        self.rng = np.random.default_rng(seed)
        self.model = load_model(cfg)
        self.batch = mj_batch.Batch(self.model, num_envs, nthread=cfg.num_threads)

        m = self.model
        actuated = m.actuator_trnid[:, 0]
        names = tuple(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) for j in actuated)
        if names != JOINT_NAMES:
            raise RuntimeError(f"actuator order {names} differs from the policy's joint order {JOINT_NAMES}.")
        self.joint_qpos_ids = m.jnt_qposadr[actuated]  # (12,) policy order -> qpos index
        self.joint_qvel_ids = m.jnt_dofadr[actuated]
        self.default_joint_pos = np.asarray(DEFAULT_JOINT_POS)
        self.soft_limits = soft_joint_pos_limits(m)  # (2, 12) absolute
        # the task sees joint positions relative to the default pose
        self.soft_joint_pos_limits = torch.as_tensor(self.soft_limits - self.default_joint_pos,
                                                     dtype=torch.float32, device=self.device)
        self.base_body = m.body("base").id
        self.robot_geoms = np.flatnonzero(m.geom_bodyid != 0)
        # sensordata: base, 4 thighs, 4 feet, each a 3-vector net force
        sensor_order = ["base_contact"] + [f"{leg}_THIGH_contact" for leg in LEGS] + [f"{leg}_FOOT_contact" for leg in LEGS]
        adr = [m.sensor(name).adr[0] for name in sensor_order]
        if adr != list(range(0, 27, 3)):
            raise RuntimeError(f"unexpected contact-sensor layout {adr} in {MODEL_PATH}.")

        self.qpos = self.batch.bind("qpos")  # (N, 19) live views of the state rows
        self.qvel = self.batch.bind("qvel")  # (N, 18)
        self.ctrl = self.batch.bind("ctrl")  # (N, 12)
        self.time = self.batch.bind("time")  # (N,) simulated seconds since the last reset
        self.actuator_force = self.batch.bind("actuator_force")  # (N, 12), read-only
        self._sensor_record = {"sensordata": np.zeros((num_envs, cfg.decimation, m.nsensordata))}
        self._readout = np.zeros((num_envs, _READOUT_COLUMNS), dtype=np.float32)
        self._torque_valid = np.zeros(num_envs, dtype=bool)  # torques are zero until the first step
        self._contact_force = np.zeros((num_envs, 9))  # max force over the contact history
        self._push_timer = np.zeros(num_envs)
        self.latency_steps = cfg.robot_params.latency_steps
        # (N, latency_steps, 12) joint targets sent but not yet applied: a ring whose oldest slot is _pending_head
        self._pending_targets = np.zeros((num_envs, self.latency_steps, NUM_JOINTS))
        self._pending_head = 0
        self.num_failed_simulations = 0  # diverged or rejected simulations, ended as falls
        self._randomize_startup()
        self.state = self.reset()

    # ----------------------------------------------------------------------------- set-up
    def _randomize_startup(self) -> None:
        r, n = self.cfg.randomization, self.num_envs
        if r.friction[0] != r.friction[1] or r.friction[0] != NOMINAL_FRICTION:
            friction = self.batch.expand("geom_friction")
            draw = self.rng.uniform(*r.friction, size=(n, 1))
            own = self.model.geom_friction[self.robot_geoms, 0] / NOMINAL_FRICTION  # 1 but where sim.robot changed it
            friction[:, self.robot_geoms, 0] = draw * own
        mass_changes = r.added_base_mass != (0.0, 0.0)
        com_changes = r.base_com_offset_xy != (0.0, 0.0) or r.base_com_offset_z != (0.0, 0.0)
        if mass_changes:
            mass = self.batch.expand("body_mass")
            mass[:, self.base_body] += self.rng.uniform(*r.added_base_mass, size=n)
        if com_changes:
            ipos = self.batch.expand("body_ipos")
            ipos[:, self.base_body, :2] += self.rng.uniform(*r.base_com_offset_xy, size=(n, 2))
            ipos[:, self.base_body, 2] += self.rng.uniform(*r.base_com_offset_z, size=n)
        if mass_changes or com_changes:
            self.batch.set_const()

    # ----------------------------------------------------------------------------- API
    def reset(self, ids: torch.Tensor | np.ndarray | None = None) -> RobotState:
        """Re-draw environments `ids` (all if None) from the reset distribution; returns the full state."""
        ids = np.arange(self.num_envs) if ids is None else np.asarray(torch.as_tensor(ids).cpu(), dtype=np.int64)
        if len(ids) == 0:
            return self.state
        r, n = self.cfg.randomization, len(ids)
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        qpos = np.zeros((n, self.model.nq))
        qpos[:, :2] = self.rng.uniform(*r.base_pos_xy, size=(n, 2))
        qpos[:, 2] = self.cfg.spawn_height
        qpos[:, 3:7] = yaw_to_quat(self.rng.uniform(*r.base_yaw, size=n))
        joint_pos = self.default_joint_pos * self.rng.uniform(*r.joint_pos_scale, size=(n, NUM_JOINTS))
        qpos[:, self.joint_qpos_ids] = np.clip(joint_pos, *self.soft_limits)
        qvel = np.zeros((n, self.model.nv))
        qvel[:, :6] = self.rng.uniform(*r.base_vel, size=(n, 6))
        self.write_state(ids, qpos, qvel)
        self._push_timer[ids] = self.rng.uniform(*r.push_interval_s, size=n)
        return self.state

    def write_state(self, ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> RobotState:
        """Place environments `ids` at full MuJoCo states (qpos (n, 19), qvel (n, 18)), at rest in force.

        Joint targets (and those still delayed by latency) are set to the default pose, torques
        and contact histories are cleared, as after an Isaac Lab reset.
        """
        ids = np.asarray(ids, dtype=np.int64)
        self.qpos[ids] = qpos
        self.qvel[ids] = qvel
        self.ctrl[ids] = self.default_joint_pos
        self._pending_targets[ids] = self.default_joint_pos
        self._torque_valid[ids] = False
        self._contact_force[ids] = 0.0
        self.state = self._read_state()
        return self.state

    def step(self, actions: torch.Tensor) -> RobotState:
        """Apply raw actions (N, 12) for one control step; returns the new state."""
        targets = self.default_joint_pos + self.cfg.action_scale * actions.detach().to("cpu", torch.float64).numpy()
        if self.latency_steps:  # apply the oldest pending targets, and queue the new ones in their slot
            head = self._pending_head
            self.ctrl[:] = self._pending_targets[:, head]
            self._pending_targets[:, head] = targets
            self._pending_head = (head + 1) % self.latency_steps
        else:
            self.ctrl[:] = targets
        if self.cfg.randomization.push:
            self._apply_pushes()
        expected_time = self.time + self.step_dt - 1e-9
        rejected = np.zeros(0, dtype=np.int64)
        try:
            self.batch.rollout(self.cfg.decimation, record=("sensordata",), out=self._sensor_record)
        except mj_batch.SimulationError as error:
            rejected = np.asarray(error.ids)  # MuJoCo refused to step these; their state is unchanged
        forces = self._sensor_record["sensordata"][:, -self.cfg.contact_history:].reshape(
            self.num_envs, self.cfg.contact_history, 9, 3)
        self._contact_force = np.linalg.norm(forces, axis=-1).max(axis=1)  # (N, 9)
        # A diverging simulation is silently reset by MuJoCo (its clock restarts): report it, and
        # any rejected one, as fallen (base contact) so the task ends and re-draws the episode.
        failed = np.union1d(np.flatnonzero(self.time < expected_time), rejected)
        if len(failed):
            self._contact_force[failed, 0] = np.inf
            self.num_failed_simulations += len(failed)
        self._torque_valid[:] = True
        self.state = self._read_state()
        return self.state

    @property
    def base_pos_w(self) -> np.ndarray:
        """(N, 3) world positions of the bases (for tests, cameras and plots)."""
        return self.qpos[:, :3].copy()

    # ----------------------------------------------------------------------------- internals
    def _apply_pushes(self) -> None:
        r = self.cfg.randomization
        self._push_timer -= self.step_dt
        due = np.flatnonzero(self._push_timer <= 0)
        if len(due):
            self.qvel[due, :2] += self.rng.uniform(*r.push_vel_xy, size=(len(due), 2))
            self._push_timer[due] = self.rng.uniform(*r.push_interval_s, size=len(due))

    def _read_state(self) -> RobotState:
        rot = quat_to_rotmat(self.qpos[:, 3:7])  # (N, 3, 3) body -> world
        out, cols = self._readout, _READOUT_SLICES
        out[:, cols["base_lin_vel"]] = np.einsum("nji,nj->ni", rot, self.qvel[:, :3])  # world -> base frame
        out[:, cols["base_ang_vel"]] = self.qvel[:, 3:6]  # a free joint's angular velocity is in the body frame
        out[:, cols["projected_gravity"]] = -rot[:, 2, :]  # world (0, 0, -1) in the base frame
        out[:, cols["joint_pos"]] = self.qpos[:, self.joint_qpos_ids] - self.default_joint_pos
        out[:, cols["joint_vel"]] = self.qvel[:, self.joint_qvel_ids]
        out[:, cols["joint_torque"]] = np.where(self._torque_valid[:, None], self.actuator_force, 0.0)
        out[:, cols["contact"]] = self._contact_force > self.cfg.contact_threshold
        out[:, cols["heading"]] = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])[:, None]
        tensor = torch.from_numpy(out).to(self.device, copy=True)
        contact = tensor[:, cols["contact"]] > 0.5
        return RobotState(
            **{name: tensor[:, cols[name]] for name in
               ("base_lin_vel", "base_ang_vel", "projected_gravity", "joint_pos", "joint_vel", "joint_torque")},
            base_contact=contact[:, 0],
            thigh_contact=contact[:, 1:5],
            foot_contact=contact[:, 5:9],
            heading=tensor[:, cols["heading"].start],
        )
