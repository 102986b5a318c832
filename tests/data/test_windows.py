"""Windows from a dataset - sampled from the file or from a ReplayBuffer it filled - never cross an episode end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rwm.data import DatasetError, DatasetReader
from rwm.world_model.replay_buffer import ReplayBuffer
from tests.data.conftest import write_episodes

# (length, ended, fell): short episodes, a single record, long ones, ended and cut
SPECS = [(3, True, True), (12, True, False), (1, True, True), (30, False, False), (8, True, True), (7, True, False),
         (45, True, True), (2, False, False), (19, True, False)]
LENGTHS = np.array([s[0] for s in SPECS])


def assert_windows_inside_episodes(state, termination, ended_by_episode, length):
    """state (B, L, 45) encodes (episode id, step) in columns 0 and 1."""
    episode, step = state[..., 0].numpy(), state[..., 1].numpy()
    assert (episode == episode[:, :1]).all(), "a window crosses from one episode into another"
    assert (np.diff(step, axis=1) == 1).all(), "a window is not consecutive steps"
    ids = episode[:, 0].astype(int)
    assert (step[:, -1] <= LENGTHS[ids] - 1).all()
    # a terminal record (the last record of an ended episode) can only be a window's last element
    is_last_of_episode = step == (LENGTHS[ids] - 1)[:, None]
    terminal = is_last_of_episode & ended_by_episode[ids][:, None]
    assert not terminal[:, :-1].any()
    assert not termination[:, :-1].any(), "a fall inside a window"


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "d.h5"
    write_episodes(path, SPECS)
    return path


@pytest.mark.parametrize("length", [1, 2, 8, 30])
def test_sampled_windows_stay_inside_one_episode(dataset, length):
    with DatasetReader(dataset) as reader:
        expected = int(np.maximum(LENGTHS - length + 1, 0).sum())
        assert reader.num_windows(length) == expected
        batch = reader.sample_windows(3000, length, torch.Generator().manual_seed(length), return_index=True)
    assert batch["state"].shape == (3000, length, 45) and batch["action"].shape == (3000, length, 12)
    assert batch["contact"].shape == (3000, length, 8) and batch["termination"].shape == (3000, length, 1)
    assert batch["policy_observation"].shape == (3000, length, 48) and batch["reward"].shape == (3000, length)
    ended = np.array([s[1] for s in SPECS])
    assert_windows_inside_episodes(batch["state"], batch["termination"][..., 0].numpy() > 0.5, ended, length)
    assert (batch["state"][:, 0, 0].long() == batch["episode"]).all()
    starts = {(int(e), int(s)) for e, s in zip(batch["episode"], batch["state"][:, 0, 1])}
    assert len(starts) == expected  # uniform over the valid starts: 3000 draws see every one of them


def test_reading_windows_from_disk_equals_reading_from_memory(dataset):
    with DatasetReader(dataset) as cached, DatasetReader(dataset, cache_bytes=0) as on_disk:
        a = cached.sample_windows(200, 5, torch.Generator().manual_seed(1))
        b = on_disk.sample_windows(200, 5, torch.Generator().manual_seed(1))
        assert on_disk._cache is None and cached._cache is not None
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_too_long_windows_are_a_clear_error(dataset):
    with DatasetReader(dataset) as reader, pytest.raises(DatasetError, match="no window of 46 records .* longest "
                                                                              "episode has 45"):
        reader.sample_windows(4, 46)


@pytest.mark.parametrize("num_envs", [1, 3, 7])
def test_filled_replay_buffer_has_exactly_the_dataset_windows(dataset, num_envs):
    with DatasetReader(dataset) as reader:
        buffer = reader.fill_replay_buffer(num_envs=num_envs)
        assert int(buffer.num_stored.sum()) == reader.num_records
        for length in (1, 2, 8, 30):
            assert buffer.num_valid_windows(length) == reader.num_windows(length)
    batch = buffer.sample(2000, 8, torch.Generator().manual_seed(0))
    ended = np.array([s[1] for s in SPECS])
    assert_windows_inside_episodes(batch["state"], batch["termination"][..., 0].numpy() > 0.5, ended, 8)
    assert int(buffer.terminal.sum()) == int(ended.sum())


def test_filling_an_existing_buffer_cuts_long_episodes_and_refuses_overflow(dataset):
    buffer = ReplayBuffer(num_envs=6, capacity=30)
    with DatasetReader(dataset) as reader:
        reader.fill_replay_buffer(buffer)
        assert int(buffer.num_stored.sum()) == reader.num_records == 127
        # the 45-record episode is cut once: it loses the windows across the cut, nothing else
        assert 0 < buffer.num_valid_windows(8) < reader.num_windows(8)
        batch = buffer.sample(1000, 8, torch.Generator().manual_seed(0))
        assert_windows_inside_episodes(batch["state"], batch["termination"][..., 0].numpy() > 0.5,
                                       np.array([s[1] for s in SPECS]), 8)
        with pytest.raises(DatasetError, match="do not fit a replay buffer of 2 environments x 30 records"):
            reader.fill_replay_buffer(ReplayBuffer(num_envs=2, capacity=30))
