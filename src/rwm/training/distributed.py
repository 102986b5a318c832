"""Multi-process and multi-machine training with ``torch.distributed`` (``rwm train --distributed``).

Data-parallel, as rsl_rl does it: every process ("rank") steps its own simulator environments
(and, in Finetune, its own imagination environments and real robots), fills its own replay
buffer, and computes gradients on its own data; gradients are averaged across ranks before
every optimizer step, so all ranks hold the same networks at all times. The run therefore
collects ``WORLD_SIZE x num_envs`` environments per iteration.

Launch with ``torchrun`` (``python -m torch.distributed.run``), which sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``::

    torchrun --nproc-per-node 2 -m rwm.cli train --task ... --distributed

What happens, in order:

* :meth:`DistributedContext.from_environment` reads the launcher's variables and joins the
  process group: backend ``gloo`` for ``--device cpu``, ``nccl`` (device ``cuda:LOCAL_RANK``)
  for CUDA. Every collective has a timeout (``RWM_DISTRIBUTED_TIMEOUT`` seconds, default 600):
  when a rank dies or hangs, the others stop with a :class:`DistributedError` naming it
  instead of waiting for ever.
* :meth:`DistributedContext.check_same_config` all-gathers the ``config_hash`` of every rank's
  resolved configuration and refuses to train if they differ.
* :meth:`DistributedContext.rank_config`: rank ``r`` uses seed ``cfg.seed + r`` (environments,
  action noise, replay sampling, imagination) and, on CUDA, device ``cuda:LOCAL_RANK``.
* :func:`rwm.training.train.make_runner` builds this rank's runner: it writes nothing on ranks
  other than 0 (no run directory, config, checkpoints, metrics, TensorBoard, console output,
  progress bar or plots; see :class:`rwm.training.runner.Runner`), its PPO is
  :func:`distributed_algorithm`'s, and :class:`DistributedTraining` is added to its extensions.
* :class:`DistributedTraining`, a runner extension, first has every other extension join the
  process group (``RunnerExtension.join_process_group``): a world-model learner then averages
  its gradients through its :class:`~rwm.world_model.trainer.WorldModelTrainer`'s
  ``gradient_reducer`` hook, agrees with the other ranks on whether to update (every rank needs
  training windows), fits "fitted" normalisers on all ranks' data
  (:func:`merge_fitted_statistics`), and only rank 0 evaluates or measures in the real
  simulator. When learning starts it broadcasts rank 0's training state (policy with its
  normalisers, optimizers, the extensions' checkpoint entries such as the world model), so a
  new run starts from rank 0's initialisation and a resumed run from rank 0's loaded
  checkpoint; after each rollout it merges the policy's running observation statistics over
  all ranks' data, exactly; and it has all ranks agree on a stop signal (Ctrl-C, SIGTERM) at
  the end of each iteration, so all ranks finish the same iteration and rank 0 writes the
  checkpoint.
* :func:`distributed_algorithm` makes PPO average its gradients (one flat buffer per
  all-reduce) and the mini-batch KL of its adaptive learning rate.

For a data-set mode (no environments: every rank trains on a slice of the same data), give
each rank :func:`shard` ``(indices, rank, world_size)`` of the data set and let its trainer's
``gradient_reducer`` average the gradients: nothing else is needed.
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
from rwm.rl import PPO
from rwm.rl.normalizer import EmpiricalNormalization
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.extension import RunnerExtension

__all__ = ["DEFAULT_TIMEOUT_S", "LAUNCHER_VARIABLES", "TIMEOUT_VARIABLE", "DistributedContext", "DistributedError",
           "DistributedTraining", "LaunchEnvironment", "NormalizerSync", "distributed_algorithm",
           "merge_fitted_statistics", "shard"]

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


# ----------------------------------------------------------------------------- PPO
def distributed_algorithm(ctx: DistributedContext, base: type[PPO] = PPO) -> type[PPO]:
    """A subclass of `base` whose hooks average gradients (one flat all-reduce) and the KL across ranks."""

    class DistributedPPO(base):  # type: ignore[misc, valid-type]
        distributed = ctx

        def reduce_gradients(self) -> None:
            super().reduce_gradients()
            ctx.all_reduce_gradients(self.policy.parameters())

        def reduce_kl(self, kl: torch.Tensor) -> torch.Tensor:
            return ctx.mean(super().reduce_kl(kl))

    DistributedPPO.__name__ = DistributedPPO.__qualname__ = f"Distributed{base.__name__}"
    return DistributedPPO


# ----------------------------------------------------------------------------- running statistics
class NormalizerSync:
    """Keeps the running statistics of every :class:`EmpiricalNormalization` in a module equal on all ranks.

    Each rank folds its own samples into its statistics during a rollout; :meth:`sync` then
    replaces them, on every rank, by the statistics over the data of ALL ranks since the last
    sync (exactly, in float64: the ranks start from the same snapshot, so each rank's new data
    can be separated from the shared history), and takes a new snapshot.
    """

    def __init__(self, ctx: DistributedContext, module: torch.nn.Module):
        self.ctx = ctx
        self.norms = [m for m in module.modules() if isinstance(m, EmpiricalNormalization)]
        self._snapshot: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        self.snapshot()

    def snapshot(self) -> None:
        self._snapshot = [(n.mean.detach().double().clone(), n.var.detach().double().clone(), float(n.count))
                          for n in self.norms]

    @torch.no_grad()
    def sync(self) -> None:
        if not self.norms:
            return
        parts = []
        for norm, (mean0, var0, count0) in zip(self.norms, self._snapshot, strict=True):
            count = float(norm.count)
            d = norm.mean.double() - mean0
            # this rank's new rows, centred at the shared mean: their number, sum and sum of squares
            parts += [torch.tensor([count - count0], dtype=torch.float64, device=d.device), count * d,
                      count * (norm.var.double() + d * d) - count0 * var0]
        totals = self.ctx.sum(torch.cat(parts), "merging the observation statistics")
        offset = 0
        for norm, (mean0, var0, count0) in zip(self.norms, self._snapshot, strict=True):
            dim = norm.dim
            new = float(totals[offset])
            s1 = totals[offset + 1:offset + 1 + dim]
            s2 = totals[offset + 1 + dim:offset + 1 + 2 * dim]
            offset += 1 + 2 * dim
            if new <= 0:
                continue
            total = count0 + new
            shift = s1 / total
            var = ((count0 * var0 + s2) / total - shift * shift).clamp_min(0.0)
            norm.mean.copy_((mean0 + shift).to(norm.mean.dtype))
            norm.var.copy_(var.to(norm.var.dtype))
            norm.count.fill_(int(round(total)))
        self.snapshot()


# ----------------------------------------------------------------------------- world-model normalisers
@torch.no_grad()
def merge_fitted_statistics(ctx: DistributedContext, norms: list[EmpiricalNormalization]) -> None:
    """Replace per-rank fitted statistics (equal sample counts) by those of all ranks' samples together."""
    parts = []
    for norm in norms:
        mean = norm.mean.double()
        parts += [mean, norm.var.double() + mean * mean]
    totals = ctx.sum(torch.cat(parts), "merging the world model's normaliser statistics") / ctx.world_size
    offset = 0
    for norm in norms:
        mean, second = totals[offset:offset + norm.dim], totals[offset + norm.dim:offset + 2 * norm.dim]
        offset += 2 * norm.dim
        std = (second - mean * mean).clamp_min(0.0).sqrt()
        norm.set_statistics(mean.to(norm.mean.dtype), std.to(norm.var.dtype), freeze=True)


# ----------------------------------------------------------------------------- the runner extension
class DistributedTraining(RunnerExtension):
    """Keeps the ranks in step: the other extensions made collective, rank 0's state broadcast at the start,
    merged observation statistics every rollout, and one decision to stop for all ranks."""

    def __init__(self, ctx: DistributedContext, extensions: Sequence[RunnerExtension]):
        self.ctx = ctx
        self.normalizers: NormalizerSync | None = None
        for ext in extensions:
            ext.join_process_group(ctx)

    def on_learn_start(self, runner) -> None:
        broadcast_training_state(runner, self.ctx)
        self.normalizers = NormalizerSync(self.ctx, runner.policy)

    def after_collection(self, runner, iteration: int) -> dict[str, float]:
        if self.normalizers is not None:
            self.normalizers.sync()
        return {}

    def agree_to_stop(self, stopping: bool) -> bool:
        return self.ctx.any(stopping)


def broadcast_training_state(runner, ctx: DistributedContext) -> None:
    """Give every rank rank 0's policy, optimizer, learning rate and extension states (checkpoint entries)."""
    others = [ext for ext in runner.extensions if not isinstance(ext, DistributedTraining)]
    state = None
    if ctx.is_main:
        state = {"model_state_dict": runner.policy.state_dict(),
                 "optimizer_state_dict": runner.alg.optimizer.state_dict(),
                 "learning_rate": runner.alg.learning_rate,
                 "extensions": [ext.state_dict() for ext in others]}
    state = ctx.broadcast_object(state)
    if ctx.is_main:
        return
    runner.policy.load_state_dict(state["model_state_dict"])
    runner.alg.optimizer.load_state_dict(state["optimizer_state_dict"])
    runner.alg.learning_rate = float(state["learning_rate"])
    for group in runner.alg.optimizer.param_groups:
        group["lr"] = runner.alg.learning_rate
    for ext, entries in zip(others, state["extensions"], strict=True):
        if entries:
            ext.load_state_dict(entries)


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
