"""Fixed-size on-policy rollout buffer with GAE, as used by PPO.

All tensors are preallocated with shape (num_steps, num_envs, ...) on one device, filled one
step at a time by :meth:`RolloutStorage.add_transition`, turned into returns and advantages
by :meth:`RolloutStorage.compute_returns`, then consumed by
:meth:`RolloutStorage.mini_batch_generator` and cleared.

Time limits: following rsl_rl, an episode cut by a time limit is *not* a failure. PPO adds
``gamma * V(s_t)`` to the reward of such a step before storing it (see
``PPO.process_env_step``), and the ``done`` flag of the step still cuts the GAE recursion,
because the next stored step belongs to a new episode. ``dones`` therefore means
"terminated OR timed out" here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch


class MiniBatch(NamedTuple):
    """One flattened, shuffled mini-batch; B rows. ``values``/``actions_log_prob``/``mu``/``sigma``
    are those recorded during the rollout (the "old" policy)."""

    observations: torch.Tensor  # (B, *actor_obs_shape)
    critic_observations: torch.Tensor  # (B, *critic_obs_shape)
    actions: torch.Tensor  # (B, *action_shape)
    values: torch.Tensor  # (B, 1)
    advantages: torch.Tensor  # (B, 1)
    returns: torch.Tensor  # (B, 1)
    actions_log_prob: torch.Tensor  # (B, 1)
    mu: torch.Tensor  # (B, *action_shape)
    sigma: torch.Tensor  # (B, *action_shape)


def _shape(name: str, shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence) or len(shape) == 0 or any(
        isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in shape
    ):
        raise ValueError(f"RolloutStorage got {name}={shape!r}, expected a positive integer or a non-empty sequence of them.")
    return tuple(shape)


class RolloutStorage:
    """Preallocated (num_steps, num_envs, ...) buffers for one PPO rollout."""

    def __init__(
        self,
        num_envs: int,
        num_steps: int,
        actor_obs_shape: int | Sequence[int],
        critic_obs_shape: int | Sequence[int],
        action_shape: int | Sequence[int],
        device: str | torch.device = "cpu",
    ):
        for name, value in (("num_envs", num_envs), ("num_steps", num_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"RolloutStorage got {name}={value!r}, expected a positive integer.")
        self.num_envs = num_envs
        self.num_steps = num_steps
        self.actor_obs_shape = _shape("actor_obs_shape", actor_obs_shape)
        self.critic_obs_shape = _shape("critic_obs_shape", critic_obs_shape)
        self.action_shape = _shape("action_shape", action_shape)
        self.device = torch.device(device)

        T, N = num_steps, num_envs

        def zeros(*trailing: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(T, N, *trailing, dtype=dtype, device=self.device)

        self.observations = zeros(*self.actor_obs_shape)
        self.critic_observations = zeros(*self.critic_obs_shape)
        self.actions = zeros(*self.action_shape)
        self.rewards = zeros(1)  # already including the time-out bootstrap
        self.dones = zeros(1, dtype=torch.bool)  # terminated OR timed out
        self.values = zeros(1)
        self.actions_log_prob = zeros(1)
        self.mu = zeros(*self.action_shape)
        self.sigma = zeros(*self.action_shape)
        self.returns = zeros(1)
        self.advantages = zeros(1)

        self.step = 0

    @property
    def batch_size(self) -> int:
        return self.num_steps * self.num_envs

    def clear(self) -> None:
        """Start a new rollout (old data is overwritten, not zeroed)."""
        self.step = 0

    def add_transition(
        self,
        observations: torch.Tensor,
        critic_observations: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
        values: torch.Tensor,
        actions_log_prob: torch.Tensor,
        mu: torch.Tensor,
        sigma: torch.Tensor,
    ) -> None:
        """Store one environment step for all envs.

        Shapes: observations (N, *actor_obs_shape), critic_observations (N, *critic_obs_shape),
        actions/mu/sigma (N, *action_shape), rewards/dones/values/actions_log_prob (N,) or (N, 1).
        """
        if self.step >= self.num_steps:
            raise OverflowError(
                f"RolloutStorage is full after {self.num_steps} steps; call clear() before adding more transitions."
            )
        t = self.step
        N = self.num_envs
        self.observations[t].copy_(observations)
        self.critic_observations[t].copy_(critic_observations)
        self.actions[t].copy_(actions)
        self.rewards[t].copy_(rewards.reshape(N, 1))
        self.dones[t].copy_(dones.reshape(N, 1))
        self.values[t].copy_(values.reshape(N, 1))
        self.actions_log_prob[t].copy_(actions_log_prob.reshape(N, 1))
        self.mu[t].copy_(mu)
        self.sigma[t].copy_(sigma)
        self.step += 1

    def compute_returns(
        self, last_values: torch.Tensor, gamma: float, lam: float, normalize_advantage: bool = True
    ) -> None:
        """Generalised advantage estimation over the stored rollout.

        delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}
        R_t     = A_t + V_t                          (the critic's regression target)

        ``V_{T}`` is ``last_values``, the critic's estimate of the observation after the last
        stored step. A done at step t cuts both the bootstrap and the recursion, since step
        t+1 is the first step of a new episode; time-outs were already credited through the
        reward (see module docstring).

        Args:
            last_values: (N, 1) or (N,) values of the observations after the last step.
            gamma: Discount factor.
            lam: GAE lambda.
            normalize_advantage: Normalise advantages to zero mean, unit std over the whole
                rollout (set False when PPO normalises per mini-batch instead).
        """
        if self.step != self.num_steps:
            raise RuntimeError(
                f"RolloutStorage.compute_returns called after {self.step} of {self.num_steps} steps; fill the buffer first."
            )
        last_values = last_values.reshape(self.num_envs, 1).to(self.values.dtype)
        advantage = torch.zeros_like(last_values)  # (N, 1)
        for t in reversed(range(self.num_steps)):
            next_values = last_values if t == self.num_steps - 1 else self.values[t + 1]
            not_done = 1.0 - self.dones[t].to(self.values.dtype)
            delta = self.rewards[t] + not_done * gamma * next_values - self.values[t]
            advantage = delta + not_done * gamma * lam * advantage
            self.returns[t] = advantage + self.values[t]
        # In place, so the buffers stay ordinary tensors when this runs under inference_mode.
        self.advantages.copy_(self.returns - self.values)
        if normalize_advantage:
            self.advantages.copy_((self.advantages - self.advantages.mean()) / (self.advantages.std() + 1e-8))

    def mini_batch_generator(self, num_mini_batches: int, num_epochs: int = 1) -> Iterator[MiniBatch]:
        """Yield ``num_epochs * num_mini_batches`` shuffled mini-batches of flattened (T*N) samples.

        Each epoch draws a fresh permutation and splits it into ``num_mini_batches`` parts
        whose sizes differ by at most one, so every sample is used exactly once per epoch
        (nothing is dropped when T*N is not divisible by ``num_mini_batches``).
        """
        if isinstance(num_mini_batches, bool) or not isinstance(num_mini_batches, int) or not (
            0 < num_mini_batches <= self.batch_size
        ):
            raise ValueError(
                f"mini_batch_generator got num_mini_batches={num_mini_batches!r}, expected an integer in [1, {self.batch_size}]."
            )
        if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs <= 0:
            raise ValueError(f"mini_batch_generator got num_epochs={num_epochs!r}, expected a positive integer.")

        # (T, N, ...) -> (T*N, ...)
        flat = MiniBatch(
            observations=self.observations.flatten(0, 1),
            critic_observations=self.critic_observations.flatten(0, 1),
            actions=self.actions.flatten(0, 1),
            values=self.values.flatten(0, 1),
            advantages=self.advantages.flatten(0, 1),
            returns=self.returns.flatten(0, 1),
            actions_log_prob=self.actions_log_prob.flatten(0, 1),
            mu=self.mu.flatten(0, 1),
            sigma=self.sigma.flatten(0, 1),
        )
        for _ in range(num_epochs):
            permutation = torch.randperm(self.batch_size, device=self.device)
            for idx in torch.tensor_split(permutation, num_mini_batches):
                yield MiniBatch(*(field[idx] for field in flat))
