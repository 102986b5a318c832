"""A new run whose policy starts as another run's (Init and Pretrain `--load-run`, Finetune's load_policy)."""

from __future__ import annotations

from pathlib import Path

import torch

from rwm.training.checkpoint import CheckpointError, find_checkpoint, load_weights
from rwm.training.extension import RunnerExtension


class StartPolicy(RunnerExtension):
    """Loads `policy_state` (actor, critic, observation normaliser) into a new run's policy, and the source
    run's optimizer state (Adam's moments and, with the adaptive schedule, its learning rate) into its
    optimizer. A resumed run keeps its own policy.

    The optimizer continues too because a fresh Adam's first steps move every weight by about the
    initial learning rate whatever its gradient: continuing a trained policy that way changed it by a
    KL of 2.0 in the first iteration (docs/results.md), where the source run's updates stay near 0.01.
    """

    def __init__(self, policy_state: dict, source: str | Path, optimizer_state: dict | None = None):
        self.policy_state = policy_state
        self.source = source
        self.optimizer_state = optimizer_state

    @classmethod
    def from_run(cls, source: str, device: torch.device) -> StartPolicy:
        """The policy of run directory (or checkpoint) `source`'s latest checkpoint."""
        from rwm.training.export import policy_from_checkpoint

        if not Path(source).exists():
            raise FileNotFoundError(f"run '{source}' (--load-run, runner.start_policy) does not exist.")
        checkpoint = find_checkpoint(source)
        policy, _, payload = policy_from_checkpoint(checkpoint, device=device)
        return cls(policy.state_dict(), checkpoint, payload.get("optimizer_state_dict"))

    def on_new_run(self, runner) -> None:
        load_weights(runner.policy, self.policy_state, f"the policy of '{self.source}' (--load-run)")
        if self.optimizer_state is None:
            return
        alg = runner.alg
        configured_rate = alg.learning_rate
        try:
            alg.optimizer.load_state_dict(self.optimizer_state)
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"the optimizer state of '{self.source}' (--load-run) does not fit this run's "
                                  f"policy ({error}).") from None
        # the adaptive schedule goes on from the rate the source's KL rule had reached; a fixed one keeps its own
        if alg.schedule != "adaptive":
            alg.learning_rate = configured_rate
        else:
            alg.learning_rate = float(alg.optimizer.param_groups[0]["lr"])
        for group in alg.optimizer.param_groups:
            group["lr"] = alg.learning_rate
