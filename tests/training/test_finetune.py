"""Finetune (MBPO-PPO): imagination training from a Pretrain run, warm-up, and load errors."""

from __future__ import annotations

import math

import pytest
import torch

from rwm.cli import main
from rwm.training.checkpoint import load_checkpoint
from rwm.training.modes import build_mode
from rwm.training.runner import Runner, create_run_dir
from rwm.training.train import resolve_train_config, train
from tests.training.conftest import QUIET
from tests.training.test_pretrain import TINY_WORLD_MODEL, tiny_pretrain_cfg

TINY_FINETUNE = ["finetune.num_real_envs=4", "finetune.real_steps_per_iteration=8", "finetune.initial_real_steps=24",
                 "finetune.real_eval_interval=2", "finetune.real_eval_num_envs=4", "finetune.real_eval_seconds=0.2"]


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    runner, _ = train(tiny_pretrain_cfg(tmp_path_factory.mktemp("pretrain"), iterations=2))
    return runner.log_dir


def finetune_cfg(log_root, load_run, iterations=2, extra=()):
    cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Finetune-v0",
                                  [*QUIET, "runner.num_steps_per_env=8", "runner.save_interval=2",
                                   f"runner.log_root={log_root}", *TINY_WORLD_MODEL, *TINY_FINETUNE,
                                   *([f"finetune.load_run={load_run}"] if load_run else []), *extra],
                                  num_envs=16, max_iterations=iterations, seed=0)
    return cfg


def test_tiny_finetune_run_learns_in_imagination_and_checkpoints(pretrain_run, tmp_path):
    runner, summary = train(finetune_cfg(tmp_path, pretrain_run, iterations=2,
                                         extra=("env.reward_weights.uncertainty=-1.0",)))
    assert summary["iterations"] == 2
    assert type(runner.env.sim).__name__ == "ImaginationSimulator"  # PPO's data is imagined
    last = runner.history[-1]
    assert "Imagination/epistemic_uncertainty" in last and last["Imagination/epistemic_uncertainty"] > 0
    assert math.isfinite(last["Real/tracking_lin_vel"])  # evaluated in the real simulator at iteration 2
    assert last["Real/transitions"] == 4 * 24 + 2 * 4 * 8  # initial steps + 2 iterations of real steps
    assert any(key.startswith("Episode_Reward/") for row in runner.history for key in row)
    payload = load_checkpoint(runner.log_dir / "model_2.pt")
    assert {"system_dynamics_state_dict", "system_dynamics_optimizer_state_dict"} <= set(payload)
    assert payload["config"]["mode"] == "finetune"
    assert payload["config"]["world_model"]["rnn_hidden_size"] == 32  # the loaded model's architecture


@pytest.fixture
def steps_by_simulator(monkeypatch) -> dict[int, int]:
    """Real simulator steps taken, per simulator (its id), counted from here on."""
    from rwm.sim.mujoco import MujocoSimulator

    counts: dict[int, int] = {}
    original_step = MujocoSimulator.step

    def counting_step(self, actions):
        counts[id(self)] = counts.get(id(self), 0) + self.num_envs
        return original_step(self, actions)

    monkeypatch.setattr(MujocoSimulator, "step", counting_step)
    return counts


def test_a_finetune_run_from_scratch_counts_every_real_step_it_learns_from(tmp_path, steps_by_simulator):
    """No run and no world model: an untrained model and a random policy; the real transitions the run
    reports are exactly the real simulator steps taken for learning, and the progress evaluations'
    steps are counted apart."""
    runner, summary = train(finetune_cfg(tmp_path, None, iterations=3))
    extension = runner.extensions[0]
    assert summary["iterations"] == 3
    assert extension.learner.num_updates > 0  # the untrained model learned from the real robots
    learning_steps = steps_by_simulator.pop(id(extension.real_env.sim))
    assert learning_steps == 4 * 24 + 3 * 4 * 8  # initial random steps + 3 iterations of 4 robots x 8 steps
    assert extension.real_transitions == learning_steps
    assert runner.history[-1]["Real/transitions"] == learning_steps
    # one progress evaluation (interval 2) of 4 robots x 0.2 s, never part of the learning budget
    assert extension.real_eval_transitions == sum(steps_by_simulator.values()) == 4 * 10
    payload = load_checkpoint(runner.log_dir / "model_3.pt")
    assert payload["finetune_real_transitions"] == learning_steps
    assert payload["finetune_real_eval_transitions"] == 4 * 10


def test_adapting_to_a_changed_robot_spends_exactly_the_real_budget(pretrain_run, tmp_path, steps_by_simulator,
                                                                    capsys):
    """The nominal run's model and policy adapt on a changed robot: the real robots are the changed
    ones, they stop once `real_budget` is spent (the last iteration within it takes fewer steps),
    and the world model keeps learning from what they recorded."""
    budget = 4 * 24 + 4 * 8 + 4 * 3  # initial steps, one full iteration, 3 steps of the next
    runner, _ = train(finetune_cfg(tmp_path, pretrain_run, iterations=4, extra=(
        "finetune.load_policy=true", "sim.robot_variant=weak_motors", f"finetune.real_budget={budget + 2}")))
    extension = runner.extensions[0]
    assert extension.real_env.sim.cfg.robot_params.motor_strength == 0.5  # the changed robot's preset
    assert steps_by_simulator[id(extension.real_env.sim)] == extension.real_transitions == budget
    assert [row["Real/transitions"] for row in runner.history] == [budget - 12, budget, budget, budget]
    assert "the real budget of 142 transitions is spent" in capsys.readouterr().out
    # the world model learned every iteration, also after the budget ran out
    assert extension.learner.num_updates == 4 * extension.cfg.world_model.num_mini_batches
    with pytest.raises(ValueError, match="finetune.real_budget = 50; expected 0"):
        finetune_cfg(tmp_path, pretrain_run, extra=("finetune.real_budget=50",))


def test_a_resumed_finetune_run_keeps_its_replay_buffer(pretrain_run, tmp_path, capsys):
    first, _ = train(finetune_cfg(tmp_path, pretrain_run, iterations=2))
    saved = load_checkpoint(first.log_dir / "model_2.pt")["finetune_replay_buffer"]
    saved_records = int(saved["num_added"].sum())
    assert saved_records >= 4 * 24 + 2 * 4 * 8  # initial steps + 2 iterations (+ terminal records)

    resumed, _ = train(finetune_cfg(tmp_path, pretrain_run, iterations=3), resume_from=first.log_dir)
    buffer = resumed.extensions[0].learner.buffer
    # A fresh buffer would hold only the 4 x 24 initial steps of the resumed run and one iteration.
    assert int(buffer.num_added.sum()) >= saved_records + 4 * 8
    assert resumed.history[-1]["Real/transitions"] == 4 * 24 + 3 * 4 * 8

    # A run resumed with other real robots keeps going on fresh real data, and says so.
    train(finetune_cfg(tmp_path, pretrain_run, iterations=4, extra=("finetune.num_real_envs=2",)),
          resume_from=first.log_dir)
    assert "not restoring the checkpoint's replay buffer" in capsys.readouterr().out


def test_warmup_iterations_leave_the_policy_unchanged(pretrain_run, tmp_path):
    cfg = finetune_cfg(tmp_path, pretrain_run, iterations=2, extra=("finetune.warmup_iterations=2",))
    cfg, env, extensions = build_mode(cfg, torch.device("cpu"))
    runner = Runner(cfg, env=env, log_dir=create_run_dir(cfg), extensions=extensions)
    policy_before = {k: v.clone() for k, v in runner.policy.state_dict().items()}
    model_before = {k: v.clone() for k, v in extensions[0].learner.model.state_dict().items()}
    runner.learn()
    for name, value in runner.policy.state_dict().items():
        if "normalizer" not in name:  # normalisers still see the data; the weights must not move
            assert torch.equal(value, policy_before[name]), name
    assert any(not torch.equal(v, model_before[k]) for k, v in extensions[0].learner.model.state_dict().items())
    assert all(row["Imagination/warmup"] == 1.0 for row in runner.history)


def test_load_policy_starts_from_the_pretrain_policy(pretrain_run, tmp_path):
    cfg = finetune_cfg(tmp_path, pretrain_run, extra=("finetune.load_policy=true", "finetune.warmup_iterations=5"),
                       iterations=1)
    runner, _ = train(cfg)
    pretrained = load_checkpoint(pretrain_run / "model_2.pt")["model_state_dict"]
    torch.testing.assert_close(runner.policy.state_dict()["actor.0.weight"], pretrained["actor.0.weight"])


def test_finetune_load_errors_are_one_sentence(pretrain_run, tmp_path, capsys):
    flags = ["train", "--task", "Velocity-Flat-Anymal-D-Finetune-v0", "--quiet", "--num-envs", "8",
             "--max-iterations", "1"]
    overrides = [f"runner.log_root={tmp_path}", *TINY_WORLD_MODEL, *TINY_FINETUNE]
    cases = [
        (["--load-run", str(tmp_path / "missing")], [], "does not exist"),
        (["--world-model", str(tmp_path / "missing.pt")], [], "does not exist"),
        ([], ["finetune.load_policy=true"], "needs a run"),
    ]
    for extra_flags, extra_overrides, fragment in cases:
        assert main(flags + extra_flags + overrides + extra_overrides) != 0
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err, err
    # an Init run holds no world model
    init_cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Init-v0", [*QUIET, f"runner.log_root={tmp_path}",
                                       "runner.num_steps_per_env=4"], num_envs=4, max_iterations=1)
    init_runner, _ = train(init_cfg)
    assert main(flags + ["--load-run", str(init_runner.log_dir)] + overrides) != 0
    assert "holds no world model" in capsys.readouterr().err
    # --load-run on a task that takes neither a world model nor a policy from a run
    assert main(["train", "--task", "Velocity-Flat-Anymal-D-Offline-v0", "--load-run", str(pretrain_run)]) != 0
    assert "Finetune task only" in capsys.readouterr().err


def test_mixed_windows_takes_the_recorded_share_from_the_recorded_source():
    from rwm.training.world_model_learning import mixed_windows

    def source(value):
        return lambda n: {"state": torch.full((n, 3, 45), value)}

    both = mixed_windows(8, 0.25, source(0.0), source(1.0))
    assert both["state"].shape == (8, 3, 45)
    assert int(both["state"][:, 0, 0].sum()) == 2  # round(0.25 * 8) recorded windows
    assert int(mixed_windows(8, 0.25, source(0.0), None)["state"].sum()) == 0  # no recorded data: all from the buffer
    assert int(mixed_windows(4, 1.0, source(0.0), source(1.0))["state"][:, 0, 0].sum()) == 4


@pytest.fixture(scope="module")
def standing_dataset(tmp_path_factory):
    from rwm.data import record_dataset
    from rwm.envs.scripted_policies import StandingPolicy
    from rwm.tasks import make_task_cfg
    from rwm.config import apply_overrides

    cfg = apply_overrides(make_task_cfg("Velocity-Flat-Anymal-D-Init-v0"), ["num_envs=4", "sim.num_threads=1"])
    out = tmp_path_factory.mktemp("finetune_data") / "standing.h5"
    record_dataset(cfg, StandingPolicy(4, "cpu"), out, steps=4 * 60, source={"kind": "test"}, progress=False)
    return out


def test_finetune_keeps_learning_from_a_recorded_dataset(pretrain_run, standing_dataset, tmp_path):
    from rwm.data import DatasetReader

    cfg = finetune_cfg(tmp_path, pretrain_run, iterations=1,
                       extra=(f"finetune.dataset={standing_dataset}", "finetune.dataset_share=0.5"))
    cfg, env, extensions = build_mode(cfg, torch.device("cpu"))
    learner = extensions[0].learner
    drawn = []
    sample = learner.recorded.sample

    def counting_sample(n, length, generator=None, **options):
        drawn.append((n, length))
        return sample(n, length, generator, **options)

    learner.recorded.sample = counting_sample
    runner = Runner(cfg, env=env, log_dir=create_run_dir(cfg), extensions=extensions)
    runner.learn()
    history = learner.cfg.history_horizon
    window = history + learner.cfg.forecast_horizon
    # imagination's resets and the world model's mini-batches both drew windows from the dataset
    assert any(length == history for _, length in drawn)
    assert (learner.cfg.mini_batch_size // 2, window) in drawn
    with DatasetReader(standing_dataset) as reader:
        assert runner.history[-1]["Real/recorded_transitions"] == reader.num_transitions


def test_finetune_dataset_errors_are_one_sentence(pretrain_run, tmp_path, capsys):
    flags = ["train", "--task", "Velocity-Flat-Anymal-D-Finetune-v0", "--quiet", "--num-envs", "8",
             "--max-iterations", "1", "--load-run", str(pretrain_run)]
    overrides = [f"runner.log_root={tmp_path}", *TINY_WORLD_MODEL, *TINY_FINETUNE]
    assert main(flags + ["--dataset", str(tmp_path / "missing.h5")] + overrides) != 0
    err = capsys.readouterr().err
    assert "missing.h5" in err and "does not exist" in err and "Traceback" not in err
    assert main(flags + overrides + ["finetune.dataset_share=1.5"]) != 0
    assert "finetune.dataset_share = 1.5" in capsys.readouterr().err
