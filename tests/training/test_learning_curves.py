"""Every training mode leaves learning curves in <run>/plots/ (2 tiny iterations each)."""

from __future__ import annotations

import pytest

from rwm.viz.plots import LEARNING_CURVES_FILE, learning_curves_figure, read_metrics
from tests.training.conftest import tiny_cfg
from tests.training.test_finetune import finetune_cfg
from tests.training.test_offline import dataset, offline_cfg  # noqa: F401 - dataset is a fixture
from tests.training.test_pretrain import tiny_pretrain_cfg


@pytest.mark.parametrize("mode", ["init", "pretrain", "finetune", "offline"])
def test_every_training_mode_writes_learning_curves(mode, tmp_path, request):
    from rwm.training.train import train

    cfg = {"init": lambda: tiny_cfg(tmp_path),
           "pretrain": lambda: tiny_pretrain_cfg(tmp_path, iterations=2),
           "finetune": lambda: finetune_cfg(tmp_path, None, iterations=2),  # from scratch: no Pretrain run
           "offline": lambda: offline_cfg(tmp_path, request.getfixturevalue("dataset"))}[mode]()
    assert cfg.mode == mode and cfg.runner.max_iterations == 2
    runner, _ = train(cfg)
    plots = sorted((runner.log_dir / "plots").glob("*.png"))
    assert runner.log_dir / "plots" / LEARNING_CURVES_FILE in plots
    assert all(p.stat().st_size > 0 for p in plots)


def test_learning_curves_show_what_the_run_logged():
    rows = [{"iteration": 1.0, "Train/mean_step_reward": 0.1, "Imagination/epistemic_uncertainty": 0.5,
             "Episode_Reward/track_lin_vel_xy_exp": 0.4, "World_Model/loss_total": 2.0},
            {"iteration": 2.0, "Train/mean_step_reward": 0.2, "Imagination/epistemic_uncertainty": 0.4,
             "Episode_Reward/track_lin_vel_xy_exp": 0.5, "Real/tracking_lin_vel": 0.3, "World_Model/loss_total": 1.5}]
    figure = learning_curves_figure(rows, "rwm finetune: test")
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert list(panels) == ["PPO reward", "Episode length", "Velocity tracking (1 = perfect)",
                            "World model: training loss"]
    legend = [text.get_text() for text in panels["Velocity tracking (1 = perfect)"].get_legend().get_texts()]
    assert legend == ["in imagination: episodes' tracking reward per s", "in the real simulator (rwm play's measure)"]
    assert [t.get_text() for t in panels["Episode length"].texts] == ["no episode has ended yet"]
    init = learning_curves_figure([{"iteration": 1.0, "Train/mean_step_reward": 0.1}])
    assert len([ax for ax in init.axes if ax.get_visible()]) == 3  # no world model, no world-model panels


def test_metrics_lines_cut_short_or_not_numbers_are_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1, "Loss/kl": "nan", "time": "2026-01-01T00:00:00"}\n{"iteration": 2, "Lo')
    rows = read_metrics(path)
    assert len(rows) == 1 and rows[0]["iteration"] == 1.0 and "time" not in rows[0]
