"""What each task mode trains on: the environment the runner steps and the extensions it adds."""

from __future__ import annotations

from typing import Any

import torch

from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.extension import RunnerExtension
from rwm.training.mbpo import build_finetune
from rwm.training.offline import build_offline
from rwm.training.start_policy import StartPolicy
from rwm.training.world_model_learning import WorldModelLearning


def build_mode(cfg: TaskCfg, device: torch.device) -> tuple[TaskCfg, Any, list[RunnerExtension]]:
    """(cfg, env, extensions) for `cfg.mode`; env None means the task's real-simulator env.

    The returned cfg may complete the given one (Finetune takes the world model's architecture
    from its checkpoint), and is what the run records.
    """
    start = [StartPolicy.from_run(cfg.runner.start_policy, device)] if cfg.runner.start_policy else []
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
