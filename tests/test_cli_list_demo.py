"""`rwm list` and `rwm demo`, through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys

from rwm.tasks import task_ids


def run_rwm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rwm.cli", *args], capture_output=True, text=True, timeout=300)


def test_list_prints_one_line_per_task():
    result = run_rwm("list")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == task_ids()


def test_demo_measures_standing_and_random_policies():
    result = run_rwm("demo", "--num-envs", "8", "--seconds", "1", "--pretrain-iterations", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["standing"]["control_steps_per_s"] > 0
    assert report["standing"]["mean_base_height_m"] > 0.45
    assert "trained" not in report and "mbpo" not in report


def test_demo_trains_and_evaluates_a_policy(tmp_path):
    result = run_rwm("demo", "--pipeline", "init", "--num-envs", "4", "--seconds", "0.2", "--train-iterations", "2",
                     "--no-video", "--quiet",
                     "num_envs=16", "runner.num_steps_per_env=8", f"runner.log_root={tmp_path}",
                     "runner.progress_bar=false", "sim.num_threads=1")
    assert result.returncode == 0, result.stderr
    trained = json.loads(result.stdout.strip().splitlines()[-1])["trained"]
    assert trained["iterations"] == 2 and 0.0 <= trained["tracking_lin_vel"] <= 1.0
    assert list((tmp_path / "anymal_d_flat").glob("*_demo/model_2.pt"))


def test_demo_runs_the_model_based_pipeline(tmp_path):
    tiny = ["num_envs=16", "runner.num_steps_per_env=8", f"runner.log_root={tmp_path}", "runner.progress_bar=false",
            "sim.num_threads=1", "world_model.ensemble_size=2", "world_model.rnn_num_layers=1",
            "world_model.rnn_hidden_size=32", "world_model.history_horizon=4", "world_model.forecast_horizon=2",
            "world_model.mini_batch_size=16", "world_model_learning.replay_capacity=64",
            "world_model_learning.eval_length=12", "world_model_learning.eval_interval=100"]
    result = run_rwm("demo", "--num-envs", "4", "--seconds", "0.2", "--pretrain-iterations", "2",
                     "--finetune-iterations", "2", "--no-video", "--quiet", *tiny)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])["mbpo"]
    assert report["pretrain_iterations"] == 2 and report["finetune_iterations"] == 2
    assert 0.0 <= report["tracking_lin_vel"] <= 1.0 and report["real_transitions"] > 0
    assert list((tmp_path / "anymal_d_flat").glob("*_demo_finetune/model_2.pt"))
    assert list((tmp_path / "anymal_d_flat").glob("*_demo_finetune/plots/*.png"))  # the side-by-side plots
    assert "where everything is" in result.stdout


def test_demo_rejects_bad_input_with_one_line():
    for args, fragment in ((["env.nosie.enabled=false"], "unknown config key 'env.nosie'"),
                           (["--num-envs", "abc"], "'abc' is not an integer"),
                           (["--task", "Nope-v0"], "unknown task id")):
        result = run_rwm("demo", "--num-envs", "2", "--seconds", "0.1", "--pretrain-iterations", "0", *args)
        assert result.returncode != 0
        assert fragment in result.stderr
        assert "Traceback" not in result.stderr
