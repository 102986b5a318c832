"""This process's place in a multi-process run: the launcher's variables, the process group and its collectives.

:class:`DistributedContext` joins the group torchrun describes (gloo on CPU, nccl on CUDA) and
turns every failed or timed-out collective into a one-sentence :class:`DistributedError`; how
training uses it is :mod:`rwm.training.distributed`.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Iterator, TypeVar

import torch
import torch.distributed as dist

from rwm.config import apply_overrides, config_hash
from rwm.tasks.anymal_d_flat import TaskCfg

__all__ = ["DEFAULT_TIMEOUT_S", "LAUNCHER_VARIABLES", "TIMEOUT_VARIABLE", "DistributedContext", "DistributedError",
           "LaunchEnvironment", "finish_process", "shard", "timeout_from_environ"]

LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_VARIABLE = "RWM_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0

T = TypeVar("T")


class DistributedError(ValueError):
    """Distributed training cannot start or go on; the message is one sentence naming the rank and the cause."""


# ----------------------------------------------------------------------------- launcher environment
@dataclass(frozen=True)
class LaunchEnvironment:
    """What the launcher (torchrun) tells each process about itself."""

    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "LaunchEnvironment":
        """Read the launcher's variables, or raise a :class:`DistributedError` saying how to launch."""
        environ = os.environ if environ is None else environ
        missing = [name for name in LAUNCHER_VARIABLES if not environ.get(name)]
        if missing:
            raise DistributedError(
                f"--distributed needs the variables a launcher sets ({', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set); start the command under torchrun, e.g. "
                "`torchrun --nproc-per-node 2 -m rwm.cli train ... --distributed`.")
        values = {}
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
            try:
                values[name] = int(environ[name])
            except ValueError:
                raise DistributedError(f"the launcher variable {name}={environ[name]!r} is not an integer.") from None
        if values["WORLD_SIZE"] < 1 or not 0 <= values["RANK"] < values["WORLD_SIZE"] or values["LOCAL_RANK"] < 0:
            raise DistributedError(f"the launcher variables RANK={values['RANK']}, LOCAL_RANK={values['LOCAL_RANK']} "
                                   f"and WORLD_SIZE={values['WORLD_SIZE']} are inconsistent.")
        return cls(rank=values["RANK"], local_rank=values["LOCAL_RANK"], world_size=values["WORLD_SIZE"],
                   master_addr=environ["MASTER_ADDR"], master_port=values["MASTER_PORT"])


def timeout_from_environ(environ: Mapping[str, str] | None = None) -> float:
    """The collective timeout in seconds: ``RWM_DISTRIBUTED_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`."""
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise DistributedError(f"{TIMEOUT_VARIABLE}={text!r} is not a positive number of seconds.")
    return value


def shard(indices: Sequence[T] | torch.Tensor | int, rank: int, world_size: int) -> Any:
    """The part of a data set that rank `rank` of `world_size` trains on.

    `indices` is a sequence or tensor of sample indices (or an int n, meaning ``range(n)``); rank
    r gets every world_size-th entry starting at r, so the shards are disjoint, cover every
    index, and differ in size by at most one. Shuffle `indices` with a seed shared by all ranks
    first if the data set is ordered (e.g. by episode). Meant for data-set modes (Offline):
    every rank takes the same number of optimizer steps on its shard, and the trainer's
    ``gradient_reducer`` averages the gradients.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"shard got world_size={world_size!r}, expected a positive integer.")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"shard got rank={rank!r}, expected an integer in [0, {world_size}).")
    if isinstance(indices, int) and not isinstance(indices, bool):
        return range(rank, indices, world_size)
    return indices[rank::world_size]


def _to_cpu(obj: Any) -> Any:
    """A copy of `obj` with every tensor on the CPU (what is broadcast must not name a rank's GPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):  # dict or OrderedDict (a state_dict, whose _metadata is kept)
        out = type(obj)((k, _to_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _first_line(error: BaseException) -> str:
    """The first sentence of an error, without the "[file.cc:123] " prefix of torch's C++ errors."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", text.splitlines()[0].strip())
    return re.split(r"\.\s", line, maxsplit=1)[0].rstrip(".")


# ----------------------------------------------------------------------------- the process group
class DistributedContext:
    """This process's place in the process group, and the collectives training needs.

    Every collective converts a failure (another rank died, or did not answer within the
    timeout) into a one-sentence :class:`DistributedError`. Use as a context manager, or call
    :meth:`close`, to leave the group.
    """

    def __init__(self, rank: int, world_size: int, device: torch.device | str = "cpu", *, local_rank: int = 0,
                 backend: str = "gloo", timeout_s: float = DEFAULT_TIMEOUT_S, group: Any = None,
                 owns_group: bool = False):
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.local_rank = int(local_rank)
        self.device = torch.device(device)
        self.backend = backend
        self.timeout_s = float(timeout_s)
        self.group = group
        self._owns_group = owns_group
        # gloo reduces CPU (or CUDA) tensors; nccl only CUDA ones: small control tensors go here
        self.comm_device = self.device if backend == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------ set-up / tear-down
    @classmethod
    def from_environment(cls, device: str = "cpu", timeout_s: float | None = None) -> "DistributedContext":
        """Join the process group the launcher's environment variables describe (``env://``, so torchrun's
        own store is used); gloo on CPU, nccl on CUDA with device cuda:LOCAL_RANK. `timeout_s` defaults
        to ``RWM_DISTRIBUTED_TIMEOUT`` (or 600 s)."""
        launch = LaunchEnvironment.from_environ()
        timeout_s = timeout_from_environ() if timeout_s is None else float(timeout_s)
        where = f"rank {launch.rank} of {launch.world_size}"
        if str(device).startswith("cuda"):
            if not torch.cuda.is_available():
                raise DistributedError(f"{where}: device '{device}' was requested but CUDA is not available here.")
            if launch.local_rank >= torch.cuda.device_count():
                raise DistributedError(f"{where}: LOCAL_RANK {launch.local_rank} has no GPU of its own (this machine "
                                       f"has {torch.cuda.device_count()}); start at most that many processes per "
                                       "machine (--nproc-per-node).")
            rank_device = torch.device("cuda", launch.local_rank)
            torch.cuda.set_device(rank_device)
            backend = "nccl" if dist.is_nccl_available() else "gloo"
        else:
            rank_device = torch.device(device)
            backend = "gloo"
        if not dist.is_available():
            raise DistributedError(f"{where}: this PyTorch build has no torch.distributed support.")
        if dist.is_initialized():
            raise DistributedError(f"{where}: a torch.distributed process group is already initialised in this "
                                   "process.")
        global _JOINED_A_GROUP
        _JOINED_A_GROUP = True
        try:
            dist.init_process_group(backend=backend, init_method="env://", rank=launch.rank,
                                    world_size=launch.world_size, timeout=datetime.timedelta(seconds=timeout_s))
        except Exception as error:  # noqa: BLE001 - every start-up failure is reported the same way
            raise DistributedError(
                f"{where}: could not join the process group at {launch.master_addr}:{launch.master_port} within "
                f"{timeout_s:g} s ({_first_line(error)}); check that every rank was started with the same "
                "MASTER_ADDR/MASTER_PORT and can reach it.") from None
        return cls(launch.rank, launch.world_size, rank_device, local_rank=launch.local_rank, backend=backend,
                   timeout_s=timeout_s, owns_group=True)

    def close(self, barrier: bool = False) -> None:
        """Leave the process group (after a barrier, when `barrier`, so no rank exits while others still work)."""
        if not self._owns_group or not dist.is_initialized():
            return
        try:
            if barrier:
                self.barrier()
        finally:
            self._owns_group = False
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    def __enter__(self) -> "DistributedContext":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(barrier=exc_type is None)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes, logs and evaluates."""
        return self.rank == 0

    def __repr__(self) -> str:
        return (f"DistributedContext(rank={self.rank}, world_size={self.world_size}, device={self.device}, "
                f"backend={self.backend}, timeout_s={self.timeout_s:g})")

    # ------------------------------------------------------------------ error handling
    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except DistributedError:
            raise
        except (RuntimeError, ConnectionError, OSError) as error:  # DistBackendError is a RuntimeError
            detail = _first_line(error)
            if "timed out" in detail.lower() or "timeout" in detail.lower():
                message = (f"rank {self.rank} of {self.world_size}: {what} timed out after {self.timeout_s:g} s "
                           f"(the torch.distributed timeout, {TIMEOUT_VARIABLE}): another rank failed or is stuck; "
                           "see its error")
            else:
                message = (f"rank {self.rank} of {self.world_size}: {what} failed because another rank stopped "
                           f"({detail})")
            raise DistributedError(message + ".") from None

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        with self._collective("waiting for the other ranks"):
            # a barrier made of an all-reduce: honours the timeout on every backend
            flag = torch.zeros(1, device=self.comm_device)
            dist.all_reduce(flag, group=self.group)
            if self.backend == "nccl":
                flag.item()

    def all_reduce_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of `parameters` across ranks in place, with ONE all-reduce of a flat buffer.

        Parameters without a gradient contribute zeros and keep no gradient (every rank builds the
        same graph, so they are the same parameters on every rank).
        """
        params = [p for p in parameters if p.requires_grad]
        if not params or self.world_size == 1:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        with self._collective("the gradient all-reduce"):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def mean(self, value: torch.Tensor | float) -> torch.Tensor:
        """The mean of `value` (a tensor or a number) over ranks, as a tensor on `value`'s device."""
        tensor = torch.as_tensor(value)
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
        if self.world_size == 1:
            return tensor.detach().clone()
        out = tensor.detach().to(self.comm_device).clone()
        with self._collective("averaging across ranks"):
            dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return (out / self.world_size).to(tensor.device)

    def sum(self, tensor: torch.Tensor, what: str = "summing across ranks") -> torch.Tensor:
        """The element-wise sum of `tensor` over ranks (a new tensor on `tensor`'s device)."""
        if self.world_size == 1:
            return tensor.detach().clone()
        out = tensor.detach().to(self.comm_device).clone()
        with self._collective(what):
            dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out.to(tensor.device)

    def any(self, flag: bool) -> bool:
        """True on every rank iff `flag` is true on some rank."""
        if self.world_size == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.comm_device)
        with self._collective("agreeing with the other ranks"):
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item() > 0)

    def all(self, flag: bool) -> bool:
        """True on every rank iff `flag` is true on every rank."""
        return not self.any(not flag)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank (pickled; tensors travel on the CPU)."""
        holder = [_to_cpu(obj) if self.rank == src else None]
        with self._collective(f"receiving rank {src}'s state"):
            dist.broadcast_object_list(holder, src=src, group=self.group)
        return holder[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order."""
        out: list[Any] = [None] * self.world_size
        with self._collective("exchanging with the other ranks"):
            dist.all_gather_object(out, obj, group=self.group)
        return out

    # ------------------------------------------------------------------ configuration
    def check_same_config(self, cfg: TaskCfg) -> str:
        """Refuse to train unless every rank resolved the same configuration; returns its hash."""
        mine = config_hash(cfg)
        hashes = self.all_gather_object(mine)
        if any(h != hashes[0] for h in hashes):
            groups: dict[str, list[int]] = {}
            for rank, h in enumerate(hashes):
                groups.setdefault(h, []).append(rank)
            described = "; ".join(f"rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {h[:12]}"
                                  for h, r in groups.items())
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: the ranks resolved different configurations (config hash "
                f"{described}); start every rank with the same flags, overrides and --resume checkpoint.")
        return mine

    def rank_config(self, cfg: TaskCfg) -> TaskCfg:
        """This rank's copy of `cfg`: seed ``cfg.seed + rank`` and, on CUDA, device ``cuda:LOCAL_RANK``."""
        overrides = [f"seed={cfg.seed + self.rank}"]
        if self.device.type == "cuda":
            overrides.append(f"device={self.device}")
        return apply_overrides(cfg, overrides)


_JOINED_A_GROUP = False  # set once this process has joined a torch.distributed process group


def finish_process(code: int) -> int:
    """Return `code`, or, in a process that joined a process group, flush and leave with it at once.

    After the group is destroyed and every result is written, gloo's background threads can
    still race the interpreter's C++ teardown and abort the process ("terminate called without
    an active exception", seen at exit in about 1 of 4 test runs). Skipping the teardown with
    os._exit removes that race; nothing is left to write at that point.
    """
    if not _JOINED_A_GROUP:
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
