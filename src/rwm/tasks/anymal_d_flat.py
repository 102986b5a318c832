"""ANYmal D, flat ground, velocity tracking: the configuration of every task mode.

Each mode is a `TaskCfg`; later modes add their learning sections to it. CPU-scale values are
the defaults (a laptop finishes in minutes); `PAPER_SCALE` names the published values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rwm.config import check
from rwm.envs.locomotion_env import LocomotionEnvCfg
from rwm.envs.mdp.rewards import FLAT_REWARD_WEIGHTS, INIT_REWARD_WEIGHTS
from rwm.sim.mujoco import MujocoSimCfg

Mode = Literal["init", "pretrain", "finetune", "visualize", "offline"]

# The published experiment sizes (spec §3.1, §13), for `scale=paper` runs on big machines.
PAPER_SCALE = {"num_envs": 4096}


@dataclass
class TaskCfg:
    task_id: str = "Velocity-Flat-Anymal-D-Init-v0"
    mode: Mode = "init"
    experiment_name: str = "anymal_d_flat"
    num_envs: int = 1024
    seed: int = 0
    device: str = "cpu"
    env: LocomotionEnvCfg = field(default_factory=LocomotionEnvCfg)
    sim: MujocoSimCfg = field(default_factory=MujocoSimCfg)

    def __post_init__(self) -> None:
        check(self.num_envs >= 1, f"num_envs = {self.num_envs}; expected >= 1.")
        check(self.device == "cpu" or self.device.startswith("cuda"),
              f"device = '{self.device}'; expected 'cpu', 'cuda' or 'cuda:<index>'.")


def init_cfg() -> TaskCfg:
    """Mode Init: model-free PPO in the real simulator (Isaac Lab's rough-task weights, on flat ground)."""
    return TaskCfg(task_id="Velocity-Flat-Anymal-D-Init-v0", mode="init",
                   env=LocomotionEnvCfg(reward_weights=dict(INIT_REWARD_WEIGHTS)))


def pretrain_cfg() -> TaskCfg:
    """Mode Pretrain: PPO in the real simulator while the world model learns from its transitions."""
    return TaskCfg(task_id="Velocity-Flat-Anymal-D-Pretrain-v0", mode="pretrain",
                   env=LocomotionEnvCfg(reward_weights=dict(FLAT_REWARD_WEIGHTS)))
