"""The velocity-tracking task, written once against `RobotState`: the world model is a simulator
(docs/architecture.md#imagination).

`LocomotionEnv(cfg, simulator)` runs on any `rwm.sim.simulator.Simulator` (`num_envs`, `device`,
`step_dt`, `state`, `soft_joint_pos_limits`, `uncertainty`, `reset(ids)`, `step(actions)`): the
MuJoCo simulator or the world model's imagination. Its API follows rsl_rl's VecEnv:
`get_observations()`, `step(actions) -> (obs, rewards, dones, extras)` with
`extras["time_outs"]` for bootstrapping and per-episode statistics in `extras["log"]`.

Finished environments are reset inside `step`, so the observations it returns are the new
episodes' first ones; the states the finished episodes ended in (a fall, or the time limit) are
in `extras["terminal"]`: `ids` (k,) and their `system_state` (k, 45), `system_contact` (k, 8),
`system_termination` (k, 1), so a world model can learn from the last transition too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rwm.config import check
from rwm.envs.mdp.commands import CommandCfg, VelocityCommand
from rwm.envs.mdp.observations import ObservationNoiseCfg, observation_groups
from rwm.envs.mdp.rewards import FLAT_REWARD_WEIGHTS, REWARD_TERMS, RewardContext
from rwm.sim.simulator import Simulator
from rwm.sim.state import NUM_JOINTS, check_actions, to_system_vectors


@dataclass
class LocomotionEnvCfg:
    episode_length_s: float = 20.0  # s before an episode times out
    commands: CommandCfg = field(default_factory=CommandCfg)  # the velocity commands to track
    noise: ObservationNoiseCfg = field(default_factory=ObservationNoiseCfg)  # noise on the policy observation
    # weight of every reward term (rwm.envs.mdp.rewards), plus "uncertainty" in imagination; 0 drops a term
    reward_weights: dict[str, float] = field(default_factory=lambda: dict(FLAT_REWARD_WEIGHTS))
    feet_air_time_threshold: float = 0.5  # s
    # Actions are clipped to [-clip_actions, clip_actions] before they reach the simulator (rsl_rl's
    # VecEnv wrapper setting; None: unclipped). Everything downstream (simulator, rewards, the last
    # action in the observation, recorded data) sees the clipped action; PPO keeps its own sample.
    clip_actions: float | None = None

    def __post_init__(self) -> None:
        check(self.episode_length_s > 0, f"env.episode_length_s = {self.episode_length_s}; expected > 0.")
        check(self.clip_actions is None or (math.isfinite(self.clip_actions) and self.clip_actions > 0),
              f"env.clip_actions = {self.clip_actions}; expected null (no clipping) or a finite number > 0.")
        unknown = sorted(set(self.reward_weights) - set(REWARD_TERMS) - {"uncertainty"})
        check(not unknown, f"env.reward_weights has unknown term(s) {unknown}; expected names from "
                           f"{sorted(REWARD_TERMS)}.")
        for name, weight in self.reward_weights.items():
            check(math.isfinite(weight), f"env.reward_weights.{name} = {weight}; expected a finite number.")


class LocomotionEnv:
    """Velocity tracking for ANYmal D on any `RobotState` simulator; all tensors on the simulator's device."""

    def __init__(self, cfg: LocomotionEnvCfg, simulator: Simulator, seed: int = 0):
        self.cfg = cfg
        self.sim = simulator
        self.num_envs = simulator.num_envs
        self.num_actions = NUM_JOINTS
        self.device = torch.device(simulator.device)
        self.step_dt = simulator.step_dt
        self.max_episode_length = math.ceil(cfg.episode_length_s / self.step_dt)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

        n, dev = self.num_envs, self.device
        self.command_manager = VelocityCommand(cfg.commands, n, dev, self.generator)
        self.noise_scale = cfg.noise.scale_vector().to(dev) if cfg.noise.enabled else None
        self.reward_terms = {name: (REWARD_TERMS[name], weight)
                             for name, weight in cfg.reward_weights.items() if weight != 0.0 and name in REWARD_TERMS}
        self.uncertainty_weight = cfg.reward_weights.get("uncertainty", 0.0)
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=dev)
        self.action = torch.zeros(n, NUM_JOINTS, device=dev)
        self.last_action = torch.zeros(n, NUM_JOINTS, device=dev)
        self.air_time = torch.zeros(n, 4, device=dev)  # current swing duration per foot
        self.last_air_time = torch.zeros(n, 4, device=dev)
        self.episode_sums = {name: torch.zeros(n, device=dev) for name in self._logged_terms()}
        self.state = simulator.state
        self._observations = None
        self.reset()

    def _logged_terms(self) -> list[str]:
        names = list(self.reward_terms)
        if self.uncertainty_weight != 0.0 and self.sim.uncertainty is not None:
            names.append("uncertainty")
        return names

    # ------------------------------------------------------------------ rsl_rl VecEnv API
    def get_observations(self) -> dict[str, torch.Tensor]:
        return self._observations

    def reset(self) -> dict[str, torch.Tensor]:
        """Reset every environment (episode counters to zero); returns the observations."""
        self._reset_envs(torch.arange(self.num_envs, device=self.device))
        self.command_manager.update(self.state, 0.0)
        self._observations = self._compute_observations()
        return self._observations

    def randomize_episode_lengths(self) -> None:
        """Spread episode counters over [0, max length) so time-outs do not arrive all at once."""
        self.episode_length_buf = torch.randint(0, self.max_episode_length, (self.num_envs,),
                                                generator=self.generator, device=self.device)

    def step(self, actions: torch.Tensor):
        actions = check_actions(actions, self.num_envs, self.device)
        dt = self.step_dt
        self.last_action = self.action
        clip = self.cfg.clip_actions
        self.action = actions.clone() if clip is None else actions.clamp(-clip, clip)
        previous_joint_vel = self.state.joint_vel
        self.state = state = self.sim.step(self.action)
        self.episode_length_buf += 1

        # feet air time at the control rate, updated before it is rewarded (no lag: docs/upstream.md #21)
        contact = state.foot_contact
        first_contact = contact & (self.air_time > 0)
        self.last_air_time = torch.where(first_contact, self.air_time + dt, self.last_air_time)
        self.air_time = torch.where(contact, torch.zeros_like(self.air_time), self.air_time + dt)

        terminated = state.base_contact.clone()
        # a fall on the last step is a fall: only episodes cut by the time limit are bootstrapped
        time_outs = (self.episode_length_buf >= self.max_episode_length) & ~terminated
        rewards = self._compute_rewards(RewardContext(
            state=state, command=self.command_manager.command, action=self.action, last_action=self.last_action,
            joint_acc=(state.joint_vel - previous_joint_vel) / dt, first_contact=first_contact,
            last_air_time=self.last_air_time, soft_joint_pos_limits=self.sim.soft_joint_pos_limits,
            feet_air_time_threshold=self.cfg.feet_air_time_threshold))

        dones = terminated | time_outs
        reset_ids = torch.nonzero(dones).flatten()
        extras = {"time_outs": time_outs, "log": {}, "actions": self.action.clone()}  # the actions applied
        if len(reset_ids) > 0:
            extras["log"] = self._episode_log(reset_ids, terminated, time_outs)
            terminal_state, terminal_contact, terminal_termination = to_system_vectors(state.index(reset_ids))
            extras["terminal"] = {"ids": reset_ids, "system_state": terminal_state,
                                  "system_contact": terminal_contact, "system_termination": terminal_termination}
            self._reset_envs(reset_ids)
        self.command_manager.update(self.state, dt)
        self._observations = self._compute_observations()
        return self._observations, rewards, dones, extras

    # ------------------------------------------------------------------ internals
    def _compute_rewards(self, ctx: RewardContext) -> torch.Tensor:
        total = torch.zeros(self.num_envs, device=self.device)
        for name, (term, weight) in self.reward_terms.items():
            value = term(ctx) * (weight * self.step_dt)
            self.episode_sums[name] += value
            total += value
        if "uncertainty" in self.episode_sums:  # RWM-U's penalty: w_u * epistemic uncertainty * dt
            value = self.sim.uncertainty * (self.uncertainty_weight * self.step_dt)
            self.episode_sums["uncertainty"] += value
            total += value
        return total

    def _episode_log(self, ids: torch.Tensor, terminated: torch.Tensor, time_outs: torch.Tensor) -> dict[str, float]:
        log = {f"Episode_Reward/{name}": (sums[ids].mean() / self.cfg.episode_length_s).item()
               for name, sums in self.episode_sums.items()}
        log["Episode_Termination/base_contact"] = terminated[ids].float().sum().item()
        log["Episode_Termination/time_out"] = time_outs[ids].float().sum().item()
        log["Episode/length_s"] = (self.episode_length_buf[ids].float().mean() * self.step_dt).item()
        return log

    def _reset_envs(self, ids: torch.Tensor) -> None:
        self.state = self.sim.reset(ids)
        self.command_manager.reset(ids)
        self.episode_length_buf[ids] = 0
        self.action[ids] = 0.0
        self.last_action[ids] = 0.0
        self.air_time[ids] = 0.0
        self.last_air_time[ids] = 0.0
        for sums in self.episode_sums.values():
            sums[ids] = 0.0

    def _compute_observations(self) -> dict[str, torch.Tensor]:
        return observation_groups(self.state, self.command_manager.command, self.action, self.noise_scale,
                                  self.generator)
