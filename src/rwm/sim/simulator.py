"""The simulator interface: what the task needs of a simulator, met by MuJoCo (real) and the world model.

`LocomotionEnv` computes commands, observations, rewards, terminations and episodes from the
states any :class:`Simulator` returns, so the task is written once for real and imagined robots
(upstream wrote it a second time for imagination, and the two drifted apart).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from rwm.sim.state import RobotState

__all__ = ["Simulator"]


@runtime_checkable
class Simulator(Protocol):
    """N robots stepped together: raw policy actions (N, 12) in, a `RobotState` of all of them out.

    Satisfied by :class:`rwm.sim.mujoco.MujocoSimulator` and
    :class:`rwm.sim.imagination.ImaginationSimulator` (checked by tests/sim/test_simulator.py).
    """

    num_envs: int  # N, the number of robots
    device: torch.device  # where the state's tensors live
    step_dt: float  # seconds of one control step
    state: RobotState  # the latest state of every robot
    soft_joint_pos_limits: torch.Tensor  # (2, 12) rad, lower and upper joint limits relative to the default pose
    uncertainty: torch.Tensor | None  # (N,) epistemic uncertainty of the last step; None: always certain (real)

    def reset(self, ids: torch.Tensor | None = None) -> RobotState:
        """Start robots `ids` (all if None) afresh; returns the state of every robot."""
        ...

    def step(self, actions: torch.Tensor) -> RobotState:
        """Advance every robot one control step under raw actions (N, 12); returns the new state."""
        ...
