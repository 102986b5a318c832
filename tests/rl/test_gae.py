"""GAE, returns, time-out bootstrapping and mini-batching of the rollout storage."""

from __future__ import annotations

import pytest
import torch

from rwm.rl import PPO, ActorCritic, RolloutStorage

GAMMA = 0.9
LAM = 0.5

# A 3-step, 2-env rollout. Both envs see the same values and raw rewards; at step 1 env 0
# is cut by the time limit (time_out, bootstrapped) and env 1 terminates (no bootstrap).
# Both have done=True at step 1, so step 2 is the first step of a new episode.
#
#   step t            0      1      2     (after: last value)
#   V_t               0.5    2.0    1.0   2.0
#   raw reward r_t    1.0    0.0    1.0
#   done_t            F      T      F
#   time_out_t (env0) F      T      F
#   time_out_t (env1) F      F      F
VALUES = [0.5, 2.0, 1.0]
LAST_VALUE = 2.0
RAW_REWARDS = [1.0, 0.0, 1.0]
DONES = [[False, False], [True, True], [False, False]]
TIME_OUTS = [[False, False], [True, False], [False, False]]

# Stored rewards: a time-out adds gamma * V_t = 0.9 * 2.0 = 1.8 to env 0's step-1 reward.
#   env 0: [1.0, 0.0 + 1.8, 1.0] = [1.0, 1.8, 1.0]
#   env 1: [1.0, 0.0,       1.0]
STORED_REWARDS = [[1.0, 1.0], [1.8, 0.0], [1.0, 1.0]]

# GAE by hand, delta_t = r_t + gamma (1 - d_t) V_{t+1} - V_t, A_t = delta_t + gamma lam (1 - d_t) A_{t+1}:
#   t = 2 (both envs, not done, bootstraps from the last value 2.0):
#       delta_2 = 1.0 + 0.9 * 2.0 - 1.0 = 1.8          A_2 = 1.8         R_2 = A_2 + V_2 = 2.8
#   t = 1 (done: no V_2 bootstrap, recursion cut, A_2 not used):
#       env 0: delta_1 = 1.8 - 2.0 = -0.2               A_1 = -0.2        R_1 = 1.8
#       env 1: delta_1 = 0.0 - 2.0 = -2.0               A_1 = -2.0        R_1 = 0.0
#   t = 0 (not done): delta_0 = 1.0 + 0.9 * 2.0 - 0.5 = 2.3, gamma * lam = 0.45
#       env 0: A_0 = 2.3 + 0.45 * (-0.2) = 2.21                            R_0 = 2.71
#       env 1: A_0 = 2.3 + 0.45 * (-2.0) = 1.40                            R_0 = 1.90
# (Without the cut at t = 1, env 0 would get A_1 = -0.2 + 0.45 * 1.8 = 0.61.)
EXPECTED_ADVANTAGES = [[2.21, 1.40], [-0.2, -2.0], [1.8, 1.8]]
EXPECTED_RETURNS = [[2.71, 1.90], [1.8, 0.0], [2.8, 2.8]]


def _ppo_with_scripted_critic(normalize_advantage_per_mini_batch: bool) -> PPO:
    """PPO whose critic returns its 1-d critic observation, so V_t is chosen by the test."""
    torch.manual_seed(0)
    policy = ActorCritic(1, 1, 1, actor_hidden_dims=(4,), critic_hidden_dims=(4,))
    policy.evaluate = lambda critic_obs: critic_obs[:, :1].clone()  # (N, 1)
    ppo = PPO(
        policy,
        gamma=GAMMA,
        lam=LAM,
        num_mini_batches=2,
        normalize_advantage_per_mini_batch=normalize_advantage_per_mini_batch,
    )
    ppo.init_storage(num_envs=2, num_steps=3, actor_obs_shape=[1], critic_obs_shape=[1], action_shape=[1])
    return ppo


def _run_scripted_rollout(ppo: PPO) -> None:
    for t in range(3):
        obs = torch.zeros(2, 1)
        critic_obs = torch.full((2, 1), VALUES[t])
        ppo.act(obs, critic_obs)
        ppo.process_env_step(
            torch.full((2,), RAW_REWARDS[t]),
            torch.tensor(DONES[t]),
            {"time_outs": torch.tensor(TIME_OUTS[t]), "log": {}},
        )
    ppo.compute_returns(torch.full((2, 1), LAST_VALUE))


def test_time_out_is_bootstrapped_and_termination_is_not():
    ppo = _ppo_with_scripted_critic(normalize_advantage_per_mini_batch=True)
    _run_scripted_rollout(ppo)
    torch.testing.assert_close(ppo.storage.rewards.squeeze(-1), torch.tensor(STORED_REWARDS))
    torch.testing.assert_close(ppo.storage.dones.squeeze(-1), torch.tensor(DONES))


def test_gae_and_returns_match_hand_computation():
    ppo = _ppo_with_scripted_critic(normalize_advantage_per_mini_batch=True)
    _run_scripted_rollout(ppo)
    storage = ppo.storage
    # Advantages left raw because PPO will normalise them per mini-batch.
    torch.testing.assert_close(storage.advantages.squeeze(-1), torch.tensor(EXPECTED_ADVANTAGES))
    torch.testing.assert_close(storage.returns.squeeze(-1), torch.tensor(EXPECTED_RETURNS))


def test_advantages_normalised_over_whole_rollout_by_default():
    ppo = _ppo_with_scripted_critic(normalize_advantage_per_mini_batch=False)
    _run_scripted_rollout(ppo)
    raw = torch.tensor(EXPECTED_ADVANTAGES)
    expected = (raw - raw.mean()) / (raw.std() + 1e-8)
    torch.testing.assert_close(ppo.storage.advantages.squeeze(-1), expected)
    # Returns are the critic targets and are never normalised.
    torch.testing.assert_close(ppo.storage.returns.squeeze(-1), torch.tensor(EXPECTED_RETURNS))


def _filled_storage(rewards: list[list[float]], dones: list[list[bool]]) -> RolloutStorage:
    T, N = len(rewards), len(rewards[0])
    storage = RolloutStorage(N, T, [1], [1], [1])
    for t in range(T):
        storage.add_transition(
            observations=torch.zeros(N, 1),
            critic_observations=torch.zeros(N, 1),
            actions=torch.zeros(N, 1),
            rewards=torch.tensor(rewards[t]),
            dones=torch.tensor(dones[t]),
            values=torch.full((N,), VALUES[t]),
            actions_log_prob=torch.zeros(N),
            mu=torch.zeros(N, 1),
            sigma=torch.ones(N, 1),
        )
    return storage


def test_done_cuts_the_recursion():
    # Changing the reward after a done must not change anything before it, and must change
    # the step it is on.
    base = _filled_storage(STORED_REWARDS, DONES)
    changed_rewards = [row[:] for row in STORED_REWARDS]
    changed_rewards[2] = [11.0, 11.0]
    changed = _filled_storage(changed_rewards, DONES)
    for s in (base, changed):
        s.compute_returns(torch.full((2, 1), LAST_VALUE), GAMMA, LAM, normalize_advantage=False)
    torch.testing.assert_close(base.returns[:2], changed.returns[:2])
    assert torch.all(changed.returns[2] - base.returns[2] == 10.0)
    torch.testing.assert_close(base.returns.squeeze(-1), torch.tensor(EXPECTED_RETURNS))

    # Without any done, the same change does reach the earlier steps.
    no_dones = [[False, False]] * 3
    a = _filled_storage(STORED_REWARDS, no_dones)
    b = _filled_storage(changed_rewards, no_dones)
    for s in (a, b):
        s.compute_returns(torch.full((2, 1), LAST_VALUE), GAMMA, LAM, normalize_advantage=False)
    assert torch.all(b.returns[0] > a.returns[0])


def test_storage_refuses_overflow_and_early_returns():
    storage = _filled_storage(STORED_REWARDS[:2], DONES[:2])  # T=2, full
    with pytest.raises(OverflowError):
        storage.add_transition(
            torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2),
            torch.zeros(2), torch.zeros(2), torch.zeros(2, 1), torch.ones(2, 1),
        )  # fmt: skip
    storage.clear()
    with pytest.raises(RuntimeError):
        storage.compute_returns(torch.zeros(2, 1), GAMMA, LAM)


@pytest.mark.parametrize("num_envs,num_steps,num_mini_batches", [(4, 6, 4), (5, 3, 4)])
def test_mini_batches_cover_every_sample_once_per_epoch(num_envs, num_steps, num_mini_batches):
    torch.manual_seed(0)
    storage = RolloutStorage(num_envs, num_steps, [2], [3], [1])
    total = num_envs * num_steps
    for t in range(num_steps):
        ids = torch.arange(t * num_envs, (t + 1) * num_envs, dtype=torch.float32)  # unique sample ids
        storage.add_transition(
            observations=ids[:, None].expand(-1, 2),
            critic_observations=-ids[:, None].expand(-1, 3),
            actions=ids[:, None],
            rewards=ids,
            dones=torch.zeros(num_envs, dtype=torch.bool),
            values=ids,
            actions_log_prob=ids,
            mu=ids[:, None],
            sigma=ids[:, None],
        )
    storage.compute_returns(torch.zeros(num_envs, 1), 0.9, 0.5, normalize_advantage=False)

    num_epochs = 3
    batches = list(storage.mini_batch_generator(num_mini_batches, num_epochs))
    assert len(batches) == num_epochs * num_mini_batches
    orders = []
    for epoch in range(num_epochs):
        epoch_batches = batches[epoch * num_mini_batches : (epoch + 1) * num_mini_batches]
        sizes = [b.observations.shape[0] for b in epoch_batches]
        assert max(sizes) - min(sizes) <= 1
        ids = torch.cat([b.observations[:, 0] for b in epoch_batches])
        assert sorted(ids.long().tolist()) == list(range(total))  # each sample exactly once
        orders.append(ids)
        for b in epoch_batches:  # all fields of a row come from the same sample
            for field in (b.actions[:, 0], b.values[:, 0], b.actions_log_prob[:, 0], b.mu[:, 0], b.sigma[:, 0]):
                torch.testing.assert_close(field, b.observations[:, 0])
            torch.testing.assert_close(b.critic_observations, -b.observations[:, :1].expand(-1, 3))
            assert b.critic_observations.shape[1:] == (3,)
    assert not torch.equal(orders[0], torch.arange(total, dtype=torch.float32))  # shuffled
    assert not torch.equal(orders[0], orders[1])  # reshuffled every epoch


def test_mini_batch_generator_rejects_too_many_mini_batches():
    storage = _filled_storage(STORED_REWARDS, DONES)  # 6 samples
    with pytest.raises(ValueError, match="num_mini_batches"):
        next(storage.mini_batch_generator(7, 1))
