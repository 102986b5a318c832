"""Two environments of one task stepped as one batch, so that PPO learns from both rollouts at once.

Finetune with `finetune.real_in_policy_batch` puts its few real robots beside the imagined ones:
the policy's update then also sees what really happens (a real fall and its penalty), where
otherwise the real robots only feed the world model (MBPO's mix of real and model data).

Environments 0 .. first.num_envs - 1 are the first's, the rest the second's. The episode
statistics (`extras["log"]`), the finished episodes' terminal states (`extras["terminal"]`,
whose ids then index the batch as they index the first) and the `sim` and `generator` that
training reads or checkpoints are the first environment's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rwm.envs.locomotion_env import LocomotionEnv

# called after every step of the second environment: (its actions (M, 12), its observations, its extras)
SecondStepHook = Callable[[torch.Tensor, dict[str, torch.Tensor], dict], None]


class ConcatEnv:
    """`first` and `second` as one environment of first.num_envs + second.num_envs (rsl_rl's VecEnv API)."""

    def __init__(self, first: LocomotionEnv, second: LocomotionEnv, on_second_step: SecondStepHook | None = None):
        if first.num_actions != second.num_actions:
            raise ValueError(f"environments with {first.num_actions} and {second.num_actions} actions cannot be "
                             "stepped as one batch.")
        first_obs, second_obs = first.get_observations(), second.get_observations()
        shapes = {key: tuple(value.shape[1:]) for key, value in first_obs.items()}
        other = {key: tuple(value.shape[1:]) for key, value in second_obs.items()}
        if shapes != other:
            raise ValueError(f"environments with observations {shapes} and {other} cannot be stepped as one batch.")
        self.first, self.second = first, second
        self.on_second_step = on_second_step
        self.num_envs = first.num_envs + second.num_envs
        self.num_actions = first.num_actions
        self.device = first.device
        self.step_dt = first.step_dt
        self.sim = first.sim
        self.generator = first.generator

    def get_observations(self) -> dict[str, torch.Tensor]:
        return self._concat(self.first.get_observations(), self.second.get_observations())

    def randomize_episode_lengths(self) -> None:
        # the first's only: the second's episodes (real robots already under way) run their whole length
        self.first.randomize_episode_lengths()

    def step(self, actions: torch.Tensor):
        n = self.first.num_envs
        obs, rewards, dones, extras = self.first.step(actions[:n])
        second_actions = actions[n:].to(self.second.device)
        second_obs, second_rewards, second_dones, second_extras = self.second.step(second_actions)
        if self.on_second_step is not None:
            self.on_second_step(second_actions, second_obs, second_extras)
        joined = {**extras,
                  "time_outs": torch.cat([extras["time_outs"], second_extras["time_outs"].to(self.device)]),
                  "actions": torch.cat([extras["actions"], second_extras["actions"].to(self.device)])}
        return (self._concat(obs, second_obs), torch.cat([rewards, second_rewards.to(self.device)]),
                torch.cat([dones, second_dones.to(self.device)]), joined)

    def _concat(self, first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: torch.cat([value, second[key].to(self.device)]) for key, value in first.items()}
