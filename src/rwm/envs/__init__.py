"""The velocity-tracking task (commands, observations, rewards, terminations) on any simulator."""

from rwm.envs.locomotion_env import LocomotionEnv, LocomotionEnvCfg

__all__ = ["LocomotionEnv", "LocomotionEnvCfg"]
