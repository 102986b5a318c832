"""`rwm evaluate` on a Pretrain run and `rwm import-upstream` on an upstream-layout checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from rwm.cli import main
from rwm.training.train import train
from rwm.training.world_model_learning import load_world_model_file
from rwm.world_model.upstream import load_upstream_model
from tests.training.test_pretrain import tiny_pretrain_cfg
from tests.world_model.test_upstream import upstream_state_dict


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    runner, _ = train(tiny_pretrain_cfg(tmp_path_factory.mktemp("pretrain_logs"), iterations=2))
    return runner.log_dir


def test_evaluate_prints_table_and_writes_json(pretrain_run, capsys):
    code = main(["evaluate", "--run", str(pretrain_run), "--num-envs", "4", "--length", "10", "--noise", "0", "0.4",
                 "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "relative" in out.lower()
    report = json.loads((pretrain_run / "eval" / "world_model_model_2.json").read_text())
    metrics = report["by_noise"]["0.0"] if "0.0" in report["by_noise"] else report["by_noise"]["0"]
    assert len(metrics["relative_l1_per_step"]) == 10 - 4  # history 4 in the tiny model
    assert metrics["relative_l1"] > 0
    assert (pretrain_run / "plots" / "evaluate_model_2_error.png").stat().st_size > 1000


def test_evaluate_errors_are_one_sentence(pretrain_run, tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) != 0
    assert main(["evaluate", "--run", str(pretrain_run), "--length", "3"]) != 0
    err = capsys.readouterr().err
    assert "too short" in err and "Traceback" not in err


def test_import_upstream_gives_the_same_predictions(tmp_path, capsys):
    source = tmp_path / "upstream.pt"
    torch.save({"system_dynamics_state_dict": upstream_state_dict("gru"), "iter": 5000}, source)
    out = tmp_path / "converted.pt"
    assert main(["import-upstream", str(source), "--out", str(out)]) == 0
    ours, reference = load_world_model_file(out), load_upstream_model(source)
    generator = torch.Generator().manual_seed(0)
    z_state = torch.randn(3, 32, ours.state_dim, generator=generator)
    z_action = torch.randn(3, 32, ours.action_dim, generator=generator)
    torch.testing.assert_close(ours.observe(z_state, z_action).mean, reference.observe(z_state, z_action).mean)
    assert main(["import-upstream", str(source), "--out", str(out)]) != 0  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["import-upstream", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.pt")]) != 0
