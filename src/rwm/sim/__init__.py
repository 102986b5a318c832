"""Simulators that produce `RobotState`: MuJoCo (real) and, later, the learned world model."""

from rwm.sim.state import RobotState

__all__ = ["RobotState"]
