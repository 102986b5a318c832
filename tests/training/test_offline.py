"""Offline (RWM-U / MOPO-PPO): world model fitted on a dataset, PPO in its imagination, no simulator."""

from __future__ import annotations

import math

import pytest
import torch

from rwm.cli import main
from rwm.config import ConfigError, apply_overrides
from rwm.training.checkpoint import load_checkpoint
from rwm.training.modes import build_mode
from rwm.training.train import resolve_train_config, train
from tests.training.conftest import QUIET
from tests.training.test_pretrain import TINY_WORLD_MODEL

OFFLINE = "Velocity-Flat-Anymal-D-Offline-v0"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """4 robots x 60 steps of the standing controller in the real simulator (recorded once)."""
    from rwm.data import record_dataset
    from rwm.envs.scripted_policies import StandingPolicy
    from rwm.tasks import make_task_cfg

    cfg = apply_overrides(make_task_cfg("Velocity-Flat-Anymal-D-Init-v0"), ["num_envs=4", "sim.num_threads=1"])
    policy = StandingPolicy(4, "cpu")
    out = tmp_path_factory.mktemp("offline_data") / "standing.h5"
    record_dataset(cfg, policy, out, steps=4 * 60, source={"kind": "test"}, progress=False)
    return out


def offline_cfg(log_root, dataset, iterations=2, extra=()):
    cfg, _ = resolve_train_config(OFFLINE, [*QUIET, "runner.num_steps_per_env=8", "runner.save_interval=2",
                                            f"runner.log_root={log_root}", *TINY_WORLD_MODEL,
                                            "offline.validation_fraction=0.25", "offline.fit_updates=20",
                                            f"offline.dataset={dataset}", *extra],
                                  num_envs=16, max_iterations=iterations, seed=0)
    return cfg


@pytest.fixture
def no_simulator(monkeypatch):
    """Any MujocoSimulator construction fails (and is counted)."""
    from rwm.sim import mujoco

    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(args)
        raise AssertionError("Offline must not construct a MujocoSimulator")

    monkeypatch.setattr(mujoco.MujocoSimulator, "__init__", refuse)
    return calls


def test_offline_trains_in_imagination_without_a_simulator(dataset, tmp_path, no_simulator):
    runner, summary = train(offline_cfg(tmp_path, dataset))
    assert no_simulator == []
    assert summary["iterations"] == 2
    assert type(runner.env.sim).__name__ == "ImaginationSimulator"
    first, last = runner.history[0], runner.history[-1]
    assert last["Imagination/epistemic_uncertainty"] > 0
    assert 0.0 <= last["Imagination/reset_share"] <= 1.0
    assert first["Offline/validation_windows"] > 0 and math.isfinite(first["Offline/validation_autoregressive_error"])
    # calibration of the ensemble (E = 2 here): a correlation, so within [-1, 1]
    assert -1.0 <= first["Offline/validation_uncertainty_error_correlation"] <= 1.0
    assert first["Offline/validation_epistemic"] > 0
    assert "Offline/validation_windows" not in last  # logged once
    assert math.isfinite(first["Offline/fit_loss_total"])
    # the uncertainty penalty is a reward term, and a negative one
    # the RWM-U penalty is a reward term of the imagined episodes: w_u * epistemic * dt, summed per episode
    # (read from the running sums: an episode need not have ended within two iterations)
    penalty = runner.env.episode_sums["uncertainty"]
    assert torch.all(penalty <= 0) and torch.any(penalty < 0)
    logged = [row["Episode_Reward/uncertainty"] for row in runner.history if "Episode_Reward/uncertainty" in row]
    assert all(p <= 0 for p in logged)
    payload = load_checkpoint(runner.log_dir / "model_2.pt")
    assert {"model_state_dict", "system_dynamics_state_dict", "system_dynamics_optimizer_state_dict"} <= set(payload)
    assert payload["config"]["mode"] == "offline"
    assert payload["config"]["offline"]["dataset"] == str(dataset)


def test_ppo_starts_from_a_policy_cloned_from_the_datasets_best_episodes(dataset, tmp_path, no_simulator):
    runner, _ = train(offline_cfg(tmp_path, dataset, iterations=1, extra=("offline.behavior_cloning_updates=200",)))
    first = runner.history[0]
    # 4 episodes of 60 steps, one held out: the best quarter of the other three is one, 60 pairs
    assert first["Offline/behavior_cloning_pairs"] == 60
    assert first["Offline/behavior_cloning_loss_final"] < 0.5 * first["Offline/behavior_cloning_loss_initial"]
    assert first["Loss/auxiliary"] > 0  # PPO stays anchored to the clone (offline.behavior_cloning_weight)
    free, _ = train(offline_cfg(tmp_path, dataset, iterations=1, extra=("offline.behavior_cloning_updates=200",
                                                                      "offline.behavior_cloning_weight=0")))
    assert "Offline/behavior_cloning_pairs" in free.history[0] and "Loss/auxiliary" not in free.history[0]
    plain, _ = train(offline_cfg(tmp_path, dataset, iterations=1, extra=("offline.behavior_cloning_updates=0",)))
    assert not any(key.startswith("Offline/behavior_cloning") for key in plain.history[0])
    assert "Loss/auxiliary" not in plain.history[0]
    assert no_simulator == []


def test_cloning_is_automatic_when_the_dataset_has_observations_and_rewards():
    from rwm.tasks.anymal_d_flat import OfflineCfg

    full = ("system_state", "system_action", "policy_observation", "reward")
    assert OfflineCfg().resolved_behavior_cloning_updates(full) == 2000
    assert OfflineCfg().resolved_behavior_cloning_updates(full[:3]) == 0  # e.g. an imported upstream CSV
    assert OfflineCfg(behavior_cloning_updates=7).resolved_behavior_cloning_updates(()) == 7
    with pytest.raises(ConfigError, match="offline.behavior_cloning_top_share = 0"):
        OfflineCfg(behavior_cloning_top_share=0.0)
    with pytest.raises(ConfigError, match="offline.behavior_cloning_updates = -2"):
        OfflineCfg(behavior_cloning_updates=-2)


def test_the_cloned_pairs_come_from_the_best_episodes_that_did_not_fall(tmp_path):
    from rwm.data import DatasetReader
    from rwm.training.offline import best_episode_pairs
    from tests.data.conftest import write_episodes

    # (length, ended, fell); episode 1 falls, episode 3 has no transition
    written = write_episodes(tmp_path / "d.h5", [(10, True, False), (12, True, True), (8, False, False),
                                                 (1, False, False), (9, True, False)])
    score = {e: float(written[e]["reward"][:-1].mean()) for e in (0, 2, 4)}
    best = sorted(score, key=score.get, reverse=True)[:2]  # ceil(3 * 0.5)
    with DatasetReader(tmp_path / "d.h5") as reader:
        observations, actions, episodes = best_episode_pairs(reader, range(5), top_share=0.5)
    assert episodes == 2
    expected_obs = torch.cat([torch.from_numpy(written[e]["policy_observation"][:-1]) for e in best])
    expected_act = torch.cat([torch.from_numpy(written[e]["system_action"][:-1]) for e in best])
    assert torch.equal(observations, expected_obs) and torch.equal(actions, expected_act)

    write_episodes(tmp_path / "bare.h5", [(10, True, False)], optional=False)
    with DatasetReader(tmp_path / "bare.h5") as reader, \
            pytest.raises(ValueError, match="no policy_observation or reward column.*behavior_cloning_updates=0"):
        best_episode_pairs(reader, [0], top_share=1.0)


def test_fitting_lowers_the_world_model_loss(dataset, tmp_path, no_simulator):
    cfg = offline_cfg(tmp_path, dataset, extra=("offline.fit_updates=2",))
    _, _, (ext,) = build_mode(cfg, torch.device("cpu"))
    sampler_gen = torch.Generator().manual_seed(5)
    window = cfg.world_model.history_horizon + cfg.world_model.forecast_horizon
    batch = ext.learner.buffer.sample(64, window, sampler_gen)

    def loss() -> float:
        from rwm.world_model.losses import world_model_loss

        ext.learner.model.reset()
        with torch.no_grad():
            total, _ = world_model_loss(ext.learner.model, batch, cfg.world_model, torch.Generator().manual_seed(0))
        ext.learner.model.reset()
        return float(total)

    ext._fit_normalizers()
    before = loss()
    ext.fit_updates = 60
    ext.fit()
    assert loss() < before


def test_a_run_depends_on_its_seed_only_not_on_the_random_state_before_it(dataset, tmp_path, no_simulator):
    fits = []
    for earlier_state, seed in ((1, 0), (2, 0), (1, 1)):
        torch.manual_seed(earlier_state)  # whatever ran before train() in this process
        cfg = apply_overrides(offline_cfg(tmp_path / f"{earlier_state}_{seed}", dataset, iterations=1), [f"seed={seed}"])
        runner, _ = train(cfg)
        fits.append(runner.history[0]["Offline/fit_loss_total"])
    assert fits[0] == fits[1]  # the world model is built from the run's seed
    assert fits[0] != fits[2]


def test_a_fit_without_a_progress_bar_prints_evenly_spaced_progress_lines(dataset, tmp_path, capsys, no_simulator):
    cfg = offline_cfg(tmp_path, dataset, extra=("offline.fit_updates=8", "world_model.num_mini_batches=2"))
    _, _, (ext,) = build_mode(cfg, torch.device("cpu"))
    ext.fit(report_lines=2)  # 4 rounds of 2 updates: lines after rounds 2 and 4
    lines = [line for line in capsys.readouterr().out.splitlines() if "fitting world model" in line]
    assert [line.split(" | ")[0] for line in lines] == ["[rwm offline] fitting world model: update 4/8",
                                                         "[rwm offline] fitting world model: update 8/8"]
    assert all("ETA" in line for line in lines) and lines[-1].endswith("ETA 0:00:00")


def test_resume_keeps_the_model_and_skips_the_fit(dataset, tmp_path, no_simulator):
    runner, _ = train(offline_cfg(tmp_path, dataset, extra=("offline.updates_per_iteration=2",)))
    assert "World_Model/loss_total" in runner.history[-1]
    cfg = offline_cfg(tmp_path, dataset, iterations=3, extra=("offline.updates_per_iteration=2",))
    resumed, summary = train(cfg, resume_from=runner.log_dir)
    assert summary["iterations"] == 3
    assert "Offline/fit_loss_total" not in resumed.history[0]  # no second initial fit
    assert "Offline/behavior_cloning_loss_final" in runner.history[0]
    assert "Offline/behavior_cloning_loss_final" not in resumed.history[0]  # nor a second cloning
    assert "Loss/auxiliary" in resumed.history[0]  # but the same anchor
    assert no_simulator == []


def test_starting_from_a_world_model_checkpoint_skips_the_fit(dataset, tmp_path, no_simulator):
    first, _ = train(offline_cfg(tmp_path / "a", dataset, iterations=1, extra=("runner.save_interval=1",)))
    checkpoint = first.log_dir / "model_1.pt"
    load = ("offline.fit_updates=-1", f"offline.world_model_checkpoint={checkpoint}")
    # the architecture comes from the checkpoint: an override that contradicts it is refused
    with pytest.raises(ConfigError, match="world_model.rnn_hidden_size = 64 contradicts the loaded world model, "
                                          "which has rnn_hidden_size = 32"):
        train(offline_cfg(tmp_path / "b", dataset, iterations=1, extra=(*load, "world_model.rnn_hidden_size=64")))
    runner, _ = train(offline_cfg(tmp_path / "b", dataset, iterations=1, extra=load))
    assert runner.cfg.world_model.rnn_hidden_size == 32
    assert "Offline/fit_loss_total" not in runner.history[0]
    saved = load_checkpoint(checkpoint)["system_dynamics_state_dict"]
    for name, value in runner.extensions[0].learner.model.state_dict().items():
        assert torch.equal(value, saved[name]), name  # used as loaded, not refitted
    assert no_simulator == []


def test_distributed_ranks_train_on_disjoint_shards_of_the_same_split(dataset, tmp_path, monkeypatch, no_simulator):
    from rwm.training import offline

    seen = {}
    for rank in (0, 1):
        monkeypatch.setattr(offline, "process_rank", lambda rank=rank: (rank, 2))
        # rank_config gives rank r the seed cfg.seed + r; the split must not change with it
        cfg = offline_cfg(tmp_path, dataset, extra=(f"seed={rank}",))
        _, _, (ext,) = build_mode(cfg, torch.device("cpu"))
        buffer = ext.learner.buffer
        starts = buffer.data["state"][buffer.episode_start]  # (episodes, 45) first state of each held episode
        seen[rank] = {tuple(row.tolist()) for row in starts}
        assert ext.dataset_info["validation_episodes"] == 1
    assert len(seen[0]) + len(seen[1]) == 3 and not seen[0] & seen[1]


def test_missing_or_empty_dataset_is_one_clear_line(tmp_path, capsys, no_simulator):
    base = ["train", "--task", OFFLINE, "--num-envs", "4", "--max-iterations", "1", "--quiet",
            f"runner.log_root={tmp_path}", *TINY_WORLD_MODEL]
    assert main(base) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dataset" in err[0]
    assert main([*base, "--dataset", str(tmp_path / "nope.h5")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.h5" in err[0] and "does not exist" in err[0]
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    assert main([*base, "--dataset", str(empty)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0]


def test_offline_settings_on_another_task_are_refused():
    with pytest.raises((ConfigError, ValueError), match="Offline task only"):
        resolve_train_config("Velocity-Flat-Anymal-D-Pretrain-v0", ["offline.dataset=data.h5"])
