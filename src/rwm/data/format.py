"""The on-disk layout of rwm transition datasets: one HDF5 file, read through h5py.

Why HDF5 (and not Parquet): the readers of a dataset want *row ranges* — a chunk to stream
through, an episode, a window of 40 steps at a random place — out of files that may not fit in
memory. HDF5 datasets are n-dimensional, chunked, resizable arrays with cheap random slicing
(`ds[a:b]` reads only the chunks it touches), so a (T, 45) state array stays a (T, 45) array on
disk, appends are a resize, and a window is one slice. Parquet is built for column scans of
tables: row groups are read whole, a 45-wide vector becomes 45 columns or a list column, and
random windows cost a row-group decode each. HDF5 is also what Minari stores by default, so the
one library (h5py) serves both. The price is a binary format that a crash mid-write can corrupt,
which the writer avoids by writing to a temporary name and renaming at the end.

File layout (layout version 1)::

    /system_state        (R, 45) float32   raw (not normalised), docs/architecture.md#observations order
    /system_action       (R, 12) float32   the action taken FROM the state of the same record
    /system_contact      (R, 8)  float32   thigh LF LH RF RH | foot LF LH RF RH, 0/1
    /system_termination  (R, 1)  float32   base contact of the state, 0/1
    /policy_observation  (R, 48) float32   optional: the 48-dim policy input seen at that state
    /command             (R, 3)  float32   optional: velocity command (vx*, vy*, wz*) at that state
    /reward              (R,)    float32   optional: reward of the step taken from that state
    /episode_offsets     (E+1,)  int64     episode e is records [offsets[e], offsets[e+1])
    /episode_ended       (E,)    uint8     1: the episode ended in the simulator (fall or time limit)
    root attributes: format="rwm-transitions", layout_version=1, metadata=<JSON text>

Every dataset is chunked with HDF5's Fletcher-32 checksum filter, so a damaged chunk fails when
read (DatasetReader names the column and rows; `rwm dataset info` reads them all). Files written
before the checksums were added have none and still read.

R records, E episodes, stored episode after episode. Record k of an episode is (s_k, a_k,
contact and termination of s_k): the same record semantics as `rwm.world_model.ReplayBuffer`.
The **last record of every episode carries a zero action**: nothing follows it in the data.
If the episode ended in the simulator (`episode_ended` = 1) that record is the state it ended
in — a fall (system_termination 1) or the time limit (0) — i.e. ReplayBuffer's terminal
record; otherwise the recording stopped there. An episode of T records holds T-1 transitions.
Its reward is 0 and its command/policy observation are those of the state (for a terminal
record the policy observation is assembled noise-free, since the simulator reset before it
observed).

Metadata (JSON in the root attribute ``metadata``): format, layout_version, robot, step_dt,
created_at (ISO 8601, UTC), num_records, num_transitions, num_episodes, num_ended_episodes,
columns ({name: width}), normalizer (the fixed state/action mean/std of docs/architecture.md#normalisation that the
world model uses), statistics (per column mean/std over all records of this file), source
(what produced the data: {"kind": "policy", run, checkpoint, iteration} / {"kind": "random"} /
"csv" / "minari" / "merge" ...), plus free keys a producer adds (task, seed, num_envs, ...).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from rwm.sim.state import ACTION_DIM, CONTACT_DIM, STATE_DIM, STATE_SLICES, TERMINATION_DIM

FORMAT_NAME = "rwm-transitions"
LAYOUT_VERSION = 1
ROBOT = "anymal_d"
STEP_DT = 0.02  # s, 50 Hz control (docs/architecture.md#conventions)
POLICY_OBS_DIM = 48
COMMAND_DIM = 3

# column -> width; None means a scalar per record (shape (R,))
REQUIRED_COLUMNS: dict[str, int | None] = {
    "system_state": STATE_DIM,
    "system_action": ACTION_DIM,
    "system_contact": CONTACT_DIM,
    "system_termination": TERMINATION_DIM,
}
OPTIONAL_COLUMNS: dict[str, int | None] = {
    "policy_observation": POLICY_OBS_DIM,
    "command": COMMAND_DIM,
    "reward": None,
}
ALL_COLUMNS: dict[str, int | None] = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
# the names ReplayBuffer.sample uses for the four required streams
BUFFER_NAMES = {"system_state": "state", "system_action": "action", "system_contact": "contact",
                "system_termination": "termination"}


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file, and the column and row where it can."""


def column_shape(name: str, rows: int) -> tuple[int, ...]:
    width = ALL_COLUMNS[name]
    return (rows,) if width is None else (rows, width)


def column_label(name: str, col: int | None) -> str:
    """'system_state[10] (joint_pos[1])' - the human name of one column of a stream."""
    if col is None:
        return name
    label = f"{name}[{col}]"
    if name == "system_state":
        for group, sl in STATE_SLICES.items():
            if sl.start <= col < sl.stop:
                return f"{label} ({group}[{col - sl.start}])"
    return label


def check_column(where: str, name: str, value: Any, rows: int | None = None, first_row: int = 0) -> np.ndarray:
    """`value` as a float32 array of the column's shape; DatasetError naming where/column/row otherwise.

    `where` names the source ("file 'x.h5'", "episode 3"); `first_row` offsets the reported row.
    """
    if name not in ALL_COLUMNS:
        raise DatasetError(f"{where}: unknown column '{name}' (expected one of {', '.join(ALL_COLUMNS)}).")
    try:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: column '{name}' is not numeric.") from None
    width = ALL_COLUMNS[name]
    if width is None and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    expected = "(T,)" if width is None else f"(T, {width})"
    if (width is None and array.ndim != 1) or (width is not None and (array.ndim != 2 or array.shape[1] != width)):
        raise DatasetError(f"{where}: column '{name}' has shape {tuple(array.shape)}; expected {expected}.")
    if rows is not None and array.shape[0] != rows:
        raise DatasetError(f"{where}: column '{name}' has {array.shape[0]} rows; expected {rows} like system_state.")
    check_finite(where, name, array, first_row)
    return array


def check_finite(where: str, name: str, array: np.ndarray, first_row: int = 0) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        row = int(bad[0]) + first_row
        col = int(bad[1]) if array.ndim == 2 else None
        value = array[tuple(bad)]
        raise DatasetError(f"{where}: column {column_label(name, col)} row {row} is {value} (non-finite); "
                           "datasets must hold finite numbers only.")


def fixed_normalizer() -> dict[str, list[float]]:
    """The world model's fixed statistics (docs/architecture.md#normalisation), recorded with every dataset."""
    from rwm.world_model.config import ACTION_MEAN, ACTION_STD, STATE_MEAN, STATE_STD

    return {"state_mean": list(STATE_MEAN), "state_std": list(STATE_STD),
            "action_mean": list(ACTION_MEAN), "action_std": list(ACTION_STD)}


class RunningMoments:
    """Per-column mean and (population) std over chunks, merged with Chan's formula (float64)."""

    def __init__(self):
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, chunk: np.ndarray) -> None:  # chunk (n, d) or (n,)
        chunk = np.asarray(chunk, dtype=np.float64)
        n = chunk.shape[0]
        if n == 0:
            return
        mean = chunk.mean(axis=0)
        m2 = ((chunk - mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def result(self) -> dict[str, list[float]] | None:
        if self.count == 0:
            return None
        std = np.sqrt(self.m2 / self.count)
        return {"mean": np.atleast_1d(self.mean).tolist(), "std": np.atleast_1d(std).tolist()}


def json_safe(value: Any) -> Any:
    """Plain JSON data (numpy scalars/arrays -> lists; non-finite floats -> None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
