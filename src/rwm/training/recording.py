"""Datasets recorded from a training run's checkpoints: one policy's transitions, or RWM-U's mixed dataset.

`policy_actions` turns a checkpoint into the action function `rwm.data.record.record_dataset`
runs; `record_mixed_dataset` records RWM-U's mixed dataset in one call: random actions, then four
of one run's checkpoints from early to last (`MIXED_SOURCES`), merged into one file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rwm.config import apply_overrides
from rwm.data.format import DatasetError
from rwm.data.merge import merge_datasets
from rwm.data.record import record_dataset
from rwm.data.writer import refuse_existing
from rwm.envs.scripted_policies import RandomPolicy
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.checkpoint import checkpoint_iteration, list_checkpoints
from rwm.training.export import policy_from_checkpoint

__all__ = ["MIXED_SOURCES", "mixed_checkpoints", "policy_actions", "record_mixed_dataset"]

# RWM-U's mixed dataset: random actions, then a run's checkpoints from early (poor) to last (expert).
# Each source is (fraction of the run's last iteration, or None for random actions; share of the
# transitions); for a 600-iteration run the checkpoints are those of iterations 100, 250, 400 and 600.
MIXED_SOURCES: tuple[tuple[float | None, float], ...] = ((None, 0.10), (1 / 6, 0.15), (5 / 12, 0.20),
                                                        (2 / 3, 0.25), (1.0, 0.30))


def policy_actions(checkpoint: str | os.PathLike, device: str | torch.device = "cpu", *, stochastic: bool = False,
                   seed: int = 0) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """(policy obs (N, 48) -> actions (N, 12), dataset source) of a checkpoint's policy.

    Deterministic: the actor's mean. `stochastic`: actions sampled from the policy's Gaussian with
    its learned std, as in training, from a generator seeded with `seed`, so the data shows how the
    robot answers actions other than the policy's own (what an offline world model needs to learn
    what actions do; a deterministic policy makes the action a function of the state).
    """
    checkpoint = Path(checkpoint)
    policy, _, payload = policy_from_checkpoint(checkpoint, device=device)
    source = {"kind": "policy", "run": str(checkpoint.parent), "checkpoint": checkpoint.name,
              "iteration": payload["iter"], "deterministic": not stochastic}
    if not stochastic:
        return policy.act_inference, source
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    source["action_std"] = [round(float(s), 4) for s in policy.std.detach().cpu()]
    return (lambda obs: policy.act(obs, generator)), source


def mixed_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's saved checkpoints nearest to the fractions of its last iteration in `MIXED_SOURCES`."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise DatasetError(f"run directory '{run_dir}' holds no model_<iteration>.pt checkpoint to record from.")
    last = checkpoint_iteration(checkpoints[-1])
    return [min(checkpoints, key=lambda c, target=fraction * last: abs(checkpoint_iteration(c) - target))
            for fraction, _ in MIXED_SOURCES if fraction is not None]


def record_mixed_dataset(cfg: TaskCfg, run_dir: str | os.PathLike, out: str | os.PathLike, *, steps: int,
                         stochastic: bool = False, overwrite: bool = False,
                         progress: bool = True) -> dict[str, Any]:
    """Record `steps` transitions of RWM-U's mixed dataset from `run_dir` into `out` (see `MIXED_SOURCES`).

    Every part runs in `cfg` (its task, `cfg.num_envs` environments) with seed `cfg.seed` + 1, + 2, ...
    and is merged into `out`; the parts are temporary files beside it, removed at the end.
    Returns the merge summary with the parts' sources.
    """
    out = Path(out)
    refuse_existing(out, overwrite)
    checkpoints = iter(mixed_checkpoints(run_dir))
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}_parts_", dir=out.parent) as folder:
        parts = []
        for k, (fraction, share) in enumerate(MIXED_SOURCES, start=1):
            part_cfg = apply_overrides(cfg, [f"seed={cfg.seed + k}"])
            if fraction is None:
                act = RandomPolicy(part_cfg.num_envs, part_cfg.device, seed=part_cfg.seed)
                source = {"kind": "random", "scale": 1.0, "seed": part_cfg.seed}
            else:
                act, source = policy_actions(next(checkpoints), part_cfg.device, stochastic=stochastic,
                                             seed=part_cfg.seed)
            part = Path(folder) / f"part{k}.h5"
            record_dataset(part_cfg, act, part, steps=max(part_cfg.num_envs, round(steps * share)), source=source,
                           progress=progress)
            parts.append(part)
        return merge_datasets(parts, out, overwrite=overwrite)
