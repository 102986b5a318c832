"""Reading what ``torch.save`` wrote: weights-only, and every failure one sentence naming the file.

Below every package that reads torch files (run checkpoints, world-model files, upstream
checkpoints), so that none of them has to import another's module to read one.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from rwm.device import resolve_device

__all__ = ["CheckpointError", "load_torch_file"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one sentence naming the file and the problem."""


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint",
                    map_location: str | torch.device = "cpu") -> Any:
    """What `torch.save` wrote to `path`, loaded weights-only; CheckpointError / FileNotFoundError in one sentence.

    `what` names the file in the messages ("checkpoint", "world-model checkpoint", ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} '{path}' does not exist.")
    if not path.is_file():
        raise CheckpointError(f"{what} '{path}' is not a file.")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise CheckpointError(f"{what} '{path}' is empty.")
    resolve_device(map_location)  # torch would blame the file for a missing GPU
    zip_start = head == b"PK\x03\x04"  # torch.save writes zip archives
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except OSError as error:
        if error.errno is not None:  # permission denied and the like: the file system's answer, not the file's
            raise
        raise CheckpointError(f"{what} '{path}' cannot be read ({_first_line(error)}).") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError, ... here
        if isinstance(error, pickle.UnpicklingError) and "weights only" in str(error).lower():
            raise CheckpointError(f"{what} '{path}' holds Python objects, not only tensors and plain data; "
                                  "rwm never runs them, so it was refused.") from None
        if zip_start:
            detail = "an incomplete zip archive" if not zipfile.is_zipfile(path) else _first_line(error)
            raise CheckpointError(f"{what} '{path}' is truncated or damaged ({detail}).") from None
        raise CheckpointError(f"'{path}' is not a PyTorch checkpoint file (torch.save writes zip archives; "
                              "this file is not one).") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0].split(". ")[0].rstrip(".") if text else type(error).__name__
    return line if len(line) <= 120 else line[:117] + "..."
