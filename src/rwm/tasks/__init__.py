"""Task registry: task id -> configuration factory (Isaac Lab / RWM naming)."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from rwm.tasks.anymal_d_flat import (
    TaskCfg,
    finetune_cfg,
    init_cfg,
    offline_cfg,
    pretrain_cfg,
    visualize_cfg,
)

_REGISTRY: dict[str, tuple[Callable[[], TaskCfg], str]] = {}


def register(task_id: str, make_cfg: Callable[[], TaskCfg], description: str) -> None:
    if task_id in _REGISTRY:
        raise ValueError(f"task id '{task_id}' is already registered.")
    _REGISTRY[task_id] = (make_cfg, description)


def task_ids() -> list[str]:
    return list(_REGISTRY)


def describe(task_id: str) -> str:
    return _lookup(task_id)[1]


def make_task_cfg(task_id: str) -> TaskCfg:
    """A fresh configuration of `task_id` (unknown ids raise ValueError with a suggestion)."""
    return _lookup(task_id)[0]()


def _lookup(task_id: str):
    if task_id not in _REGISTRY:
        close = difflib.get_close_matches(task_id, _REGISTRY, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown task id '{task_id}'{hint} (registered: {', '.join(_REGISTRY)}).")
    return _REGISTRY[task_id]


register("Velocity-Flat-Anymal-D-Init-v0", init_cfg,
         "Init: PPO from scratch in the MuJoCo simulator (model-free baseline).")
register("Velocity-Flat-Anymal-D-Pretrain-v0", pretrain_cfg,
         "Pretrain: PPO in the MuJoCo simulator while the world model learns from its transitions.")
register("Velocity-Flat-Anymal-D-Finetune-v0", finetune_cfg,
         "Finetune: MBPO-PPO, the policy learns in the world model's imagination (needs a Pretrain run).")
register("Velocity-Flat-Anymal-D-Offline-v0", offline_cfg,
         "Offline: RWM-U / MOPO-PPO, the world model is fitted on a recorded dataset (--dataset) and the policy "
         "learns only in its imagination, with the uncertainty penalty.")
register("Velocity-Flat-Anymal-D-Visualize-v0", visualize_cfg,
         "Visualize: a run's world model beside the real robot under the same actions (`rwm visualize`).")


def make_env(cfg: TaskCfg):
    """The real-simulator environment of a task: MuJoCo simulator + LocomotionEnv."""
    from rwm.device import resolve_device
    from rwm.envs.locomotion_env import LocomotionEnv
    from rwm.sim.mujoco import MujocoSimulator

    resolve_device(cfg.device)  # whatever set it (a flag, a KEY=VALUE override), say so if there is no GPU
    simulator = MujocoSimulator(cfg.sim, cfg.num_envs, device=cfg.device, seed=cfg.seed)
    return LocomotionEnv(cfg.env, simulator, seed=cfg.seed)
