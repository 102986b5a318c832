"""Changed robots: physical changes of the simulated ANYmal D, as configuration.

Where a learned simulator earns its keep is a robot that differs from the one simulated: a
payload, worn motors, actuator latency, another floor. `RobotCfg` (``sim.robot``) names each
change; ``sim.robot_variant`` picks a named bundle of them from `PRESETS`. A field of
``sim.robot`` left unset (None) takes the preset's value, and the nominal robot's where the
preset does not set it; a field set explicitly always wins over the preset, whatever the order
of the overrides. The defaults are the nominal robot, unchanged.

All changes but latency are edits of the MuJoCo model (`compile_model`); latency is a queue
of joint targets in the simulator. The per-environment domain randomisation composes with
them: its mass and centre-of-mass draws act on the base, the payload is its own body, and its
friction draw scales each robot geom's own coefficient.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import mujoco

from rwm.config import check
from rwm.sim.state import LEGS

NOMINAL_FRICTION = 0.8  # sliding friction of every robot geom in anymal_d.xml (its "anymal" default class)
FOOT_GEOMS = tuple(f"{leg}_foot" for leg in LEGS)  # the foot spheres that touch the ground


@dataclass
class RobotCfg:
    """Physical changes of the simulated robot; None takes the value of the preset `sim.robot_variant`."""

    payload_mass: float | None = None  # kg of point mass rigidly fixed to the base (nominal 0)
    payload_offset: tuple[float, float, float] | None = None  # m, its position in the base frame (nominal 0 0 0)
    motor_strength: float | None = None  # multiplies the motors' effort limit (80 N m) and torque-speed line (120 N m)
    joint_damping: float | None = None  # N m s/rad of viscous damping added to every leg joint (nominal 0)
    joint_friction: float | None = None  # N m of dry friction (frictionloss) added to every leg joint (nominal 0)
    pd_gain_scale: float | None = None  # multiplies the actuators' PD stiffness (40) and damping (5) (nominal 1)
    latency_steps: int | None = None  # control steps the applied joint targets lag behind the policy's (nominal 0)
    foot_friction: float | None = None  # sliding friction coefficient of the four feet (nominal 0.8)

    def __post_init__(self) -> None:
        def given(name: str) -> bool:
            return getattr(self, name) is not None

        for name in ("payload_mass", "joint_damping", "joint_friction", "foot_friction"):
            value = getattr(self, name)
            check(not given(name) or (math.isfinite(value) and value >= 0),
                  f"sim.robot.{name} = {value}; expected a finite number >= 0.")
        for name in ("motor_strength", "pd_gain_scale"):
            value = getattr(self, name)
            check(not given(name) or (math.isfinite(value) and value > 0),
                  f"sim.robot.{name} = {value}; expected a finite number > 0.")
        check(not given("payload_offset") or all(math.isfinite(x) for x in self.payload_offset),
              f"sim.robot.payload_offset = {self.payload_offset}; expected three finite numbers (m).")
        check(not given("latency_steps") or self.latency_steps >= 0,
              f"sim.robot.latency_steps = {self.latency_steps}; expected >= 0 control steps.")


NOMINAL = RobotCfg(payload_mass=0.0, payload_offset=(0.0, 0.0, 0.0), motor_strength=1.0, joint_damping=0.0,
                   joint_friction=0.0, pd_gain_scale=1.0, latency_steps=0, foot_friction=NOMINAL_FRICTION)

# Named changed robots; the fields a preset leaves out stay nominal.
PRESETS: dict[str, dict[str, object]] = {
    "nominal": {},
    # 20 kg (39 % of the robot's 51.5 kg) on top of the base, 15 cm ahead of its origin
    "payload": {"payload_mass": 20.0, "payload_offset": (0.15, 0.0, 0.2)},
    "weak_motors": {"motor_strength": 0.5},
    "latency": {"latency_steps": 2},  # 40 ms at 50 Hz
    "slippery": {"foot_friction": 0.3},
    # an aged robot: weaker motors, stiff and sticky joints, a slower bus
    "worn": {"motor_strength": 0.7, "joint_damping": 1.0, "joint_friction": 1.0, "latency_steps": 1},
}


def check_variant(name: str) -> None:
    """Raise ConfigError unless `name` is a preset."""
    check(name in PRESETS,
          f"sim.robot_variant = '{name}' is not a known robot variant; expected one of {', '.join(PRESETS)}.")


def resolve(variant: str, robot: RobotCfg) -> RobotCfg:
    """Every field set: the nominal robot, then preset `variant`'s changes, then the fields `robot` sets."""
    check_variant(variant)
    explicit = {f.name: getattr(robot, f.name) for f in dataclasses.fields(robot) if getattr(robot, f.name) is not None}
    return dataclasses.replace(NOMINAL, **{**PRESETS[variant], **explicit})


def compile_model(path: str | os.PathLike, robot: RobotCfg) -> mujoco.MjModel:
    """The MJCF at `path` compiled with the changes of the resolved `robot` (latency aside, see the simulator)."""
    spec = mujoco.MjSpec.from_file(str(path))
    if robot.payload_mass > 0:
        # its own welded body, so that the randomisation's base mass and centre of mass draws still act on the base
        # (ipos given: MjSpec would otherwise place the mass at twice the offset)
        spec.body("base").add_body(name="payload", pos=list(robot.payload_offset), ipos=[0.0, 0.0, 0.0],
                                   mass=robot.payload_mass, inertia=[0.0, 0.0, 0.0], explicitinertial=True)
    model = spec.compile()
    actuated_dofs = model.jnt_dofadr[model.actuator_trnid[:, 0]]
    model.dof_damping[actuated_dofs] += robot.joint_damping
    model.dof_frictionloss[actuated_dofs] += robot.joint_friction
    # dcmotor gainprm: (R, K, _, _, kp, ki, kd, Vmax, ...). The torque-speed line is (K / R)(Vmax - K w), so
    # dividing R by the strength scales it at the same no-load speed; the controller still delivers its
    # commanded torque below the limits (it drives v = (R / K) tau + K w).
    model.actuator_gainprm[:, 0] /= robot.motor_strength
    model.actuator_forcerange *= robot.motor_strength
    model.actuator_gainprm[:, [4, 6]] *= robot.pd_gain_scale
    for name in FOOT_GEOMS:
        model.geom(name).friction[0] = robot.foot_friction
    return model
