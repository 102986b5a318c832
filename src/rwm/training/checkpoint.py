"""Checkpoint files: what is in them, how they are written, and how they are checked when read.

A checkpoint is one ``model_<iter>.pt`` file holding a plain dict:

    model_state_dict       the actor-critic, including the observation normalisers' buffers
    optimizer_state_dict   PPO's Adam state
    iter                   completed iterations: model_K.pt is the state after K iterations
    infos                  a small dict (reason for the save, env steps, wall-clock time) or None
    config                 the resolved task configuration as plain data (rwm.config.to_dict)
    obs_layout             {"policy": 48, "num_actions": 12, "layout_version": 1}
    rng_state              torch / numpy / python generators, the environment's torch generator
                           and the simulator's numpy generator, as tensors and plain values
    <extension keys>       e.g. a world model's ``system_dynamics_state_dict`` (added by runner
                           extensions, see rwm.training.extension.RunnerExtension)

The upstream key names are kept so that tools written for them find what they expect; what
upstream forgot (normaliser statistics, the config, the observation layout, RNG states) is
added. Files are written atomically (temporary file in the same directory, flush, fsync,
rename) so a crash or Ctrl-C never leaves a truncated checkpoint under a real name, and they
are read with ``torch.load(weights_only=True)`` only: a checkpoint can never run code.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rwm.io import atomic_write
from rwm.torch_files import CheckpointError, load_torch_file

__all__ = [
    "CheckpointError", "LAYOUT_VERSION", "REQUIRED_KEYS", "obs_layout", "save_checkpoint", "load_checkpoint",
    "load_weights",
    "check_obs_layout", "find_checkpoint", "list_checkpoints", "checkpoint_iteration", "capture_rng_state", "restore_rng_state",
]

LAYOUT_VERSION = 1
REQUIRED_KEYS = ("model_state_dict", "optimizer_state_dict", "iter", "infos", "config", "obs_layout")
_NAME = re.compile(r"^model_(\d+)\.pt$")


def obs_layout(num_policy_obs: int, num_actions: int) -> dict[str, int]:
    """The observation/action layout a policy was trained on; a checkpoint only loads into the same one."""
    return {"policy": int(num_policy_obs), "num_actions": int(num_actions), "layout_version": LAYOUT_VERSION}


# ----------------------------------------------------------------------------- writing
def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically and durably; returns the path."""
    path = Path(path)
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks the keys {missing}; expected all of {list(REQUIRED_KEYS)}.")
    return atomic_write(path, lambda fh: torch.save(payload, fh))


# ----------------------------------------------------------------------------- reading
def load_checkpoint(path: str | os.PathLike, expected_layout: dict[str, int] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint (weights-only); raises CheckpointError / FileNotFoundError with one sentence."""
    path = Path(path)
    payload = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(payload, dict):
        raise CheckpointError(f"'{path}' is not an rwm checkpoint (it holds a {type(payload).__name__}, "
                              "expected a dict with model_state_dict, config and obs_layout).")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"'{path}' is not an rwm checkpoint (missing keys: {', '.join(missing)}).")
    if not isinstance(payload["iter"], int) or payload["iter"] < 0:
        raise CheckpointError(f"checkpoint '{path}' has iter = {payload['iter']!r}; expected a non-negative integer.")
    if not isinstance(payload["config"], dict):
        raise CheckpointError(f"checkpoint '{path}' has a config of type {type(payload['config']).__name__}; "
                              "expected a mapping.")
    if expected_layout is not None:
        check_obs_layout(payload, expected_layout, path)
    return payload


def load_weights(module: torch.nn.Module, state_dict: Any, what: str) -> None:
    """`module.load_state_dict(state_dict)`, or a CheckpointError naming `what`, the first key that does not
    fit and both shapes (torch's own error lists every key over many lines)."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{what} holds a {type(state_dict).__name__} where a state dict belongs.")
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in state_dict:
            raise CheckpointError(f"{what} lacks the weights '{key}' (shape {tuple(value.shape)}) that this "
                                  f"{type(module).__name__} has.")
        found = state_dict[key]
        if not isinstance(found, torch.Tensor):
            raise CheckpointError(f"{what} holds a {type(found).__name__} under '{key}'; expected a tensor of "
                                  f"shape {tuple(value.shape)}.")
        if found.shape != value.shape:
            raise CheckpointError(f"{what} does not fit: '{key}' has shape {tuple(found.shape)} there and "
                                  f"{tuple(value.shape)} in this {type(module).__name__}.")
    extra = [key for key in state_dict if key not in expected]
    if extra:
        raise CheckpointError(f"{what} holds the weights '{extra[0]}', which this {type(module).__name__} does not "
                              "have.")
    module.load_state_dict(state_dict)


def check_obs_layout(payload: dict[str, Any], expected: dict[str, int], path: str | os.PathLike = "checkpoint") -> None:
    """Raise CheckpointError unless the checkpoint's observation layout equals `expected`."""
    found = payload.get("obs_layout")
    if not isinstance(found, dict) or {k: found.get(k) for k in expected} != dict(expected):
        raise CheckpointError(f"checkpoint '{path}' was trained with observation layout {found}, but this task "
                              f"uses {dict(expected)}; it cannot drive this policy.")


# ----------------------------------------------------------------------------- finding
def checkpoint_iteration(path: str | os.PathLike) -> int:
    """The iteration in a checkpoint's file name model_<iter>.pt."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"'{path}' is not named model_<iteration>.pt.")
    return int(match.group(1))


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's model_<iter>.pt files, sorted by iteration."""
    found = [p for p in Path(run_dir).iterdir() if _NAME.match(p.name) and p.is_file()]
    return sorted(found, key=checkpoint_iteration)


def find_checkpoint(run_or_file: str | os.PathLike, checkpoint: str | None = None) -> Path:
    """Resolve a run directory (its latest model_*.pt, or `checkpoint` inside it) or a checkpoint file."""
    path = Path(run_or_file)
    if not path.exists():
        raise FileNotFoundError(f"run directory or checkpoint '{path}' does not exist.")
    if path.is_file():
        if checkpoint is not None:
            raise ValueError(f"'{path}' is already a checkpoint file; pass its run directory to choose "
                             f"--checkpoint {checkpoint}.")
        return path
    if checkpoint is not None:
        candidate = Path(checkpoint)
        if not candidate.is_absolute() and not candidate.exists():
            candidate = path / checkpoint
        if not candidate.is_file():
            available = ", ".join(p.name for p in list_checkpoints(path)) or "none"
            raise FileNotFoundError(f"checkpoint '{checkpoint}' is not in run directory '{path}' "
                                    f"(available: {available}).")
        return candidate
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"run directory '{path}' holds no model_<iter>.pt checkpoint.")
    return found[-1]


# ----------------------------------------------------------------------------- RNG states
def capture_rng_state(env: Any = None) -> dict[str, Any]:
    """Every random generator a training run draws from, as tensors and plain values (weights-only safe)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    generator = getattr(env, "generator", None)
    if isinstance(generator, torch.Generator):
        state["env_generator"] = generator.get_state()
    sim_rng = getattr(getattr(env, "sim", None), "rng", None)
    if isinstance(sim_rng, np.random.Generator):
        state["sim_rng"] = sim_rng.bit_generator.state
    return state


def restore_rng_state(state: dict[str, Any], env: Any = None) -> None:
    """Put back what :func:`capture_rng_state` recorded (missing entries are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["bit_generator"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
    generator = getattr(env, "generator", None)
    if "env_generator" in state and isinstance(generator, torch.Generator):
        generator.set_state(state["env_generator"].cpu())
    sim_rng = getattr(getattr(env, "sim", None), "rng", None)
    if "sim_rng" in state and isinstance(sim_rng, np.random.Generator):
        sim_rng.bit_generator.state = state["sim_rng"]
