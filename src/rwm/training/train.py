"""Training runs: the configuration of a run, and creating or resuming one and training it.

Above the runner: :func:`train` asks :mod:`rwm.training.modes` what the task mode trains on (its
environment and extensions), adds multi-process training when asked (:func:`make_runner`), and
hands everything to the one loop in :mod:`rwm.training.runner`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from rwm.config import apply_overrides
from rwm.device import resolve_device
from rwm.io import remove_temporaries
from rwm.tasks import make_task_cfg
from rwm.tasks.anymal_d_flat import TaskCfg, split_scale, stored_task_cfg, with_scale
from rwm.training.checkpoint import checkpoint_iteration, find_checkpoint, list_checkpoints, load_checkpoint
from rwm.training.distributed import DistributedTraining, distributed_algorithm
from rwm.training.extension import RunnerExtension
from rwm.training.modes import build_mode
from rwm.training.process_group import DistributedContext
from rwm.training.runner import Runner, create_run_dir, seed_everything

__all__ = ["make_runner", "resolve_train_config", "train"]


def resolve_train_config(task_id: str | None = None, overrides: Sequence[str] = (), *, num_envs: int | None = None,
                         max_iterations: int | None = None, seed: int | None = None, device: str | None = None,
                         run_name: str | None = None, resume: str | Path | None = None
                         ) -> tuple[TaskCfg, Path | None]:
    """The configuration of a training run and, when resuming, the checkpoint to continue from.

    A new run: the task's defaults, then ``scale=...`` (if among the overrides), then the
    explicit arguments, then the remaining ``KEY=VALUE`` overrides. A resumed run starts from
    the configuration stored in its checkpoint instead (the task id must match if given).
    """
    scale, rest = split_scale(list(overrides))
    checkpoint = None
    if resume is not None:
        checkpoint = find_checkpoint(resume)
        payload = load_checkpoint(checkpoint)
        cfg = stored_task_cfg(payload["config"], checkpoint)
        if task_id is not None and task_id != cfg.task_id:
            raise ValueError(f"--task {task_id} differs from the task of the run being resumed ({cfg.task_id}).")
        if scale is not None and scale != cfg.scale:
            raise ValueError(f"scale={scale} differs from the scale of the run being resumed ({cfg.scale}).")
    else:
        cfg = make_task_cfg(task_id or "Velocity-Flat-Anymal-D-Init-v0")
        if scale is not None:
            cfg = with_scale(cfg, scale)
    explicit = []
    if num_envs is not None:
        explicit.append(f"num_envs={num_envs}")
    if max_iterations is not None:
        explicit.append(f"runner.max_iterations={max_iterations}")
    if seed is not None:
        explicit.append(f"seed={seed}")
    if device is not None:
        explicit.append(f"device={device}")
    if run_name is not None:
        explicit.append(f"runner.run_name={run_name}")
    cfg = apply_overrides(cfg, explicit + rest)
    resolve_device(cfg.device)
    return cfg, checkpoint


def _remove_temporaries(log_dir: Path) -> None:
    """Delete what interrupted writes of earlier sessions left in the run directory, and say so."""
    removed = remove_temporaries(log_dir)
    if removed:
        print(f"[rwm] removed {len(removed)} temporary file(s) of interrupted writes from {log_dir}", flush=True)


def _drop_metrics_after(path: Path, iteration: int) -> None:
    """Forget metrics.jsonl rows of iterations after `iteration` (a run killed after its last checkpoint
    logged iterations that the resumed run will now redo)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            keep = int(json.loads(line).get("iteration", 0)) <= iteration
        except (ValueError, AttributeError):
            keep = False  # a line cut short by a crash
        if keep:
            kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)


def train(cfg: TaskCfg, resume_from: str | Path | None = None, extensions: Sequence[RunnerExtension] = (),
          env: Any = None, distributed: bool | DistributedContext | None = False) -> tuple[Runner, dict[str, Any]]:
    """Create (or continue, writing into the same directory) a run and train it; returns (runner, summary).

    Without explicit `env` and `extensions`, the task mode decides them (Pretrain: world-model
    learning in the real simulator; Finetune: imagination, fed by a few real environments).

    `distributed=True` trains as one rank of a torchrun launch: it joins the process group the
    launcher's environment variables describe, checks that all ranks resolved the same `cfg`,
    trains with this rank's seed (``cfg.seed + rank``) and leaves the group at the end; a
    :class:`rwm.training.distributed.DistributedContext` instead uses (and keeps) that group.
    Only rank 0 creates or writes the run directory.
    """
    if distributed is False or distributed is None:
        return _train(cfg, resume_from, extensions, env, None)
    if isinstance(distributed, DistributedContext):
        distributed.check_same_config(cfg)
        return _train(distributed.rank_config(cfg), resume_from, extensions, env, distributed)
    with DistributedContext.from_environment(cfg.device) as ctx:
        ctx.check_same_config(cfg)
        return _train(ctx.rank_config(cfg), resume_from, extensions, env, ctx)


def make_runner(cfg: TaskCfg, env: Any = None, log_dir: str | Path | None = None,
                extensions: Sequence[RunnerExtension] = (), distributed: DistributedContext | None = None) -> Runner:
    """A :class:`Runner`; with `distributed`, this rank's: PPO averages its gradients across ranks, the
    extensions join the process group, and :class:`DistributedTraining` keeps the ranks in step."""
    if distributed is None:
        return Runner(cfg, env=env, log_dir=log_dir, extensions=extensions)
    return Runner(cfg, env=env, log_dir=log_dir, extensions=[*extensions, DistributedTraining(distributed, extensions)],
                  algorithm_class=distributed_algorithm(distributed), rank=distributed.rank,
                  world_size=distributed.world_size)


def _train(cfg: TaskCfg, resume_from: str | Path | None, extensions: Sequence[RunnerExtension], env: Any,
           distributed: DistributedContext | None) -> tuple[Runner, dict[str, Any]]:
    main = distributed is None or distributed.is_main
    device = resolve_device(cfg.device)
    if env is None and not extensions:
        seed_everything(cfg.seed)  # the mode builds networks (Offline: the world model) before the Runner seeds
        cfg, env, extensions = build_mode(cfg, device)
    if resume_from is not None:
        checkpoint = find_checkpoint(resume_from)
        log_dir = checkpoint.parent
        payload = load_checkpoint(checkpoint)  # fail before building anything
        if main:
            _remove_temporaries(log_dir)
        if payload["iter"] >= cfg.runner.max_iterations:
            raise ValueError(f"the run in '{log_dir}' has already completed {payload['iter']} iterations and "
                             f"runner.max_iterations is {cfg.runner.max_iterations}; raise it (--max-iterations) "
                             "to train further.")
        later = [p.name for p in list_checkpoints(log_dir) if checkpoint_iteration(p) > payload["iter"]]
        if later:
            raise ValueError(f"'{checkpoint.name}' is not the latest checkpoint of '{log_dir}' ({later[-1]} is "
                             "newer) and resuming it would overwrite later checkpoints; resume the run directory, "
                             "or copy the checkpoint into a directory of its own first.")
        runner = make_runner(cfg, env=env, log_dir=log_dir, extensions=extensions, distributed=distributed)
        # every rank loads the checkpoint (rank 0's state is broadcast when learning starts); the
        # others keep their own random streams (seed + rank) instead of rank 0's
        runner.load(checkpoint, load_rng=main)
        if main:
            _drop_metrics_after(log_dir / "metrics.jsonl", runner.current_iteration)
    else:
        runner = make_runner(cfg, env=env, log_dir=create_run_dir(cfg) if main else None, extensions=extensions,
                             distributed=distributed)
        for ext in runner.extensions:
            ext.on_new_run(runner)
    summary = runner.learn()
    return runner, summary
