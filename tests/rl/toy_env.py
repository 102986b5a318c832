"""A tiny batched point-mass env with the rsl_rl VecEnv API, for testing that PPO learns.

Each of ``num_envs`` point masses in the plane must track a random target velocity
``command`` that it sees in its observation. The action is an acceleration:

    vel <- damping * vel + gain * clip(action, -1, 1)

The reward is ``exp(-|vel - command|^2)``. The tracking error is also integrated into a
position drift ``drift <- drift + dt * (vel - command)``; an episode *terminates* when the
drift leaves a disc of radius ``max_drift`` (the mass strayed too far from where the
command would have taken it) and *times out* after ``max_episode_length`` steps. Finished
envs are reset inside :meth:`step`, as in Isaac Lab.

Observation (6): ``[vel (2), command (2), drift (2)]``.
"""

from __future__ import annotations

import torch


class PointMassVelocityEnv:
    num_obs = 6
    num_actions = 2

    def __init__(
        self,
        num_envs: int = 64,
        max_episode_length: int = 50,
        seed: int = 0,
        device: str | torch.device = "cpu",
        damping: float = 0.9,
        gain: float = 0.5,
        dt: float = 0.1,
        max_drift: float = 1.0,
    ):
        self.num_envs = num_envs
        self.max_episode_length = max_episode_length
        self.device = torch.device(device)
        self.damping = damping
        self.gain = gain
        self.dt = dt
        self.max_drift = max_drift
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

        N = num_envs
        self.vel = torch.zeros(N, 2, device=self.device)
        self.command = torch.zeros(N, 2, device=self.device)
        self.drift = torch.zeros(N, 2, device=self.device)
        self.episode_length_buf = torch.zeros(N, dtype=torch.long, device=self.device)
        self._reset_idx(torch.arange(N, device=self.device))
        # Spread the first time-outs over an episode, as Isaac Lab's init_at_random_ep_len.
        self.episode_length_buf = torch.randint(
            0, max_episode_length, (N,), generator=self.generator, device=self.device
        )

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, 2, generator=self.generator, device=self.device)

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        n = env_ids.numel()
        if n == 0:
            return
        self.vel[env_ids] = self._uniform(n, -0.5, 0.5)
        self.command[env_ids] = self._uniform(n, -1.0, 1.0)
        self.drift[env_ids] = 0.0
        self.episode_length_buf[env_ids] = 0

    def get_observations(self) -> dict[str, torch.Tensor]:
        return {"policy": torch.cat([self.vel, self.command, self.drift], dim=-1)}

    def step(self, actions: torch.Tensor):
        actions = actions.to(self.device).clamp(-1.0, 1.0)
        self.vel = self.damping * self.vel + self.gain * actions
        error = self.vel - self.command
        self.drift = self.drift + self.dt * error
        self.episode_length_buf += 1

        rewards = torch.exp(-error.square().sum(dim=-1))  # (N,)
        terminated = self.drift.norm(dim=-1) > self.max_drift
        # A fall on the last step is a fall: only surviving envs are bootstrapped.
        time_outs = (self.episode_length_buf >= self.max_episode_length) & ~terminated
        dones = terminated | time_outs

        log = {"tracking_error": error.norm(dim=-1).mean().item(), "terminations": terminated.float().mean().item()}
        self._reset_idx(dones.nonzero(as_tuple=False).flatten())
        return self.get_observations(), rewards, dones, {"time_outs": time_outs, "log": log}
