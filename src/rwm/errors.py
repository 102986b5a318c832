"""How a failure reaches the user: expected ones as one sentence, anything else with its traceback on file.

Expected failures are the user's input or the machine's state: configuration mistakes and
unusable files (`ValueError` and its subclasses ConfigError, CheckpointError, DatasetError),
and operating-system errors (no space, not a directory, permission denied, ...). Libraries
often wrap an OSError in their own exception (torch.save turns a full disk into a
RuntimeError), so the whole exception chain is searched for one.
"""

from __future__ import annotations

import datetime
import errno
import os
import tempfile
import traceback
from pathlib import Path
from typing import TypeVar

E = TypeVar("E", bound=BaseException)

# Exceptions whose message is already one sentence for the user.
EXPECTED = (ValueError, FileNotFoundError)


def find_in_chain(error: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` among `error` and the causes and contexts Python would print with it
    (`raise ... from None` hides the context, so a message that already explains it is not second-guessed)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def _blocking_file(path: Path) -> Path | None:
    """The first ancestor of `path` that exists but is not a directory (why ENOTDIR was raised)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path if path.exists() and not path.is_dir() else None


# errno -> (what happened to '{path}', what was expected instead)
_OS_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space is left on the device for '{path}'", "room to write it"),
    errno.EDQUOT: ("the disk quota is exhausted for '{path}'", "room to write it"),
    errno.EACCES: ("permission to access '{path}' was denied", "a location this user may read and write"),
    errno.EPERM: ("'{path}' may not be changed by this user", "a location this user may read and write"),
    errno.EROFS: ("'{path}' is on a read-only file system", "a writable location"),
    errno.EISDIR: ("'{path}' is a directory", "a file"),
    errno.ENOENT: ("'{path}' does not exist", "an existing file or directory"),
}


def os_error_fact(error: OSError) -> str:
    """What went wrong, naming the file: "'f' is a file, not a directory" instead of "[Errno 20] ..."."""
    path = None if error.filename is None else os.fsdecode(error.filename)
    reason = (error.strerror or type(error).__name__).rstrip(".")
    if path is None:
        return f"an operating-system call failed ({reason})"
    if error.errno == errno.ENOTDIR:
        blocker = _blocking_file(Path(path))
        return (f"'{blocker}' is a file, not a directory" if blocker is not None
                else f"a part of '{path}' is not a directory")
    template = _OS_ERRORS.get(error.errno, ("'{path}' could not be used (" + reason + ")", ""))[0]
    return template.format(path=path)


def describe_os_error(error: OSError) -> str:
    """One clause: what went wrong with which file, and what was expected there."""
    expected = "a directory there" if error.errno == errno.ENOTDIR else _OS_ERRORS.get(error.errno, ("", ""))[1]
    fact = os_error_fact(error)
    return f"{fact}; expected {expected}" if expected and error.filename is not None else fact


def write_traceback(error: BaseException, command: str) -> Path | None:
    """Write the full traceback of `error` to a new file in the temporary directory; None if that fails too."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"{command.replace(' ', '-')}-{stamp}-{os.getpid()}.traceback.txt"
    try:
        path.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    except OSError:
        return None
    return path


def one_line(text: str) -> str:
    """`text` as one line: what a user-facing error message must be."""
    return " ".join(text.split())


def explain(error: BaseException) -> str | None:
    """The one sentence an expected failure is reported with; None when `error` is unexpected (a bug)."""
    raw_os_error = isinstance(error, OSError) and error.errno is not None  # not one of rwm's own sentences
    if isinstance(error, EXPECTED) and not raw_os_error:
        return one_line(str(error))
    os_error = error if raw_os_error else find_in_chain(error, OSError)
    if os_error is not None and os_error.errno is not None:
        return describe_os_error(os_error) + "."
    return None
