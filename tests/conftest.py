"""Shared fixtures: small real-simulator environments."""

from __future__ import annotations

import pytest

from rwm.envs.locomotion_env import LocomotionEnv, LocomotionEnvCfg
from rwm.sim.mujoco import MujocoSimCfg, MujocoSimulator, RandomizationCfg


def make_quiet_env(num_envs: int = 8, seed: int = 0, **env_kwargs) -> LocomotionEnv:
    """An environment without randomisation or observation noise: every reset is the default pose."""
    sim = MujocoSimulator(MujocoSimCfg(randomization=RandomizationCfg.none(), num_threads=1), num_envs, seed=seed)
    cfg = LocomotionEnvCfg(**env_kwargs)
    cfg.noise.enabled = False
    return LocomotionEnv(cfg, sim, seed=seed)


@pytest.fixture
def quiet_env() -> LocomotionEnv:
    return make_quiet_env()
