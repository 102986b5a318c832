"""Hand-written policies for demos, tests and benchmarks: they act on the policy observation."""

from __future__ import annotations

import torch

from rwm.envs.mdp.observations import POLICY_SLICES


class StandingPolicy:
    """Holds the default pose with PI feedback on the observed joint positions.

    The actuators' stiffness (40 N m/rad) alone lets a 51.5 kg robot sag ~0.6 rad at the knees
    under zero actions (a trained policy learns to push its targets); the integral term removes
    that steady-state error. Gains are in action units (target = default + 0.5 * action).
    """

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", kp: float = 2.0, ki: float = 10.0,
                 dt: float = 0.02):
        self.kp, self.ki, self.dt = kp, ki, dt
        self.integral = torch.zeros(num_envs, 12, device=device)

    def reset(self, ids: torch.Tensor) -> None:
        self.integral[ids] = 0.0

    def __call__(self, policy_obs: torch.Tensor) -> torch.Tensor:
        error = -policy_obs[:, POLICY_SLICES["joint_pos"]]  # observed joint pos is relative to default
        self.integral += self.ki * error * self.dt
        return 2.0 * (self.kp * error + self.integral)


class RandomPolicy:
    """Uniform random actions in [-scale, scale]."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", scale: float = 1.0, seed: int = 0):
        self.num_envs, self.scale = num_envs, scale
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.device = device

    def __call__(self, policy_obs: torch.Tensor) -> torch.Tensor:
        return (torch.rand(self.num_envs, 12, generator=self.generator, device=self.device) * 2 - 1) * self.scale
