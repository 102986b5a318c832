"""The dataset file: round trip, chunked reading, bad data, atomic finalisation."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from rwm.data import DatasetError, DatasetReader, DatasetWriter
from rwm.data.format import REQUIRED_COLUMNS, fixed_normalizer
from tests.data.conftest import make_episode, write_episodes

SPECS = [(5, True, True), (40, True, False), (1, True, True), (33, False, False), (70, True, True), (12, False, False)]


def test_round_trip_arrays_and_metadata(tmp_path):
    path = tmp_path / "d.h5"
    episodes = write_episodes(path, SPECS, source={"kind": "random", "seed": 3}, metadata={"task": "T", "seed": 3})
    with DatasetReader(path) as reader:
        assert reader.columns == ("system_state", "system_action", "system_contact", "system_termination",
                                  "policy_observation", "command", "reward")
        assert reader.num_episodes == len(SPECS)
        assert reader.num_records == sum(s[0] for s in SPECS)
        assert reader.num_transitions == reader.num_records - len(SPECS)
        for i, expected in enumerate(episodes):
            got = reader.episode(i)
            assert got["ended"] == expected["ended"]
            for name in reader.columns:
                assert got[name].dtype == np.float32
                np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        meta = reader.metadata
    assert meta["format"] == "rwm-transitions" and meta["layout_version"] == 1
    assert meta["robot"] == "anymal_d" and meta["step_dt"] == 0.02
    assert meta["source"] == {"kind": "random", "seed": 3}
    assert meta["task"] == "T" and meta["seed"] == 3
    assert meta["num_episodes"] == len(SPECS) and meta["num_ended_episodes"] == 4
    assert meta["num_records"] == 161 and meta["num_transitions"] == 155
    assert meta["normalizer"] == fixed_normalizer() and len(meta["normalizer"]["state_std"]) == 45
    assert meta["created_at"].endswith("+00:00")
    everything = np.concatenate([e["system_state"] for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(meta["statistics"]["system_state"]["mean"], everything.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(meta["statistics"]["system_state"]["std"], everything.std(0), rtol=1e-6, atol=1e-9)


def test_required_columns_only(tmp_path):
    episodes = write_episodes(tmp_path / "d.h5", SPECS[:2], optional=False)
    with DatasetReader(tmp_path / "d.h5") as reader:
        assert reader.columns == tuple(REQUIRED_COLUMNS)
        np.testing.assert_array_equal(reader.episode(1)["system_action"], episodes[1]["system_action"])


def test_chunks_cover_every_row_once_in_order(tmp_path):
    specs = [(n, i % 2 == 0, i % 4 == 0) for i, n in enumerate([37, 1, 120, 64, 200, 9, 300, 13])]
    episodes = write_episodes(tmp_path / "d.h5", specs, chunk_rows=50)
    whole = np.concatenate([e["system_state"] for e in episodes])
    with DatasetReader(tmp_path / "d.h5") as reader:
        assert reader.num_records == 744  # several chunks of 97
        chunks = list(reader.iter_chunks(chunk_size=97))
    assert [c["first_row"] for c in chunks] == list(range(0, 744, 97))
    assert all(len(c["system_state"]) <= 97 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c["system_state"] for c in chunks]), whole)
    starts = np.concatenate([c["episode_start"] for c in chunks])
    ends = np.concatenate([c["episode_end"] for c in chunks])
    terminal = np.concatenate([c["terminal"] for c in chunks])
    offsets = np.cumsum([0] + [s[0] for s in specs])
    assert np.flatnonzero(starts).tolist() == offsets[:-1].tolist()
    assert np.flatnonzero(ends).tolist() == (offsets[1:] - 1).tolist()
    assert np.flatnonzero(terminal).tolist() == [offsets[i + 1] - 1 for i, s in enumerate(specs) if s[1]]


# ---------------------------------------------------------------------------------------------- bad data
def test_writer_rejects_bad_episodes_naming_column_and_row(tmp_path):
    good = make_episode(0, 10, ended=True, optional=False)
    with DatasetWriter(tmp_path / "d.h5", source={"kind": "test"}) as writer:
        bad = {**good, "system_state": good["system_state"][:, :44]}
        with pytest.raises(DatasetError, match=r"column 'system_state' has shape \(10, 44\); expected \(T, 45\)"):
            writer.append_episode(**bad, ended=True)
        state = good["system_state"].copy()
        state[7, 12] = np.nan
        with pytest.raises(DatasetError, match=r"system_state\[12\] \(joint_pos\[3\]\) row 7 is nan"):
            writer.append_episode(**{**good, "system_state": state}, ended=True)
        action = good["system_action"].copy()
        action[-1, 0] = 0.5
        with pytest.raises(DatasetError, match=r"last record \(row 9\) has a non-zero system_action"):
            writer.append_episode(**{**good, "system_action": action}, ended=True)
        with pytest.raises(DatasetError, match=r"column 'system_contact' has 9 rows; expected 10"):
            writer.append_episode(**{**good, "system_contact": good["system_contact"][:9]}, ended=True)
        with pytest.raises(DatasetError, match=r"column\(s\) \['reward'\] were not declared"):
            writer.append_episode(**good, reward=np.zeros(10), ended=True)
        writer.abort()
    assert not (tmp_path / "d.h5").exists()


def _damaged(tmp_path, edit):
    path = tmp_path / "d.h5"
    write_episodes(path, SPECS, optional=False)
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def test_reader_names_missing_column(tmp_path):
    path = _damaged(tmp_path, lambda f: f.__delitem__("system_contact"))
    with pytest.raises(DatasetError, match=rf"dataset '{path}' has no column 'system_contact'"):
        DatasetReader(path)


def test_reader_names_wrong_width(tmp_path):
    def edit(f):
        del f["system_action"]
        f.create_dataset("system_action", data=np.zeros((161, 11), np.float32))
    with pytest.raises(DatasetError, match=r"column 'system_action' has shape \(161, 11\); expected \(161, 12\)"):
        DatasetReader(_damaged(tmp_path, edit))


def test_reader_names_non_finite_row_and_column(tmp_path):
    def edit(f):
        f["system_state"][100, 4] = np.inf
    path = _damaged(tmp_path, edit)
    with DatasetReader(path) as reader:
        message = rf"'{path}': column system_state\[4\] \(base_ang_vel\[1\]\) row 100 is inf"
        with pytest.raises(DatasetError, match=message):
            list(reader.iter_chunks(64))


def test_reader_rejects_empty_foreign_and_missing_files(tmp_path):
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="is empty"):
        DatasetReader(empty)
    text = tmp_path / "x.csv"
    text.write_text("1,2,3\n")
    with pytest.raises(DatasetError, match="is not an HDF5 file"):
        DatasetReader(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DatasetError, match="is not an rwm transition dataset"):
        DatasetReader(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DatasetReader(tmp_path / "nope.h5")


# ---------------------------------------------------------------------------------------------- atomicity
def test_exception_inside_writer_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "d.h5"
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error), DatasetWriter(path, source={"kind": "test"}, chunk_rows=8) as writer:
            for i in range(5):
                writer.append_episode(**make_episode(i, 20, True, optional=False), ended=True)
            raise error()
        assert not path.exists()
    old = write_episodes(path, SPECS[:1], optional=False)
    with pytest.raises(KeyboardInterrupt), DatasetWriter(path, source={"kind": "test"}, overwrite=True) as writer:
        writer.append_episode(**make_episode(7, 30, True, optional=False), ended=True)
        raise KeyboardInterrupt
    with DatasetReader(path) as reader:  # the previous file is untouched
        np.testing.assert_array_equal(reader.episode(0)["system_state"], old[0]["system_state"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]  # no temporary left behind
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(path, source={"kind": "test"})


def test_killed_writer_leaves_nothing_under_the_final_name(tmp_path):
    path = tmp_path / "killed.h5"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from rwm.data import DatasetWriter
        from tests.data.conftest import make_episode
        writer = DatasetWriter({str(path)!r}, source={{"kind": "test"}}, chunk_rows=8)
        for i in range(20):
            writer.append_episode(**make_episode(i, 30, True, optional=False), ended=True)
        print("written", flush=True)
        time.sleep(60)
        writer.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        temporaries = [p for p in tmp_path.iterdir() if p.name.startswith(".killed.h5.")]
        assert temporaries and temporaries[0].stat().st_size > 0  # data was being written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not path.exists()
