"""The error table, run as a user runs it: every case is an `rwm` command in its own process.

A case passes when the command exits != 0, prints no "Traceback" on stderr, says what went wrong
in exactly one stderr line starting "rwm " that names the thing (every fragment listed for the
case appears in it), and every file that existed before in the run or dataset it touches has
the same md5 afterwards (plus a few case-specific checks: no output file appeared, the code in a
pickle never ran, the last checkpoint before a full disk still loads).

The fixtures are made first in a temporary directory: a tiny Init run (R), a tiny Pretrain run
with a 5-member world model, a recorded dataset, a copy of it damaged by 200 kB of random bytes
at offset 600 kB, a copy with a NaN, a torch file whose pickle would run code, and a copy of R
whose first actor layer is 3 inputs wider. The disk-full case needs a 1.6 MB tmpfs, so it runs
as root only (skipped otherwise), and the CUDA cases only where there is no CUDA.

Prints one JSON object as the last stdout line: cases, passed, failed (counts), failed_cases,
skipped (name -> reason), and per case its exit code and error line. `--quick` leaves out the second
command of rows that have two; a full run also writes bench/results/error_cases.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

INIT, PRETRAIN = "Velocity-Flat-Anymal-D-Init-v0", "Velocity-Flat-Anymal-D-Pretrain-v0"
FINETUNE, OFFLINE = "Velocity-Flat-Anymal-D-Finetune-v0", "Velocity-Flat-Anymal-D-Offline-v0"
QUIET = ["--quiet", "sim.num_threads=1", "runner.num_steps_per_env=8"]
# a seconds-long world model with the default ensemble of 5
TINY_WORLD_MODEL = ["world_model.rnn_num_layers=1", "world_model.rnn_hidden_size=32",
                    "world_model.state_mean_shape=[32]", "world_model.state_logstd_shape=[32]",
                    "world_model.aux_shape=[32]",
                    "world_model.history_horizon=4", "world_model.forecast_horizon=2",
                    "world_model.num_mini_batches=1", "world_model.mini_batch_size=16",
                    "world_model_learning.replay_capacity=64", "world_model_learning.eval_length=12",
                    "world_model_learning.eval_interval=100"]
NAN_ROW, NAN_COLUMN = 5, 3  # system_state[3] is base_ang_vel[0]
# Ctrl-C while `import mujoco` runs: the process sends itself SIGINT when the import starts.
INTERRUPT_IMPORT = """
import importlib.abc, os, signal, sys
class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mujoco":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
from rwm.cli import main
sys.exit(main(sys.argv[1:]))
"""


# ----------------------------------------------------------------------------- damaged inputs (shared with tests)
def damage(path: Path, offset: int = 600 * 1024, size: int = 200 * 1024, seed: int = 0) -> Path:
    """Overwrite `size` bytes of `path` at `offset` with random bytes, as a failing disk or copy would."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def put_nan(path: Path, row: int = NAN_ROW, column: int = NAN_COLUMN) -> Path:
    """Write a NaN into system_state[row, column] of a dataset (h5py keeps its checksums right)."""
    import h5py

    with h5py.File(path, "a") as f:
        f["system_state"][row, column] = np.nan
    return path


class _RunsCode:
    """Unpickling this would call os.system: what a weights-only load must never do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_code_file(path: Path, marker: Path) -> Path:
    """A torch file whose pickle would create `marker` if it were ever loaded with code."""
    import torch

    torch.save({"system_dynamics_state_dict": {"weights": _RunsCode(marker)}}, path)
    return path


def widen_first_layer(run: Path, extra_inputs: int = 3) -> Path:
    """Give the latest checkpoint of `run` an actor whose first layer takes `extra_inputs` more inputs."""
    import torch

    from rwm.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint

    checkpoint = find_checkpoint(run)
    payload = load_checkpoint(checkpoint)
    weight = payload["model_state_dict"]["actor.0.weight"]
    payload["model_state_dict"]["actor.0.weight"] = torch.cat([weight, weight[:, :extra_inputs]], dim=1)
    save_checkpoint(checkpoint, payload)
    return checkpoint


def md5s(*paths: Path) -> dict[str, str]:
    """md5 of every file under `paths` (files or directories)."""
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


# ----------------------------------------------------------------------------- the table
@dataclass
class Case:
    name: str
    argv: list[str]  # after `rwm`, or a full command when `python` is set
    fragments: list[str]  # what the error line must name
    watch: list[Path] = field(default_factory=list)  # files / directories that must stay byte-identical
    check: Callable[[], str | None] | None = None  # a further check: None, or what went wrong
    python: bool = False  # argv is `python -c ...`
    extra: bool = False  # the second command of a row: left out by --quick
    exit_code: int | None = None  # a specific code expected (else any != 0)


def rwm(*args: str) -> list[str]:
    return [sys.executable, "-m", "rwm.cli", *args]


def run(argv: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("RWM_DEBUG", None)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def make_fixtures(root: Path) -> dict[str, Path]:
    """The runs, datasets and files the cases read (see the module docstring)."""
    logs = root / "logs"
    for argv in (["train", "--task", INIT, "--num-envs", "8", "--max-iterations", "3", *QUIET,
                  f"runner.log_root={logs}", "runner.run_name=r"],
                 ["train", "--task", PRETRAIN, "--num-envs", "8", "--max-iterations", "1", *QUIET,
                  f"runner.log_root={logs}", "runner.run_name=p", *TINY_WORLD_MODEL],
                 ["dataset", "record", "--policy", "random", "--steps", "2048", "--num-envs", "64", "--quiet",
                  "--out", str(root / "data.h5")]):
        result = run(rwm(*argv), root)
        if result.returncode != 0:
            raise SystemExit(f"fixture `rwm {' '.join(argv)}` failed: {result.stderr.strip()[-2000:]}")
    runs = sorted((logs / "anymal_d_flat").iterdir())
    fixtures = {"run": next(p for p in runs if p.name.endswith("_r")),
                "pretrain": next(p for p in runs if p.name.endswith("_p")), "data": root / "data.h5"}
    fixtures["other"] = Path(shutil.copy(fixtures["data"], root / "other.h5"))
    fixtures["damaged"] = damage(Path(shutil.copy(fixtures["data"], root / "damaged.h5")))
    fixtures["nan"] = put_nan(Path(shutil.copy(fixtures["data"], root / "nan.h5")))
    fixtures["marker"] = root / "code_ran"
    fixtures["code"] = write_code_file(root / "weights.pt", fixtures["marker"])
    fixtures["wide"] = Path(shutil.copytree(fixtures["run"], root / "wide_run"))
    widen_first_layer(fixtures["wide"])
    fixtures["file"] = root / "not_a_dir"
    fixtures["file"].write_text("a file where the log root should be\n")
    return fixtures


def mount_tmpfs(path: Path, size: str = "1600k") -> str | None:
    """Mount a small tmpfs at `path`; the reason why not, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    return None if result.returncode == 0 else f"mount -t tmpfs failed: {result.stderr.strip()}"


def disk_full_check(log_root: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        from rwm.training.checkpoint import list_checkpoints, load_checkpoint

        runs = list((log_root / "anymal_d_flat").iterdir())
        leftovers = [p.name for run in runs for p in run.iterdir() if p.name.endswith(".tmp")]
        if leftovers:
            return f"temporary files left: {leftovers}"
        saved = [c for run in runs for c in list_checkpoints(run)]
        if not saved:
            return "no checkpoint was written before the disk filled"
        load_checkpoint(saved[-1])  # the last one written is intact
        return None
    return check


def absent(*paths: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        there = [str(p) for p in paths if p.exists()]
        return f"should not exist: {there}" if there else None
    return check


def cases(f: dict[str, Path], root: Path, tmpfs: Path | None) -> list[Case]:
    import torch

    run, wide, pretrain = str(f["run"]), str(f["wide"]), str(f["pretrain"])
    offline = ["train", "--task", OFFLINE, "--num-envs", "8", "--max-iterations", "1", *QUIET,
               f"runner.log_root={root / 'logs_offline'}", *TINY_WORLD_MODEL]
    damaged_rows = [str(f["damaged"]), "column", "rows", "damaged"]
    nan_row = [str(f["nan"]), f"row {NAN_ROW}", "nan"]
    table = [
        Case("log root is a file", ["train", "--num-envs", "8", "--max-iterations", "1", *QUIET,
                                    f"runner.log_root={f['file']}"],
             ["runner.log_root", str(f["file"]), "not a directory"], [f["file"]]),
        Case("log root under /proc", ["train", "--num-envs", "8", "--max-iterations", "1", *QUIET,
                                      "runner.log_root=/proc/rwm_x"], ["runner.log_root", "/proc/rwm_x"]),
        Case("HDF5 damaged mid-file: merge", ["dataset", "merge", str(f["damaged"]), str(f["other"]),
                                              "--out", str(root / "merged.h5")],
             damaged_rows, [f["damaged"], f["other"]], absent(root / "merged.h5")),
        Case("HDF5 damaged mid-file: Offline training", [*offline, "--dataset", str(f["damaged"])], damaged_rows,
             [f["damaged"]], extra=True),
        Case("HDF5 damaged mid-file: dataset info", ["dataset", "info", str(f["damaged"])], damaged_rows,
             [f["damaged"]]),
        Case("NaN row: dataset info", ["dataset", "info", str(f["nan"])], [*nan_row, "non-finite"], [f["nan"]]),
        Case("NaN row: Offline training", [*offline, "--dataset", str(f["nan"])], nan_row, [f["nan"]], extra=True),
        Case("--device cuda without CUDA: play", ["play", "--run", run, "--device", "cuda", "--quiet"],
             ["cuda", "CUDA is not available"], [f["run"]]),
        Case("--device cuda without CUDA: dataset record",
             ["dataset", "record", "--run", run, "--device", "cuda", "--steps", "8", "--quiet",
              "--out", str(root / "cuda.h5")],
             ["cuda", "CUDA is not available"], [f["run"]], absent(root / "cuda.h5"), extra=True),
        Case("non-weights-only file: import-upstream", ["import-upstream", str(f["code"]), "--out",
                                                        str(root / "x.pt")],
             [str(f["code"]), "Python objects", "never runs"], [f["code"]], absent(root / "x.pt", f["marker"])),
        Case("non-weights-only file: Finetune --world-model",
             ["train", "--task", FINETUNE, "--world-model", str(f["code"]), "--num-envs", "8", *QUIET,
              f"runner.log_root={root / 'logs_finetune'}"],
             [str(f["code"]), "Python objects", "never runs"], [f["code"]], absent(f["marker"]), extra=True),
        Case("weight shapes differ: play", ["play", "--run", wide, "--quiet"],
             ["actor.0.weight", "(128, 51)", "(128, 48)"], [f["wide"]]),
        Case("weight shapes differ: --resume", ["train", "--resume", wide, "--max-iterations", "5", "--quiet"],
             ["actor.0.weight", "(128, 51)", "(128, 48)"], [f["wide"]], extra=True),
        Case("override of a section the task does not use",
             ["train", "--task", INIT, *QUIET, "world_model.ensemble_size=3"],
             ["world_model", INIT, "env, sim, policy, algorithm, runner"]),
        Case("Finetune override contradicting the loaded model",
             ["train", "--task", FINETUNE, "--load-run", pretrain, "--num-envs", "8", "--max-iterations", "1", *QUIET,
              f"runner.log_root={root / 'logs_finetune'}", *TINY_WORLD_MODEL, "world_model.ensemble_size=2"],
             ["world_model.ensemble_size = 2", "ensemble_size = 5"], [f["pretrain"]],
             absent(root / "logs_finetune")),
        Case("Ctrl-C during start-up (inside import mujoco)",
             [sys.executable, "-c", INTERRUPT_IMPORT, "play", "--run", run, "--quiet"], ["interrupted"],
             [f["run"]], python=True, exit_code=130),
    ]
    if tmpfs is not None:
        table.insert(2, Case("disk full while saving",
                             ["train", "--num-envs", "8", "--max-iterations", "3", *QUIET,
                              f"runner.log_root={tmpfs}", "runner.save_interval=1"],
                             ["no space", "model_2.pt", "model_1.pt"], check=disk_full_check(tmpfs)))
    if torch.cuda.is_available():
        table = [case for case in table if "CUDA" not in case.name]
    return table


def evaluate(case: Case, root: Path) -> dict:
    """Run one case; its verdict and what it printed."""
    before = md5s(*case.watch)
    result = run(case.argv if case.python else rwm(*case.argv), root)
    lines = [line for line in result.stderr.splitlines() if line.startswith("rwm ")]
    problems = []
    if result.returncode == 0 or (case.exit_code is not None and result.returncode != case.exit_code):
        problems.append(f"exit code {result.returncode}")
    if "Traceback" in result.stderr:
        problems.append("a traceback on stderr")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines starting 'rwm ' on stderr")
    missing = [fragment for fragment in case.fragments if not lines or fragment not in lines[-1]]
    if missing:
        problems.append(f"the error line does not name {missing}")
    changed = [path for path, digest in before.items() if md5s(Path(path)).get(path) != digest]
    if changed:
        problems.append(f"changed or removed: {changed}")
    if case.check is not None:
        problem = case.check()
        if problem:
            problems.append(problem)
    return {"name": case.name, "passed": not problems, "exit_code": result.returncode,
            "error_line": lines[-1] if lines else result.stderr.strip()[-500:], "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the second command of two-command rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rwm_error_cases_") as tmp:
        root = Path(tmp)
        fixtures = make_fixtures(root)
        tmpfs, skipped = root / "tmpfs", {}
        reason = mount_tmpfs(tmpfs)
        if reason is not None:
            skipped["disk full while saving"] = reason
        try:
            table = cases(fixtures, root, None if reason else tmpfs)
            results = []
            for case in table:
                if args.quick and case.extra:
                    continue
                verdict = evaluate(case, root)
                results.append(verdict)
                status = "ok  " if verdict["passed"] else "FAIL"
                print(f"{status} {case.name}: {verdict['error_line']}" +
                      ("" if verdict["passed"] else f"  <- {'; '.join(verdict['problems'])}"), flush=True)
        finally:
            if reason is None:
                subprocess.run(["umount", str(tmpfs)], check=False)
    failed = [r["name"] for r in results if not r["passed"]]
    emit("error_cases", {"cases": len(results), "passed": len(results) - len(failed), "failed": len(failed),
                         "failed_cases": failed, "skipped": skipped, "results": results}, quick=args.quick)


if __name__ == "__main__":
    main()
