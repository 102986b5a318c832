"""Pretrain: PPO in the simulator while the world model learns from every transition."""

from __future__ import annotations

import math

import torch

from rwm.training.checkpoint import load_checkpoint
from rwm.training.train import resolve_train_config, train
from rwm.training.world_model_learning import WorldModelLearning, load_world_model
from tests.training.conftest import QUIET

TINY_WORLD_MODEL = [
    "world_model.ensemble_size=2", "world_model.rnn_num_layers=1", "world_model.rnn_hidden_size=32",
    "world_model.state_mean_shape=[32]", "world_model.state_logstd_shape=[32]", "world_model.aux_shape=[32]",
    "world_model.history_horizon=4", "world_model.forecast_horizon=2", "world_model.num_mini_batches=2",
    "world_model.mini_batch_size=16", "world_model_learning.replay_capacity=64", "world_model_learning.eval_length=12",
    "world_model_learning.eval_interval=2", "world_model_learning.eval_num_windows=4",
    "world_model_learning.eval_noise_scales=[0.0,0.4]", "world_model_learning.num_visualizations=2",
    "world_model_learning.holdout_fraction=0.25",
]


def tiny_pretrain_cfg(log_root, iterations: int):
    cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Pretrain-v0",
                                  [*QUIET, "runner.num_steps_per_env=8", "runner.save_interval=2",
                                   f"runner.log_root={log_root}", *TINY_WORLD_MODEL],
                                  num_envs=16, max_iterations=iterations, seed=0)
    return cfg


def test_pretrain_trains_the_world_model_and_checkpoints_it(tmp_path):
    cfg = tiny_pretrain_cfg(tmp_path, iterations=4)
    runner, summary = train(cfg)
    learner = runner.extensions[0]
    assert isinstance(learner, WorldModelLearning)
    # every env step went to the buffer: 4 iterations x 8 steps, plus terminal records
    assert int(learner.buffer.num_added.min()) >= 32
    losses = [row["World_Model/loss_state"] for row in runner.history if "World_Model/loss_state" in row]
    assert losses and all(math.isfinite(x) for x in losses)
    assert learner.num_updates == 2 * len(losses)
    # held-out evaluation ran at iterations 2 and 4, with plots
    evaluated = [row for row in runner.history if "World_Model/autoregressive_error" in row]
    assert evaluated and all(math.isfinite(row["World_Model/autoregressive_error"]) for row in evaluated)
    assert "World_Model/autoregressive_error_noise_0.4" in evaluated[-1]
    assert list((runner.log_dir / "plots").glob("world_model_error_*.png"))
    assert list((runner.log_dir / "plots").glob("world_model_trajectories_*.png"))
    # the checkpoint holds policy and world model, and the world model loads from it alone
    payload = load_checkpoint(runner.log_dir / "model_4.pt")
    assert {"model_state_dict", "system_dynamics_state_dict", "system_dynamics_optimizer_state_dict"} <= set(payload)
    model = load_world_model(payload)
    for name, value in learner.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)


def test_pretrain_resume_restores_the_world_model_and_its_optimizer(tmp_path):
    cfg = tiny_pretrain_cfg(tmp_path, iterations=2)
    runner, _ = train(cfg)
    trained = {k: v.clone() for k, v in runner.extensions[0].model.state_dict().items()}
    steps_before = [float(state["step"]) for state in runner.extensions[0].trainer.optimizer.state_dict()["state"].values()]
    assert steps_before and min(steps_before) > 0
    more = tiny_pretrain_cfg(tmp_path, iterations=4)
    resumed, summary = train(more, resume_from=runner.log_dir)
    learner = resumed.extensions[0]
    assert summary["session_iterations"] == 2 and resumed.current_iteration == 4
    # the resumed learner continued the trained model and optimizer (upstream lost both, docs/upstream.md #18)
    steps = [float(state["step"]) for state in learner.trainer.optimizer.state_dict()["state"].values()]
    assert min(steps) == min(steps_before) + learner.num_updates
    changed = any(not torch.equal(trained[k], v) for k, v in learner.model.state_dict().items())
    assert changed, "the resumed run did not keep training the world model"


def test_fitted_normalizer_takes_its_statistics_from_the_first_data(tmp_path):
    cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Pretrain-v0",
                                  [*QUIET, "runner.num_steps_per_env=8", f"runner.log_root={tmp_path}",
                                   *TINY_WORLD_MODEL, "world_model.normalizer=fitted"],
                                  num_envs=16, max_iterations=1, seed=0)
    runner, _ = train(cfg)
    normalizer = runner.extensions[0].model.state_normalizer
    data = runner.extensions[0].buffer.sample(2048, 6, torch.Generator().manual_seed(0))["state"]
    # the fitted statistics standardise the data (the fixed ones, docs/architecture.md#normalisation, do not
    # for this young policy)
    z = normalizer(data).reshape(-1, 45)
    moving = data.reshape(-1, 45).std(0) > 1e-3
    # (medians over features: a tiny buffer sampled as overlapping windows is noisy per feature)
    assert z.mean(0)[moving].abs().median() < 0.2
    assert 0.7 < z.std(0)[moving].median() < 1.3
    fixed = runner.extensions[0].model.cfg
    z_fixed = (data.reshape(-1, 45) - torch.tensor(fixed.state_mean)) / torch.tensor(fixed.state_std)
    assert not 0.7 < z_fixed.std(0)[moving].median() < 1.3 or z_fixed.mean(0)[moving].abs().median() >= 0.2
    assert runner.extensions[0].normalizer_fitted
