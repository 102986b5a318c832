"""How environment steps become world-model records: state k with the action taken FROM it.

`TransitionRecorder` writes into anything with a ReplayBuffer's ``add`` / ``add_terminal`` /
``start_new_episodes`` (the replay buffer of Pretrain and Finetune, or a dataset recording's
episode assembler), so every consumer pairs states and actions the same way.
"""

from __future__ import annotations

import torch

from rwm.world_model.replay_buffer import ReplayBuffer

__all__ = ["SYSTEM_GROUPS", "TransitionRecorder"]

SYSTEM_GROUPS = ("system_state", "system_contact", "system_termination")


class TransitionRecorder:
    """Feeds a ReplayBuffer from an environment loop: state k with the action taken FROM it
    (docs/upstream.md #7), and, when episodes end, the states they ended in (docs/upstream.md #11)."""

    def __init__(self, buffer: ReplayBuffer):
        self.buffer = buffer
        self._previous: dict[str, torch.Tensor] | None = None

    def start(self, obs: dict[str, torch.Tensor]) -> None:
        """Begin (or restart) recording at observations `obs`; earlier data is not continued."""
        self._previous = {name: obs[name].clone() for name in SYSTEM_GROUPS}
        self.buffer.start_new_episodes()

    def record(self, actions: torch.Tensor, next_obs: dict[str, torch.Tensor], extras: dict) -> None:
        """One environment step: `actions` were taken from the previous observations, giving `next_obs`.

        The environment's `extras["actions"]`, the actions it applied (clipped with env.clip_actions),
        are recorded when present, so the data pairs each state with what the robot really received.
        """
        previous = self._previous
        actions = extras.get("actions", actions)
        self.buffer.add(previous["system_state"], actions, previous["system_contact"],
                        previous["system_termination"])
        terminal = extras.get("terminal")
        if terminal is not None:
            self.buffer.add_terminal(terminal["ids"], terminal["system_state"], terminal["system_contact"],
                                     terminal["system_termination"])
        self._previous = {name: next_obs[name].clone() for name in SYSTEM_GROUPS}
