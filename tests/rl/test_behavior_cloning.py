from __future__ import annotations

import pytest
import torch

from rwm.rl import ActorCritic
from rwm.rl.behavior_cloning import clone_behavior


def demonstrations(rows: int = 4096, noise: float = 0.3, seed: int = 0):
    """Observations (rows, 6) -> actions (rows, 2): a fixed linear map of shifted, scaled inputs plus noise."""
    generator = torch.Generator().manual_seed(seed)
    observations = 5.0 + 3.0 * torch.randn(rows, 6, generator=generator)
    weights = torch.randn(6, 2, generator=generator) / 3.0
    actions = (observations - 5.0) @ weights + noise * torch.randn(rows, 2, generator=generator)
    return observations, actions


def test_cloning_fits_the_mean_and_sets_the_std_to_the_residual_spread():
    observations, actions = demonstrations(noise=0.3)
    torch.manual_seed(0)
    policy = ActorCritic(6, 6, 2, actor_hidden_dims=(64, 64), critic_hidden_dims=(32,), obs_normalization=True)
    critic_before = [p.detach().clone() for p in policy.critic.parameters()]
    stats = clone_behavior(policy, observations, actions, updates=600, generator=torch.Generator().manual_seed(1))
    # the error falls to the noise's variance (0.09) from far above it
    assert stats["loss_initial"] > 0.5
    assert stats["loss_final"] < 0.12
    assert torch.allclose(policy.std.detach(), torch.full((2,), 0.3), atol=0.05)
    assert stats["std_mean"] == pytest.approx(float(policy.std.detach().mean()))
    # the actor sees its inputs through the data's statistics; the critic is not trained
    assert torch.allclose(policy.actor_obs_normalizer.mean, observations.mean(0), atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(critic_before, policy.critic.parameters()))


def test_the_std_has_a_floor_when_the_data_is_noise_free():
    observations, actions = demonstrations(noise=0.0)
    policy = ActorCritic(6, 6, 2, actor_hidden_dims=(64,), critic_hidden_dims=(32,))
    clone_behavior(policy, observations, actions, updates=200, min_std=0.1)
    assert torch.all(policy.std.detach() >= 0.1)


def test_zero_updates_only_sets_the_std():
    observations, actions = demonstrations()
    policy = ActorCritic(6, 6, 2, actor_hidden_dims=(16,), critic_hidden_dims=(16,))
    actor_before = [p.detach().clone() for p in policy.actor.parameters()]
    stats = clone_behavior(policy, observations, actions, updates=0)
    assert stats["loss_initial"] == pytest.approx(stats["loss_final"])
    assert all(torch.equal(a, b) for a, b in zip(actor_before, policy.actor.parameters()))


@pytest.mark.parametrize("observations, actions, updates, message", [
    (torch.zeros(8, 5), torch.zeros(8, 2), 1, r"observations of shape \(8, 5\); expected \(rows, 6\)"),
    (torch.zeros(8, 6), torch.zeros(7, 2), 1, r"actions of shape \(7, 2\); expected \(8, 2\)"),
    (torch.zeros(0, 6), torch.zeros(0, 2), 1, "no \\(observation, action\\) pairs"),
    (torch.zeros(8, 6), torch.zeros(8, 2), -1, "updates = -1; expected an integer >= 0"),
])
def test_bad_inputs_are_one_clear_sentence(observations, actions, updates, message):
    policy = ActorCritic(6, 6, 2, actor_hidden_dims=(16,), critic_hidden_dims=(16,))
    with pytest.raises(ValueError, match=message):
        clone_behavior(policy, observations, actions, updates=updates)
