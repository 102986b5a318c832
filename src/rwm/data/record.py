"""Recording datasets from the real simulator: per-environment streams cut into episodes.

The pairing of states with actions is the one Pretrain uses (`TransitionRecorder`: state k
with the action taken FROM it; when an episode ends, the state it ended in as a terminal
record). Here the recorder feeds an `EpisodeAssembler` instead of a ReplayBuffer: the same
add / add_terminal / start_new_episodes interface, but it keeps each environment's open
episode in memory and hands it to a `DatasetWriter` when it ends. Memory is therefore bounded
by num_envs x the longest episode (1000 steps at 50 Hz), not by the recording.

`steps` is the number of transitions recorded in total, over all environments (rounded up to a
multiple of num_envs). At the end each environment's open episode is closed with the state
the last step led to (zero action, not ended), so every recorded step is a full transition.

Recording from a training run's checkpoints (one policy, or RWM-U's mixed dataset) is
`rwm.training.recording`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rwm.data.format import COMMAND_DIM, POLICY_OBS_DIM
from rwm.data.writer import DatasetWriter, refuse_existing
from rwm.sim.state import ACTION_DIM, CONTACT_DIM, STATE_DIM, TERMINATION_DIM
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.world_model.recorder import TransitionRecorder

COMMAND_SLICE = slice(9, 12)  # velocity command inside the policy observation (docs/architecture.md#observations)
_WIDTHS = {"system_state": STATE_DIM, "system_action": ACTION_DIM, "system_contact": CONTACT_DIM,
           "system_termination": TERMINATION_DIM, "policy_observation": POLICY_OBS_DIM, "command": COMMAND_DIM,
           "reward": 1}
_ENDS = np.cumsum(list(_WIDTHS.values())).tolist()
_BOUNDS = {name: slice(end - width, end) for (name, width), end in zip(_WIDTHS.items(), _ENDS)}  # in a row (W,)


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().to("cpu", torch.float32).numpy()


class EpisodeAssembler:
    """A ReplayBuffer-shaped sink (add / add_terminal / start_new_episodes) writing whole episodes.

    Optional columns (policy observation, command, reward) are passed with `stage()` before the
    `add()` they belong to. A terminal record gets reward 0, the command of the episode's last
    step and a noise-free policy observation assembled from its state (the simulator reset
    before observing it).
    """

    def __init__(self, writer: DatasetWriter, num_envs: int):
        self.writer = writer
        self.num_envs = num_envs
        self.extras = len(writer.columns) > 4
        if self.extras and writer.columns[4:] != ("policy_observation", "command", "reward"):
            raise ValueError(f"EpisodeAssembler needs a writer with all optional columns or none; "
                             f"got {writer.columns}.")
        self._rows: list[list[np.ndarray]] = [[] for _ in range(num_envs)]  # per env: rows (W,) of the open episode
        self._staged: dict[str, torch.Tensor] = {}
        self._last_action = torch.zeros(num_envs, ACTION_DIM)  # the action that led into each env's latest state
        self._last_command = torch.zeros(num_envs, COMMAND_DIM)
        self.num_transitions = 0

    def stage(self, policy_observation: torch.Tensor | None = None, reward: torch.Tensor | None = None) -> None:
        """Optional columns of the next `add()`: policy observation (N, 48) and reward (N,)."""
        self._staged = {"policy_observation": policy_observation, "reward": reward}

    # ------------------------------------------------------------------ ReplayBuffer interface
    def add(self, state: torch.Tensor, action: torch.Tensor, contact: torch.Tensor, termination: torch.Tensor) -> None:
        """One record for every environment: state k, the action taken from it, its flags; (N, d) each."""
        n = self.num_envs
        parts = [state, action, contact, termination]
        if self.extras:
            obs = self._staged.get("policy_observation")
            reward = self._staged.get("reward")
            if obs is None or reward is None:
                raise ValueError("EpisodeAssembler.add needs stage(policy_observation, reward) first for a writer "
                                 "with optional columns.")
            self._last_command = obs[:, COMMAND_SLICE].detach().cpu().float()
            parts += [obs, obs[:, COMMAND_SLICE], reward.reshape(n, 1)]
        block = np.concatenate([_numpy(p).reshape(n, -1) for p in parts], axis=1)  # (N, W)
        for e in range(n):
            self._rows[e].append(block[e])
        self._last_action = action.detach().cpu().float()
        self._staged = {}
        self.num_transitions += n

    def add_terminal(self, ids: torch.Tensor, state: torch.Tensor, contact: torch.Tensor,
                     termination: torch.Tensor) -> None:
        """The states the episodes of envs `ids` (k,) ended in; writes those episodes (ended)."""
        ids = torch.as_tensor(ids).long().reshape(-1).cpu()
        if ids.numel() == 0:
            return
        k = ids.numel()
        parts = [state, torch.zeros(k, ACTION_DIM), contact, termination]
        if self.extras:
            parts += self._assembled_extras(ids, state, contact, termination)
        block = np.concatenate([_numpy(p).reshape(k, -1) for p in parts], axis=1)  # (k, W)
        for row, e in zip(block, ids.tolist()):
            self._rows[e].append(row)
            self._write(e, ended=True)

    def start_new_episodes(self, ids: torch.Tensor | None = None) -> None:
        """The next record of envs `ids` (all if None) starts a new episode: open ones are written, cut."""
        ids = range(self.num_envs) if ids is None else torch.as_tensor(ids).reshape(-1).tolist()
        for e in ids:
            if self._rows[e]:
                self._rows[e][-1] = self._rows[e][-1].copy()
                self._rows[e][-1][_BOUNDS["system_action"]] = 0.0  # its outcome is not in the data
                self._write(e, ended=False)

    # ------------------------------------------------------------------ end of a recording
    def finish(self, state: torch.Tensor, contact: torch.Tensor, termination: torch.Tensor,
               policy_observation: torch.Tensor | None = None) -> None:
        """Close every open episode with the state the last step led to (zero action, not ended)."""
        n = self.num_envs
        parts = [state, torch.zeros(n, ACTION_DIM), contact, termination]
        if self.extras:
            parts += [policy_observation, policy_observation[:, COMMAND_SLICE], torch.zeros(n, 1)]
        block = np.concatenate([_numpy(p).reshape(n, -1) for p in parts], axis=1)
        for e in range(n):
            if self._rows[e]:  # an episode that began with this state alone holds no transition: dropped
                self._rows[e].append(block[e])
                self._write(e, ended=False)
            self._rows[e] = []

    def _assembled_extras(self, ids, state, contact, termination) -> list[torch.Tensor]:
        from rwm.envs.mdp.observations import policy_observation
        from rwm.sim.state import from_system_vectors

        state, contact, termination = (t.detach().cpu().float() for t in (state, contact, termination))
        robot = from_system_vectors(state, contact, termination, heading=torch.zeros(len(ids)))
        command = self._last_command[ids]
        obs = policy_observation(robot, command, self._last_action[ids])  # (k, 48), noise-free
        return [obs, command, torch.zeros(len(ids), 1)]

    def _write(self, e: int, ended: bool) -> None:
        rows = np.stack(self._rows[e])  # (T, W)
        self._rows[e] = []
        columns = {name: rows[:, _BOUNDS[name]] for name in self.writer.columns}
        if "reward" in columns:
            columns["reward"] = columns["reward"][:, 0]
        self.writer.append_episode(**columns, ended=ended)


class DatasetRecorder(TransitionRecorder):
    """TransitionRecorder that also passes the policy observation and reward of each record along."""

    def start(self, obs: dict[str, torch.Tensor]) -> None:
        super().start(obs)
        self._previous_policy = obs["policy"].clone()

    def record(self, actions: torch.Tensor, next_obs: dict[str, torch.Tensor], extras: dict,
               rewards: torch.Tensor | None = None) -> None:
        self.buffer.stage(policy_observation=self._previous_policy, reward=rewards)
        super().record(actions, next_obs, extras)
        self._previous_policy = next_obs["policy"].clone()

    def finish(self) -> None:
        previous = self._previous
        self.buffer.finish(previous["system_state"], previous["system_contact"], previous["system_termination"],
                           self._previous_policy)


@torch.inference_mode()
def record_dataset(cfg: TaskCfg, policy: Callable[[torch.Tensor], torch.Tensor], out: str | os.PathLike, *,
                   steps: int, source: dict[str, Any], overwrite: bool = False, progress: bool = True,
                   metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `policy` (policy obs (N, 48) -> actions (N, 12)) in `cfg.num_envs` fresh real environments
    until `steps` transitions (in total) are recorded, into the dataset file `out`.

    Returns a summary. The file appears under `out` only when the recording finished; an
    exception or Ctrl-C leaves nothing there (and removes the temporary file).
    """
    from tqdm import tqdm

    from rwm.tasks import make_env

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps = {steps!r}; expected an integer >= 1.")
    num_envs = cfg.num_envs
    steps_per_env = math.ceil(steps / num_envs)
    info = {"task": cfg.task_id, "num_envs": num_envs, "seed": cfg.seed, "steps_per_env": steps_per_env,
            "observation_noise": bool(cfg.env.noise.enabled), **(metadata or {})}
    refuse_existing(out, overwrite)
    env = make_env(cfg)
    device = torch.device(cfg.device)
    with DatasetWriter(out, source=source, columns=("policy_observation", "command", "reward"), metadata=info,
                       overwrite=overwrite, step_dt=env.step_dt) as writer:
        sink = EpisodeAssembler(writer, num_envs)
        recorder = DatasetRecorder(sink)
        obs = env.get_observations()
        recorder.start(obs)
        bar = tqdm(total=steps_per_env * num_envs, desc="recording", unit="transition", unit_scale=True,
                   disable=not progress, leave=False)
        for _ in range(steps_per_env):
            actions = policy(obs["policy"].to(device))
            obs, rewards, _, extras = env.step(actions)
            recorder.record(actions, obs, extras, rewards)
            bar.update(num_envs)
        bar.close()
        recorder.finish()
        episodes, records = writer.num_episodes, writer.num_records
    return {"path": str(Path(out)), "num_transitions": records - episodes, "num_records": records,
            "num_episodes": episodes, "num_envs": num_envs, "steps_per_env": steps_per_env}
