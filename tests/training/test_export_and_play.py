"""`rwm export` (ONNX / TorchScript match torch) and `rwm play` (metrics, JSON, video)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from rwm.cli import main
from rwm.training.evaluation import evaluate_policy
from rwm.training.export import EXPORT_TOLERANCE, export_policy, policy_from_checkpoint


@pytest.fixture
def run_copy(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def test_onnx_export_matches_torch(run_copy, capsys):
    assert main(["export", "--run", str(run_copy)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["path"] == str(run_copy / "exported" / "policy.onnx")
    assert report["max_abs_diff"] <= EXPORT_TOLERANCE

    import onnxruntime as ort

    policy, _, _ = policy_from_checkpoint(run_copy / "model_2.pt")
    # the normaliser is part of the exported graph: its statistics are not the identity here
    assert not torch.allclose(policy.actor_obs_normalizer.mean, torch.zeros(48))
    session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).normal(size=(5, 48)).astype(np.float32) * 2.0
    (actions,) = session.run(None, {"obs": obs})
    expected = policy.act_inference(torch.from_numpy(obs)).detach().numpy()
    assert actions.shape == (5, 12)
    assert np.abs(actions - expected).max() <= EXPORT_TOLERANCE


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load itself is deprecated in torch
def test_torchscript_export_matches_torch(run_copy):
    policy, _, _ = policy_from_checkpoint(run_copy / "model_1.pt")
    result = export_policy(policy, run_copy / "exported", "jit")
    scripted = torch.jit.load(result["path"])
    obs = torch.randn(7, 48)
    torch.testing.assert_close(scripted(obs), policy.act_inference(obs), rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_exported_actions_are_clipped_like_the_task_clips_them(run_copy):
    policy, _, _ = policy_from_checkpoint(run_copy / "model_2.pt")
    obs = torch.randn(64, 48) * 20.0  # far out: some actions exceed the bound
    raw = policy.act_inference(obs).detach()
    assert raw.abs().max() > 0.2
    clipped = raw.clamp(-0.2, 0.2)
    scripted = torch.jit.load(export_policy(policy, run_copy / "exported", "jit", clip_actions=0.2)["path"])
    torch.testing.assert_close(scripted(obs), clipped, rtol=0, atol=1e-6)
    report = export_policy(policy, run_copy / "exported", "onnx", clip_actions=0.2)
    import onnxruntime as ort

    session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    (actions,) = session.run(None, {"obs": obs.numpy()})
    assert report["clip_actions"] == 0.2 and np.abs(actions - clipped.numpy()).max() <= EXPORT_TOLERANCE


def test_export_check_fails_when_the_export_differs(run_copy, monkeypatch):
    import rwm.training.export as export

    monkeypatch.setattr(export, "_run_onnx", lambda path, obs: np.zeros((obs.shape[0], 12), dtype=np.float32))
    policy, _, _ = policy_from_checkpoint(run_copy / "model_2.pt")
    with pytest.raises(ValueError, match="differs from the torch policy"):
        export_policy(policy, run_copy / "exported", "onnx")


def test_play_reports_metrics_and_writes_them_into_the_run(run_copy, capsys):
    assert main(["play", "--run", str(run_copy), "--checkpoint", "model_1.pt", "--num-envs", "6", "--seconds", "0.4",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert "by command: rows planar speed, columns |yaw rate|" in out and "< 0.5 m/s" in out
    written = json.loads((run_copy / "eval" / "play_model_1.json").read_text())
    assert written == report
    assert report["iteration"] == 1 and report["num_envs"] == 6 and report["env_steps"] == 6 * 20
    assert report["observation_noise"] is False and report["pushes"] is False
    for key in ("tracking_lin_vel", "tracking_ang_vel", "fall_rate"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["lin_vel_error"] >= 0 and report["ang_vel_error"] >= 0
    assert report["robot_variant"] == "nominal" and report["robot"]["payload_mass"] == 0.0


def test_play_evaluates_the_policy_on_a_changed_robot(run_copy, capsys):
    overrides = ["sim.robot_variant=payload", "sim.robot.latency_steps=1"]
    assert main(["play", "--run", str(run_copy), "--num-envs", "2", "--seconds", "0.2", "--quiet", *overrides]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["overrides"] == overrides and report["robot_variant"] == "payload"
    assert report["robot"]["payload_mass"] == 20.0 and report["robot"]["latency_steps"] == 1
    # its own file, beside (not over) the nominal play's
    written = run_copy / "eval" / "play_model_2__sim.robot_variant-payload__sim.robot.latency_steps-1.json"
    assert json.loads(written.read_text())["robot_variant"] == "payload"

    assert main(["play", "--run", str(run_copy), "--quiet", "sim.robot_variant=heavy"]) != 0
    error = capsys.readouterr().err
    assert "'heavy'" in error and "weak_motors" in error


def test_evaluation_metrics_follow_their_definitions(trained_run):
    policy, cfg, _ = policy_from_checkpoint(trained_run / "model_2.pt")

    # A random policy topples the robots: most environments fall within 2 s.
    generator = torch.Generator().manual_seed(0)
    flail = lambda obs: torch.randn(obs.shape[0], 12, generator=generator) * 3.0  # noqa: E731
    fallen = evaluate_policy(cfg, flail, num_envs=8, seconds=2.0, progress=False)
    assert fallen["fall_rate"] >= 0.5 and fallen["falls"] >= 4
    assert fallen["mean_episode_length_s"] is not None and fallen["mean_episode_length_s"] < 2.0
    assert fallen["falls_after_start"] == fallen["falls"] and fallen["falls_after_command_change"] == 0

    # Every environment commanded to stand still, and a policy that holds still: tracking ~1, no falls.
    from rwm.config import apply_overrides
    from rwm.envs.scripted_policies import StandingPolicy

    standing_cfg = apply_overrides(cfg, ["env.commands.standing_fraction=1.0", "sim.randomization.base_vel=[0.0, 0.0]",
                                         "sim.randomization.joint_pos_scale=[1.0, 1.0]", "sim.spawn_height=0.58"])
    calm = evaluate_policy(standing_cfg, StandingPolicy(8), num_envs=8, seconds=1.0, progress=False)
    assert calm["fall_rate"] == 0.0 and calm["falls"] == 0 and calm["time_outs"] == 0
    assert calm["mean_episode_length_s"] is None
    assert calm["tracking_lin_vel"] > 0.98 and calm["tracking_ang_vel"] > 0.98
    assert calm["lin_vel_error"] < 0.05 and fallen["tracking_lin_vel"] < 0.6

    # Standing through a calm start, then flailing from 3.2 s, 0.2 s after the commands change at
    # 3 s: every fall comes within 2 s of the change and more than 3 s into its episode.
    stand, steps = StandingPolicy(8), [0]

    def stand_then_flail(obs):
        steps[0] += 1
        return stand(obs) if steps[0] <= 160 else flail(obs)

    switch_cfg = apply_overrides(standing_cfg, ["env.commands.standing_fraction=0.0",
                                                "env.commands.resampling_time_s=[3.0, 3.0]"])
    late = evaluate_policy(switch_cfg, stand_then_flail, num_envs=8, seconds=5.0, progress=False)
    assert late["falls_after_command_change"] == late["falls"] >= 2 and late["falls_after_start"] == 0

    # The command cells add up to the totals: tracking weighted by their steps, falls summed.
    for report in (fallen, calm, late):
        cells = report["by_command"]
        shares = [s for row in cells["step_share"] for s in row]
        tracking = [t for row in cells["tracking_lin_vel"] for t in row]
        assert len(shares) == 9 and math.isclose(sum(shares), 1.0)
        assert math.isclose(sum(s * t for s, t in zip(shares, tracking) if t is not None),
                            report["tracking_lin_vel"], rel_tol=1e-6)
        assert sum(f for row in cells["falls"] for f in row) == report["falls"]
    # standing commands are slow and straight: every step in the first cell
    assert calm["by_command"]["step_share"][0][0] == 1.0 and calm["by_command"]["tracking_lin_vel"][1][1] is None


def test_play_renders_a_video(run_copy, capsys):
    pytest.importorskip("imageio_ffmpeg")
    args = ["play", "--run", str(run_copy), "--num-envs", "2", "--seconds", "0.2", "--quiet", "--video"]
    code = main(args)
    captured = capsys.readouterr()
    if code != 0 and "cannot render offscreen" in captured.err:
        pytest.skip(f"no OpenGL here: {captured.err.strip()}")
    assert code == 0, captured.err
    report = json.loads(captured.out.strip().splitlines()[-1])
    video = run_copy / "videos" / "play_model_2.mp4"
    assert report["video"] == str(video) and video.stat().st_size > 1000

    import imageio.v2 as imageio

    reader = imageio.get_reader(str(video))
    frame = reader.get_data(0)
    assert frame.shape == (360, 960, 3)  # two 480x360 tiles side by side
    assert frame.std() > 5  # not a blank image
