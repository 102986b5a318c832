"""Import of the upstream lite's CSV data (docs/architecture.md#offline) into an rwm dataset file.

Upstream layout: files ``state_action_data_{i}.csv``, i = 0, 1, ..., no header, 66 columns::

    [0:45]  system_state (raw)    [45:57] system_action    [57:65] contacts    [65] termination

Each file is one continuous 50 Hz stream; the files, in index order (numeric: 2 before 10),
are concatenated along time.

Action alignment. Upstream's action column is ``system_action``, the action that led *into*
the state of its row (docs/architecture.md#conventions: A[t] led into S[t]; the action taken from S[t] is A[t+1]).
Our records pair a state with the action taken *from* it, so record t gets A[t+1], looked up
across file boundaries (the files are one stream). The last row of the stream and every
termination row get a zero action: nothing follows them.

Episodes. A row whose termination flag is 1 is the terminal state of its episode (it ends an
episode that "ended", and the next row starts a new one) - including row 0, which upstream's
loader skipped (docs/upstream.md #32). Upstream never flagged time-out resets (docs/upstream.md #10), so a
time-out inside a file cannot be seen and stays inside an episode; the last episode of the
stream is marked as cut, not ended.

Unlike upstream, missing, empty or malformed files are one clear error (no retry loop).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rwm.data.format import DatasetError, column_label
from rwm.data.writer import DatasetWriter

CSV_PATTERN = re.compile(r"^state_action_data_(\d+)\.csv$")
CSV_COLUMNS = 66
STATE, ACTION, CONTACT, TERMINATION = slice(0, 45), slice(45, 57), slice(57, 65), slice(65, 66)


def csv_column_label(col: int) -> str:
    if col < 45:
        return column_label("system_state", col)
    if col < 57:
        return f"system_action[{col - 45}]"
    if col < 65:
        return f"system_contact[{col - 57}]"
    return "system_termination"


def find_csv_files(directory: str | os.PathLike) -> list[Path]:
    """The upstream files of `directory` in index order; a gap in the numbering is an error."""
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"CSV directory '{directory}' does not exist.")
    if not directory.is_dir():
        raise DatasetError(f"'{directory}' is not a directory; expected the folder holding "
                           "state_action_data_0.csv, ...")
    found = {int(m.group(1)): p for p in directory.iterdir() if (m := CSV_PATTERN.match(p.name))}
    if not found:
        raise FileNotFoundError(f"no state_action_data_<i>.csv files in '{directory}'.")
    for i in range(max(found) + 1):
        if i not in found:
            raise FileNotFoundError(f"'{directory / f'state_action_data_{i}.csv'}' is missing: the files must be "
                                    f"numbered 0, 1, 2, ... without gaps (found {sorted(found)[:10]}).")
    return [found[i] for i in sorted(found)]


def read_csv_blocks(path: Path, block_rows: int = 100_000, min_rows: int = 1) -> Iterator[np.ndarray]:
    """(n, 66) float32 blocks of `path`; DatasetError naming file, row and column on bad data."""
    row = 0  # data rows read so far
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        lines: list[tuple[int, str]] = []
        for line_no, line in enumerate(fh, start=1):
            if line.strip():
                lines.append((line_no, line))
            if len(lines) >= block_rows:
                yield _parse(path, lines, row)
                row += len(lines)
                lines = []
        if lines:
            yield _parse(path, lines, row)
            row += len(lines)
    if row == 0:
        raise DatasetError(f"CSV file '{path}' is empty; expected rows of {CSV_COLUMNS} comma-separated numbers.")
    if row < min_rows:
        raise DatasetError(f"CSV file '{path}' has {row} rows; expected at least {min_rows}.")


def _parse(path: Path, lines: list[tuple[int, str]], first_row: int) -> np.ndarray:
    try:
        block = np.loadtxt([text for _, text in lines], delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        block = None
    if block is None or block.shape[1] != CSV_COLUMNS:  # find the first bad row and say exactly what is wrong
        for i, (line_no, text) in enumerate(lines):
            fields = text.rstrip("\r\n").split(",")
            where = f"CSV file '{path}' row {first_row + i} (line {line_no})"
            if len(fields) != CSV_COLUMNS:
                raise DatasetError(f"{where} has {len(fields)} columns; expected {CSV_COLUMNS} "
                                   "(45 state, 12 action, 8 contact, 1 termination).")
            for col, field in enumerate(fields):
                try:
                    float(field)
                except ValueError:
                    raise DatasetError(f"{where} column {col} ({csv_column_label(col)}) is {field.strip()!r}, "
                                       "not a number.") from None
        raise DatasetError(f"CSV file '{path}' rows {first_row}..{first_row + len(lines) - 1} could not be read.")
    finite = np.isfinite(block)
    if not finite.all():
        i, col = (int(v) for v in np.argwhere(~finite)[0])
        raise DatasetError(f"CSV file '{path}' row {first_row + i} (line {lines[i][0]}) column {col} "
                           f"({csv_column_label(col)}) is {block[i, col]}; expected a finite number.")
    flags = block[:, TERMINATION.start]
    bad = np.nonzero((flags != 0.0) & (flags != 1.0))[0]
    if len(bad):
        i = int(bad[0])
        raise DatasetError(f"CSV file '{path}' row {first_row + i} (line {lines[i][0]}) column 65 "
                           f"(system_termination) is {flags[i]}; expected 0 or 1.")
    return block.astype(np.float32)


def _emit(writer: DatasetWriter, block: np.ndarray, next_action: np.ndarray | None) -> None:
    """Write one block of the stream; `next_action` is the action column of the row after it (None: end)."""
    into = block[:, ACTION]  # (n, 12) A[t]: led into S[t]
    taken = np.empty_like(into)  # (n, 12) the action taken from S[t] = A[t+1]
    taken[:-1] = into[1:]
    taken[-1] = 0.0 if next_action is None else next_action
    terminal = block[:, TERMINATION.start] == 1.0  # (n,)
    taken[terminal] = 0.0
    start = 0
    for t in np.nonzero(terminal)[0].tolist():
        writer.append(block[start:t + 1, STATE], taken[start:t + 1], block[start:t + 1, CONTACT],
                      block[start:t + 1, TERMINATION])
        writer.end_episode(ended=True)
        start = t + 1
    if start < len(block):
        writer.append(block[start:, STATE], taken[start:], block[start:, CONTACT], block[start:, TERMINATION])


def import_csv(directory: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, min_rows: int = 1,
               block_rows: int = 100_000, progress: bool = False) -> dict:
    """Convert the upstream CSV files of `directory` into the dataset file `out`; returns a summary."""
    from tqdm import tqdm

    files = find_csv_files(directory)
    source = {"kind": "csv", "directory": str(Path(directory).resolve()), "files": [p.name for p in files],
              "action_alignment": "upstream column 45:57 is the action that led into its row; record t holds "
                                  "the action of row t+1 (zero on termination rows and the last row)",
              "policy": "unknown (upstream lite data)"}
    with DatasetWriter(out, source=source, overwrite=overwrite) as writer:
        pending: np.ndarray | None = None
        for path in tqdm(files, desc="importing", unit="file", disable=not progress, leave=False):
            for block in read_csv_blocks(path, block_rows, min_rows):
                if pending is not None:
                    _emit(writer, pending, next_action=block[0, ACTION])
                pending = block
        _emit(writer, pending, next_action=None)
        if writer.open_records:
            writer.end_episode(ended=False)
        summary = {"path": str(out), "files": len(files), "num_records": writer.num_records,
                   "num_episodes": writer.num_episodes, "num_transitions": writer.num_records - writer.num_episodes}
    return summary
