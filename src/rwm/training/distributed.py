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

The process group itself (the launcher's variables, :class:`DistributedContext` and its
collectives, :func:`shard`, :func:`finish_process`) is :mod:`rwm.training.process_group`; its
names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rwm.rl import PPO
from rwm.rl.normalizer import EmpiricalNormalization
from rwm.training.extension import RunnerExtension, RunnerView
from rwm.training.process_group import (
    DEFAULT_TIMEOUT_S,
    LAUNCHER_VARIABLES,
    TIMEOUT_VARIABLE,
    DistributedContext,
    DistributedError,
    LaunchEnvironment,
    finish_process,
    shard,
)

__all__ = ["DEFAULT_TIMEOUT_S", "LAUNCHER_VARIABLES", "TIMEOUT_VARIABLE", "DistributedContext", "DistributedError",
           "DistributedTraining", "LaunchEnvironment", "NormalizerSync", "distributed_algorithm", "finish_process",
           "merge_fitted_statistics", "shard"]


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

    def on_learn_start(self, runner: RunnerView) -> None:
        broadcast_training_state(runner, self.ctx)
        self.normalizers = NormalizerSync(self.ctx, runner.policy)

    def after_collection(self, runner: RunnerView, iteration: int) -> dict[str, float]:
        if self.normalizers is not None:
            self.normalizers.sync()
        return {}

    def agree_to_stop(self, stopping: bool) -> bool:
        return self.ctx.any(stopping)


def broadcast_training_state(runner: RunnerView, ctx: DistributedContext) -> None:
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
