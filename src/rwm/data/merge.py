"""Merging datasets: random + medium + expert recordings of one run make the "mixed" dataset.

Episodes are copied in input order, a chunk at a time (any size fits); the merged file keeps
the optional columns that every input has, and its metadata lists each input with its source
and the range of episodes it became: ``source = {"kind": "merge", "inputs": [{"path",
"source", "episodes": [first, end)}, ...]}``.
"""

from __future__ import annotations

import os
from pathlib import Path

from rwm.data.format import OPTIONAL_COLUMNS, DatasetError
from rwm.data.reader import DatasetReader
from rwm.data.writer import DatasetWriter


def merge_datasets(paths: list[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False,
                   chunk_size: int = 65536) -> dict:
    """Concatenate the episodes of `paths` into `out`; returns a summary (with any dropped columns)."""
    if len(paths) < 2:
        raise DatasetError(f"merging needs at least two datasets; got {len(paths)}.")
    out = Path(out)
    if any(Path(p).resolve() == out.resolve() for p in paths):
        raise DatasetError(f"'{out}' is one of the inputs; write the merged dataset to a new file.")
    readers = []
    try:
        for path in paths:
            readers.append(DatasetReader(path))
        first = readers[0]
        for reader in readers[1:]:
            for key in ("robot", "step_dt"):
                if reader.metadata.get(key) != first.metadata.get(key):
                    raise DatasetError(f"dataset '{reader.path}' has {key} = {reader.metadata.get(key)!r} but "
                                       f"'{first.path}' has {first.metadata.get(key)!r}; only like data can be merged.")
        columns = tuple(c for c in OPTIONAL_COLUMNS if all(c in r.columns for r in readers))
        dropped = sorted({c for r in readers for c in r.columns if c in OPTIONAL_COLUMNS and c not in columns})
        inputs, episode = [], 0
        with DatasetWriter(out, source={"kind": "merge", "inputs": inputs}, columns=columns, overwrite=overwrite,
                           step_dt=first.metadata.get("step_dt", 0.02),
                           robot=first.metadata.get("robot", "anymal_d")) as writer:
            for reader in readers:
                for chunk in reader.iter_chunks(chunk_size, columns=writer.columns):
                    _copy_chunk(writer, chunk)
                inputs.append({"path": str(reader.path), "source": reader.metadata.get("source"),
                               "episodes": [episode, episode + reader.num_episodes]})
                episode += reader.num_episodes
            summary = {"path": str(out), "inputs": len(readers), "num_records": writer.num_records,
                       "num_episodes": writer.num_episodes, "dropped_columns": dropped}
    finally:
        for reader in readers:
            reader.close()
    return summary


def _copy_chunk(writer: DatasetWriter, chunk: dict) -> None:
    """Append a chunk's rows, closing episodes where the chunk's flags say they end."""
    ends = chunk["episode_end"].nonzero()[0].tolist()  # rows that close an episode
    start = 0
    for stop in [*(e + 1 for e in ends), len(chunk["episode_end"])]:
        if stop > start:
            writer.append(**{name: chunk[name][start:stop] for name in writer.columns})
            if chunk["episode_end"][stop - 1]:
                writer.end_episode(ended=bool(chunk["terminal"][stop - 1]))
        start = stop
