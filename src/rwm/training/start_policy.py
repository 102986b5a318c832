"""A new run whose policy starts as another run's (Init and Pretrain `--load-run`, Finetune's load_policy)."""

from __future__ import annotations

from pathlib import Path

import torch

from rwm.training.checkpoint import find_checkpoint, load_weights
from rwm.training.extension import RunnerExtension


class StartPolicy(RunnerExtension):
    """Loads `policy_state` (actor, critic, observation normaliser) into a new run's policy, and `optimizer_state`
    (the source run's Adam moments and, with the adaptive schedule, its learning rate) into its
    optimizer. A resumed run keeps its own policy.

    The optimizer continues too because a fresh Adam's first steps move every weight by about the
    initial learning rate whatever its gradient: continuing a trained policy that way changed it by a
    KL of 2.0 in the first iteration (docs/results.md), where the source run's updates stay near 0.01.
    """

    def __init__(self, policy_state: dict, optimizer_state: dict, source: str | Path):
        self.policy_state = policy_state
        self.optimizer_state = optimizer_state
        self.source = source

    @classmethod
    def from_run(cls, source: str, device: torch.device) -> StartPolicy:
        """The policy of run directory (or checkpoint) `source`'s latest checkpoint."""
        from rwm.training.export import policy_from_checkpoint

        if not Path(source).exists():
            raise FileNotFoundError(f"run '{source}' (--load-run, runner.start_policy) does not exist.")
        checkpoint = find_checkpoint(source)
        policy, _, payload = policy_from_checkpoint(checkpoint, device=device)
        return cls(policy.state_dict(), payload["optimizer_state_dict"], checkpoint)

    def on_new_run(self, runner) -> None:
        load_weights(runner.policy, self.policy_state, f"the policy of '{self.source}' (--load-run)")
        configured_rate = runner.alg.learning_rate
        runner.load_optimizer_state(self.optimizer_state, f"the run '{self.source}' (--load-run)")
        if runner.alg.schedule != "adaptive":  # a fixed schedule keeps the rate it is given
            runner.alg.learning_rate = configured_rate
            for group in runner.alg.optimizer.param_groups:
                group["lr"] = configured_rate
