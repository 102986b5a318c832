"""`rwm visualize` end to end on a tiny Pretrain run: plots + JSON, a short video, and one-line errors."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from rwm.cli import main

FAST = ["--num-envs", "3", "--warmup-seconds", "0.1", "--quiet"]


@pytest.fixture
def run_copy(pretrain_run, tmp_path):
    target = tmp_path / pretrain_run.name
    shutil.copytree(pretrain_run, target)
    return target


def _fails_with_one_line(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


def test_visualize_writes_plots_and_the_error_over_the_horizon(run_copy, capsys):
    assert main(["visualize", "--run", str(run_copy), "--seconds", "0.5", "--no-video", *FAST]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    stored = json.loads((run_copy / "eval" / "visualize_model_2.json").read_text())
    assert report["json"] == str(run_copy / "eval" / "visualize_model_2.json")
    assert stored["relative_l1"] == report["relative_l1"] and math.isfinite(report["relative_l1"])
    assert report["horizon_steps"] == 25 and report["history"] == 4 and report["warmup_steps"] >= 5
    per_step = stored["relative_l1_per_step"]
    assert 1 <= len(per_step) <= 25 and all(math.isfinite(x) and x >= 0 for x in per_step)
    assert set(stored["relative_l1_groups"]) == {"velocities", "gravity", "joint_pos", "joint_vel", "joint_torque"}
    assert stored["num_compared_envs"] >= 1 and report["video"] is None
    for kind in ("trajectories", "error"):
        path = run_copy / "plots" / f"visualize_model_2_{kind}.png"
        assert report["plots"][kind] == str(path) and path.stat().st_size > 10_000
        assert str(path) in out  # printed where it is
    assert not (run_copy / "videos").exists()


def test_visualize_renders_the_imagined_robot_beside_the_real_one(run_copy, capsys):
    pytest.importorskip("imageio_ffmpeg")
    code = main(["visualize", "--run", str(run_copy), "--seconds", "0.12", "--video-envs", "1", *FAST])
    captured = capsys.readouterr()
    if code != 0 and "cannot render offscreen" in captured.err:
        pytest.skip(f"no OpenGL here: {captured.err.strip()}")
    assert code == 0, captured.err
    video = run_copy / "videos" / "visualize_model_2.mp4"
    assert json.loads(captured.out.strip().splitlines()[-1])["video"] == str(video)
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(video))
    frames = [frame for frame in reader.iter_data()]
    reader.close()
    assert len(frames) == 4  # the start and every second control step (25 fps at 50 Hz) for 6 steps
    frame = frames[0].astype(int)
    assert frame.shape == (360, 480, 3) and frame.std() > 5
    r, b = frame[..., 0], frame[..., 2]
    ghost = (b - r > 80).sum()  # the transparent blue imagined robot (floor and real robot are not this blue)
    real = (r - b > 80).sum()  # the orange real robot
    assert ghost > 2000 and real > 2000, (ghost, real)


def test_visualize_refuses_bad_runs_in_one_line(tmp_path, capsys):
    _fails_with_one_line(capsys, ["visualize", "--run", str(tmp_path / "missing"), "--no-video"], "does not exist")
    from rwm.training.train import train
    from tests.training.conftest import tiny_cfg

    runner, _ = train(tiny_cfg(tmp_path / "logs", num_envs=4, steps=4, iterations=1,
                               extra=("runner.logger=none",)))
    _fails_with_one_line(capsys, ["visualize", "--run", str(runner.log_dir), "--no-video"],
                         "without a world model")
    _fails_with_one_line(capsys, ["visualize", "--run", str(runner.log_dir), "--checkpoint", "model_7.pt"],
                         "model_7.pt")


def test_the_visualize_task_turns_off_noise_and_pushes_and_resamples_commands_every_2_s():
    from rwm.envs.mdp.rewards import FLAT_REWARD_WEIGHTS
    from rwm.tasks import make_task_cfg, task_ids

    assert "Velocity-Flat-Anymal-D-Visualize-v0" in task_ids()
    cfg = make_task_cfg("Velocity-Flat-Anymal-D-Visualize-v0")
    assert cfg.mode == "visualize" and cfg.env.reward_weights == FLAT_REWARD_WEIGHTS
    assert not cfg.env.noise.enabled and not cfg.sim.randomization.push
    assert tuple(cfg.env.commands.resampling_time_s) == (2.0, 2.0)


def test_visualize_help_lists_its_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["visualize", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--run", "--checkpoint", "--seconds", "--num-envs", "--no-video", "--warmup-seconds"):
        assert flag in text, flag
