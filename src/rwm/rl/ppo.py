"""Proximal Policy Optimisation (clipped surrogate, clipped value loss, adaptive learning rate).

A close port of rsl_rl's PPO for a single process. The runner drives it like this::

    ppo.init_storage(num_envs, num_steps, [num_obs], [num_critic_obs], [num_actions])
    for it in range(num_iterations):
        ppo.train_mode()
        with torch.inference_mode():
            for _ in range(num_steps):
                actions = ppo.act(obs, critic_obs)
                obs_dict, rewards, dones, extras = env.step(actions)
                ppo.process_env_step(rewards, dones, extras)
                obs = critic_obs = obs_dict["policy"]
            ppo.compute_returns(critic_obs)
        losses = ppo.update()

Two hooks, :meth:`PPO.reduce_gradients` and :meth:`PPO.reduce_kl`, do nothing here; a
multi-process subclass overrides them to all-reduce gradients and the KL estimate so that
all ranks take the same step and the same learning-rate decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from rwm.rl.actor_critic import ActorCritic
from rwm.rl.rollout_storage import RolloutStorage

_SCHEDULES = ("adaptive", "fixed")


def _check(cond: bool, name: str, value: object, expected: str) -> None:
    if not cond:
        raise ValueError(f"PPO got {name}={value!r}, expected {expected}.")


def _is_pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class PPO:
    """PPO on an :class:`ActorCritic` with a :class:`RolloutStorage`."""

    def __init__(
        self,
        policy: ActorCritic,
        num_learning_epochs: int = 5,
        num_mini_batches: int = 4,
        clip_param: float = 0.2,
        gamma: float = 0.99,
        lam: float = 0.95,
        value_loss_coef: float = 1.0,
        entropy_coef: float = 0.005,
        learning_rate: float = 1e-3,
        max_grad_norm: float = 1.0,
        use_clipped_value_loss: bool = True,
        schedule: str = "adaptive",
        desired_kl: float = 0.01,
        normalize_advantage_per_mini_batch: bool = False,
        device: str | torch.device = "cpu",
    ):
        """
        Args:
            policy: The actor-critic to train; it is moved to ``device``.
            num_learning_epochs: Passes over the rollout per update.
            num_mini_batches: Mini-batches per pass.
            clip_param: PPO ratio clip, also used to clip the value update.
            gamma: Discount factor.
            lam: GAE lambda.
            value_loss_coef: Weight of the value loss.
            entropy_coef: Weight of the entropy bonus.
            learning_rate: Initial Adam learning rate.
            max_grad_norm: Global gradient-norm clip.
            use_clipped_value_loss: Use the PPO2 clipped value loss.
            schedule: "adaptive" (KL-driven learning rate) or "fixed".
            desired_kl: Target KL for the adaptive schedule.
            normalize_advantage_per_mini_batch: Normalise advantages in each mini-batch
                instead of once over the whole rollout (rsl_rl's default is the latter).
            device: Where the policy, storage and computations live.
        """
        _check(_is_pos_int(num_learning_epochs), "num_learning_epochs", num_learning_epochs, "a positive integer")
        _check(_is_pos_int(num_mini_batches), "num_mini_batches", num_mini_batches, "a positive integer")
        _check(_is_num(clip_param) and clip_param > 0, "clip_param", clip_param, "a finite number > 0")
        _check(_is_num(gamma) and 0 <= gamma <= 1, "gamma", gamma, "a number in [0, 1]")
        _check(_is_num(lam) and 0 <= lam <= 1, "lam", lam, "a number in [0, 1]")
        _check(_is_num(value_loss_coef) and value_loss_coef >= 0, "value_loss_coef", value_loss_coef, "a finite number >= 0")
        _check(_is_num(entropy_coef) and entropy_coef >= 0, "entropy_coef", entropy_coef, "a finite number >= 0")
        _check(_is_num(learning_rate) and learning_rate > 0, "learning_rate", learning_rate, "a finite number > 0")
        _check(_is_num(max_grad_norm) and max_grad_norm > 0, "max_grad_norm", max_grad_norm, "a finite number > 0")
        _check(schedule in _SCHEDULES, "schedule", schedule, f"one of {list(_SCHEDULES)}")
        _check(_is_num(desired_kl) and desired_kl > 0, "desired_kl", desired_kl, "a finite number > 0")

        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=learning_rate)
        self.storage: RolloutStorage | None = None

        self.num_learning_epochs = num_learning_epochs
        self.num_mini_batches = num_mini_batches
        self.clip_param = float(clip_param)
        self.gamma = float(gamma)
        self.lam = float(lam)
        self.value_loss_coef = float(value_loss_coef)
        self.entropy_coef = float(entropy_coef)
        self.learning_rate = float(learning_rate)
        self.max_grad_norm = float(max_grad_norm)
        self.use_clipped_value_loss = bool(use_clipped_value_loss)
        self.schedule = schedule
        self.desired_kl = float(desired_kl)
        self.normalize_advantage_per_mini_batch = bool(normalize_advantage_per_mini_batch)
        # A loss added to every mini-batch's PPO loss (e.g. Offline's behaviour-cloning anchor):
        # a callable returning a scalar tensor with gradients to the policy; None: plain PPO.
        self.auxiliary_loss: Callable[[], torch.Tensor] | None = None

        # What act() computed, waiting for the env's reward in process_env_step().
        self._pending: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ setup / modes
    def init_storage(
        self,
        num_envs: int,
        num_steps: int,
        actor_obs_shape: int | Sequence[int],
        critic_obs_shape: int | Sequence[int],
        action_shape: int | Sequence[int],
    ) -> None:
        self.storage = RolloutStorage(num_envs, num_steps, actor_obs_shape, critic_obs_shape, action_shape, self.device)

    def train_mode(self) -> None:
        self.policy.train()

    def eval_mode(self) -> None:
        self.policy.eval()

    # ------------------------------------------------------------------ rollout
    def act(self, obs: torch.Tensor, critic_obs: torch.Tensor) -> torch.Tensor:
        """Sample actions (N, num_actions) and remember what the update will need.

        Also folds ``obs``/``critic_obs`` into the policy's observation normalisers (a no-op
        without normalisation or in eval mode), so the runner must not do it again.
        """
        if self.storage is None:
            raise RuntimeError("PPO.act called before init_storage().")
        obs = obs.to(self.device)
        critic_obs = critic_obs.to(self.device)
        self.policy.update_normalization(obs, critic_obs)
        actions = self.policy.act(obs).detach()
        self._pending = {
            # Cloned: some envs overwrite their observation buffer in place during step().
            "observations": obs.clone(),
            "critic_observations": critic_obs.clone(),
            "actions": actions,
            "values": self.policy.evaluate(critic_obs).detach(),  # (N, 1)
            "actions_log_prob": self.policy.get_actions_log_prob(actions).detach(),  # (N,)
            "mu": self.policy.action_mean.detach(),
            "sigma": self.policy.action_std.detach(),
        }
        return actions

    def process_env_step(self, rewards: torch.Tensor, dones: torch.Tensor, extras: dict) -> None:
        """Store the step whose actions came from the last :meth:`act`.

        Time-outs are bootstrapped the rsl_rl way: ``gamma * V(s_t)`` is added to the
        reward, standing in for the value of the state the time limit cut off (V(s_t) is
        used as a cheap proxy for V(s_{t+1})). The step's ``done`` still ends the GAE
        recursion because the next stored step belongs to a fresh episode.

        Args:
            rewards: (N,) rewards.
            dones: (N,) bool, terminated OR timed out.
            extras: May hold ``"time_outs"``, (N,) bool.
        """
        if self._pending is None:
            raise RuntimeError("PPO.process_env_step called without a preceding act().")
        pending = self._pending
        rewards = rewards.to(self.device).reshape(-1, 1).to(torch.float32).clone()  # (N, 1)
        if "time_outs" in extras:
            time_outs = extras["time_outs"].to(self.device).reshape(-1, 1)
            rewards += self.gamma * pending["values"] * time_outs
        self.storage.add_transition(rewards=rewards, dones=dones.to(self.device), **pending)
        self._pending = None
        self.policy.reset(dones)

    def compute_returns(self, last_critic_obs: torch.Tensor) -> None:
        """Bootstrap from the critic on the observation after the last step and run GAE."""
        last_values = self.policy.evaluate(last_critic_obs.to(self.device)).detach()
        self.storage.compute_returns(
            last_values, self.gamma, self.lam, normalize_advantage=not self.normalize_advantage_per_mini_batch
        )

    # ------------------------------------------------------------------ hooks
    def reduce_gradients(self) -> None:
        """Called after ``backward()`` and before gradient clipping; a distributed subclass
        averages gradients across ranks here. Does nothing in the single-process case."""

    def reduce_kl(self, kl: torch.Tensor) -> torch.Tensor:
        """Called on the mini-batch mean KL before the adaptive learning-rate decision; a
        distributed subclass averages it across ranks here. Identity by default."""
        return kl

    # ------------------------------------------------------------------ learning
    def adapt_learning_rate(self, kl: torch.Tensor | float) -> None:
        """rsl_rl's adaptive rule: shrink the step when the policy moved too far, grow it when
        it barely moved; bounds [1e-5, 1e-2]. Applied to every optimizer parameter group."""
        kl = float(kl)
        if kl > 2.0 * self.desired_kl:
            self.learning_rate = max(1e-5, self.learning_rate / 1.5)
        elif 0.0 < kl < self.desired_kl / 2.0:
            self.learning_rate = min(1e-2, self.learning_rate * 1.5)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate

    @staticmethod
    def _check_finite(name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value).all():
            raise FloatingPointError(
                f"PPO {name} loss is {value.item()}, so the update was stopped before touching the weights."
            )

    def update(self) -> dict[str, float]:
        """Run the PPO epochs over the stored rollout, clear it, and return mean losses."""
        if self.storage is None:
            raise RuntimeError("PPO.update called before init_storage().")
        sums = {"value_function": 0.0, "surrogate": 0.0, "entropy": 0.0, "kl": 0.0}
        num_updates = 0

        for batch in self.storage.mini_batch_generator(self.num_mini_batches, self.num_learning_epochs):
            advantages = batch.advantages.squeeze(-1)  # (B,)
            if self.normalize_advantage_per_mini_batch:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

            # Re-evaluate the stored samples under the current policy (no sampling needed).
            self.policy.update_distribution(batch.observations)
            log_prob = self.policy.get_actions_log_prob(batch.actions)  # (B,)
            values = self.policy.evaluate(batch.critic_observations)  # (B, 1)
            mu = self.policy.action_mean  # (B, A)
            sigma = self.policy.action_std  # (B, A)
            entropy = self.policy.entropy  # (B,)

            # KL(old || new) between diagonal Gaussians, summed over action dims.
            with torch.no_grad():
                kl = torch.sum(
                    torch.log(sigma / batch.sigma + 1.0e-5)
                    + (batch.sigma.square() + (batch.mu - mu).square()) / (2.0 * sigma.square())
                    - 0.5,
                    dim=-1,
                )
                kl_mean = self.reduce_kl(kl.mean())
            if self.schedule == "adaptive":
                self.adapt_learning_rate(kl_mean)

            # Clipped surrogate.
            ratio = torch.exp(log_prob - batch.actions_log_prob.squeeze(-1))
            surrogate = -advantages * ratio
            surrogate_clipped = -advantages * torch.clamp(ratio, 1.0 - self.clip_param, 1.0 + self.clip_param)
            surrogate_loss = torch.max(surrogate, surrogate_clipped).mean()

            # Value loss, optionally clipped around the values recorded during the rollout.
            if self.use_clipped_value_loss:
                values_clipped = batch.values + (values - batch.values).clamp(-self.clip_param, self.clip_param)
                value_loss = torch.max(
                    (values - batch.returns).square(), (values_clipped - batch.returns).square()
                ).mean()
            else:
                value_loss = (values - batch.returns).square().mean()

            entropy_loss = entropy.mean()
            self._check_finite("surrogate", surrogate_loss)
            self._check_finite("value function", value_loss)
            self._check_finite("entropy", entropy_loss)

            loss = surrogate_loss + self.value_loss_coef * value_loss - self.entropy_coef * entropy_loss
            if self.auxiliary_loss is not None:
                auxiliary = self.auxiliary_loss()
                self._check_finite("auxiliary", auxiliary)
                loss = loss + auxiliary
                sums["auxiliary"] = sums.get("auxiliary", 0.0) + auxiliary.item()

            self.optimizer.zero_grad()
            loss.backward()
            self.reduce_gradients()
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.optimizer.step()

            sums["value_function"] += value_loss.item()
            sums["surrogate"] += surrogate_loss.item()
            sums["entropy"] += entropy_loss.item()
            sums["kl"] += float(kl_mean)
            num_updates += 1

        self.storage.clear()
        out = {k: v / num_updates for k, v in sums.items()}
        out["learning_rate"] = self.learning_rate
        return out
