"""Ctrl-C (SIGINT) and SIGTERM during `rwm train` save a loadable checkpoint and exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rwm.training.checkpoint import load_checkpoint


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_training_saves_a_checkpoint_and_exits_0(tmp_path, sig):
    command = [sys.executable, "-m", "rwm.cli", "train", "--num-envs", "16", "--max-iterations", "100000", "--quiet",
               "runner.num_steps_per_env=8", "runner.save_interval=100000", f"runner.log_root={tmp_path}",
               "sim.num_threads=1"]
    # one torch thread: on a shared 2-core machine a 2-thread team can stall tiny updates for seconds
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        metrics = None
        while time.monotonic() < deadline:  # wait until it is iterating
            found = list(tmp_path.glob("anymal_d_flat/*/metrics.jsonl"))
            if found and found[0].read_text().count("\n") >= 2:
                metrics = found[0]
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert metrics is not None, "training did not start iterating within 60 s"
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped_by"] == sig.name
    checkpoints = list(metrics.parent.glob("model_*.pt"))
    assert len(checkpoints) == 1 and not list(metrics.parent.glob(".*.tmp"))
    payload = load_checkpoint(checkpoints[0])
    assert payload["iter"] == summary["iterations"] >= 2
    assert checkpoints[0].name == f"model_{payload['iter']}.pt"
    assert payload["infos"]["reason"] == "interrupt"
    # every completed iteration was logged, nothing after the checkpoint
    assert metrics.read_text().count("\n") == payload["iter"]
    assert (metrics.parent / "plots" / "learning_curves.png").stat().st_size > 0  # drawn on the way out
