"""What each task mode trains on: the environment the runner steps and the extensions it adds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.checkpoint import find_checkpoint, load_weights
from rwm.training.extension import RunnerExtension
from rwm.training.mbpo import build_finetune
from rwm.training.offline import build_offline
from rwm.training.world_model_learning import WorldModelLearning


def build_mode(cfg: TaskCfg, device: torch.device) -> tuple[TaskCfg, Any, list[RunnerExtension]]:
    """(cfg, env, extensions) for `cfg.mode`; env None means the task's real-simulator env.

    The returned cfg may complete the given one (Finetune takes the world model's architecture
    from its checkpoint), and is what the run records.
    """
    start = [StartPolicy(cfg.runner.start_policy, device)] if cfg.runner.start_policy else []
    if cfg.mode == "pretrain":
        return cfg, None, [*start, WorldModelLearning(cfg, device)]
    if cfg.mode == "finetune":
        return build_finetune(cfg, device)
    if cfg.mode == "offline":
        return build_offline(cfg, device)
    if cfg.mode == "visualize":
        raise ValueError(f"'{cfg.task_id}' is not trained; run `rwm visualize --run RUN_DIR` on a Pretrain or "
                         "Finetune run instead.")
    return cfg, None, start


class StartPolicy(RunnerExtension):
    """A new run's policy starts as another run's (`runner.start_policy`); its optimizer starts fresh."""

    def __init__(self, source: str, device: torch.device):
        from rwm.training.export import policy_from_checkpoint

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"run '{source}' (--load-run, runner.start_policy) does not exist.")
        self.checkpoint = find_checkpoint(path)
        self.policy_state = policy_from_checkpoint(self.checkpoint, device=device)[0].state_dict()

    def on_new_run(self, runner) -> None:
        load_weights(runner.policy, self.policy_state, f"the policy of '{self.checkpoint}' (--load-run)")
