"""What a task mode adds to the one training loop: the hooks the runner calls, and what they see of it.

The runner (:mod:`rwm.training.runner`) imports this module and no mode: Pretrain's world-model
learner, Finetune's imagination, Offline's fitted model and multi-process training are each a
:class:`RunnerExtension` handed to it by :func:`rwm.training.train.train`. A hook receives the
runner as a :class:`RunnerView`, the part of it an extension may read and change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from rwm.rl import PPO, ActorCritic
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.process_group import DistributedContext

__all__ = ["RunnerExtension", "RunnerView"]


@runtime_checkable
class RunnerView(Protocol):
    """What an extension's hooks see of the :class:`rwm.training.runner.Runner` that calls them."""

    cfg: TaskCfg  # the run's configuration
    env: Any  # the environment PPO steps (real or imagined): rsl_rl's VecEnv API
    device: torch.device  # where the policy and the rollouts live
    num_envs: int  # environments of this process
    policy: ActorCritic  # the actor-critic PPO trains
    alg: PPO  # PPO (its optimizer, learning rate and auxiliary_loss hook)
    log_dir: Path | None  # the run directory; None on ranks other than 0 or when nothing is written
    is_main_process: bool  # rank 0 of a multi-process run (always true in a single process)
    extensions: Sequence[RunnerExtension]  # every extension of the run, this one included

    def get_inference_policy(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The deterministic policy (normaliser + actor mean), for evaluation."""
        ...


class RunnerExtension:
    """What a task mode adds to the one loop, without copying it. Every method is optional.

    Pretrain adds a world-model learner (``on_env_step`` fills its replay buffer from the real
    transitions, ``after_update`` trains it); Finetune adds imagination rollouts
    (``after_collection``). ``state_dict`` returns the extension's top-level checkpoint entries,
    named by the extension (upstream names, e.g. ``"system_dynamics_state_dict"``).
    """

    def on_new_run(self, runner: RunnerView) -> None:
        """Called once when a run starts from scratch (not on resume), e.g. to load a starting policy."""

    def on_learn_start(self, runner: RunnerView) -> None:
        """Called once per :meth:`Runner.learn`, after the environments were prepared."""

    def on_env_step(self, runner: RunnerView, obs: dict[str, torch.Tensor], actions: torch.Tensor,
                    rewards: torch.Tensor, dones: torch.Tensor, extras: dict) -> None:
        """Called after every environment step of a rollout (inside ``torch.inference_mode``)."""

    def after_collection(self, runner: RunnerView, iteration: int) -> dict[str, float]:
        """Called once the rollout and its returns are complete; returns scalars to log."""
        return {}

    def after_update(self, runner: RunnerView, iteration: int) -> dict[str, float]:
        """Called after the PPO update of iteration `iteration` (0-based); returns scalars to log."""
        return {}

    def updates_policy(self, iteration: int) -> bool:
        """False to skip the PPO update of `iteration` (e.g. warm-up iterations that train only a world model)."""
        return True

    def agree_to_stop(self, stopping: bool) -> bool:
        """Whether the run stops after this iteration, given whether this process was asked to (a signal).

        Multi-process training answers the same on every rank, so all ranks end the same iteration.
        """
        return stopping

    def join_process_group(self, ctx: DistributedContext) -> None:
        """Multi-process training: make what this extension learns collective (called once, before learning).

        A world-model learner averages its gradients across ranks here, and what only one rank
        should do (evaluate, measure in the real simulator) is left to rank 0.
        """

    def state_dict(self) -> dict[str, Any]:
        """Top-level checkpoint entries this extension adds (names must not clash with the runner's)."""
        return {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore from a whole checkpoint (the entries :meth:`state_dict` wrote, where present)."""
