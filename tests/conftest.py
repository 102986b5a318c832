"""Shared fixtures: small real-simulator environments."""

from __future__ import annotations

import pytest
import torch

from rwm.envs.locomotion_env import LocomotionEnv, LocomotionEnvCfg
from rwm.sim.mujoco import MujocoSimCfg, MujocoSimulator, RandomizationCfg

# The suite's networks are tiny: one thread is fastest, and on a shared 2-core machine torch's
# busy-waiting thread team can otherwise slow small updates down many times over.
torch.set_num_threads(1)


def make_quiet_env(num_envs: int = 8, seed: int = 0, **env_kwargs) -> LocomotionEnv:
    """An environment without randomisation or observation noise: every reset is the default pose."""
    sim = MujocoSimulator(MujocoSimCfg(randomization=RandomizationCfg.none(), num_threads=1), num_envs, seed=seed)
    cfg = LocomotionEnvCfg(**env_kwargs)
    cfg.noise.enabled = False
    return LocomotionEnv(cfg, sim, seed=seed)


@pytest.fixture
def quiet_env() -> LocomotionEnv:
    return make_quiet_env()
