"""Behaviour cloning: fit an `ActorCritic`'s Gaussian policy to recorded (observation, action) pairs.

Offline RL from a PPO start (as BPPO, Zhuang et al. 2023): the policy first imitates the data, so
PPO in the world model starts where the model was trained and its uncertainty penalty keeps it
near there, instead of searching the whole action space of a model that is wrong away from its
data. The fit is the Gaussian maximum-likelihood one with a state-independent std: the actor's
mean by least squares, then each action's std as the root-mean-square residual.
"""

from __future__ import annotations

import torch

from rwm.rl.actor_critic import ActorCritic


def cloning_loss(policy: ActorCritic, observations: torch.Tensor, actions: torch.Tensor, batch_size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error of the actor's mean on `batch_size` pairs drawn with replacement (scalar, with gradients)."""
    pick = torch.randint(observations.shape[0], (min(batch_size, observations.shape[0]),), generator=generator,
                         device="cpu").to(observations.device)
    return (policy.act_inference(observations[pick]) - actions[pick]).square().mean()


def clone_behavior(policy: ActorCritic, observations: torch.Tensor, actions: torch.Tensor, *, updates: int,
                   batch_size: int = 4096, learning_rate: float = 1.0e-3, min_std: float = 0.05,
                   generator: torch.Generator | None = None) -> dict[str, float]:
    """Fit `policy`'s actor (and observation normaliser) to `observations` (R, num_obs) -> `actions` (R, num_actions).

    `updates` Adam steps on mini-batches of `batch_size` rows drawn with replacement; then the
    policy's std becomes the per-action RMS residual (at least `min_std`). The critic is untouched.
    Returns {"loss_initial", "loss_final" (mean squared error over all rows), "std_mean"}.
    """
    if observations.ndim != 2 or observations.shape[1] != policy.num_actor_obs:
        raise ValueError(f"behaviour cloning got observations of shape {tuple(observations.shape)}; "
                         f"expected (rows, {policy.num_actor_obs}).")
    if actions.shape != (observations.shape[0], policy.num_actions):
        raise ValueError(f"behaviour cloning got actions of shape {tuple(actions.shape)}; "
                         f"expected ({observations.shape[0]}, {policy.num_actions}).")
    if observations.shape[0] == 0:
        raise ValueError("behaviour cloning got no (observation, action) pairs.")
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
        raise ValueError(f"behaviour cloning updates = {updates!r}; expected an integer >= 0.")
    device = policy.std.device
    observations, actions = observations.to(device), actions.to(device)
    policy.train()
    if policy.obs_normalization:  # the statistics the actor will see its inputs through
        policy.update_normalization(observations, observations)

    def mean_squared_error() -> torch.Tensor:  # (num_actions,) over all rows, in chunks
        with torch.no_grad():
            total = torch.zeros(policy.num_actions, device=device)
            for start in range(0, observations.shape[0], 65536):
                residual = policy.act_inference(observations[start:start + 65536]) - actions[start:start + 65536]
                total += residual.square().sum(0)
            return total / observations.shape[0]

    initial = float(mean_squared_error().mean())
    optimizer = torch.optim.Adam(policy.actor.parameters(), lr=learning_rate)
    for _ in range(updates):
        loss = cloning_loss(policy, observations, actions, batch_size, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    per_action = mean_squared_error()
    with torch.no_grad():
        policy.std.copy_(per_action.sqrt().clamp(min=min_std))
    return {"loss_initial": initial, "loss_final": float(per_action.mean()), "std_mean": float(policy.std.detach().mean())}
