"""ReplayBuffer: windows lie in one episode, in time order, inside the stored data (docs/upstream.md #7, #9 to #11)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rwm.world_model.replay_buffer import ReplayBuffer

# Columns of the encoded fake state: which env, its record counter, its episode, terminal mark.
ENV, COUNTER, EPISODE, TERMINAL = 0, 1, 2, 3
CONTINUE, FALL, TIME_OUT, RESET = 0, 1, 2, 3  # RESET: a reset outside env.step, no terminal record


def _record(env: int, counter: int, episode: int, terminal: bool) -> torch.Tensor:
    state = torch.zeros(6)
    state[ENV], state[COUNTER], state[EPISODE], state[TERMINAL] = env, counter, episode, float(terminal)
    return state


def _fill(buffer: ReplayBuffer, events: list[list[int]]) -> list[list[tuple[int, int, bool]]]:
    """Drive the buffer like the env loop; returns each env's log of (counter, episode, terminal) records.

    events[step][env] says how env's episode goes after that step: continue, fall, time-out or reset.
    """
    n = buffer.num_envs
    log: list[list[tuple[int, int, bool]]] = [[] for _ in range(n)]
    episode = [0] * n
    for step_events in events:
        states = torch.stack([_record(e, len(log[e]), episode[e], False) for e in range(n)])
        # action and contact carry the counter too, so misaligned streams would show
        action = states[:, COUNTER:COUNTER + 1].repeat(1, 2) + 0.5
        contact = states[:, COUNTER:COUNTER + 1].repeat(1, 3)
        buffer.add(states, action, contact, torch.zeros(n, 1))
        for e in range(n):
            log[e].append((len(log[e]), episode[e], False))
        resets = [e for e in range(n) if step_events[e] == RESET]
        if resets:
            buffer.start_new_episodes(torch.tensor(resets))
            for e in resets:
                episode[e] += 1
        ids = [e for e in range(n) if step_events[e] in (FALL, TIME_OUT)]
        if ids:
            term_states = torch.stack([_record(e, len(log[e]), episode[e], True) for e in ids])
            termination = torch.tensor([[float(step_events[e] == FALL)] for e in ids])
            buffer.add_terminal(torch.tensor(ids), term_states, term_states[:, COUNTER:COUNTER + 1].repeat(1, 3),
                                termination)
            for e in ids:
                log[e].append((len(log[e]), episode[e], True))
                episode[e] += 1
    return log


def _brute_valid(log, capacity: int, length: int, env_ids=None) -> set[tuple[int, int]]:
    """Every valid window as (env, counter of its first record), by the definition."""
    valid = set()
    for e, records in enumerate(log):
        if env_ids is not None and e not in env_ids:
            continue
        stored = records[-capacity:] if capacity > 0 else []
        for j in range(len(stored) - length + 1):
            window = stored[j:j + length]
            same_episode = all(r[1] == window[0][1] for r in window)
            terminal_inside = any(r[2] for r in window[:-1])
            if same_episode and not terminal_inside:
                valid.add((e, window[0][0]))
    return valid


def _check_windows(batch: dict[str, torch.Tensor], buffer: ReplayBuffer, length: int) -> None:
    state = batch["state"]  # (B, L, 6)
    assert state.shape[1] == length
    env = state[:, :, ENV].long()
    counter = state[:, :, COUNTER]
    assert bool((env == env[:, :1]).all()), "a window mixes environments"
    assert bool((counter.diff(dim=1) == 1).all()), "a window is not consecutive in time (seam or wrap error)"
    assert bool((state[:, :, EPISODE] == state[:, :1, EPISODE]).all()), "a window crosses an episode boundary"
    assert not bool((state[:, :-1, TERMINAL] > 0).any()), "a terminal record appears before the last position"
    added = buffer.num_added[env[:, 0]]
    assert bool((counter[:, 0] >= added - buffer.capacity).all()) and bool((counter[:, -1] < added).all())
    # streams stay aligned: action/contact of record k belong to record k; terminal action is zero
    terminal = state[:, :, TERMINAL] > 0
    expected_action = torch.where(terminal, torch.zeros_like(counter), counter + 0.5)
    assert torch.equal(batch["action"], expected_action[..., None].repeat(1, 1, 2))
    assert torch.equal(batch["contact"], counter[..., None].repeat(1, 1, 3))


events_strategy = st.integers(1, 4).flatmap(lambda n: st.lists(
    st.lists(st.sampled_from([CONTINUE] * 5 + [FALL, TIME_OUT, RESET]), min_size=n, max_size=n), min_size=0, max_size=30))


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy, capacity=st.integers(1, 14), seed=st.integers(0, 2**16))
def test_windows_match_definition(events, capacity, seed):
    num_envs = len(events[0]) if events else 2
    buffer = ReplayBuffer(num_envs, capacity, state_dim=6, action_dim=2, contact_dim=3)
    log = _fill(buffer, events)
    generator = torch.Generator().manual_seed(seed)
    for length in range(1, capacity + 2):
        valid = _brute_valid(log, capacity, length)
        assert buffer.num_valid_windows(length) == len(valid)
        if not valid:
            with pytest.raises(ValueError, match="no valid window"):
                buffer.sample(4, length, generator=generator)
            continue
        batch = buffer.sample(40 * len(valid), length, generator=generator)
        _check_windows(batch, buffer, length)
        sampled = {(int(s[0, ENV]), int(s[0, COUNTER])) for s in batch["state"]}
        assert sampled == valid  # every valid window can be drawn, and nothing else


@settings(max_examples=30, deadline=None, database=None)
@given(events=events_strategy, capacity=st.integers(2, 10), length=st.integers(1, 6), seed=st.integers(0, 99))
def test_env_subset_restricts_draws(events, capacity, length, seed):
    num_envs = len(events[0]) if events else 2
    buffer = ReplayBuffer(num_envs, capacity, state_dim=6, action_dim=2, contact_dim=3)
    log = _fill(buffer, events)
    held_out = list(range(0, num_envs, 2))
    valid = _brute_valid(log, capacity, length, env_ids=set(held_out))
    assert buffer.num_valid_windows(length, env_ids=torch.tensor(held_out)) == len(valid)
    if valid:
        batch = buffer.sample(20 * len(valid), length, generator=torch.Generator().manual_seed(seed),
                              env_ids=torch.tensor(held_out))
        _check_windows(batch, buffer, length)
        assert {(int(s[0, ENV]), int(s[0, COUNTER])) for s in batch["state"]} == valid


def test_window_continuous_across_physical_wrap_is_valid():
    buffer = ReplayBuffer(1, 5, state_dim=6, action_dim=2, contact_dim=3)
    _fill(buffer, [[CONTINUE]] * 8)  # counters 3..7 stored in slots 3,4,0,1,2
    assert buffer.num_valid_windows(5) == 1
    batch = buffer.sample(3, 5, generator=torch.Generator().manual_seed(0))
    assert batch["state"][0, :, COUNTER].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_terminal_record_is_last_and_keeps_its_flag():
    buffer = ReplayBuffer(1, 20, state_dim=6, action_dim=2, contact_dim=3)
    _fill(buffer, [[CONTINUE], [CONTINUE], [FALL], [CONTINUE], [TIME_OUT]])
    # episode 0: records 0,1,2 + terminal 3; episode 1: records 4,5 + terminal 6
    assert buffer.num_valid_windows(4) == 1 and buffer.num_valid_windows(5) == 0
    batch = buffer.sample(2, 4, generator=torch.Generator().manual_seed(0))
    assert batch["state"][0, :, COUNTER].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert batch["termination"][0, :, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    windows = buffer.sample(64, 3, generator=torch.Generator().manual_seed(1))
    assert {tuple(w[:, COUNTER].tolist()) for w in windows["state"]} == {(0, 1, 2), (1, 2, 3), (4, 5, 6)}
    time_out = windows["state"][:, -1, COUNTER] == 6  # a time-out ends the episode without a fall flag
    assert bool((windows["termination"][time_out, -1] == 0).all()) and bool((windows["action"][time_out, -1] == 0).all())


def test_bad_input_is_rejected():
    buffer = ReplayBuffer(3, 10)
    with pytest.raises(ValueError, match="state has shape"):
        buffer.add(torch.zeros(2, 45), torch.zeros(3, 12), torch.zeros(3, 8), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="outside"):
        buffer.add_terminal(torch.tensor([3]), torch.zeros(1, 45), torch.zeros(1, 8), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="window length"):
        buffer.num_valid_windows(0)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(3, 0)
    buffer.add_terminal(torch.zeros(0, dtype=torch.long), torch.zeros(0, 45), torch.zeros(0, 8), torch.zeros(0, 1))
    assert int(buffer.num_added.sum()) == 0


def test_state_dict_round_trip():
    buffer = ReplayBuffer(3, 7, state_dim=6, action_dim=2, contact_dim=3)
    _fill(buffer, [[CONTINUE, FALL, CONTINUE], [TIME_OUT, CONTINUE, CONTINUE]] * 5)
    copy = ReplayBuffer(3, 7, state_dim=6, action_dim=2, contact_dim=3)
    copy.load_state_dict(buffer.state_dict())
    for length in (1, 3, 5):
        assert copy.num_valid_windows(length) == buffer.num_valid_windows(length)
        a = buffer.sample(16, length, generator=torch.Generator().manual_seed(3))
        b = copy.sample(16, length, generator=torch.Generator().manual_seed(3))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a resumed run's first record starts a new episode: no window joins old and new data
    before = copy.num_valid_windows(2)
    copy.add(torch.full((3, 6), 99.0), torch.zeros(3, 2), torch.zeros(3, 3), torch.zeros(3, 1))
    assert copy.num_valid_windows(2) <= before
    assert not bool((copy.sample(64, 2, generator=torch.Generator().manual_seed(0))["state"][:, 1] == 99.0).any())
    with pytest.raises(ValueError, match="shape"):
        ReplayBuffer(3, 8, state_dim=6, action_dim=2, contact_dim=3).load_state_dict(buffer.state_dict())


class _IntegratorEnv:
    """A tiny env with LocomotionEnv's step/extras contract: s_{k+1} = s_k + a_k, random falls and a time limit."""

    def __init__(self, num_envs: int, max_length: int, seed: int):
        self.num_envs, self.max_length = num_envs, max_length
        self.generator = torch.Generator().manual_seed(seed)
        self.state = torch.zeros(num_envs, 45)
        self.length = torch.zeros(num_envs, dtype=torch.long)

    def observations(self):
        return {"system_state": self.state.clone(), "system_contact": (self.state[:, :8] > 0).float(),
                "system_termination": torch.zeros(self.num_envs, 1)}

    def step(self, action):
        self.state = self.state + action[:, :1].repeat(1, 45)
        self.length += 1
        fall = torch.rand(self.num_envs, generator=self.generator) < 0.05
        done = fall | (self.length >= self.max_length)
        extras = {}
        ids = torch.nonzero(done).flatten()
        if len(ids):
            extras["terminal"] = {"ids": ids, "system_state": self.state[ids].clone(),
                                  "system_contact": (self.state[ids, :8] > 0).float(),
                                  "system_termination": fall[ids].float()[:, None]}
            self.state[ids] = torch.randn(len(ids), 1, generator=self.generator).repeat(1, 45)
            self.length[ids] = 0
        return self.observations(), done, extras


def test_action_is_the_one_taken_from_the_state():
    """docs/upstream.md #7: record k pairs s_k with a_k, the action applied *from* s_k, so s_{k+1} = s_k + a_k."""
    env = _IntegratorEnv(num_envs=6, max_length=15, seed=0)
    buffer = ReplayBuffer(6, 40)
    generator = torch.Generator().manual_seed(1)
    obs = env.observations()
    for _ in range(100):
        action = torch.randn(6, 12, generator=generator)
        buffer.add(obs["system_state"], action, obs["system_contact"], obs["system_termination"])
        obs, _, extras = env.step(action)
        if "terminal" in extras:
            t = extras["terminal"]
            buffer.add_terminal(t["ids"], t["system_state"], t["system_contact"], t["system_termination"])
    batch = buffer.sample(256, 12, generator=generator)
    s, a = batch["state"][:, :, 0], batch["action"][:, :, 0]  # (B, L)
    torch.testing.assert_close(s[:, 1:], s[:, :-1] + a[:, :-1])


def test_real_environment_loop():
    """The real env's extras["terminal"] fills the buffer: each 10-step episode gives one 11-record window."""
    from tests.conftest import make_quiet_env

    env = make_quiet_env(num_envs=4, episode_length_s=0.2)  # 10 control steps, time-outs only
    buffer = ReplayBuffer(4, 64)
    obs = env.get_observations()
    for _ in range(30):
        action = 0.1 * torch.ones(4, 12)
        buffer.add(obs["system_state"], action, obs["system_contact"], obs["system_termination"])
        obs, _, _, extras = env.step(action)
        if "terminal" in extras:
            t = extras["terminal"]
            buffer.add_terminal(t["ids"], t["system_state"], t["system_contact"], t["system_termination"])
    assert buffer.num_added.tolist() == [33] * 4
    assert buffer.num_valid_windows(11) == 4 * 3 and buffer.num_valid_windows(12) == 0
    batch = buffer.sample(32, 11, generator=torch.Generator().manual_seed(0))
    first = batch["state"][:, 0]
    torch.testing.assert_close(first, first[:1].expand_as(first))  # quiet env: every episode starts the same
    assert bool((batch["action"][:, -1] == 0).all()) and bool((batch["action"][:, :-1] == 0.1).all())
