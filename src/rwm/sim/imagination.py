"""The learned simulator: the world model driven like MuJoCo, so the same task runs on it
(docs/architecture.md#imagination).

`ImaginationSimulator` is a `rwm.sim.simulator.Simulator` like `MujocoSimulator` (`num_envs`, `device`,
`step_dt`, `state`, `soft_joint_pos_limits`, `uncertainty`, `reset(ids)`, `step(actions)`), so
`LocomotionEnv` computes commands, observations, rewards, terminations and episodes on imagined
states with exactly the code it uses on real ones. Upstream wrote that code a second time for
imagination and it drifted (docs/upstream.md #6, #20 to #22); here it cannot.

Episodes start from real history. `reset(ids)` draws one window of M = history_horizon records
per environment from `initial_windows(n, generator)` (a replay buffer or a dataset), resets those
rows of the model's context and warms them up, while the other environments keep rolling
(`SystemDynamics.observe(..., ids=...)`): a predicted fall resets exactly the fallen
environments, with a fresh window, a fresh context and a fresh ensemble member (upstream kept the
stale context or never reset, docs/upstream.md #4 and #19).

Alignment at reset (the training alignment, docs/architecture.md#conventions). A window's
`action[k]` is the action taken *from* `state[k]`, and the model is trained so that M states
with their M actions predict state M. The window's last state is taken as the current state s_t; its recorded action is *not* used,
because the policy is about to choose a_t. The context is warmed up on the first M-1 records
(states s_{t-M+1..t-1} with their actions), and `step(a_t)` feeds (s_t, a_t) as the M-th step, so
the first imagined state s_{t+1} is predicted from exactly M real states and their actions, as in
training; every later step continues the same context one record at a time. The state after a
reset is s_t as recorded (raw, with the window's last contact and termination flags), and the
heading starts at 0: the model does not predict yaw, so it is integrated from the predicted
angular velocity (heading-controlled commands only need it relative to the episode's start).

A window may end in a terminal record (a replay buffer allows that as the last target): the
imagined episode then starts in that state, and a fallen start usually ends after one step.

The simulator owns the model's stateful context: do not call `reset`/`observe` on the same model
elsewhere while it is in use (evaluate a copy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rwm.config import check, check_interval
from rwm.sim.mujoco import soft_joint_pos_limits
from rwm.sim.state import (
    ACTION_DIM,
    CONTACT_DIM,
    DEFAULT_JOINT_POS,
    STATE_DIM,
    STATE_SLICES,
    TERMINATION_DIM,
    RobotState,
    check_actions,
    from_system_vectors,
)

InitialWindows = Callable[[int, torch.Generator], dict[str, torch.Tensor]]
_WINDOW_DIMS = {"state": STATE_DIM, "action": ACTION_DIM, "contact": CONTACT_DIM, "termination": TERMINATION_DIM}


def tilted_beyond(system_state: torch.Tensor, tilt: float) -> torch.Tensor:
    """(...,) bool: the base of raw system states (..., 45) tilts more than `tilt` rad from upright."""
    gravity = system_state[..., STATE_SLICES["projected_gravity"]]  # (..., 3), -z is upright
    return -gravity[..., 2] / gravity.norm(dim=-1).clamp(min=1e-6) < math.cos(tilt)


@dataclass
class ImaginationCfg:
    """How the world model is rolled out as a simulator (the `imagination` section of the Finetune
    and Offline tasks). The control period is not a setting: it is the real task's (Finetune) or the
    dataset's (Offline), given to `ImaginationSimulator` directly."""

    # Next state: a reparameterised sample of the (selected) member's Gaussian instead of its
    # mean. Upstream imagines with the mean (docs/architecture.md#imagination).
    sample_state: bool = False
    # RWM-U: every episode rolls out one ensemble member drawn at its reset (model_ids), so
    # episodes differ in the model they see; False uses the ensemble mean.
    member_per_episode: bool = True
    # rad; a predicted base tilted further than this from upright counts as a fall even when the
    # termination head says otherwise (falls are rare in the data, so the head seldom fires;
    # docs/results.md). pi turns the rule off.
    fall_tilt: float = 0.7
    # Imagined pushes, like the real simulator's: the predicted base velocity of an episode gets a
    # push, so the policy practises recovering (added in the body frame: the model does not know yaw).
    push: bool = False
    # s between imagined pushes, drawn uniformly (shorter than the real 10-15 s: imagined episodes last 5.12 s)
    push_interval_s: tuple[float, float] = (2.0, 4.0)
    push_vel_xy: tuple[float, float] = (-0.5, 0.5)  # m/s added to the base's x and y velocity by a push

    def __post_init__(self) -> None:
        check(isinstance(self.sample_state, bool), f"imagination.sample_state = {self.sample_state!r}; expected a bool.")
        check(isinstance(self.member_per_episode, bool),
              f"imagination.member_per_episode = {self.member_per_episode!r}; expected a bool.")
        check(0 < self.fall_tilt <= math.pi, f"imagination.fall_tilt = {self.fall_tilt}; expected a value in (0, pi] rad.")
        check(isinstance(self.push, bool), f"imagination.push = {self.push!r}; expected a bool.")
        check_interval("imagination.push_interval_s", self.push_interval_s, low=1e-3)
        check_interval("imagination.push_vel_xy", self.push_vel_xy)


class ImaginationSimulator:
    """N imagined ANYmal-D robots: raw actions in, `RobotState` predicted by the world model out.

    Args:
        model: a `SystemDynamics` (or anything with its stateful API: `reset(ids)`,
            `observe(z_state, z_action, model_ids=None, ids=None)`, `state_normalizer`,
            `action_normalizer`, `cfg.history_horizon`, `ensemble_size`), on `device`.
        initial_windows: `(n, generator) -> {"state" (n, M, 45), "action" (n, M, 12),
            "contact" (n, M, 8), "termination" (n, M, 1)}`, raw, M = history_horizon, with
            action[k] taken from state[k]; e.g. `lambda n, g: buffer.sample(n, M, g)`.
        num_envs: N.
        cfg: `ImaginationCfg`.
        step_dt: s, the control period the model was trained at (50 Hz).
        seed: seeds the generator used for windows, members and samples.
    """

    def __init__(self, model, initial_windows: InitialWindows, num_envs: int, cfg: ImaginationCfg | None = None,
                 device: str | torch.device = "cpu", seed: int = 0, step_dt: float = 0.02):
        check(isinstance(num_envs, int) and not isinstance(num_envs, bool) and num_envs >= 1,
              f"num_envs = {num_envs!r}; expected an integer >= 1.")
        if not callable(initial_windows):
            raise ValueError(f"initial_windows is a {type(initial_windows).__name__}; expected a callable "
                             "(n, generator) -> dict of windows, e.g. lambda n, g: buffer.sample(n, M, g).")
        self.cfg = cfg if cfg is not None else ImaginationCfg()
        self.model = model
        self.initial_windows = initial_windows
        self.num_envs = num_envs
        self.device = torch.device(device)
        check(math.isfinite(step_dt) and step_dt > 0, f"step_dt = {step_dt}; expected a finite number > 0.")
        self.step_dt = float(step_dt)
        self.history_horizon = int(model.cfg.history_horizon)  # M
        self.ensemble_size = int(model.ensemble_size)  # E
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        # The real robot's soft limits: the task's dof_pos_limits term sees the same bounds.
        limits = soft_joint_pos_limits() - np.asarray(DEFAULT_JOINT_POS)
        self.soft_joint_pos_limits = torch.as_tensor(limits, dtype=torch.float32, device=self.device)  # (2, 12)

        n, dev = num_envs, self.device
        # (N,) ensemble member each environment rolls out; None = the ensemble mean
        self.model_ids = torch.zeros(n, dtype=torch.long, device=dev) if self.cfg.member_per_episode else None
        self.uncertainty = torch.zeros(n, device=dev)  # (N,) epistemic uncertainty of the last step
        self.aleatoric = torch.zeros(n, device=dev)  # (N,) aleatoric uncertainty of the last step
        # The current state: raw system vectors (what the task sees) and the normalised state the
        # model is fed next. Replaced, never written in place, so a RobotState handed out stays valid.
        self._system_state = torch.zeros(n, STATE_DIM, device=dev)  # (N, 45)
        self._system_contact = torch.zeros(n, CONTACT_DIM, device=dev)  # (N, 8) flags or probabilities
        self._system_termination = torch.zeros(n, TERMINATION_DIM, device=dev)  # (N, 1)
        self._heading = torch.zeros(n, device=dev)  # (N,) rad, integrated
        self._push_timer = torch.zeros(n, device=dev)  # (N,) s until the next imagined push
        self._z_state = torch.zeros(n, STATE_DIM, device=dev)  # (N, 45) normalised current state
        self._all_envs = torch.arange(n, device=dev)
        self._no_contact = torch.zeros(n, CONTACT_DIM, device=dev)  # never written: states only read it
        self._no_termination = torch.zeros(n, TERMINATION_DIM, device=dev)
        self.state = self.reset()

    # ----------------------------------------------------------------------------- API
    def reset(self, ids: torch.Tensor | None = None) -> RobotState:
        """Start environments `ids` (all if None) from fresh real windows; returns the full state."""
        ids = self._all_envs if ids is None else torch.as_tensor(ids, device=self.device).long().reshape(-1)
        n, M = ids.numel(), self.history_horizon
        if n == 0:
            return self.state
        everything = n == self.num_envs and torch.equal(ids, self._all_envs)
        window = self._draw_windows(n)
        with torch.inference_mode():
            z_state = self.model.state_normalizer(window["state"])  # (n, M, 45)
            z_action = self.model.action_normalizer(window["action"])  # (n, M, 12)
            self.model.reset(None if everything else ids)
            if M > 1:  # context up to s_{t-1} with a_{t-1}; s_t is fed with the policy's a_t in step()
                self.model.observe(z_state[:, :-1], z_action[:, :-1], ids=None if everything else ids)
            self._z_state = self._z_state.index_copy(0, ids, z_state[:, -1])
        self._system_state = self._system_state.index_copy(0, ids, window["state"][:, -1])
        self._system_contact = self._system_contact.index_copy(0, ids, window["contact"][:, -1].float())
        self._system_termination = self._system_termination.index_copy(0, ids, window["termination"][:, -1].float())
        self._heading = self._heading.index_fill(0, ids, 0.0)
        self._push_timer[ids] = self._uniform(self.cfg.push_interval_s, (n,))
        if self.model_ids is not None:
            self.model_ids[ids] = torch.randint(self.ensemble_size, (n,), generator=self.generator, device=self.device)
        self.state = from_system_vectors(self._system_state, self._system_contact, self._system_termination,
                                         self._heading)
        return self.state

    def step(self, actions: torch.Tensor) -> RobotState:
        """Predict one control step for every environment from raw actions (N, 12); returns the new state."""
        actions = check_actions(actions, self.num_envs, self.device)
        with torch.inference_mode():
            z_action = self.model.action_normalizer(actions)  # (N, 12)
            out = self.model.observe(self._z_state.unsqueeze(1), z_action.unsqueeze(1), model_ids=self.model_ids)
            z_next = out.sample(self.generator) if self.cfg.sample_state else out.mean  # (N, 45)
        # Outside inference mode from here: what the task receives are ordinary tensors.
        system_state = self.model.state_normalizer.inverse(z_next)  # (N, 45) raw
        if self.cfg.push:
            system_state, z_next = self._apply_pushes(system_state, z_next)
        self._z_state, self._system_state = z_next, system_state
        # (N, 8), (N, 1) probabilities, thresholded at 0.5; a model without a head predicts no contact / no fall
        self._system_contact = (self._no_contact if out.contact_logits is None
                                else torch.sigmoid(out.contact_logits))
        termination = (self._no_termination if out.termination_logits is None
                       else torch.sigmoid(out.termination_logits))  # (N, 1)
        ended = tilted_beyond(system_state, self.cfg.fall_tilt).unsqueeze(-1)  # (N, 1) tipped over
        self._system_termination = termination.masked_fill(ended, 1.0)
        # World yaw rate = z row of R (body -> world) times omega; that row is -projected gravity.
        gravity = system_state[:, STATE_SLICES["projected_gravity"]]  # (N, 3), -z is upright
        ang_vel = system_state[:, STATE_SLICES["base_ang_vel"]]
        heading = self._heading - self.step_dt * (ang_vel * gravity).sum(-1)
        self._heading = torch.remainder(heading + math.pi, 2 * math.pi) - math.pi
        self.uncertainty = out.epistemic.clone()  # (N,) ordinary tensors, like the state
        self.aleatoric = out.aleatoric.clone()
        self.state = from_system_vectors(system_state, self._system_contact, self._system_termination,
                                         self._heading)
        return self.state

    # ----------------------------------------------------------------------------- internals
    def _uniform(self, interval: tuple[float, float], shape: tuple[int, ...]) -> torch.Tensor:
        low, high = interval
        return low + (high - low) * torch.rand(shape, generator=self.generator, device=self.device)

    def _apply_pushes(self, system_state: torch.Tensor, z_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, normalised) states (N, 45) with the due environments' base velocity pushed."""
        self._push_timer -= self.step_dt
        due = (self._push_timer <= 0).nonzero().squeeze(-1)  # (n,)
        if due.numel() == 0:
            return system_state, z_state
        vel_xy = STATE_SLICES["base_lin_vel"].start + torch.arange(2, device=self.device)  # columns of vx, vy
        push = torch.zeros_like(system_state)
        push[due.unsqueeze(-1), vel_xy] = self._uniform(self.cfg.push_vel_xy, (due.numel(), 2))
        self._push_timer[due] = self._uniform(self.cfg.push_interval_s, (due.numel(),))
        system_state = system_state + push
        with torch.inference_mode():
            return system_state, self.model.state_normalizer(system_state)

    def _draw_windows(self, n: int) -> dict[str, torch.Tensor]:
        window = self.initial_windows(n, self.generator)
        if not isinstance(window, dict):
            raise ValueError(f"initial_windows returned a {type(window).__name__}; expected a dict with keys "
                             f"{list(_WINDOW_DIMS)}.")
        out = {}
        for key, dim in _WINDOW_DIMS.items():
            value = window.get(key)
            expected = (n, self.history_horizon, dim)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"initial_windows '{key}' has shape {got}; expected {expected} "
                                 f"(windows, history_horizon, {key} dims).")
            out[key] = value.to(self.device, torch.float32)
        for key in ("state", "action"):
            if not bool(torch.isfinite(out[key]).all()):
                raise ValueError(f"initial_windows '{key}' contains NaN or infinite values; expected finite data.")
        return out

