"""Shared fixtures: one tiny Pretrain run for the whole package, single-threaded torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory) -> Path:
    """A finished 2-iteration tiny Pretrain run (policy + world model, history 4). Copy it before writing into it."""
    from rwm.training.train import train
    from tests.training.test_pretrain import tiny_pretrain_cfg

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner, _ = train(tiny_pretrain_cfg(tmp_path_factory.mktemp("viz_logs"), iterations=2))
    finally:
        torch.set_num_threads(previous)
    return runner.log_dir
