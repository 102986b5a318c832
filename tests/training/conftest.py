"""Tiny training configurations and a shared tiny run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from rwm.training.runner import Runner, create_run_dir
from rwm.training.train import resolve_train_config

QUIET = ["runner.console=none", "runner.progress_bar=false", "sim.num_threads=1"]


def tiny_cfg(log_root: Path | str = "logs", num_envs: int = 16, steps: int = 8, iterations: int = 2, seed: int = 0,
             extra: tuple[str, ...] = ()):
    """A seconds-long Init configuration writing its runs under `log_root`."""
    cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Init-v0",
                                  [*QUIET, f"runner.num_steps_per_env={steps}", "runner.save_interval=1",
                                   f"runner.log_root={log_root}", *extra],
                                  num_envs=num_envs, max_iterations=iterations, seed=seed)
    return cfg


def tiny_run(log_root: Path, **kwargs) -> Runner:
    cfg = tiny_cfg(log_root, **kwargs)
    runner = Runner(cfg, log_dir=create_run_dir(cfg))
    runner.learn()
    return runner


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished 2-iteration run directory (model_1.pt, model_2.pt, config.yaml, events, metrics.jsonl).

    Tests must not modify it; copy it first.
    """
    return tiny_run(tmp_path_factory.mktemp("shared_logs"), extra=("policy.obs_normalization=true",)).log_dir
