"""A new run whose policy starts as another run's (Init and Pretrain `--load-run`, Finetune's load_policy)."""

from __future__ import annotations

from pathlib import Path

import torch

from rwm.training.checkpoint import find_checkpoint, load_weights
from rwm.training.extension import RunnerExtension


class StartPolicy(RunnerExtension):
    """Loads `policy_state` (actor, critic, observation normaliser) into a new run's policy; its optimizer
    starts fresh. A resumed run keeps its own policy."""

    def __init__(self, policy_state: dict, source: str | Path):
        self.policy_state = policy_state
        self.source = source

    @classmethod
    def from_run(cls, source: str, device: torch.device) -> StartPolicy:
        """The policy of run directory (or checkpoint) `source`'s latest checkpoint."""
        from rwm.training.export import policy_from_checkpoint

        if not Path(source).exists():
            raise FileNotFoundError(f"run '{source}' (--load-run, runner.start_policy) does not exist.")
        checkpoint = find_checkpoint(source)
        return cls(policy_from_checkpoint(checkpoint, device=device)[0].state_dict(), checkpoint)

    def on_new_run(self, runner) -> None:
        load_weights(runner.policy, self.policy_state, f"the policy of '{self.source}' (--load-run)")
