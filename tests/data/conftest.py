"""Synthetic episodes whose states say where they come from: state[0] = episode id, state[1] = step."""

from __future__ import annotations

import numpy as np


def make_episode(index: int, length: int, ended: bool, fell: bool = False, seed: int = 0,
                 optional: bool = True) -> dict:
    """One episode of `length` records in the format's conventions (last action zero)."""
    rng = np.random.default_rng(seed * 1000 + index)
    state = rng.normal(size=(length, 45)).astype(np.float32)
    state[:, 0] = index
    state[:, 1] = np.arange(length)
    action = rng.normal(size=(length, 12)).astype(np.float32)
    action[-1] = 0.0
    contact = (rng.random((length, 8)) > 0.5).astype(np.float32)
    termination = np.zeros((length, 1), dtype=np.float32)
    termination[-1] = float(ended and fell)
    episode = {"system_state": state, "system_action": action, "system_contact": contact,
               "system_termination": termination}
    if optional:
        reward = rng.normal(size=length).astype(np.float32)
        reward[-1] = 0.0
        episode.update(policy_observation=rng.normal(size=(length, 48)).astype(np.float32),
                       command=rng.uniform(-1, 1, size=(length, 3)).astype(np.float32), reward=reward)
    return episode


def write_episodes(path, specs, optional: bool = True, chunk_rows: int = 64, source=None, **kwargs):
    """Write episodes given as (length, ended, fell) tuples; returns the episode dicts written."""
    from rwm.data import DatasetWriter

    columns = ("policy_observation", "command", "reward") if optional else ()
    episodes = []
    with DatasetWriter(path, source=source or {"kind": "test"}, columns=columns, chunk_rows=chunk_rows,
                       **kwargs) as writer:
        for i, (length, ended, fell) in enumerate(specs):
            episode = make_episode(i, length, ended, fell, optional=optional)
            writer.append_episode(**episode, ended=ended)
            episodes.append({**episode, "ended": ended})
    return episodes
