"""`rwm train | play | export`: help texts, a tiny end-to-end run, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from rwm.cli import main
from rwm.training.checkpoint import save_checkpoint


def _fails_with_one_line(capsys, argv, fragment):
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


def _usage_error(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


@pytest.mark.parametrize("command, flags", [
    ("train", ["--task", "--num-envs", "--max-iterations", "--seed", "--device", "--run-name", "--resume", "KEY=VALUE"]),
    ("play", ["--run", "--checkpoint", "--num-envs", "--seconds", "--video"]),
    ("export", ["--run", "--checkpoint", "--format"]),
])
def test_every_command_explains_its_flags(capsys, command, flags):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text, flag


def test_train_end_to_end_then_resume(tmp_path, capsys):
    common = ["--num-envs", "8", "--seed", "3", "--quiet", "runner.num_steps_per_env=4", f"runner.log_root={tmp_path}",
              "runner.logger=none", "sim.num_threads=1"]
    assert main(["train", "--max-iterations", "1", "--run-name", "cli", *common]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "anymal_d_flat"
    (run_dir,) = list(run.iterdir())
    assert run_dir.name.endswith("_cli") and first["log_dir"] == str(run_dir) and first["iterations"] == 1
    assert main(["train", "--resume", str(run_dir), "--max-iterations", "2", "--quiet"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["iterations"] == 2 and second["log_dir"] == str(run_dir)
    assert sorted(p.name for p in run_dir.glob("model_*.pt")) == ["model_1.pt", "model_2.pt"]
    assert list(run.iterdir()) == [run_dir]  # no second run directory


def test_malformed_values_and_unknown_keys_fail_with_one_line(capsys, tmp_path):
    _usage_error(capsys, ["train", "--num-envs", "abc"], "'abc' is not an integer")
    _usage_error(capsys, ["play"], "--run")
    _usage_error(capsys, ["export", "--run", "x", "--format", "tflite"], "invalid choice")
    _fails_with_one_line(capsys, ["train", "runner.max_iterations=abc"], "config key 'runner.max_iterations' expects an int")
    _fails_with_one_line(capsys, ["train", "runner.max_iteration=3"], "unknown config key 'runner.max_iteration'")
    _fails_with_one_line(capsys, ["train", "--task", "Nope-v0"], "unknown task id")
    _fails_with_one_line(capsys, ["play", "--run", str(tmp_path / "missing")], "does not exist")
    _fails_with_one_line(capsys, ["export", "--run", str(tmp_path / "missing")], "does not exist")
    _fails_with_one_line(capsys, ["train", "--resume", str(tmp_path / "missing")], "does not exist")


def test_checkpoints_that_do_not_fit_fail_with_one_line(capsys, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    _fails_with_one_line(capsys, ["play", "--run", str(run), "--checkpoint", "model_9.pt"], "model_9.pt")
    payload = torch.load(run / "model_2.pt", weights_only=True)
    payload["obs_layout"] = {"policy": 45, "num_actions": 12, "layout_version": 1}
    save_checkpoint(run / "model_3.pt", payload)
    _fails_with_one_line(capsys, ["play", "--run", str(run)], "observation layout")
    _fails_with_one_line(capsys, ["export", "--run", str(run)], "observation layout")
    (run / "model_4.pt").write_bytes((run / "model_2.pt").read_bytes()[:500])
    _fails_with_one_line(capsys, ["play", "--run", str(run)], "truncated")


def test_errors_reach_the_terminal_without_a_traceback(tmp_path):
    for args, fragment in ((["train", "runner.max_iterations=abc"], "runner.max_iterations"),
                           (["play", "--run", str(tmp_path / "none")], "does not exist")):
        result = subprocess.run([sys.executable, "-m", "rwm.cli", *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and fragment in result.stderr
        assert result.stderr.count("\n") == 1
