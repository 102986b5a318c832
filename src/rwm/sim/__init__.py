"""Simulators that produce `RobotState`: MuJoCo (real) and the learned world model (imagination)."""

from rwm.sim.imagination import ImaginationCfg, ImaginationSimulator
from rwm.sim.simulator import Simulator
from rwm.sim.state import RobotState

__all__ = ["ImaginationCfg", "ImaginationSimulator", "RobotState", "Simulator"]
