"""Checkpoints: round trip, resume, atomic writing, and clear errors for files that are not ours."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from rwm.training.checkpoint import (
    CheckpointError,
    REQUIRED_KEYS,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rwm.training.runner import Runner
from rwm.training.train import train

from .conftest import tiny_cfg


def _copy_run(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def test_checkpoint_holds_every_key_and_loads_weights_only(trained_run):
    payload = torch.load(trained_run / "model_2.pt", weights_only=True)
    for key in (*REQUIRED_KEYS, "rng_state"):
        assert key in payload, key
    assert payload["iter"] == 2 and payload["config"]["num_envs"] == 16
    assert {"torch", "numpy", "python", "env_generator", "sim_rng"} <= set(payload["rng_state"])
    # the observation normalisers' statistics travel with the weights
    assert "actor_obs_normalizer.mean" in payload["model_state_dict"]
    assert int(payload["model_state_dict"]["actor_obs_normalizer.count"]) == 2 * 8 * 16


def test_round_trip_gives_identical_actions_and_state(trained_run):
    checkpoint = trained_run / "model_2.pt"
    payload = load_checkpoint(checkpoint)
    from rwm.config import from_dict
    from rwm.tasks.anymal_d_flat import TaskCfg

    cfg = from_dict(TaskCfg, payload["config"])
    fresh = Runner(cfg)
    obs = torch.randn(32, 48, generator=torch.Generator().manual_seed(3)) * 3.0
    before = fresh.get_inference_policy()(obs)
    fresh.load(checkpoint)
    after = fresh.get_inference_policy()(obs)
    assert not torch.allclose(before, after)
    stored = {k: v for k, v in payload["model_state_dict"].items()}
    for key, value in fresh.policy.state_dict().items():
        assert torch.equal(value, stored[key]), key
    again = Runner(cfg)
    again.load(checkpoint)
    assert torch.equal(again.get_inference_policy()(obs), after)
    assert fresh.current_iteration == 2
    assert fresh.alg.optimizer.state_dict()["state"][0]["step"] == payload["optimizer_state_dict"]["state"][0]["step"]


def test_resume_continues_counter_optimizer_and_directory(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path)
    cfg = tiny_cfg(tmp_path, iterations=3)
    runner, summary = train(cfg, resume_from=run)
    assert runner.log_dir == run and summary["iterations"] == 3 and summary["session_iterations"] == 1
    assert sorted(p.name for p in run.glob("model_*.pt")) == ["model_1.pt", "model_2.pt", "model_3.pt"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert rows[-1]["env_steps"] == 3 * 16 * 8
    # Adam's step counter carried on from the checkpoint: 2 iterations x 5 epochs x 4 mini-batches, then 1 more
    state = torch.load(run / "model_3.pt", weights_only=True)["optimizer_state_dict"]["state"][0]
    assert int(state["step"]) == 3 * 5 * 4


def test_resume_from_the_same_checkpoint_is_deterministic(trained_run):
    from rwm.config import from_dict
    from rwm.tasks.anymal_d_flat import TaskCfg

    payload = load_checkpoint(trained_run / "model_1.pt")
    cfg = from_dict(TaskCfg, payload["config"])
    weights = []
    for _ in range(2):
        runner = Runner(cfg)
        runner.load(trained_run / "model_1.pt")
        runner.learn(num_iterations=1)
        assert runner.current_iteration == 2
        weights.append({k: v.clone() for k, v in runner.policy.state_dict().items()})
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_a_finished_run_is_not_resumed_without_more_iterations(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path)
    with pytest.raises(ValueError, match="already completed 2 iterations"):
        train(tiny_cfg(tmp_path, iterations=2), resume_from=run)


def test_find_checkpoint_picks_the_latest_by_iteration(tmp_path, trained_run):
    run = _copy_run(trained_run, tmp_path)
    shutil.copy(run / "model_2.pt", run / "model_10.pt")
    assert find_checkpoint(run).name == "model_10.pt"
    assert find_checkpoint(run, "model_1.pt").name == "model_1.pt"
    with pytest.raises(FileNotFoundError, match="model_7.pt"):
        find_checkpoint(run, "model_7.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no model"):
        find_checkpoint(tmp_path / "empty")


def test_saving_is_atomic_and_leaves_no_temporary_files(tmp_path, trained_run):
    payload = torch.load(trained_run / "model_1.pt", weights_only=True)
    target = tmp_path / "model_5.pt"
    save_checkpoint(target, payload)
    assert [p.name for p in tmp_path.iterdir()] == ["model_5.pt"]

    class Boom:  # cannot be pickled: the write fails half-way
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(target, {**payload, "infos": Boom()})
    assert [p.name for p in tmp_path.iterdir()] == ["model_5.pt"]
    assert load_checkpoint(target)["iter"] == 1  # the old file is untouched


def _error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_and_foreign_files_give_one_clear_sentence(tmp_path, trained_run):
    data = (trained_run / "model_2.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated or damaged" in _error(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"actor_state_dict": {}, "iter": 3}, foreign)
    assert "not an rwm checkpoint" in _error(foreign) and "model_state_dict" in _error(foreign)

    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    assert "not a PyTorch checkpoint" in _error(text)

    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    assert "not an rwm checkpoint" in _error(tensor_only)

    code = tmp_path / "code.pt"
    torch.save({"model_state_dict": {}, "hook": shutil.rmtree}, code)  # a global: refused, never called
    assert "refused" in _error(code)

    raw_pickle = tmp_path / "raw.pt"
    raw_pickle.write_bytes(pickle.dumps({"model_state_dict": 1}))
    _error(raw_pickle)


def test_a_different_observation_layout_is_refused(tmp_path, trained_run):
    payload = torch.load(trained_run / "model_2.pt", weights_only=True)
    payload["obs_layout"] = {"policy": 45, "num_actions": 12, "layout_version": 1}
    other = save_checkpoint(tmp_path / "model_2.pt", payload)
    message = _error(other, expected_layout={"policy": 48, "num_actions": 12, "layout_version": 1})
    assert "observation layout" in message and "45" in message


def test_resuming_an_older_checkpoint_never_overwrites_newer_ones(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path)
    with pytest.raises(ValueError, match="model_2.pt is newer"):
        train(tiny_cfg(tmp_path, iterations=4), resume_from=run / "model_1.pt")
    assert torch.load(run / "model_2.pt", weights_only=True)["iter"] == 2


def test_resume_forgets_metrics_logged_after_the_checkpoint(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path)
    (run / "model_2.pt").unlink()  # as if the run was killed after logging iteration 2 but before saving it
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"iteration": 3, "cut sh')
    train(tiny_cfg(tmp_path, iterations=2), resume_from=run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
