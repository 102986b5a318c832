"""DatasetWriter: appends records episode by episode and finalises the file atomically.

Everything goes to a temporary file beside the target (``.NAME.<random>.tmp``); `close()`
writes the metadata, flushes, fsyncs and renames it to the final name. An exception or Ctrl-C
inside a `with DatasetWriter(...)` block (or `abort()`) deletes the temporary file, and a killed
process leaves at most that hidden temporary: never a truncated file under the final name, and
never a damaged copy of a file that was there before.

Every dataset of the file carries an HDF5 Fletcher-32 checksum per chunk, so a damaged chunk
is detected when it is read instead of handing its bytes on as data.

Episodes are streamed: `append(...)` adds records to the open episode (any number of calls,
so an episode longer than memory is fine) and `end_episode(ended)` closes it; `append_episode`
does both. Records are buffered and written in chunks of `chunk_rows`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rwm.data.format import (
    ALL_COLUMNS,
    FORMAT_NAME,
    LAYOUT_VERSION,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ROBOT,
    STEP_DT,
    DatasetError,
    RunningMoments,
    check_column,
    fixed_normalizer,
    json_safe,
)
from rwm.io import temporary_file


def import_h5py():
    try:
        import h5py
    except ImportError:
        raise DatasetError("rwm datasets are HDF5 files and need h5py (pip install 'h5py>=3.10').") from None
    return h5py


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """Stop before any work when `path` exists and may not be replaced."""
    if Path(path).exists() and not overwrite:
        raise DatasetError(f"'{path}' already exists; pass --force (overwrite=True) to replace it.")


class DatasetWriter:
    """Writes one dataset file; `columns` lists the optional columns it will hold (all or none per record).

    `source` says what produced the data (stored as metadata["source"]); `metadata` adds free keys.
    An existing `path` is refused unless `overwrite`; it is only replaced by the finished file.
    """

    def __init__(self, path: str | os.PathLike, *, source: dict[str, Any], columns: tuple[str, ...] = (),
                 metadata: dict[str, Any] | None = None, overwrite: bool = False, step_dt: float = STEP_DT,
                 robot: str = ROBOT, chunk_rows: int = 4096):
        h5py = import_h5py()
        self.path = Path(path)
        unknown = [c for c in columns if c not in OPTIONAL_COLUMNS]
        if unknown:
            raise DatasetError(f"DatasetWriter columns {unknown} are unknown; "
                               f"expected some of {list(OPTIONAL_COLUMNS)}.")
        refuse_existing(self.path, overwrite)
        if self.path.is_dir():
            raise DatasetError(f"'{self.path}' is a directory; expected a file name for the dataset.")
        self.columns = tuple(REQUIRED_COLUMNS) + tuple(c for c in OPTIONAL_COLUMNS if c in columns)
        self.source = dict(source)
        self.extra_metadata = dict(metadata or {})
        self.step_dt, self.robot, self.chunk_rows = float(step_dt), robot, int(chunk_rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_file(self.path)
        os.close(fd)
        self.tmp_path = Path(tmp)
        try:
            self._file = h5py.File(self.tmp_path, "w")
            for name in self.columns:
                width = ALL_COLUMNS[name]
                shape, maxshape = ((0,), (None,)) if width is None else ((0, width), (None, width))
                chunks = (self.chunk_rows,) if width is None else (self.chunk_rows, width)
                self._file.create_dataset(name, shape=shape, maxshape=maxshape, dtype="float32", chunks=chunks,
                                          fletcher32=True)
        except BaseException:
            self._discard()
            raise
        self._pending: dict[str, list[np.ndarray]] = {name: [] for name in self.columns}
        self._pending_rows = 0
        self.num_records = 0  # records appended so far (written or pending)
        self._offsets = [0]
        self._ended: list[int] = []
        self._open_rows = 0  # records of the episode being appended
        self._last_action: np.ndarray | None = None
        self._moments = {name: RunningMoments() for name in self.columns}
        self.closed = False

    # ------------------------------------------------------------------ appending
    def append(self, system_state, system_action, system_contact, system_termination, **optional) -> None:
        """Add records (T rows of every column) to the open episode (opening one if none is)."""
        self._check_open()
        where = f"'{self.path}' episode {len(self._ended)}"
        columns = {"system_state": system_state, "system_action": system_action, "system_contact": system_contact,
                   "system_termination": system_termination, **optional}
        missing = [c for c in self.columns if columns.get(c) is None]
        extra = [c for c, v in columns.items() if v is not None and c not in self.columns]
        if missing:
            raise DatasetError(f"{where}: column(s) {missing} are missing; this writer was opened for "
                               f"{list(self.columns)}.")
        if extra:
            raise DatasetError(f"{where}: column(s) {extra} were not declared when the writer was opened "
                               f"(columns={list(self.columns[4:])}).")
        arrays = {"system_state": check_column(where, "system_state", system_state, first_row=self._open_rows)}
        rows = arrays["system_state"].shape[0]
        for name in self.columns[1:]:
            arrays[name] = check_column(where, name, columns[name], rows, first_row=self._open_rows)
        if rows == 0:
            return
        for name, array in arrays.items():
            self._pending[name].append(array)
            self._moments[name].update(array)
        self._pending_rows += rows
        self.num_records += rows
        self._open_rows += rows
        self._last_action = arrays["system_action"][-1].copy()
        if self._pending_rows >= self.chunk_rows:
            self._flush()

    def end_episode(self, ended: bool) -> None:
        """Close the open episode; `ended`: it ended in the simulator (its last record is the terminal state)."""
        self._check_open()
        where = f"'{self.path}' episode {len(self._ended)}"
        if self._open_rows == 0:
            raise DatasetError(f"{where}: end_episode called on an empty episode; append records first.")
        if np.any(self._last_action != 0.0):
            raise DatasetError(f"{where}: its last record (row {self._open_rows - 1}) has a non-zero system_action; "
                               "the last record of an episode must carry a zero action (no transition follows it).")
        self._offsets.append(self.num_records)
        self._ended.append(1 if ended else 0)
        self._open_rows = 0

    def append_episode(self, system_state, system_action, system_contact, system_termination, *, ended: bool,
                       **optional) -> None:
        """One whole episode of T records: arrays (T, d) (reward (T,)), last action zero."""
        action = np.asarray(system_action.detach().cpu() if hasattr(system_action, "detach") else system_action)
        if self._open_rows == 0 and action.ndim == 2 and len(action) and np.any(action[-1] != 0.0):
            raise DatasetError(f"'{self.path}' episode {len(self._ended)}: its last record (row {len(action) - 1}) has "
                               "a non-zero system_action; the last record of an episode must carry a zero action "
                               "(no transition follows it).")
        self.append(system_state, system_action, system_contact, system_termination, **optional)
        self.end_episode(ended)

    @property
    def num_episodes(self) -> int:
        return len(self._ended)

    @property
    def open_records(self) -> int:
        """Records appended to the episode that is still open (0: none is)."""
        return self._open_rows

    def _flush(self) -> None:
        if self._pending_rows == 0:
            return
        for name in self.columns:
            block = np.concatenate(self._pending[name], axis=0)
            ds = self._file[name]
            start = ds.shape[0]
            ds.resize(start + block.shape[0], axis=0)
            ds[start:] = block
            self._pending[name] = []
        self._pending_rows = 0

    def _check_open(self) -> None:
        if self.closed:
            raise DatasetError(f"the writer of '{self.path}' is already closed.")

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        """Write the metadata and move the finished file to its final name; returns the path."""
        self._check_open()
        if self._open_rows:
            raise DatasetError(f"'{self.path}': episode {len(self._ended)} is still open ({self._open_rows} records); "
                               "call end_episode() before close().")
        if self.num_records == 0:
            self.abort()
            raise DatasetError(f"no records were written, so '{self.path}' was not created.")
        try:
            self._flush()
            offsets = np.asarray(self._offsets, dtype=np.int64)
            self._file.create_dataset("episode_offsets", data=offsets, fletcher32=True)
            self._file.create_dataset("episode_ended", data=np.asarray(self._ended, dtype=np.uint8), fletcher32=True)
            metadata = self.metadata()
            self._file.attrs["format"] = FORMAT_NAME
            self._file.attrs["layout_version"] = LAYOUT_VERSION
            self._file.attrs["metadata"] = json.dumps(metadata)
            self._file.flush()
            self._file.close()
            with open(self.tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(self.tmp_path, 0o644)
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self._discard()
            raise
        self.closed = True
        with contextlib.suppress(OSError, AttributeError):  # persist the rename itself (POSIX only)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self.path

    def metadata(self) -> dict[str, Any]:
        lengths = np.diff(np.asarray(self._offsets, dtype=np.int64))
        meta = {
            "format": FORMAT_NAME, "layout_version": LAYOUT_VERSION, "robot": self.robot, "step_dt": self.step_dt,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "num_records": int(self.num_records), "num_transitions": int(self.num_records - len(lengths)),
            "num_episodes": len(lengths), "num_ended_episodes": int(sum(self._ended)),
            "columns": {name: ALL_COLUMNS[name] or 1 for name in self.columns},
            "normalizer": fixed_normalizer(),
            "statistics": {name: m.result() for name, m in self._moments.items()},
            "source": self.source,
        }
        for key, value in self.extra_metadata.items():
            meta.setdefault(key, value)
        return json_safe(meta)

    def abort(self) -> None:
        """Give up: delete the temporary file; the final name is left as it was."""
        self.closed = True
        self._discard()

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp_path)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()
