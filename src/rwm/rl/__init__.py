"""Reinforcement-learning core: Gaussian actor-critic, PPO, rollout storage and normalisation."""

from rwm.rl.actor_critic import ActorCritic
from rwm.rl.normalizer import EmpiricalNormalization
from rwm.rl.ppo import PPO
from rwm.rl.rollout_storage import MiniBatch, RolloutStorage

__all__ = ["ActorCritic", "EmpiricalNormalization", "MiniBatch", "PPO", "RolloutStorage"]
