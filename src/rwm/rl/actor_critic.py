"""Gaussian actor-critic with MLP heads, as used by PPO.

The actor maps observations to the mean of a diagonal Gaussian over actions; the spread is
a learned, state-independent parameter ``std`` (one entry per action), as in rsl_rl. A
state-independent std keeps exploration easy to read and to control: it only shrinks when
PPO's surrogate loss outweighs the entropy bonus.

The critic maps (possibly privileged) critic observations to a scalar value.

Optional empirical observation normalisation is applied to both inputs. The normalisers are
*not* updated in :meth:`ActorCritic.act` / :meth:`ActorCritic.evaluate`; they only move when
:meth:`ActorCritic.update_normalization` is called (``PPO.act`` does that once per step
during rollouts), so re-evaluating stored observations during the PPO update sees fixed
statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from rwm.rl.normalizer import EmpiricalNormalization

_ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ActorCritic got {name}={value!r}, expected a positive integer.")


def _check_hidden_dims(name: str, dims: object) -> tuple[int, ...]:
    if not isinstance(dims, Sequence) or isinstance(dims, str) or len(dims) == 0:
        raise ValueError(f"ActorCritic got {name}={dims!r}, expected a non-empty sequence of positive integers.")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise ValueError(f"ActorCritic got {name}={dims!r}, expected a non-empty sequence of positive integers.")
    return tuple(dims)


def _mlp(input_dim: int, hidden_dims: Sequence[int], output_dim: int, activation: str) -> nn.Sequential:
    """Linear -> act -> ... -> Linear (no activation on the output)."""
    layers: list[nn.Module] = []
    dims = [input_dim, *hidden_dims]
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers.append(nn.Linear(d_in, d_out))
        layers.append(_ACTIVATIONS[activation]())
    layers.append(nn.Linear(dims[-1], output_dim))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """MLP actor (Gaussian policy with learned state-independent std) and MLP critic."""

    is_recurrent = False

    def __init__(
        self,
        num_actor_obs: int,
        num_critic_obs: int,
        num_actions: int,
        actor_hidden_dims: Sequence[int] = (128, 128, 128),
        critic_hidden_dims: Sequence[int] = (128, 128, 128),
        activation: str = "elu",
        init_noise_std: float = 1.0,
        obs_normalization: bool = False,
    ):
        """
        Args:
            num_actor_obs: Size of the actor's observation vector.
            num_critic_obs: Size of the critic's observation vector.
            num_actions: Size of the action vector.
            actor_hidden_dims: Widths of the actor's hidden layers.
            critic_hidden_dims: Widths of the critic's hidden layers.
            activation: One of "elu", "relu", "tanh".
            init_noise_std: Initial value of every entry of ``std``.
            obs_normalization: Normalise actor and critic inputs with running statistics.
        """
        super().__init__()
        _check_positive_int("num_actor_obs", num_actor_obs)
        _check_positive_int("num_critic_obs", num_critic_obs)
        _check_positive_int("num_actions", num_actions)
        actor_hidden_dims = _check_hidden_dims("actor_hidden_dims", actor_hidden_dims)
        critic_hidden_dims = _check_hidden_dims("critic_hidden_dims", critic_hidden_dims)
        if not isinstance(activation, str) or activation.lower() not in _ACTIVATIONS:
            raise ValueError(f"ActorCritic got activation={activation!r}, expected one of {sorted(_ACTIVATIONS)}.")
        activation = activation.lower()
        if not isinstance(init_noise_std, (int, float)) or not (math.isfinite(init_noise_std) and init_noise_std > 0):
            raise ValueError(f"ActorCritic got init_noise_std={init_noise_std!r}, expected a finite number > 0.")

        self.num_actor_obs = num_actor_obs
        self.num_critic_obs = num_critic_obs
        self.num_actions = num_actions
        self.obs_normalization = bool(obs_normalization)

        self.actor = _mlp(num_actor_obs, actor_hidden_dims, num_actions, activation)
        self.critic = _mlp(num_critic_obs, critic_hidden_dims, 1, activation)
        # (num_actions,): the same spread for every state.
        self.std = nn.Parameter(init_noise_std * torch.ones(num_actions))

        if self.obs_normalization:
            self.actor_obs_normalizer: nn.Module = EmpiricalNormalization(num_actor_obs)
            self.critic_obs_normalizer: nn.Module = EmpiricalNormalization(num_critic_obs)
        else:
            self.actor_obs_normalizer = nn.Identity()
            self.critic_obs_normalizer = nn.Identity()

        self.distribution: Normal | None = None

    def reset(self, dones: torch.Tensor | None = None) -> None:
        """No hidden state to reset (kept for API symmetry with recurrent policies)."""

    def forward(self) -> None:
        raise NotImplementedError("Use act(), act_inference() or evaluate().")

    # ------------------------------------------------------------------ distribution
    def _dist(self) -> Normal:
        if self.distribution is None:
            raise RuntimeError("ActorCritic has no action distribution yet; call act(obs) first.")
        return self.distribution

    @property
    def action_mean(self) -> torch.Tensor:
        """(N, num_actions) mean of the last distribution built by :meth:`act`."""
        return self._dist().mean

    @property
    def action_std(self) -> torch.Tensor:
        """(N, num_actions) standard deviation of the last distribution built by :meth:`act`."""
        return self._dist().stddev

    @property
    def entropy(self) -> torch.Tensor:
        """(N,) entropy of the last distribution, summed over action dimensions."""
        return self._dist().entropy().sum(dim=-1)

    def update_distribution(self, obs: torch.Tensor) -> None:
        mean = self.actor(self.actor_obs_normalizer(obs))  # (N, num_actions)
        std = self.std.expand_as(mean)
        # validate_args=False: skip per-call argument checks (a negative std is caught by
        # PPO's non-finite loss check instead).
        self.distribution = Normal(mean, std, validate_args=False)

    # ------------------------------------------------------------------ public API
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample actions (N, num_actions) for observations (N, num_actor_obs); keeps the distribution.

        `generator` draws the noise reproducibly (e.g. when recording a dataset); None uses torch's global one.
        """
        self.update_distribution(obs)
        if generator is None:
            return self.distribution.sample()
        mean, std = self.distribution.mean, self.distribution.stddev
        return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def act_inference(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic (mean) actions (N, num_actions) for deployment and evaluation."""
        return self.actor(self.actor_obs_normalizer(obs))

    def evaluate(self, critic_obs: torch.Tensor) -> torch.Tensor:
        """Values (N, 1) for critic observations (N, num_critic_obs)."""
        return self.critic(self.critic_obs_normalizer(critic_obs))

    def get_actions_log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """(N,) log-probability of ``actions`` under the last distribution, summed over action dims."""
        return self._dist().log_prob(actions).sum(dim=-1)

    def update_normalization(self, obs: torch.Tensor, critic_obs: torch.Tensor | None = None) -> None:
        """Fold a batch into the observation normalisers (no-op without normalisation or in eval mode).

        Args:
            obs: (N, num_actor_obs) actor observations.
            critic_obs: (N, num_critic_obs) critic observations; if ``None`` the actor
                observations are used, which requires ``num_critic_obs == num_actor_obs``.
        """
        if not self.obs_normalization:
            return
        if critic_obs is None:
            if self.num_critic_obs != self.num_actor_obs:
                raise ValueError(
                    f"ActorCritic.update_normalization got critic_obs=None with num_critic_obs={self.num_critic_obs} "
                    f"!= num_actor_obs={self.num_actor_obs}, expected critic observations to be passed."
                )
            critic_obs = obs
        self.actor_obs_normalizer.update(obs)
        self.critic_obs_normalizer.update(critic_obs)
