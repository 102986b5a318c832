"""Atomic, durable file writes: a crash or Ctrl-C mid-write never leaves a truncated file behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from rwm.errors import find_in_chain


# Temporary files of atomic writes are hidden names beside their target: ".<name>.<random>.tmp".
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".", ".tmp"


def temporary_file(path: Path) -> tuple[int, str]:
    """(descriptor, name) of a new temporary file beside `path`, named so `remove_temporaries` finds it."""
    return tempfile.mkstemp(dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix=TEMPORARY_SUFFIX)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    An operating-system error (a full disk, say) is raised as an OSError naming `path`, also
    when the writer wrapped it in its own exception (torch.save raises a RuntimeError).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        os_error = find_in_chain(error, OSError)
        if os_error is not None and os_error.errno is not None and not isinstance(error, KeyboardInterrupt):
            raise OSError(os_error.errno, os_error.strerror, os.fspath(path)) from error
        raise
    with contextlib.suppress(OSError, AttributeError):  # persist the rename itself (POSIX only)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left under `directory`; returns them.

    A killed process cannot clean up after itself, so whoever takes the directory over next does.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for tmp in directory.rglob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"):
        if tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed
