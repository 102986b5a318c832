"""Per-environment, time-ordered replay buffer of real transitions for world-model training.

Upstream slices windows in physical ring order with one write pointer shared by all
environments, so its windows can jump from the newest to the oldest data, never wrap
continuously from slot C-1 to 0, run across time-out resets and end on a post-reset state
(docs/upstream.md #9 to #11). Here every environment has its own ring and write position, windows
are read in *logical* (time) order, and each record knows whether it starts an episode or ends
one, so a window is valid exactly when it is one stretch of one episode.

Record semantics. Record k of environment e holds the raw state s_k (45), the action a_k taken
*from* s_k (12), and the contact (8) and termination (1) flags *of* s_k. When an episode ends
after step k (a fall or the time limit), the environment auto-resets; its final state s_{k+1}
is appended as one extra *terminal* record with a zero action, and the next record starts a new
episode. The loop that fills the buffer is therefore::

    obs = env.get_observations()
    action = policy(obs)
    buffer.add(obs["system_state"], action, obs["system_contact"], obs["system_termination"])
    obs, rewards, dones, extras = env.step(action)
    if "terminal" in extras:
        t = extras["terminal"]
        buffer.add_terminal(t["ids"], t["system_state"], t["system_contact"], t["system_termination"])

A window of length L (env e, logical start j) is valid when all L records are stored (it never
crosses the seam between the newest and the oldest record), no record at offsets 1..L-1 starts
an episode, and no record at offsets 0..L-2 is terminal. A terminal record can thus only be
the last target of a window, which is what the model must learn to predict.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = ("state", "action", "contact", "termination")


class ReplayBuffer:
    """Fixed-capacity ring per environment; storage (num_envs, capacity, d) per stream.

    Environments may hold different numbers of records, because terminal records are extra.
    Everything is stored raw (not normalised): the normaliser is fixed and belongs to the model.
    """

    def __init__(self, num_envs: int, capacity: int, state_dim: int = 45, action_dim: int = 12,
                 contact_dim: int = 8, termination_dim: int = 1, device: str | torch.device = "cpu"):
        for name, value, low in (("num_envs", num_envs, 1), ("capacity", capacity, 1), ("state_dim", state_dim, 1),
                                 ("action_dim", action_dim, 1), ("contact_dim", contact_dim, 0),
                                 ("termination_dim", termination_dim, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ReplayBuffer {name} = {value!r}; expected an integer >= {low}.")
        self.num_envs = num_envs
        self.capacity = capacity
        self.device = torch.device(device)
        self.dims = {"state": state_dim, "action": action_dim, "contact": contact_dim,
                     "termination": termination_dim}
        n, c, dev = num_envs, capacity, self.device
        self.data = {name: torch.zeros(n, c, d, device=dev) for name, d in self.dims.items()}  # (N, C, d)
        self.episode_start = torch.zeros(n, c, dtype=torch.bool, device=dev)  # (N, C) record begins an episode
        self.terminal = torch.zeros(n, c, dtype=torch.bool, device=dev)  # (N, C) record ends an episode
        self.write_pos = torch.zeros(n, dtype=torch.long, device=dev)  # (N,) next physical slot
        self.num_stored = torch.zeros(n, dtype=torch.long, device=dev)  # (N,) records held, <= capacity
        self.num_added = torch.zeros(n, dtype=torch.long, device=dev)  # (N,) records ever written
        self._next_starts_episode = torch.ones(n, dtype=torch.bool, device=dev)  # (N,)
        self._env_range = torch.arange(n, device=dev)
        # per-window tables derived from the stored records, keyed by (table, window length); a write clears them
        self._window_cache: dict[tuple[str, int], object] = {}

    # ------------------------------------------------------------------ writing
    def add(self, state: torch.Tensor, action: torch.Tensor, contact: torch.Tensor,
            termination: torch.Tensor) -> None:
        """Append one record to every environment; each argument is (num_envs, d)."""
        values = self._checked(self.num_envs, state=state, action=action, contact=contact,
                               termination=termination)
        self._write(self._env_range, values, is_terminal=False)

    def add_terminal(self, ids: torch.Tensor, state: torch.Tensor, contact: torch.Tensor,
                     termination: torch.Tensor) -> None:
        """Append the final state of the episodes that just ended in envs `ids` (k,), with a zero action."""
        ids = torch.as_tensor(ids, device=self.device).long().reshape(-1)
        if ids.numel() == 0:
            return
        if bool((ids < 0).any()) or bool((ids >= self.num_envs).any()):
            raise ValueError(f"add_terminal ids {ids.tolist()[:8]} contain values outside [0, {self.num_envs}).")
        if ids.unique().numel() != ids.numel():
            raise ValueError(f"add_terminal ids {ids.tolist()[:8]} contain duplicates; expected each env at most once.")
        k = ids.numel()
        action = torch.zeros(k, self.dims["action"], device=self.device)
        values = self._checked(k, state=state, action=action, contact=contact, termination=termination)
        self._write(ids, values, is_terminal=True)

    def start_new_episodes(self, ids: torch.Tensor | None = None) -> None:
        """Mark that the next record of envs `ids` (all if None) begins a new episode.

        For resets that happen outside `env.step` (an explicit `env.reset()`, a resumed run), where
        no terminal record closes the old episode; `load_state_dict` calls it for every env.
        """
        if ids is None:
            self._next_starts_episode[:] = True
        else:
            self._next_starts_episode[self._env_mask(ids)] = True

    def _checked(self, rows: int, **values: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, value in values.items():
            expected = (rows, self.dims[name])
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"replay buffer {name} has shape {got}; expected {expected}.")
            out[name] = value.to(self.device, torch.float32)
        return out

    def _write(self, ids: torch.Tensor, values: dict[str, torch.Tensor], is_terminal: bool) -> None:
        pos = self.write_pos[ids]  # (k,)
        for name, value in values.items():
            self.data[name][ids, pos] = value
        self.episode_start[ids, pos] = self._next_starts_episode[ids]
        self.terminal[ids, pos] = is_terminal
        self._next_starts_episode[ids] = is_terminal
        self.write_pos[ids] = (pos + 1) % self.capacity
        self.num_stored[ids] = torch.clamp(self.num_stored[ids] + 1, max=self.capacity)
        self.num_added[ids] += 1
        self._window_cache.clear()

    # ------------------------------------------------------------------ windows
    def _logical_index(self) -> torch.Tensor:
        """(N, C) physical slot of each env's j-th oldest stored record (meaningful for j < num_stored)."""
        oldest = (self.write_pos - self.num_stored) % self.capacity  # (N,)
        return (oldest[:, None] + torch.arange(self.capacity, device=self.device)) % self.capacity

    def _valid(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(valid (N, C-L+1) bool over logical starts, flat indices of the valid entries); cached until a write."""
        if ("valid", length) in self._window_cache:
            return self._window_cache["valid", length]
        n, c = self.num_envs, self.capacity
        if length > c:
            valid = torch.zeros(n, 0, dtype=torch.bool, device=self.device)
        else:
            phys = self._logical_index()  # (N, C)
            terminal = self.terminal.gather(1, phys)  # (N, C) in time order
            starts = self.episode_start.gather(1, phys)
            # break[j]: records j and j+1 are not one continuous stretch of one episode
            breaks = terminal[:, :-1] | starts[:, 1:]  # (N, C-1)
            cum = torch.zeros(n, c, dtype=torch.int32, device=self.device)  # cum[j] = breaks before j
            cum[:, 1:] = breaks.cumsum(1, dtype=torch.int32)
            no_break = cum[:, length - 1:] == cum[:, :c - length + 1]  # (N, C-L+1): breaks in [j, j+L-2]
            start = torch.arange(c - length + 1, device=self.device)
            stored = start[None, :] + length <= self.num_stored[:, None]  # never crosses the seam
            valid = no_break & stored
        result = (valid, torch.nonzero(valid.flatten()).flatten())
        self._window_cache["valid", length] = result
        return result

    def num_valid_windows(self, length: int, env_ids: torch.Tensor | None = None) -> int:
        """How many distinct valid windows of `length` records exist (optionally among `env_ids`)."""
        self._check_length(length)
        valid, flat = self._valid(length)
        if env_ids is None:
            return int(flat.numel())
        return int(valid[self._env_mask(env_ids)].sum())

    def sample(self, batch_size: int, length: int, generator: torch.Generator | None = None,
               env_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`batch_size` windows drawn uniformly with replacement among the valid ones.

        Returns {"state", "action", "contact", "termination"}: each (batch_size, length, d), raw.
        `env_ids` restricts the draw to those environments (e.g. environments held out for
        evaluation). `generator` must live on the buffer's device.
        """
        self._check_length(length)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size = {batch_size!r}; expected an integer >= 1.")
        valid, flat = self._valid(length)
        if env_ids is not None:
            masked = valid & self._env_mask(env_ids)[:, None]
            flat = torch.nonzero(masked.flatten()).flatten()
        if flat.numel() == 0:
            stored = int(self.num_stored.max())
            raise ValueError(f"the replay buffer holds no valid window of length {length} "
                             f"(longest stored stretch per env is at most {stored} records, episodes may be "
                             f"shorter); collect more data or ask for shorter windows.")
        chosen = flat[torch.randint(flat.numel(), (batch_size,), generator=generator, device=self.device)]
        width = valid.shape[1]  # chosen: (B,) flat indices into (N, C-L+1)
        env, start = chosen // width, chosen % width  # (B,), (B,)
        oldest = (self.write_pos[env] - self.num_stored[env]) % self.capacity  # (B,)
        offsets = torch.arange(length, device=self.device)
        phys = (oldest[:, None] + start[:, None] + offsets[None, :]) % self.capacity  # (B, L)
        rows = env[:, None].expand_as(phys)
        return {name: self.data[name][rows, phys] for name in STREAMS}

    def _check_length(self, length: int) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"window length = {length!r}; expected an integer >= 1.")

    def _env_mask(self, env_ids: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(env_ids, device=self.device).long().reshape(-1)
        if bool((ids < 0).any()) or bool((ids >= self.num_envs).any()):
            raise ValueError(f"env_ids {ids.tolist()[:8]} contain values outside [0, {self.num_envs}).")
        mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        mask[ids] = True
        return mask

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_records(cls, data: dict[str, np.ndarray], episode_start: np.ndarray, terminal: np.ndarray,
                     num_stored: np.ndarray, device: str | torch.device = "cpu") -> "ReplayBuffer":
        """A buffer holding given records, lane by lane in time order (e.g. a dataset's episodes).

        `data` maps each stream (state, action, contact, termination) to (N, C, d); `episode_start`
        and `terminal` (N, C) mark where episodes begin and which records are their final states;
        lane n holds `num_stored[n]` records from position 0 on.
        """
        num_lanes, capacity = episode_start.shape
        buffer = cls(num_lanes, capacity, **{f"{name}_dim": data[name].shape[-1] for name in
                                             ("state", "action", "contact", "termination")}, device=device)
        stored = torch.as_tensor(np.asarray(num_stored), dtype=torch.long)
        state = {f"data.{name}": torch.from_numpy(np.asarray(value, dtype=np.float32)) for name, value in data.items()}
        state.update(episode_start=torch.from_numpy(episode_start), terminal=torch.from_numpy(terminal),
                     write_pos=stored % capacity, num_stored=stored, num_added=stored.clone(),
                     next_starts_episode=torch.ones(num_lanes, dtype=torch.bool))
        buffer.load_state_dict(state)
        return buffer

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors only, so it loads with `torch.load(weights_only=True)`."""
        out = {f"data.{name}": value for name, value in self.data.items()}
        out.update(episode_start=self.episode_start, terminal=self.terminal, write_pos=self.write_pos,
                   num_stored=self.num_stored, num_added=self.num_added,
                   next_starts_episode=self._next_starts_episode)
        return {key: value.clone() for key, value in out.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a buffer of the same shape; a mismatch raises ValueError naming the tensor.

        The next record of every env is taken to start a new episode, since the saved episodes
        cannot continue in a fresh simulator.
        """
        targets = {f"data.{name}": value for name, value in self.data.items()}
        targets.update(episode_start=self.episode_start, terminal=self.terminal, write_pos=self.write_pos,
                       num_stored=self.num_stored, num_added=self.num_added,
                       next_starts_episode=self._next_starts_episode)
        missing = sorted(set(targets) - set(state))
        if missing:
            raise ValueError(f"replay buffer state is missing {missing}.")
        for key, target in targets.items():
            if tuple(state[key].shape) != tuple(target.shape):
                raise ValueError(f"replay buffer state '{key}' has shape {tuple(state[key].shape)}; "
                                 f"expected {tuple(target.shape)} (num_envs, capacity, dims must match).")
        for key, target in targets.items():
            target.copy_(state[key].to(self.device))
        # the environments that will feed this buffer next are not where the saved ones stopped
        self.start_new_episodes()
        self._window_cache.clear()
