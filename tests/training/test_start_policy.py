"""Init and Pretrain runs that start from another run's policy (`--load-run`, runner.start_policy)."""

from __future__ import annotations

import torch

from rwm.cli import main
from rwm.training.train import resolve_train_config, train
from tests.training.conftest import QUIET

INIT = "Velocity-Flat-Anymal-D-Init-v0"


def init_cfg(log_root, iterations, extra=()):
    cfg, _ = resolve_train_config(INIT, [*QUIET, f"runner.log_root={log_root}", "runner.num_steps_per_env=4", *extra],
                                  num_envs=4, max_iterations=iterations, seed=0)
    return cfg


def test_a_new_init_run_continues_another_runs_policy_on_a_changed_robot(tmp_path):
    nominal, _ = train(init_cfg(tmp_path, 2))
    start = {key: value.clone() for key, value in nominal.policy.state_dict().items()}
    # zero iterations: the new run's policy is the loaded one, normaliser and action noise included
    loaded, _ = train(init_cfg(tmp_path, 0, (f"runner.start_policy={nominal.log_dir}",)))
    for key, value in loaded.policy.state_dict().items():
        assert torch.equal(value, start[key]), key
    # ... and its optimizer goes on where the source's stopped: Adam's moments and the adaptive learning rate
    source_adam, loaded_adam = nominal.alg.optimizer.state_dict(), loaded.alg.optimizer.state_dict()
    assert loaded.alg.learning_rate == nominal.alg.learning_rate != 1.0e-3
    assert loaded_adam["param_groups"][0]["lr"] == nominal.alg.learning_rate
    for index, moments in source_adam["state"].items():
        assert torch.equal(loaded_adam["state"][index]["exp_avg_sq"], moments["exp_avg_sq"]), index
    # a fixed schedule keeps the rate it is given
    fixed, _ = train(init_cfg(tmp_path, 0, (f"runner.start_policy={nominal.log_dir}", "algorithm.schedule=fixed",
                                            "algorithm.learning_rate=0.0004")))
    assert fixed.alg.learning_rate == fixed.alg.optimizer.param_groups[0]["lr"] == 0.0004
    # it is a new run on the changed robot, which learns from the loaded policy on
    adapted, summary = train(init_cfg(tmp_path, 1, (f"runner.start_policy={nominal.log_dir}",
                                                    "sim.robot_variant=weak_motors")))
    assert adapted.log_dir != nominal.log_dir and summary["iterations"] == 1
    assert adapted.env.sim.cfg.robot_params.motor_strength == 0.5
    changed = [key for key, value in adapted.policy.state_dict().items() if not torch.equal(value, start[key])]
    assert any(key.startswith("actor") for key in changed)


def test_start_policy_errors_are_one_sentence(tmp_path, capsys):
    flags = ["train", "--task", INIT, "--quiet", "--num-envs", "4", "--max-iterations", "1",
             f"runner.log_root={tmp_path}", "runner.num_steps_per_env=4"]
    assert main([*flags, "--load-run", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err
    assert "run '" in err and "does not exist" in err and "Traceback" not in err, err
    assert main(["train", "--task", "Velocity-Flat-Anymal-D-Finetune-v0", f"runner.start_policy={tmp_path}"]) != 0
    err = capsys.readouterr().err
    assert "applies to Init and Pretrain" in err and "finetune.load_policy=true" in err, err
