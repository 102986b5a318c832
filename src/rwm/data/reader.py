"""DatasetReader: a dataset file read in pieces - chunks, episodes, random windows - or loaded into a ReplayBuffer.

Nothing is read whole unless asked: `iter_chunks` streams row ranges, `sample_windows` reads
just the windows it draws (or, when the file is smaller than `cache_bytes`, loads it once and
indexes memory). Every block read is checked for non-finite values, so a damaged file fails
with the column and row instead of poisoning a model.

Windows follow the ReplayBuffer's rule: a window is L consecutive records of ONE episode, so it
never crosses an episode end, and an episode's terminal record can only be a window's last.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rwm.data.format import (
    ALL_COLUMNS,
    BUFFER_NAMES,
    FORMAT_NAME,
    LAYOUT_VERSION,
    REQUIRED_COLUMNS,
    DatasetError,
    RunningMoments,
    check_finite,
    column_label,
    column_shape,
)
from rwm.data.writer import import_h5py


class DatasetReader:
    """Read-only view of one dataset file; use as a context manager or call `close()`."""

    def __init__(self, path: str | os.PathLike, cache_bytes: int = 1 << 30):
        h5py = import_h5py()
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"dataset '{self.path}' does not exist.")
        if not self.path.is_file():
            raise DatasetError(f"dataset '{self.path}' is not a file.")
        if self.path.stat().st_size == 0:
            raise DatasetError(f"dataset '{self.path}' is empty (0 bytes).")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            if "signature" in str(error):
                raise DatasetError(f"'{self.path}' is not an HDF5 file (rwm datasets are; CSV files go through "
                                   "`rwm dataset import-csv`).") from None
            raise self._damaged("its HDF5 structure", error) from None
        try:
            self._validate()
        except (OSError, KeyError, RuntimeError) as error:  # h5py's answers to damaged headers and indexes
            self._file.close()
            raise self._damaged("its structure (episode index, column headers or metadata)", error) from None
        except BaseException:
            self._file.close()
            raise
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ structure
    def _validate(self) -> None:
        f, where = self._file, f"dataset '{self.path}'"
        if f.attrs.get("format") != FORMAT_NAME:
            raise DatasetError(f"{where} is not an rwm transition dataset (its 'format' attribute is "
                               f"{f.attrs.get('format')!r}; expected '{FORMAT_NAME}').")
        version = int(f.attrs.get("layout_version", -1))
        if version != LAYOUT_VERSION:
            raise DatasetError(f"{where} has layout version {version}; this rwm reads version {LAYOUT_VERSION}.")
        try:
            self.metadata: dict[str, Any] = json.loads(f.attrs["metadata"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{where} has no readable 'metadata' attribute (JSON expected).") from None
        for name in ("episode_offsets", "episode_ended", *REQUIRED_COLUMNS):
            if name not in f:
                raise DatasetError(f"{where} has no column '{name}'.")
        self.columns = tuple(name for name in ALL_COLUMNS if name in f)
        rows = f["system_state"].shape[0]
        for name in self.columns:
            shape = tuple(f[name].shape)
            if shape != column_shape(name, rows):
                raise DatasetError(f"{where}: column '{name}' has shape {shape}; expected {column_shape(name, rows)}.")
        offsets = np.asarray(f["episode_offsets"][:], dtype=np.int64)
        ended = np.asarray(f["episode_ended"][:]).astype(bool)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != rows:
            raise DatasetError(f"{where}: episode_offsets must run from 0 to the {rows} records; "
                               f"found {offsets[:1].tolist()} ... {offsets[-1:].tolist()}.")
        if len(offsets) > 1 and not (np.diff(offsets) > 0).all():
            bad = int(np.argmax(np.diff(offsets) <= 0))
            raise DatasetError(f"{where}: episode {bad} is empty or out of order in episode_offsets.")
        if ended.shape != (len(offsets) - 1,):
            raise DatasetError(f"{where}: episode_ended has {ended.shape[0]} entries; expected {len(offsets) - 1}.")
        self.episode_offsets = offsets  # (E+1,)
        self.episode_ended = ended  # (E,)
        self.num_records = int(rows)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ended)

    @property
    def num_transitions(self) -> int:
        return self.num_records - self.num_episodes

    @property
    def episode_lengths(self) -> np.ndarray:  # (E,)
        return np.diff(self.episode_offsets)

    # ------------------------------------------------------------------ reading
    def read(self, start: int, stop: int, columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Records [start, stop) of `columns` (default: all stored), float32, checked finite."""
        names = self._columns(columns)
        start, stop = max(0, int(start)), min(self.num_records, int(stop))
        out = {}
        for name in names:
            if self._cache is not None:
                block = self._cache[name][start:stop].copy()  # callers may write into what they get
            else:
                block = self._read_stored(name, start, stop)
                check_finite(f"dataset '{self.path}'", name, block, first_row=start)
            out[name] = block
        return out

    def _read_stored(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of column `name` as stored; a damaged chunk is a DatasetError naming its rows."""
        block, damage = self._try_read_stored(name, start, stop)
        if damage is not None:
            raise damage[2]
        return block

    def _try_read_stored(self, name: str, start: int, stop: int
                         ) -> tuple[np.ndarray | None, tuple[int, int, DatasetError] | None]:
        """(rows [start, stop) of column `name`, None), or (None, (first, last, error)) for its first damaged chunk."""
        try:
            return np.asarray(self._file[name][start:stop], dtype=np.float32), None
        except (OSError, KeyError, RuntimeError) as error:
            first, last = self._damaged_rows(name, start, stop)
            return None, (first, last, self._damaged(f"column '{name}' rows {first}-{last}", error))

    def _damaged_rows(self, name: str, start: int, stop: int) -> tuple[int, int]:
        """The first and last row of the first chunk of [start, stop) that cannot be read."""
        try:
            rows = (self._file[name].chunks or (stop - start,))[0]
        except (OSError, KeyError, RuntimeError):
            return start, stop - 1
        for a in range(start - start % rows, stop, rows):
            a, b = max(a, start), min(a + rows, stop)
            try:
                self._file[name][a:b]
            except (OSError, KeyError, RuntimeError):
                return a, b - 1
        return start, stop - 1

    def _damaged(self, what: str, error: BaseException) -> DatasetError:
        """The error for a part of the file that HDF5 cannot read: checksum mismatch or broken structure."""
        detail = str(error).strip().splitlines()[0].strip("'\"") if str(error).strip() else type(error).__name__
        if "(" in detail:  # h5py: "Can't synchronously read data (wrong B-tree signature)": keep the cause
            detail = detail[detail.rindex("(") + 1:].rstrip(")")
        reason = "their checksum does not match" if "filter returned failure" in detail else f"HDF5: {detail}"
        return DatasetError(f"dataset '{self.path}' is damaged: {what} cannot be read ({reason}); record or copy "
                            "the file again.")

    def verify(self, chunk_size: int = 65536) -> dict[str, Any]:
        """Read every row of every column: per column the NaN and inf counts and the damaged row ranges.

        Returns {"checksums": every column carries a Fletcher-32 checksum (files written before
        they were added do not), "columns": {name: {"nan", "inf", "damaged_rows": [[first, last], ...]}},
        "problem": one sentence about the first damage, else the first non-finite value, else None}.
        """
        columns: dict[str, dict[str, Any]] = {}
        damage: list[str] = []
        non_finite: list[str] = []
        for name in self.columns:
            counts: dict[str, Any] = {"nan": 0, "inf": 0, "damaged_rows": []}
            first_bad: tuple[int, int | None, float] | None = None
            for a in range(0, self.num_records, chunk_size):
                b = min(a + chunk_size, self.num_records)
                while a < b:  # past a damaged chunk, the rest of the block is still read
                    block, damaged = self._try_read_stored(name, a, b)
                    if damaged is not None:
                        first, last, error = damaged
                        counts["damaged_rows"].append([first, last])
                        damage.append(str(error))
                        a = last + 1
                        continue
                    nan, inf = np.isnan(block), np.isinf(block)
                    counts["nan"] += int(nan.sum())
                    counts["inf"] += int(inf.sum())
                    if first_bad is None and (nan.any() or inf.any()):
                        where = np.argwhere(nan | inf)[0]
                        first_bad = (a + int(where[0]), int(where[1]) if block.ndim == 2 else None,
                                     float(block[tuple(where)]))
                    a = b
            columns[name] = counts
            if first_bad is not None:
                row, col, value = first_bad
                non_finite.append(f"dataset '{self.path}' holds non-finite values: column '{name}' has "
                                  f"{counts['nan']} NaN and {counts['inf']} inf, the first in "
                                  f"{column_label(name, col)} row {row} ({value}).")
        checksums = all(bool(self._file[name].fletcher32) for name in self.columns)
        problems = damage + non_finite
        return {"checksums": checksums, "columns": columns, "problem": problems[0] if problems else None}

    def _columns(self, columns) -> tuple[str, ...]:
        if columns is None:
            return self.columns
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise DatasetError(f"dataset '{self.path}' has no column(s) {missing} (it holds {list(self.columns)}).")
        return tuple(columns)

    def iter_chunks(self, chunk_size: int = 65536, columns: tuple[str, ...] | None = None
                    ) -> Iterator[dict[str, Any]]:
        """Consecutive blocks of at most `chunk_size` records, in file order, each row exactly once.

        Each chunk holds the columns ((n, d) arrays), "first_row" (its first record's index) and
        per-row flags (n,) "episode_start", "episode_end" (last record of its episode) and
        "terminal" (last record of an episode that ended in the simulator).
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size = {chunk_size!r}; expected an integer >= 1.")
        starts, ends = self.episode_offsets[:-1], self.episode_offsets[1:] - 1
        terminal_rows = ends[self.episode_ended]
        for a in range(0, self.num_records, chunk_size):
            b = min(a + chunk_size, self.num_records)
            chunk: dict[str, Any] = self.read(a, b, columns)
            rows = np.arange(a, b)
            chunk["first_row"] = a
            chunk["episode_start"] = np.isin(rows, starts[(starts >= a) & (starts < b)])
            chunk["episode_end"] = np.isin(rows, ends[(ends >= a) & (ends < b)])
            chunk["terminal"] = np.isin(rows, terminal_rows[(terminal_rows >= a) & (terminal_rows < b)])
            yield chunk

    def episode(self, index: int, columns: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Episode `index`: its columns ((T, d) arrays), "ended" and "index"."""
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"episode {index} is outside [0, {self.num_episodes}).")
        out: dict[str, Any] = self.read(self.episode_offsets[index], self.episode_offsets[index + 1], columns)
        out["ended"] = bool(self.episode_ended[index])
        out["index"] = index
        return out

    def iter_episodes(self, columns: tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
        for index in range(self.num_episodes):
            yield self.episode(index, columns)

    # ------------------------------------------------------------------ windows
    def num_windows(self, length: int) -> int:
        """Distinct windows of `length` records inside one episode each."""
        _check_length(length)
        return int(np.maximum(self.episode_lengths - length + 1, 0).sum())

    def sample_windows(self, n: int, length: int, generator: torch.Generator | None = None,
                       device: str | torch.device = "cpu", return_index: bool = False) -> dict[str, torch.Tensor]:
        """`n` windows of `length` records drawn uniformly with replacement among the valid ones.

        Returns ReplayBuffer.sample's keys {"state", "action", "contact", "termination"}, each
        (n, length, d) raw float32, plus the optional columns under their own names
        ("policy_observation" (n, L, 48), "command" (n, L, 3), "reward" (n, L)); with
        `return_index`, also "episode" (n,) and "start" (n,) (first record's row).
        """
        _check_length(length)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"number of windows = {n!r}; expected an integer >= 1.")
        lengths = self.episode_lengths
        counts = np.maximum(lengths - length + 1, 0)  # (E,) valid starts per episode
        total = int(counts.sum())
        if total == 0:
            longest = int(lengths.max()) if len(lengths) else 0
            raise DatasetError(f"dataset '{self.path}' holds no window of {length} records (its longest episode "
                               f"has {longest}); ask for shorter windows.")
        gen_device = generator.device if generator is not None else "cpu"
        pick = torch.randint(total, (n,), generator=generator, device=gen_device).cpu().numpy()  # (n,)
        cum = np.cumsum(counts)
        episode = np.searchsorted(cum, pick, side="right")  # (n,)
        start = self.episode_offsets[episode] + pick - (cum[episode] - counts[episode])  # (n,)
        blocks = self._gather(start, length)
        out = {BUFFER_NAMES.get(name, name): torch.from_numpy(block).to(device) for name, block in blocks.items()}
        if return_index:
            out["episode"] = torch.from_numpy(episode.astype(np.int64)).to(device)
            out["start"] = torch.from_numpy(start.astype(np.int64)).to(device)
        return out

    def _gather(self, start: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """(n, L, d) blocks of rows start[i] .. start[i]+L-1."""
        if self._cache is None and self._nbytes() <= self.cache_bytes:
            self._cache = self.read(0, self.num_records)  # checked once here, indexed in memory from now on
        if self._cache is not None:
            rows = start[:, None] + np.arange(length)[None, :]  # (n, L)
            return {name: self._cache[name][rows] for name in self.columns}
        out = {name: np.empty((len(start), length, *column_shape(name, 0)[1:]), dtype=np.float32)
               for name in self.columns}
        for i in np.argsort(start, kind="stable"):  # file order: neighbouring windows share chunks
            block = self.read(start[i], start[i] + length)
            for name in self.columns:
                out[name][i] = block[name]
        return out

    def _nbytes(self) -> int:
        return sum(4 * math.prod(self._file[name].shape) for name in self.columns)

    # ------------------------------------------------------------------ replay buffer
    def fill_replay_buffer(self, buffer=None, *, num_envs: int = 1, device: str | torch.device = "cpu"):
        """Load every record into a ReplayBuffer (replacing its contents) and return it.

        Episodes are packed in file order into the buffer's per-environment lanes, each marked
        as an episode start and, if it ended, closed by a terminal record, so the buffer's
        windows are exactly this dataset's windows. A new buffer gets `num_envs` lanes sized to
        hold whole episodes; an existing one must be large enough (an episode longer than its
        capacity is cut into pieces, which only loses the windows across the cut).
        """
        from rwm.world_model.replay_buffer import ReplayBuffer

        lengths = self.episode_lengths
        if buffer is None:
            if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
                raise ValueError(f"num_envs = {num_envs!r}; expected an integer >= 1.")
            pieces, fill = _pack(lengths, self.episode_ended, num_envs, capacity=None)
            buffer = ReplayBuffer(num_envs, max(1, int(fill.max())), device=device)
        else:
            for name, stream in BUFFER_NAMES.items():
                if buffer.dims[stream] != REQUIRED_COLUMNS[name]:
                    raise DatasetError(f"the replay buffer's {stream} width is {buffer.dims[stream]}; dataset "
                                       f"'{self.path}' has {REQUIRED_COLUMNS[name]}.")
            pieces, fill = _pack(lengths, self.episode_ended, buffer.num_envs, capacity=buffer.capacity)
        n, c = buffer.num_envs, buffer.capacity
        src, size, lane, pos, ends_terminal = pieces  # (P,) each
        dest_lane = np.repeat(lane, size)  # (R,)
        dest_pos = np.repeat(pos - src, size) + np.arange(self.num_records)  # (R,)
        data = {name: np.zeros((n, c, REQUIRED_COLUMNS[name]), dtype=np.float32) for name in REQUIRED_COLUMNS}
        for chunk in self.iter_chunks(1 << 16, columns=tuple(REQUIRED_COLUMNS)):
            a = chunk["first_row"]
            b = a + len(chunk["system_state"])
            for name in REQUIRED_COLUMNS:
                data[name][dest_lane[a:b], dest_pos[a:b]] = chunk[name]
        episode_start = np.zeros((n, c), dtype=bool)
        episode_start[lane, pos] = True
        terminal = np.zeros((n, c), dtype=bool)
        terminal[lane[ends_terminal], (pos + size - 1)[ends_terminal]] = True
        filled = ReplayBuffer.from_records({BUFFER_NAMES[name]: value for name, value in data.items()},
                                           episode_start, terminal, fill, device=buffer.device)
        buffer.load_state_dict(filled.state_dict())  # a given buffer object is filled in place
        return buffer

    # ------------------------------------------------------------------ summary
    def statistics(self) -> dict[str, dict[str, list[float]]]:
        """Per-column mean/std over all records: from the metadata, or computed by one pass."""
        stored = self.metadata.get("statistics") or {}
        if all(stored.get(name) for name in self.columns):
            return {name: stored[name] for name in self.columns}
        moments = {name: RunningMoments() for name in self.columns}
        for chunk in self.iter_chunks():
            for name in self.columns:
                moments[name].update(chunk[name])
        return {name: m.result() for name, m in moments.items()}

    def info(self) -> dict[str, Any]:
        """A summary: sizes, episode lengths, how episodes ended, source, per-column mean/std."""
        lengths = self.episode_lengths
        last_rows = self.episode_offsets[1:] - 1
        fell = np.zeros(self.num_episodes, dtype=bool)
        termination_records = 0
        for chunk in self.iter_chunks(1 << 16, columns=("system_termination",)):
            a = chunk["first_row"]
            flags = chunk["system_termination"][:, 0] > 0.5
            termination_records += int(flags.sum())
            inside = (last_rows >= a) & (last_rows < a + len(flags))
            fell[inside] = flags[last_rows[inside] - a]
        fell &= self.episode_ended
        e = max(self.num_episodes, 1)
        meta = self.metadata
        return {
            "path": str(self.path), "format": FORMAT_NAME, "layout_version": LAYOUT_VERSION,
            "robot": meta.get("robot"), "step_dt": meta.get("step_dt"), "created_at": meta.get("created_at"),
            "source": meta.get("source"),
            "num_records": self.num_records, "num_transitions": self.num_transitions,
            "num_episodes": self.num_episodes,
            "episodes_fell": int(fell.sum()), "episodes_timed_out": int((self.episode_ended & ~fell).sum()),
            "episodes_cut": int((~self.episode_ended).sum()),
            "episode_length": {"min": int(lengths.min()), "mean": float(lengths.mean()),
                               "median": float(np.median(lengths)), "max": int(lengths.max())},
            "termination_share": {"episodes": float(fell.sum() / e),
                                  "records": float(termination_records / max(self.num_records, 1))},
            "columns": {name: ALL_COLUMNS[name] or 1 for name in self.columns},
            "statistics": self.statistics(),
        }

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self._file.close()
        self._cache = None

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_dataset(path: str | os.PathLike, **kwargs) -> DatasetReader:
    return DatasetReader(path, **kwargs)


def _check_length(length: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"window length = {length!r}; expected an integer >= 1.")


def _pack(lengths: np.ndarray, ended: np.ndarray, num_lanes: int, capacity: int | None):
    """Place episodes, in order, into `num_lanes` lanes.

    capacity None: whole episodes, a lane is closed once it holds ceil(R / lanes) records.
    capacity C: a lane is closed when the next episode does not fit; an episode longer than C
    is cut into pieces. Returns ((src, size, lane, pos, ends_terminal), fill per lane).
    """
    total = int(lengths.sum())
    target = math.ceil(total / num_lanes)
    src, size, lane_of, pos_of, term = [], [], [], [], []
    fill = np.zeros(num_lanes, dtype=np.int64)
    lane, offset = 0, 0
    for length, did_end in zip(lengths.tolist(), ended.tolist()):
        remaining = length
        while remaining > 0:
            if capacity is None:
                if fill[lane] >= target and lane + 1 < num_lanes:
                    lane += 1
                piece = remaining
            else:
                free = capacity - fill[lane]
                if (remaining <= capacity and remaining > free) or free == 0:
                    lane += 1
                    free = capacity
                if lane >= num_lanes:
                    raise DatasetError(f"the dataset's {total} records in {len(lengths)} episodes do not fit a "
                                       f"replay buffer of {num_lanes} environments x {capacity} records; use a "
                                       "larger buffer or let fill_replay_buffer create one.")
                piece = min(remaining, free)
            src.append(offset)
            size.append(piece)
            lane_of.append(lane)
            pos_of.append(int(fill[lane]))
            term.append(bool(did_end) and piece == remaining)
            fill[lane] += piece
            offset += piece
            remaining -= piece
    arrays = (np.asarray(src, dtype=np.int64), np.asarray(size, dtype=np.int64), np.asarray(lane_of, dtype=np.int64),
              np.asarray(pos_of, dtype=np.int64), np.asarray(term, dtype=bool))
    return arrays, fill
