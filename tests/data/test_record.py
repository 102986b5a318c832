"""Recording from the real simulator (end to end through the CLI), interruption, and merging."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rwm.cli import main
from rwm.config import apply_overrides
from rwm.data import DatasetError, DatasetReader
from rwm.data.merge import merge_datasets
from rwm.data.record import record_dataset
from rwm.envs.mdp.observations import POLICY_SLICES
from rwm.tasks import make_task_cfg
from tests.data.conftest import write_episodes

TINY = ["env.episode_length_s=0.5", "sim.num_threads=1"]  # 25-step episodes: time-outs inside the recording


def test_record_random_and_info_end_to_end(tmp_path, capsys):
    out = tmp_path / "random.h5"
    code = main(["dataset", "record", "--policy", "random", "--steps", "200", "--num-envs", "4", "--seed", "1",
                 "--out", str(out), "--quiet", *TINY])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_transitions"] == 200 and summary["steps_per_env"] == 50

    assert main(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "200 transitions" in text and "random actions" in text and "system_state.joint_torque" in text
    assert main(["dataset", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_transitions"] == 200 and info["num_records"] - info["num_episodes"] == 200
    assert info["episodes_fell"] + info["episodes_timed_out"] >= 4  # every env hit the 25-step limit
    assert info["source"] == {"kind": "random", "scale": 1.0, "seed": 1}

    with DatasetReader(out) as reader:
        assert reader.metadata["task"] == "Velocity-Flat-Anymal-D-Init-v0" and reader.metadata["num_envs"] == 4
        for episode in reader.iter_episodes():
            obs, action = episode["policy_observation"], episode["system_action"]
            # record k+1 observed the action taken from record k: the pairing is "action taken FROM the state"
            np.testing.assert_array_equal(obs[1:, POLICY_SLICES["last_action"]], action[:-1])
            assert not action[-1].any() and episode["reward"][-1] == 0.0
            np.testing.assert_array_equal(episode["command"], obs[:, POLICY_SLICES["command"]])
            assert len(episode["system_state"]) <= 26  # 25 steps + the state the episode ended in
            if episode["ended"]:  # the terminal record's observation is assembled noise-free from its state
                np.testing.assert_array_equal(obs[-1, :9], episode["system_state"][-1, :9])


def test_interrupted_recording_leaves_no_file(tmp_path):
    cfg = apply_overrides(make_task_cfg("Velocity-Flat-Anymal-D-Init-v0"), ["num_envs=4", *TINY])
    calls = []

    def policy(obs):
        calls.append(1)
        if len(calls) == 30:
            raise KeyboardInterrupt
        return torch.zeros(4, 12)

    out = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        record_dataset(cfg, policy, out, steps=400, source={"kind": "test"}, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_merge_lists_sources_and_keeps_common_columns(tmp_path, capsys):
    a = write_episodes(tmp_path / "a.h5", [(5, True, True), (9, False, False)], source={"kind": "random"})
    b = write_episodes(tmp_path / "b.h5", [(7, True, False)], optional=False, source={"kind": "policy"})
    summary = merge_datasets([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "m.h5")
    assert summary["dropped_columns"] == ["command", "policy_observation", "reward"]
    with DatasetReader(tmp_path / "m.h5") as reader:
        assert reader.episode_lengths.tolist() == [5, 9, 7] and reader.episode_ended.tolist() == [True, False, True]
        for i, expected in enumerate(a + b):
            np.testing.assert_array_equal(reader.episode(i)["system_state"], expected["system_state"])
        inputs = reader.metadata["source"]["inputs"]
    assert [i["source"]["kind"] for i in inputs] == ["random", "policy"]
    assert [i["episodes"] for i in inputs] == [[0, 2], [2, 3]]
    code = main(["dataset", "merge", str(tmp_path / "a.h5"), str(tmp_path / "m.h5"), "--out", str(tmp_path / "m.h5")])
    assert code == 2 and "is one of the inputs" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="at least two"):
        merge_datasets([tmp_path / "a.h5"], tmp_path / "n.h5")


def test_record_with_a_run_checkpoint(tmp_path, capsys):
    from tests.training.conftest import tiny_run

    run_dir = tiny_run(tmp_path / "logs", num_envs=4, steps=4, iterations=1).log_dir
    out = tmp_path / "expert.h5"
    code = main(["dataset", "record", "--run", str(run_dir), "--checkpoint", "model_1.pt", "--steps", "20",
                 "--num-envs", "2", "--out", str(out), "--quiet", "sim.num_threads=1"])
    assert code == 0, capsys.readouterr().err
    with DatasetReader(out) as reader:
        source = reader.metadata["source"]
        assert reader.num_transitions == 20
    assert source["kind"] == "policy" and source["checkpoint"] == "model_1.pt" and source["iteration"] == 1
    code = main(["dataset", "record", "--checkpoint", "model_1.pt", "--policy", "random", "--steps", "4",
                 "--out", str(tmp_path / "x.h5")])
    assert code == 2 and "pass --run too" in capsys.readouterr().err
    code = main(["dataset", "record", "--policy", "random", "--stochastic", "--steps", "4",
                 "--out", str(tmp_path / "x.h5")])
    assert code == 2 and "pass --run" in capsys.readouterr().err


def test_stochastic_recording_samples_around_the_policy_mean(tmp_path, capsys):
    """--stochastic records actions drawn from the policy's Gaussian: they scatter around the mean
    action of the recorded observation with the policy's std, and the same seed draws the same data."""
    from rwm.training.export import policy_from_checkpoint
    from tests.training.conftest import tiny_run

    run_dir = tiny_run(tmp_path / "logs", num_envs=4, steps=4, iterations=1).log_dir
    policy, _, _ = policy_from_checkpoint(run_dir / "model_1.pt")
    args = ["dataset", "record", "--run", str(run_dir), "--steps", "200", "--num-envs", "4", "--quiet",
            "env.noise.enabled=false", *TINY]
    paths = [tmp_path / name for name in ("a.h5", "b.h5", "mean.h5")]
    for path, extra in zip(paths, (["--stochastic"], ["--stochastic"], [])):
        assert main([*args, *extra, "--out", str(path)]) == 0, capsys.readouterr().err
    columns = []
    for path in paths:
        with DatasetReader(path) as reader:
            episodes = [reader.episode(e) for e in range(reader.num_episodes)]
            source = reader.metadata["source"]
        obs = torch.as_tensor(np.concatenate([ep["policy_observation"][:-1] for ep in episodes]))
        action = torch.as_tensor(np.concatenate([ep["system_action"][:-1] for ep in episodes]))
        columns.append((obs, action, source))
    (obs, action, source), (_, action_b, _), (obs_mean, action_mean, source_mean) = columns
    assert source["deterministic"] is False and source_mean["deterministic"] is True
    assert source["action_std"] == pytest.approx(policy.std.detach().tolist(), abs=1e-4)
    assert torch.equal(action, action_b)  # seeded
    with torch.no_grad():
        assert torch.allclose(policy.act_inference(obs_mean), action_mean, atol=1e-5)  # the mean, exactly
        noise = (action - policy.act_inference(obs)) / policy.std  # (T, 12) standard normal draws
    assert noise.abs().mean() > 0.5 and abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1.0) < 0.1
    assert main(["dataset", "info", str(paths[0])]) == 0
    assert "actions sampled from its Gaussian" in capsys.readouterr().out


def test_record_mixed_takes_random_actions_then_four_checkpoints_early_to_last(tmp_path, capsys):
    from tests.training.conftest import tiny_run

    run_dir = tiny_run(tmp_path / "logs", num_envs=4, steps=4, iterations=12).log_dir  # model_1 ... model_12
    out = tmp_path / "mixed.h5"
    code = main(["dataset", "record-mixed", "--run", str(run_dir), "--steps", "400", "--num-envs", "4", "--seed", "3",
                 "--stochastic", "--out", str(out), "--quiet", *TINY])
    assert code == 0, capsys.readouterr().err
    with DatasetReader(out) as reader:
        inputs = [i["source"] for i in reader.metadata["source"]["inputs"]]
        transitions = reader.num_transitions
    assert [s["kind"] for s in inputs] == ["random", "policy", "policy", "policy", "policy"]
    assert [s["checkpoint"] for s in inputs[1:]] == ["model_2.pt", "model_5.pt", "model_8.pt", "model_12.pt"]
    assert [s["seed"] for s in inputs[:1]] == [4] and all(s["deterministic"] is False for s in inputs[1:])
    assert transitions == 40 + 60 + 80 + 100 + 120  # the shares 10/15/20/25/30 % of 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "mixed.h5"]  # no part files left behind
    assert main(["dataset", "record-mixed", "--run", str(tmp_path / "nowhere"), "--steps", "8",
                 "--out", str(tmp_path / "x.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
