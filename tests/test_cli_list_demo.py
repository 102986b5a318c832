"""`rwm list` and `rwm demo`, through the installed console script (and in-process for Ctrl-C)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rwm import demo
from rwm.cli import main
from rwm.tasks import task_ids

REPOSITORY = Path(__file__).resolve().parents[1]
# tiny training and evaluation sizes for every stage of the pipelines
TINY = ["num_envs=16", "runner.num_steps_per_env=8", "runner.progress_bar=false", "sim.num_threads=1",
        "runner.eval.num_envs=8", "runner.eval.seconds=1"]
TINY_WORLD_MODEL = ["world_model.ensemble_size=2", "world_model.rnn_num_layers=1", "world_model.rnn_hidden_size=32",
                    "world_model.history_horizon=4", "world_model.forecast_horizon=2",
                    "world_model.mini_batch_size=16", "world_model_learning.replay_capacity=64",
                    "world_model_learning.eval_length=12", "world_model_learning.eval_interval=100"]
CHECK = ["--num-envs", "4", "--seconds", "0.2", "--no-video", "--quiet"]


def run_rwm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rwm.cli", *args], capture_output=True, text=True, timeout=300)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def assert_summary_names_existing_files(report: dict) -> dict:
    """The summary file the JSON line names exists and every stage result it names exists; returns the summary."""
    summary = json.loads(Path(report["summary"]).read_text())
    for stage in summary["stages"]:
        if stage["status"] == "done":
            assert Path(stage["file"]).is_file(), stage
    return summary


def test_list_prints_one_line_per_task():
    result = run_rwm("list")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == task_ids()


def test_demo_measures_standing_and_random_policies(tmp_path):
    result = run_rwm("demo", *CHECK, "--pretrain-iterations", "0", f"runner.log_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["standing"]["control_steps_per_s"] > 0
    assert report["standing"]["mean_base_height_m"] > 0.45
    assert "trained" not in report and "mbpo" not in report
    summary = assert_summary_names_existing_files(report)
    assert [stage["stage"] for stage in summary["stages"]] == ["1/1 simulator check"]
    assert json.loads(Path(summary["stages"][0]["file"]).read_text())["standing"] == report["standing"]


def test_demo_trains_and_evaluates_a_policy(tmp_path):
    result = run_rwm("demo", "--pipeline", "init", *CHECK, "--train-iterations", "2", *TINY,
                     f"runner.log_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    trained = report["trained"]
    assert trained["iterations"] == 2 and 0.0 <= trained["tracking_lin_vel"] <= 1.0
    assert list((tmp_path / "anymal_d_flat").glob("*_demo/model_2.pt"))
    summary = assert_summary_names_existing_files(report)
    assert [stage["file"] is not None for stage in summary["stages"]] == [True, True, True]
    evaluation = json.loads(Path(summary["stages"][2]["file"]).read_text())  # the evaluation is saved
    assert evaluation["tracking_lin_vel"] == trained["tracking_lin_vel"]
    # each number beside a standing robot's and PPO's, and the verdict in words
    assert f"{demo.PPO_REFERENCE['tracking_lin_vel']:.3f}" in result.stdout and "standing robot" in result.stdout
    assert f"{evaluation['standing_robot']['tracking_lin_vel']:.3f}" in result.stdout
    assert f"[rwm demo] the robot {report['verdict']}: " in result.stdout
    assert report["verdict"] in ("walks", "does not walk", "moves but does not track its commands",
                                 "tracks its commands but falls")


def test_demo_runs_the_model_based_pipeline(tmp_path):
    result = run_rwm("demo", *CHECK, "--pretrain-iterations", "2", "--finetune-iterations", "2", *TINY,
                     *TINY_WORLD_MODEL, f"runner.log_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    mbpo = report["mbpo"]
    assert mbpo["pretrain_iterations"] == 2 and mbpo["finetune_iterations"] == 2
    assert 0.0 <= mbpo["tracking_lin_vel"] <= 1.0 and mbpo["real_transitions"] > 0
    assert set(mbpo["wall_clock_s"]) == {"pretrain", "finetune"}
    assert list((tmp_path / "anymal_d_flat").glob("*_demo_finetune/model_2.pt"))
    assert list((tmp_path / "anymal_d_flat").glob("*_demo_finetune/plots/*.png"))  # the side-by-side plots
    summary = assert_summary_names_existing_files(report)
    assert [stage["stage"] for stage in summary["stages"]] == [
        "1/5 simulator check", "2/5 Pretrain", "3/5 Finetune", "4/5 real simulator", "5/5 side by side"]
    assert summary["interrupted"] is None and summary["verdict"] == report["verdict"]
    for stage in summary["stages"]:
        assert stage["file"] in result.stdout  # the printed summary names every result file
    assert "world-model error" in result.stdout and f"{demo.WORLD_MODEL_REFERENCE['relative_l1']:.3f}" in result.stdout


def test_demo_rejects_bad_input_with_one_line(tmp_path):
    for args, fragment in ((["env.nosie.enabled=false"], "unknown config key 'env.nosie'"),
                           (["--num-envs", "abc"], "'abc' is not an integer"),
                           (["--task", "Nope-v0"], "unknown task id")):
        result = run_rwm("demo", "--num-envs", "2", "--seconds", "0.1", "--pretrain-iterations", "0",
                         f"runner.log_root={tmp_path}", *args)
        assert result.returncode != 0
        assert fragment in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "demo").exists()  # nothing is written before the input is checked


# ----------------------------------------------------------------------------- one Ctrl-C ends the demo
def never_run(stage: demo.Stage) -> demo.Stage:
    def run(_: demo.DemoRun) -> dict:
        raise AssertionError(f"stage '{stage.title}' ran after the demo was interrupted")

    return dataclasses.replace(stage, run=run)


def interrupted_demo(monkeypatch, capsys, tmp_path, second_stage: demo.Stage) -> tuple[int, list[str], dict]:
    """`rwm demo` in-process with `second_stage` as its Pretrain and the later stages failing if they run;
    returns (exit code, stdout lines, summary.json)."""
    later = [never_run(stage) for stage in demo.PIPELINES["mbpo"][1][1:]]
    monkeypatch.setitem(demo.PIPELINES, "mbpo", ("mbpo", (second_stage, *later)))
    code = main(["demo", *CHECK, "--pretrain-iterations", "2", *TINY, *TINY_WORLD_MODEL,
                 f"runner.log_root={tmp_path}"])
    lines = capsys.readouterr().out.strip().splitlines()
    summaries = list((tmp_path / "demo").glob("*/summary.json"))
    assert len(summaries) == 1
    return code, lines, json.loads(summaries[0].read_text())


def test_one_ctrl_c_during_training_ends_the_demo(monkeypatch, capsys, tmp_path):
    """A real SIGINT during Pretrain: the training saves its checkpoint, then no later stage runs."""
    from rwm.training.logger import RunLogger

    log_iteration = RunLogger.log_iteration

    def ctrl_c_after_the_first_iteration(self, *args, **kwargs):
        log_iteration(self, *args, **kwargs)
        monkeypatch.setattr(RunLogger, "log_iteration", log_iteration)
        os.kill(os.getpid(), signal.SIGINT)

    def pretrain_with_ctrl_c(run: demo.DemoRun) -> dict:
        monkeypatch.setattr(RunLogger, "log_iteration", ctrl_c_after_the_first_iteration)
        return demo.pretrain(run)

    code, lines, summary = interrupted_demo(monkeypatch, capsys, tmp_path,
                                            dataclasses.replace(demo.PRETRAIN, run=pretrain_with_ctrl_c))
    assert code == 130
    assert lines[-1].startswith("[rwm demo] interrupted by Ctrl-C during 2/5 Pretrain: 3/5 Finetune, "
                                "4/5 real simulator, 5/5 side by side not run; what was done is in ")
    assert sum("interrupted" in line for line in lines if line.startswith("[rwm demo]")) == 1
    assert summary["interrupted"] == {"by": "Ctrl-C", "stage": "2/5 Pretrain"}
    assert [stage["status"] for stage in summary["stages"]] == [
        "done", "interrupted by Ctrl-C (checkpoint saved)", "not run", "not run", "not run"]
    pretrain = json.loads(Path(summary["stages"][1]["file"]).read_text())
    assert pretrain["pretrain_iterations"] == 1 and Path(pretrain["checkpoint"]).is_file()


def test_ctrl_c_outside_training_ends_the_demo(monkeypatch, capsys, tmp_path):
    def pressed(run: demo.DemoRun) -> dict:
        raise KeyboardInterrupt

    code, lines, summary = interrupted_demo(monkeypatch, capsys, tmp_path, dataclasses.replace(demo.PRETRAIN,
                                                                                              run=pressed))
    assert code == 130 and lines[-1].startswith("[rwm demo] interrupted by Ctrl-C during 2/5 Pretrain: ")
    assert [stage["status"] for stage in summary["stages"]][1:3] == ["interrupted by Ctrl-C (no result)", "not run"]
    assert Path(summary["stages"][0]["file"]).is_file()


# ----------------------------------------------------------------------------- references and verdict
def test_the_references_are_the_committed_benchmarks():
    results = REPOSITORY / "bench" / "results"
    ppo = json.loads((results / "ppo_init.json").read_text())
    mbpo = json.loads((results / "mbpo.json").read_text())
    quality = json.loads((results / "world_model_quality.json").read_text())
    for key in ("tracking_lin_vel", "tracking_ang_vel", "fall_rate"):
        assert demo.PPO_REFERENCE[key] == ppo[key]
    assert (ppo["eval_num_envs"], ppo["eval_seconds"]) == (128, 20.0)  # as the demo evaluates (runner.eval)
    for key in ("tracking_lin_vel", "fall_rate"):
        assert demo.MBPO_REFERENCE[key] == mbpo[key]
    assert demo.WORLD_MODEL_REFERENCE["relative_l1"] == quality["error_368"]["gru_ar"]["0"]


@pytest.mark.parametrize("tracking, fall_rate, verdict", [
    (0.93, 0.01, "walks"), (0.93, 0.20, "tracks its commands but falls"),
    (0.50, 0.00, "moves but does not track its commands"), (0.19, 0.00, "does not walk")])
def test_walk_verdict(tracking, fall_rate, verdict):
    assert demo.walk_verdict(tracking, fall_rate, standing_tracking=0.20)[0] == verdict
