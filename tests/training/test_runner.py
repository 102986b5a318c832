"""The training runner: it learns, writes a complete run directory, and stops cleanly on a NaN loss."""

from __future__ import annotations

import json
import re

import pytest
import torch

from rwm.config import ConfigError, load_yaml, to_dict
from rwm.envs.mdp.rewards import FLAT_REWARD_WEIGHTS, INIT_REWARD_WEIGHTS
from rwm.sim.imagination import ImaginationCfg
from rwm.tasks import make_task_cfg
from rwm.tasks.anymal_d_flat import PAPER_SCALE, TaskCfg, stored_task_cfg, with_scale
from rwm.training.checkpoint import load_checkpoint
from rwm.training.extension import RunnerView
from rwm.training.runner import Runner, TrainingError, create_run_dir
from rwm.training.train import resolve_train_config

from .conftest import QUIET, tiny_cfg, tiny_run


def test_ppo_improves_the_reward_of_the_locomotion_task():
    # The real Init task and rewards, shrunk: 64 robots, 0.5 s episodes (about one episode per
    # 24-step rollout, so every iteration sees the same phase of an episode and the per-step
    # reward is comparable across iterations). With seeds 0-2 the mean reward per step goes
    # from about -0.016 to -0.005 in 12 iterations; with a learning rate of 1e-6 it stays
    # within 0.002 of where it started.
    cfg, _ = resolve_train_config(None, [*QUIET, "runner.logger=none", "runner.num_steps_per_env=24",
                                         "env.episode_length_s=0.5", "runner.init_at_random_ep_len=false"],
                                  num_envs=64, max_iterations=12, seed=0)
    runner = Runner(cfg)
    summary = runner.learn()
    rewards = [h["Train/mean_step_reward"] for h in runner.history]
    assert summary["iterations"] == 12 and summary["env_steps"] == 12 * 64 * 24
    first, last = sum(rewards[:2]) / 2, sum(rewards[-3:]) / 3
    assert last > first + 0.004, f"mean reward per step by iteration: {[round(r, 4) for r in rewards]}"
    assert runner.history[-1]["Policy/mean_noise_std"] < 1.0


def test_run_directory_holds_config_checkpoints_events_and_metrics(tmp_path):
    runner = tiny_run(tmp_path, extra=("runner.run_name=smoke",))
    run = runner.log_dir
    assert run.parent == tmp_path / "anymal_d_flat"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_smoke", run.name)
    assert load_yaml(TaskCfg, run / "config.yaml") == runner.cfg
    assert sorted(p.name for p in run.glob("model_*.pt")) == ["model_1.pt", "model_2.pt"]
    assert list(run.glob("events.out.tfevents.*"))
    assert not list(run.glob(".*.tmp"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    for key in ("Loss/value_function", "Loss/surrogate", "Loss/entropy", "Loss/learning_rate", "Loss/kl",
                "Policy/mean_noise_std", "Perf/total_fps", "Perf/collection time", "Perf/learning_time",
                "Train/mean_step_reward", "env_steps"):
        assert key in rows[-1], key
    payload = load_checkpoint(run / "model_2.pt")
    assert payload["iter"] == 2 and payload["obs_layout"] == {"policy": 48, "num_actions": 12, "layout_version": 1}
    assert isinstance(runner, RunnerView)  # what extensions are promised of the runner


def test_episode_statistics_are_logged_per_reward_term(tmp_path):
    # 0.2 s episodes end inside every rollout, so the env's per-episode log reaches the sinks
    runner = tiny_run(tmp_path, extra=("env.episode_length_s=0.2", "runner.logger=none"))
    scalars = runner.history[-1]
    assert "Episode_Reward/track_lin_vel_xy_exp" in scalars and "Episode_Termination/time_out" in scalars
    assert "Train/mean_reward" in scalars and scalars["Train/mean_episode_length"] <= 10


def test_a_nan_loss_stops_training_naming_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, iterations=5, extra=("runner.logger=none",))
    runner = Runner(cfg, log_dir=create_run_dir(cfg))
    update, calls = runner.alg.update, []

    def failing_update():
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("PPO surrogate loss is nan, so the update was stopped before touching the weights.")
        return update()

    runner.alg.update = failing_update
    with pytest.raises(TrainingError) as info:
        runner.learn()
    message = str(info.value)
    assert "iteration 3" in message and "nan" in message and "model_2.pt" in message
    assert "\n" not in message
    assert sorted(p.name for p in runner.log_dir.glob("model_*.pt")) == ["model_1.pt", "model_2.pt"]
    assert load_checkpoint(runner.log_dir / "model_2.pt")["iter"] == 2


def test_scale_paper_sets_the_published_sizes_and_later_overrides_win():
    cfg, _ = resolve_train_config(None, ["scale=paper"])
    assert cfg.scale == "paper" and cfg.num_envs == 4096 and cfg.runner.num_steps_per_env == 24
    assert cfg.runner.max_iterations == 300 and cfg.policy.obs_normalization is False
    cfg, _ = resolve_train_config(None, ["runner.max_iterations=7", "scale=paper"], num_envs=32)
    assert cfg.num_envs == 32 and cfg.runner.max_iterations == 7 and cfg.scale == "paper"
    pretrain = with_scale(make_task_cfg("Velocity-Flat-Anymal-D-Pretrain-v0"), "paper")
    assert pretrain.runner.max_iterations == PAPER_SCALE["pretrain"]["runner.max_iterations"] == 2000
    # Pretrain's PPO: the published flat weights at paper scale, the Init weights (which walk within
    # the CPU budget) at CPU scale
    assert pretrain.env.reward_weights == FLAT_REWARD_WEIGHTS
    assert make_task_cfg("Velocity-Flat-Anymal-D-Pretrain-v0").env.reward_weights == INIT_REWARD_WEIGHTS
    finetune = with_scale(make_task_cfg("Velocity-Flat-Anymal-D-Finetune-v0"), "paper")
    assert (finetune.num_envs, finetune.runner.num_steps_per_env, finetune.finetune.num_real_envs,
            finetune.finetune.warmup_iterations) == (4096, 96, 10, 500)
    offline = with_scale(make_task_cfg("Velocity-Flat-Anymal-D-Offline-v0"), "paper")
    assert offline.num_envs == 8192 and offline.runner.max_iterations == 500
    assert round(offline.env.episode_length_s / offline.sim.step_dt) == 256


def test_stored_configs_of_earlier_versions_still_load():
    # Earlier versions kept the imagination settings inside `finetune` / `offline`; their runs must
    # still resume and evaluate, with those settings in the `imagination` section.
    for task, section in (("Velocity-Flat-Anymal-D-Finetune-v0", "finetune"),
                          ("Velocity-Flat-Anymal-D-Offline-v0", "offline")):
        stored = to_dict(make_task_cfg(task))
        del stored["imagination"]
        stored[section].update(sample_state=True, member_per_episode=False, fall_tilt=1.0)
        cfg = stored_task_cfg(stored, "model_600.pt")
        assert (cfg.imagination.sample_state, cfg.imagination.member_per_episode, cfg.imagination.fall_tilt) == (
            True, False, 1.0)
        assert stored_task_cfg(to_dict(cfg), "model_600.pt") == cfg
    stored = to_dict(make_task_cfg("Velocity-Flat-Anymal-D-Offline-v0"))
    stored["imagination"]["fall_tilt"] = 0.0
    with pytest.raises(ConfigError, match=r"stored in 'model_7.pt' is not valid here .*imagination.fall_tilt = 0.0"):
        stored_task_cfg(stored, "model_7.pt")
    with pytest.raises(ConfigError, match="apply to the Finetune and Offline tasks only"):
        TaskCfg(imagination=ImaginationCfg())


def test_stored_configs_naming_removed_settings_still_load_with_a_note(capsys):
    # Earlier versions wrote these experiment settings into every config.yaml and checkpoint.
    stored = to_dict(make_task_cfg("Velocity-Flat-Anymal-D-Offline-v0"))
    stored["env"]["uncertainty_offset"] = 0.0
    stored["imagination"].update(episode_start_share=0.0, before_fall_share=0.25, before_fall_s=1.0,
                                 halt_epistemic=2.0)
    stored["offline"].update(penalty_start_iteration=300, penalty_ramp_iterations=100)
    cfg = stored_task_cfg(stored, "logs/run/model_300.pt")
    assert cfg == make_task_cfg("Velocity-Flat-Anymal-D-Offline-v0")
    note = capsys.readouterr().out
    assert note.count("\n") == 1 and note.startswith("[rwm] 'logs/run/model_300.pt' names settings rwm no longer has")
    for setting in ("env.uncertainty_offset=0.0", "imagination.before_fall_share=0.25", "imagination.halt_epistemic=2.0",
                    "offline.penalty_start_iteration=300", "offline.penalty_ramp_iterations=100"):
        assert setting in note
    assert stored_task_cfg(to_dict(cfg), "model_300.pt") == cfg and capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match="unknown config key 'imagination.halt_epistemic'"):
        resolve_train_config("Velocity-Flat-Anymal-D-Offline-v0", ["imagination.halt_epistemic=2.0"], num_envs=4)


def test_imagined_episodes_see_commands_change_and_evaluation_keeps_the_common_schedule():
    from rwm.training.evaluation import eval_config

    assert not make_task_cfg("Velocity-Flat-Anymal-D-Init-v0").env.commands.random_first_duration
    for task in ("Velocity-Flat-Anymal-D-Finetune-v0", "Velocity-Flat-Anymal-D-Offline-v0"):
        cfg = make_task_cfg(task)
        assert cfg.env.commands.random_first_duration  # 5.12 s episodes, 10 s commands
        assert not eval_config(cfg).env.commands.random_first_duration
    finetune = make_task_cfg("Velocity-Flat-Anymal-D-Finetune-v0")
    assert finetune.env.commands.fast_share == 0.3 and finetune.imagination.push
    assert eval_config(finetune).env.commands.fast_share == 0.0  # every policy is evaluated on uniform commands


def test_cpu_scale_defaults_and_ppo_numbers():
    cfg = make_task_cfg("Velocity-Flat-Anymal-D-Init-v0")
    assert cfg.scale == "cpu" and cfg.num_envs == 1024 and cfg.runner.num_steps_per_env == 24
    a = cfg.algorithm
    assert (a.clip_param, a.entropy_coef, a.num_learning_epochs, a.num_mini_batches, a.learning_rate, a.desired_kl,
            a.gamma, a.lam, a.max_grad_norm, a.schedule) == (0.2, 0.005, 5, 4, 1e-3, 0.01, 0.99, 0.95, 1.0, "adaptive")
    assert cfg.policy.actor_hidden_dims == [128, 128, 128] and cfg.policy.init_noise_std == 1.0


@pytest.mark.parametrize("override, fragment", [
    ("runner.max_iteration=3", "unknown config key 'runner.max_iteration'"),
    ("runner.max_iterations=abc", "runner.max_iterations"),
    ("algorithm.gamma=1.5", "algorithm.gamma"),
    ("policy.activation=sigmoid", "policy.activation"),
    ("algorithm.num_mini_batches=1000", "num_mini_batches"),
    ("scale=huge", "scale"),
])
def test_bad_overrides_raise_one_sentence(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        resolve_train_config(None, [override], num_envs=4)


def test_the_device_must_exist():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_train_config(None, [], device="cuda")
