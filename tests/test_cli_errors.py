"""Every failure of the command line is one line naming the thing, never a traceback, and damages nothing.

One test per row of the error table (bench/error_cases.py runs the same table as separate
processes), plus the pieces behind it: checksummed datasets, the cleanup of temporary files,
Ctrl-C during start-up, and unexpected errors with their traceback written to a file.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from rwm.cli import main
from rwm.data import DatasetReader
from rwm.training.checkpoint import list_checkpoints, load_checkpoint
from rwm.training.train import resolve_train_config, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import error_cases as table  # noqa: E402

INIT, PRETRAIN, FINETUNE, OFFLINE = table.INIT, table.PRETRAIN, table.FINETUNE, table.OFFLINE
QUIET = ["runner.console=none", "runner.progress_bar=false", "runner.logger=none", "sim.num_threads=1",
         "runner.num_steps_per_env=8"]
TRAIN = ["train", "--num-envs", "8", "--max-iterations", "1", "--quiet", *QUIET]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    """Run `rwm argv`: exit != 0, one stderr line starting 'rwm ' that holds every fragment, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rwm ")]
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _run_cfg(log_root: Path, task: str = INIT, iterations: int = 2, extra: tuple[str, ...] = ()):
    cfg, _ = resolve_train_config(task, [*QUIET, "runner.save_interval=1", f"runner.log_root={log_root}", *extra],
                                  num_envs=8, max_iterations=iterations, seed=0)
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 2-iteration Init run; tests copy it before changing anything."""
    runner, _ = train(_run_cfg(tmp_path_factory.mktemp("runs")))
    return runner.log_dir


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A recorded dataset of 2112 records (about 2 MB, so 600 kB into it is inside its columns)."""
    path = tmp_path_factory.mktemp("data") / "data.h5"
    assert main(["dataset", "record", "--policy", "random", "--steps", "2048", "--num-envs", "64", "--quiet",
                 "--out", str(path)]) == 0
    return path


def _copy(path: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(path, tmp_path / name) if path.is_dir() else shutil.copy(path, tmp_path / name))


OFFLINE_TRAIN = ["train", "--task", OFFLINE, "--num-envs", "8", "--max-iterations", "1", "--quiet", *QUIET,
                 *table.TINY_WORLD_MODEL]


# ----------------------------------------------------------------------------- the table, row by row
def test_a_log_root_that_is_a_file_is_named(capsys, tmp_path):
    file = tmp_path / "f"
    file.write_text("not a directory\n")
    _fails(capsys, [*TRAIN, f"runner.log_root={file}"], "runner.log_root", f"'{file}' is a file, not a directory",
           "expected a writable directory")
    assert file.read_text() == "not a directory\n"


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc")
def test_a_log_root_under_proc_is_named(capsys):
    _fails(capsys, [*TRAIN, "runner.log_root=/proc/rwm_x"], "runner.log_root = '/proc/rwm_x' cannot hold runs",
           "expected a writable directory")


def test_a_full_disk_while_saving_names_the_file_and_keeps_the_last_checkpoint(capsys, tmp_path):
    disk = tmp_path / "small_disk"
    reason = table.mount_tmpfs(disk)
    if reason is not None:
        pytest.skip(f"a 1.6 MB tmpfs is needed: {reason}")
    try:
        line = _fails(capsys, ["train", "--num-envs", "8", "--max-iterations", "3", "--quiet", *QUIET,
                               f"runner.log_root={disk}", "runner.save_interval=1"], "no space is left on the device")
        assert table.disk_full_check(disk)() is None  # no temporary file left, the last checkpoint loads
        (run_dir,) = (disk / "anymal_d_flat").iterdir()
        last = list_checkpoints(run_dir)[-1]
        assert f"'{last}' is the last checkpoint" in line
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_dataset_damaged_mid_file_fails_merge_and_training_naming_column_and_rows(capsys, dataset, tmp_path):
    damaged = table.damage(_copy(dataset, tmp_path, "damaged.h5"))
    other = _copy(dataset, tmp_path, "other.h5")
    before = table.md5s(damaged, other)
    for argv in (["dataset", "merge", str(damaged), str(other), "--out", str(tmp_path / "merged.h5")],
                 [*OFFLINE_TRAIN, f"runner.log_root={tmp_path / 'logs'}", "--dataset", str(damaged)]):
        line = _fails(capsys, argv, f"dataset '{damaged}' is damaged: column '", "rows ", "cannot be read")
        first, last = map(int, line.split(" rows ")[1].split(" ")[0].split("-"))
        assert 0 <= first <= last < 2112
    assert not (tmp_path / "merged.h5").exists() and not list(tmp_path.glob(".merged.h5*"))
    assert table.md5s(damaged, other) == before


def test_dataset_info_verifies_every_column_and_fails_on_damage(capsys, dataset, tmp_path):
    assert main(["dataset", "info", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "chunk checksums checked" in out and "system_state 0/0" in out and "reward 0/0" in out
    damaged = table.damage(_copy(dataset, tmp_path, "damaged.h5"))
    before = table.md5s(damaged)
    _fails(capsys, ["dataset", "info", str(damaged)], f"dataset '{damaged}' is damaged: column '", "rows ")
    assert table.md5s(damaged) == before
    assert main(["dataset", "info", "--no-verify", str(dataset)]) == 0
    assert "verified" not in capsys.readouterr().out


def test_non_finite_rows_fail_info_with_counts_and_training_naming_the_first(capsys, dataset, tmp_path):
    nan = table.put_nan(_copy(dataset, tmp_path, "nan.h5"))
    both = _copy(nan, tmp_path, "nan_inf.h5")
    with h5py.File(both, "a") as f:
        f["reward"][7] = np.inf
    before = table.md5s(nan, both)
    _fails(capsys, ["dataset", "info", str(both)], f"dataset '{both}' holds non-finite values",
           "column 'system_state' has 1 NaN and 0 inf", f"row {table.NAN_ROW}")
    assert main(["dataset", "info", "--json", str(both)]) != 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["verification"]["columns"]
    assert (counts["system_state"]["nan"], counts["reward"]["inf"], counts["command"]["nan"]) == (1, 1, 0)
    _fails(capsys, [*OFFLINE_TRAIN, f"runner.log_root={tmp_path / 'logs'}", "--dataset", str(nan)],
           f"dataset '{nan}'", f"system_state[{table.NAN_COLUMN}] (base_ang_vel[0]) row {table.NAN_ROW} is nan")
    assert table.md5s(nan, both) == before


@no_cuda
def test_cuda_without_cuda_says_so_for_every_command(capsys, run, tmp_path):
    before = table.md5s(run)
    out = str(tmp_path / "x.h5")
    for argv in (["play", "--run", str(run), "--device", "cuda"],
                 ["dataset", "record", "--run", str(run), "--device", "cuda", "--steps", "8", "--out", out],
                 ["dataset", "record", "--policy", "random", "--steps", "8", "--out", out, "device=cuda"],
                 ["dataset", "record-mixed", "--run", str(run), "--device", "cuda", "--steps", "8", "--out", out],
                 ["visualize", "--run", str(run), "--device", "cuda:1"],
                 ["demo", "--device", "cuda"],
                 ["train", "--resume", str(run), "--device", "cuda", "--max-iterations", "3"],
                 ["train", *TRAIN[1:], f"runner.log_root={tmp_path}", "device=cuda"]):
        line = _fails(capsys, argv, "CUDA is not available here")
        assert "truncated" not in line and "damaged" not in line
    assert table.md5s(run) == before and not Path(out).exists() and not list(tmp_path.iterdir())


def test_a_file_holding_python_objects_is_refused_in_one_sentence(capsys, tmp_path):
    marker = tmp_path / "code_ran"
    code = table.write_code_file(tmp_path / "weights.pt", marker)
    for argv in (["import-upstream", str(code), "--out", str(tmp_path / "x.pt")],
                 ["train", "--task", FINETUNE, "--world-model", str(code), *TRAIN[1:],
                  f"runner.log_root={tmp_path / 'logs'}"],
                 ["play", "--run", str(code)]):
        line = _fails(capsys, argv, f"'{code}' holds Python objects", "rwm never runs them")
        assert "weights_only" not in line and "torch.load" not in line
    assert not marker.exists() and not (tmp_path / "x.pt").exists() and not (tmp_path / "logs").exists()


def test_weights_of_another_shape_name_the_key_and_both_shapes(capsys, run, tmp_path):
    wide = _copy(run, tmp_path, "wide")
    table.widen_first_layer(wide)
    before = table.md5s(wide)
    for argv in (["play", "--run", str(wide), "--quiet"], ["export", "--run", str(wide)],
                 ["train", "--resume", str(wide), "--max-iterations", "4", "--quiet"]):
        _fails(capsys, argv, "'actor.0.weight' has shape (128, 51) there and (128, 48) in this ActorCritic")
    assert table.md5s(wide) == before


def test_an_override_of_a_section_the_task_does_not_use_names_the_tasks_sections(capsys, tmp_path):
    _fails(capsys, ["train", "--task", INIT, "world_model.ensemble_size=3"],
           "'world_model' settings apply to the Pretrain, Finetune and Offline tasks only", f"'{INIT}'",
           "whose sections are env, sim, policy, algorithm, runner.")
    _fails(capsys, ["dataset", "record", "--policy", "random", "--steps", "8", "--out", str(tmp_path / "x.h5"),
                    "world_model_learning.replay_capacity=64"], "'world_model_learning' settings")


def test_a_finetune_override_that_the_loaded_model_contradicts_is_refused(capsys, tmp_path):
    pretrain, _ = train(_run_cfg(tmp_path / "logs", PRETRAIN, iterations=1, extra=tuple(table.TINY_WORLD_MODEL)))
    before = table.md5s(pretrain.log_dir)
    _fails(capsys, ["train", "--task", FINETUNE, "--load-run", str(pretrain.log_dir), *TRAIN[1:],
                    f"runner.log_root={tmp_path / 'finetune'}", *table.TINY_WORLD_MODEL,
                    "world_model.ensemble_size=2"],
           "world_model.ensemble_size = 2 contradicts the loaded world model, which has ensemble_size = 5")
    assert table.md5s(pretrain.log_dir) == before and not (tmp_path / "finetune").exists()


def test_the_loaded_model_fills_defaults_and_refuses_contradicting_choices():
    from rwm.config import ConfigError
    from rwm.world_model.config import WorldModelCfg, with_architecture_of

    loaded = WorldModelCfg(ensemble_size=1, rnn_hidden_size=64)
    assert with_architecture_of(WorldModelCfg(num_mini_batches=2), loaded) == WorldModelCfg(
        ensemble_size=1, rnn_hidden_size=64, num_mini_batches=2)  # defaults: the model's values
    assert with_architecture_of(loaded, loaded) == loaded  # a resumed run's record agrees with its model
    with pytest.raises(ConfigError, match=r"world_model.ensemble_size = 2, world_model.rnn_hidden_size = 32 "
                                          r"contradicts the loaded world model, which has ensemble_size = 1, "
                                          r"rnn_hidden_size = 64"):
        with_architecture_of(WorldModelCfg(ensemble_size=2, rnn_hidden_size=32), loaded)


# ----------------------------------------------------------------------------- also
def test_temporary_files_of_interrupted_writes_are_removed_when_a_run_resumes(capsys, run, tmp_path):
    resumed = _copy(run, tmp_path, "run")
    leftovers = [resumed / ".model_3.pt.k2j4h1.tmp", resumed / ".metrics.jsonl.tmp", resumed / "eval" / ".x.json.a.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    keep = resumed / "notes.tmp"  # not hidden: not ours
    keep.write_text("mine\n")
    assert main(["train", "--resume", str(resumed), "--max-iterations", "3", "--quiet"]) == 0
    assert "removed 3 temporary file(s) of interrupted writes" in capsys.readouterr().out
    assert not any(path.exists() for path in leftovers) and keep.exists()
    assert load_checkpoint(resumed / "model_3.pt")["iter"] == 3


def test_ctrl_c_inside_import_mujoco_prints_one_line(run):
    result = subprocess.run([sys.executable, "-c", table.INTERRUPT_IMPORT, "play", "--run", str(run), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "rwm play: interrupted"


def test_an_unexpected_error_names_the_file_holding_its_traceback(capsys, monkeypatch, tmp_path):
    import rwm.cli

    def broken(args):
        raise RuntimeError("an invariant\nthat broke")

    monkeypatch.setattr(rwm.cli, "cmd_list", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("RWM_DEBUG", raising=False)
    line = _fails(capsys, ["list"], "rwm list: unexpected RuntimeError (an invariant that broke)",
                  "this is a bug in rwm")
    (trace,) = tmp_path.glob("rwm-list-*.traceback.txt")
    assert f"the full traceback is in {trace}" in line
    assert "Traceback" in trace.read_text() and "an invariant" in trace.read_text()
    for argv, env in ((["--debug", "list"], None), (["list", "--debug"], None), (["list"], "1")):
        if env:
            monkeypatch.setenv("RWM_DEBUG", env)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "RuntimeError: an invariant" in err, argv
        assert err.strip().splitlines()[-1].endswith("its traceback is printed above.")


def test_os_errors_are_one_clause_naming_the_file(tmp_path):
    from rwm.errors import describe_os_error, explain

    blocker = tmp_path / "f"
    blocker.write_text("")
    cases = {errno.ENOSPC: "no space is left on the device for '/d/m.pt'; expected room to write it",
             errno.EACCES: "permission to access '/d/m.pt' was denied; expected a location this user may read",
             errno.EROFS: "'/d/m.pt' is on a read-only file system; expected a writable location"}
    for code, text in cases.items():
        assert describe_os_error(OSError(code, "raw", "/d/m.pt")).startswith(text)
    not_dir = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker / "x" / "y"))
    assert describe_os_error(not_dir) == f"'{blocker}' is a file, not a directory; expected a directory there"
    wrapped = RuntimeError("unexpected pos 590080 vs 589968")  # what torch.save makes of a full disk
    wrapped.__context__ = OSError(errno.ENOSPC, "No space left on device", "/d/m.pt")
    assert explain(wrapped).startswith("no space is left on the device for '/d/m.pt'")
    assert explain(FileNotFoundError("run directory 'x' does not exist.")) == "run directory 'x' does not exist."
    assert explain(RuntimeError("a bug")) is None


def test_datasets_carry_checksums_and_those_written_before_them_still_read(capsys, dataset, tmp_path):
    with h5py.File(dataset) as f:
        assert all(f[name].fletcher32 for name in f)
    old = tmp_path / "old.h5"
    with h5py.File(dataset) as src, h5py.File(old, "w") as dst:  # the layout before checksums
        for name in src:
            dst.create_dataset(name, data=src[name][:])
        dst.attrs.update(src.attrs)
    with DatasetReader(old) as reader, DatasetReader(dataset) as new:
        check = reader.verify()
        assert not check["checksums"] and check["problem"] is None
        assert np.array_equal(reader.read(0, 100)["system_state"], new.read(0, 100)["system_state"])
    assert main(["dataset", "info", str(old)]) == 0
    assert "chunk checksums absent (written before rwm stored them)" in capsys.readouterr().out
