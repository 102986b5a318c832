"""Import of the upstream lite CSV files: alignment, episode splits, numbering, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from rwm.cli import main
from rwm.data import DatasetError, DatasetReader
from rwm.data.csv_import import import_csv


def write_csvs(directory, sizes, terminations=(), seed=0):
    """Files state_action_data_{i}.csv of `sizes` rows; `terminations` are global row indices.

    Column 45 (the first action entry) holds the global row index, so the action pairing is visible.
    """
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    rows = rng.normal(size=(total, 66))
    rows[:, 45] = np.arange(total)
    rows[:, 57:65] = rng.random((total, 8)) > 0.5
    rows[:, 65] = 0.0
    rows[list(terminations), 65] = 1.0
    rows = rows.astype(np.float32).astype(np.float64)  # "%.9g" writes float32 values exactly
    directory.mkdir(exist_ok=True)
    start = 0
    for i, n in enumerate(sizes):
        np.savetxt(directory / f"state_action_data_{i}.csv", rows[start:start + n], delimiter=",", fmt="%.9g")
        start += n
    return rows.astype(np.float32)


def test_alignment_and_episode_splits(tmp_path):
    # terminations: row 0 (upstream skipped it), mid-file, and the last row of file 0 (a file boundary)
    rows = write_csvs(tmp_path / "csv", [20, 15, 10], terminations=[0, 7, 19, 30])
    import_csv(tmp_path / "csv", tmp_path / "d.h5")
    with DatasetReader(tmp_path / "d.h5") as reader:
        assert reader.episode_lengths.tolist() == [1, 7, 12, 11, 14]
        assert reader.episode_ended.tolist() == [True, True, True, True, False]
        data = reader.read(0, reader.num_records)
    assert reader.num_records == 45
    np.testing.assert_array_equal(data["system_state"], rows[:, :45])
    np.testing.assert_array_equal(data["system_contact"], rows[:, 57:65])
    np.testing.assert_array_equal(data["system_termination"][:, 0], rows[:, 65])
    # record t holds the action taken FROM state t: upstream's action of row t+1, across file ends too
    taken = data["system_action"]
    zero_rows = {0, 7, 19, 30, 44}  # termination rows and the last row of the stream
    for t in range(45):
        if t in zero_rows:
            assert not taken[t].any(), t
        else:
            np.testing.assert_array_equal(taken[t], rows[t + 1, 45:57])
            assert taken[t, 0] == t + 1


def test_files_are_concatenated_in_numeric_order(tmp_path):
    rows = write_csvs(tmp_path / "csv", [2] * 12)  # _10 and _11 must come after _9, not after _1
    import_csv(tmp_path / "csv", tmp_path / "d.h5")
    with DatasetReader(tmp_path / "d.h5") as reader:
        np.testing.assert_array_equal(reader.read(0, 24)["system_state"], rows[:, :45])
        assert reader.episode_lengths.tolist() == [24]


def test_missing_and_gapped_files_are_one_error_not_a_wait(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_csv(tmp_path / "nowhere", tmp_path / "d.h5")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="no state_action_data_<i>.csv files"):
        import_csv(tmp_path / "empty_dir", tmp_path / "d.h5")
    write_csvs(tmp_path / "gap", [3, 3, 3])
    (tmp_path / "gap" / "state_action_data_1.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"state_action_data_1.csv' is missing"):
        import_csv(tmp_path / "gap", tmp_path / "d.h5")
    write_csvs(tmp_path / "short", [3, 2])
    with pytest.raises(DatasetError, match=r"state_action_data_1.csv' has 2 rows; expected at least 3"):
        import_csv(tmp_path / "short", tmp_path / "d.h5", min_rows=3)
    assert not (tmp_path / "d.h5").exists()


def _corrupt(tmp_path, line_index, edit):
    directory = tmp_path / "csv"
    write_csvs(directory, [6, 6])
    path = directory / "state_action_data_1.csv"
    lines = path.read_text().splitlines()
    lines[line_index] = edit(lines[line_index])
    path.write_text("\n".join(lines) + "\n")
    return directory, path


@pytest.mark.parametrize("edit, message", [
    (lambda line: ",".join(line.split(",")[:60]), r"row 3 \(line 4\) has 60 columns; expected 66"),
    (lambda line: ",".join(["abc" if i == 50 else v for i, v in enumerate(line.split(","))]),
     r"row 3 \(line 4\) column 50 \(system_action\[5\]\) is 'abc', not a number"),
    (lambda line: ",".join(["nan" if i == 12 else v for i, v in enumerate(line.split(","))]),
     r"row 3 \(line 4\) column 12 \(system_state\[12\] \(joint_pos\[3\]\)\) is nan"),
    (lambda line: ",".join(line.split(",")[:65] + ["0.5"]),
     r"row 3 \(line 4\) column 65 \(system_termination\) is 0.5; expected 0 or 1"),
])
def test_bad_rows_name_file_row_and_column(tmp_path, edit, message):
    directory, path = _corrupt(tmp_path, 3, edit)
    with pytest.raises(DatasetError, match=rf"CSV file '{path}' {message}"):
        import_csv(directory, tmp_path / "d.h5")
    assert not (tmp_path / "d.h5").exists()


def test_cli_prints_one_line_for_an_empty_file(tmp_path, capsys):
    write_csvs(tmp_path / "csv", [4, 4])
    (tmp_path / "csv" / "state_action_data_1.csv").write_text("")
    code = main(["dataset", "import-csv", str(tmp_path / "csv"), "--out", str(tmp_path / "d.h5"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "state_action_data_1.csv' is empty" in err and "Traceback" not in err
    assert not (tmp_path / "d.h5").exists()
