"""Minari export -> import round trip, in a temporary datasets directory (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from rwm.data import DatasetError, DatasetReader
from tests.data.conftest import write_episodes

import minari  # noqa: E402  (a dev dependency: this test must run, not skip)
from rwm.data.minari_io import export_minari, import_minari

SPECS = [(6, True, True), (20, True, False), (9, False, False), (1, True, True), (14, True, True)]


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari_datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def test_round_trip(tmp_path, minari_root):
    episodes = write_episodes(tmp_path / "d.h5", SPECS, source={"kind": "random", "seed": 5})
    summary = export_minari(tmp_path / "d.h5", "anymal-test-v0")
    assert summary["episodes"] == 4 and summary["skipped_single_record_episodes"] == 1
    assert (minari_root / "anymal-test-v0" / "data" / "metadata.json").is_file()
    assert [p.name for p in minari_root.iterdir()] == ["anymal-test-v0"]  # no temporary left behind

    loaded = minari.load_dataset("anymal-test-v0")
    assert loaded.total_episodes == 4 and loaded.total_steps == 5 + 19 + 8 + 13
    first = next(iter(loaded.iterate_episodes()))
    np.testing.assert_array_equal(first.observations, episodes[0]["system_state"])
    assert first.terminations.tolist() == [False] * 4 + [True]  # a fall
    second = loaded[1]
    assert not second.terminations.any() and second.truncations.tolist() == [False] * 18 + [True]  # time limit

    import_minari("anymal-test-v0", tmp_path / "back.h5")
    kept = [e for e in episodes if len(e["system_state"]) > 1]
    with DatasetReader(tmp_path / "back.h5") as reader:
        assert reader.columns == ("system_state", "system_action", "system_contact", "system_termination",
                                  "policy_observation", "command", "reward")
        assert reader.num_episodes == len(kept)
        for i, expected in enumerate(kept):
            got = reader.episode(i)
            assert got["ended"] == expected["ended"]
            for name in reader.columns:
                np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        assert reader.metadata["source"]["kind"] == "minari"
        assert reader.metadata["source"]["original_source"] == {"kind": "random", "seed": 5}


def test_out_dir_and_import_by_path(tmp_path, minari_root):
    episodes = write_episodes(tmp_path / "d.h5", SPECS[:2], optional=False)
    out_dir = tmp_path / "elsewhere"
    export_minari(tmp_path / "d.h5", "anymal-plain-v1", out_dir=out_dir)
    assert (out_dir / "anymal-plain-v1").is_dir() and not (minari_root / "anymal-plain-v1").exists()
    import_minari(str(out_dir / "anymal-plain-v1"), tmp_path / "back.h5")
    with DatasetReader(tmp_path / "back.h5") as reader:
        assert reader.columns[-1] == "reward"  # zeros: the source had no rewards
        np.testing.assert_array_equal(reader.episode(1)["system_state"], episodes[1]["system_state"])
        np.testing.assert_array_equal(reader.episode(1)["reward"], np.zeros(20, np.float32))
    with pytest.raises(DatasetError, match="already exists"):
        export_minari(tmp_path / "d.h5", "anymal-plain-v1", out_dir=out_dir)


def test_foreign_and_missing_datasets_are_clear_errors(tmp_path, minari_root):
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    box = gym.spaces.Box(-1.0, 1.0, shape=(17,), dtype=np.float32)
    buffer = EpisodeBuffer(observations=np.zeros((4, 17), np.float32), actions=np.zeros((3, 17), np.float32),
                           rewards=np.zeros(3), terminations=np.zeros(3, bool), truncations=np.array([0, 0, 1], bool))
    with pytest.warns(UserWarning):
        minari.create_dataset_from_buffers("other-v0", [buffer], observation_space=box, action_space=box)
    with pytest.raises(DatasetError, match=r"'other-v0' has observations of shape \(17,\); expected the 45-dim"):
        import_minari("other-v0", tmp_path / "x.h5")
    with pytest.raises(FileNotFoundError, match="no Minari dataset 'absent-v0'.*never downloaded"):
        import_minari("absent-v0", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
