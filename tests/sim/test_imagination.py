"""ImaginationSimulator: the world model as a simulator under the unchanged task.

The key test replays a real MuJoCo run through an "oracle" model that predicts the recorded
next state: every reward term, observation and done of the imagined run must equal the real
run's, which proves that one task code serves both simulators and that the reset alignment
(warm-up on M-1 records, the window's last state is the current one) feeds the model exactly
the (state, action) pairs it was trained on.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rwm.config import ConfigError
from rwm.envs.locomotion_env import LocomotionEnv, LocomotionEnvCfg
from rwm.envs.mdp.commands import CommandCfg
from rwm.rl.normalizer import EmpiricalNormalization
from rwm.sim.imagination import ImaginationCfg, ImaginationSimulator
from rwm.sim.mujoco import MujocoSimulator
from rwm.sim.state import STATE_SLICES, to_system_vectors
from rwm.world_model import SystemDynamics, WorldModelCfg, WorldModelOutput
from rwm.world_model.config import STATE_MEAN, STATE_STD
from tests.conftest import make_quiet_env


def tiny_model(E: int = 2, M: int = 4, seed: int = 0, **kw) -> SystemDynamics:
    torch.manual_seed(seed)
    cfg = WorldModelCfg(ensemble_size=E, history_horizon=M, forecast_horizon=2, rnn_num_layers=1, rnn_hidden_size=16,
                        mlp_base_shape=(16,), state_mean_shape=(16,), state_logstd_shape=(16,), aux_shape=(16,), **kw)
    return SystemDynamics(cfg)


def random_windows(M: int, calls: list | None = None):
    """Plausible raw windows around the normaliser's mean; records each draw in `calls`."""
    mean, std = torch.tensor(STATE_MEAN), torch.tensor(STATE_STD)

    def draw(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        window = {"state": mean + 0.3 * std * torch.randn(n, M, 45, generator=generator),
                  "action": 0.5 * torch.randn(n, M, 12, generator=generator),
                  "contact": (torch.rand(n, M, 8, generator=generator) < 0.5).float(),
                  "termination": torch.zeros(n, M, 1)}
        if calls is not None:
            calls.append(window)
        return window

    return draw


class Recorder:
    """Wraps a model and keeps the output of the last full-batch observe (the last step)."""

    def __init__(self, model):
        self.model = model
        self.last = None
        self.force_termination = None  # (N,) bool: override the predicted termination of a step

    def __getattr__(self, name):
        return getattr(self.model, name)

    def observe(self, z_state, z_action, model_ids=None, ids=None):
        out = self.model.observe(z_state, z_action, model_ids=model_ids, ids=ids)
        if ids is None and z_state.shape[1] == 1:
            if self.force_termination is not None:
                out.termination_logits = torch.where(self.force_termination[:, None], 20.0, -20.0)
            self.last = out
        return out


def ctx_rows(model: SystemDynamics) -> list[torch.Tensor]:
    """Every context tensor with environments on dim 0."""
    out = []
    for ctx in (model._state_ctx, model._aux_ctx):
        for c in ctx:
            for t in (c if isinstance(c, tuple) else (c,)):
                out.append(t if model.cfg.base == "mlp" else t.transpose(0, 1))
    return out


# ------------------------------------------------------------------------------ parity
class OracleModel:
    """The stateful model API, answering each step with the recorded next state of a real run.

    It also checks what it is fed: the warm-up must be the window's first M-1 records, and step k
    of row r must be (s_k, a_k) of the recording, i.e. the state paired with the action taken from it.
    """

    def __init__(self, states, contacts, terminations, actions, windows, history: int):
        self.cfg = SimpleNamespace(history_horizon=history)
        self.ensemble_size = 1
        self.state_normalizer = EmpiricalNormalization(45)
        self.state_normalizer.set_statistics(torch.tensor(STATE_MEAN), torch.tensor(STATE_STD))
        self.action_normalizer = EmpiricalNormalization(12)
        self.action_normalizer.freeze()
        self.states, self.contacts, self.terminations = states, contacts, terminations  # (T+1, N, d)
        self.actions, self.windows = actions, windows  # (T, N, 12); (N, M, d) dict
        self.num_envs = states.shape[1]
        self.k = torch.zeros(self.num_envs, dtype=torch.long)  # next recorded step per row
        self.warm = torch.zeros(self.num_envs, dtype=torch.bool)
        self.num_warmups = 0

    def reset(self, ids=None):
        ids = torch.arange(self.num_envs) if ids is None else ids
        self.k[ids] = 0
        self.warm[ids] = False

    def observe(self, z_state, z_action, model_ids=None, ids=None):
        rows = torch.arange(self.num_envs) if ids is None else ids
        M = self.cfg.history_horizon
        if not self.warm[rows].all():  # the warm-up of freshly reset rows
            assert not self.warm[rows].any() and z_state.shape[1] == M - 1
            torch.testing.assert_close(z_state, self.state_normalizer(self.windows["state"][rows, :M - 1]))
            torch.testing.assert_close(z_action, self.windows["action"][rows, :M - 1])
            self.warm[rows] = True
            self.num_warmups += 1
            k = None
        else:
            assert z_state.shape[1] == 1
            k = self.k[rows]
            torch.testing.assert_close(z_state[:, 0], self.state_normalizer(self.states[k, rows]))
            torch.testing.assert_close(z_action[:, 0], self.actions[k, rows], rtol=0, atol=0)
            self.k[rows] += 1
        nxt = self.k[rows]
        mean = self.state_normalizer(self.states[nxt, rows])  # (B, 45)
        B = mean.shape[0]
        return WorldModelOutput(
            mean=mean, member_mean=mean[None], member_std=torch.zeros(1, B, 45), aleatoric=torch.zeros(B),
            epistemic=torch.zeros(B), contact_logits=40.0 * self.contacts[nxt, rows] - 20.0,
            termination_logits=40.0 * self.terminations[nxt, rows] - 20.0, extension=None, model_ids=model_ids)


def run_and_record(env, actions):
    """Step `env` through `actions` (T, N, 12); per step: obs, rewards, dones, per-term episode sums, heading."""
    log = []
    for a in actions:
        before = {name: s.clone() for name, s in env.episode_sums.items()}
        obs, rewards, dones, _ = env.step(a)
        terms = {name: s - before[name] for name, s in env.episode_sums.items()}
        log.append({"obs": {k: v.clone() for k, v in obs.items()}, "rewards": rewards.clone(), "dones": dones.clone(),
                    "terms": terms, "heading": env.state.heading.clone()})
    return log


def test_imagined_run_of_an_oracle_model_equals_the_real_run():
    N, T, M, seed = 4, 60, 3, 7
    env_kwargs = {"commands": CommandCfg(heading_control=False)}
    real = make_quiet_env(num_envs=N, seed=seed, **env_kwargs)
    t = torch.arange(T, dtype=torch.float32)[:, None, None] * real.step_dt
    phase = torch.linspace(0, 2 * math.pi, N * 12).reshape(1, N, 12)
    actions = 0.4 * torch.sin(2 * math.pi * 1.5 * t + phase)  # (T, N, 12) a fixed gait-like excitation
    records = [to_system_vectors(real.state)]  # s_0
    real_log = []
    for step in range(T):
        real_log += run_and_record(real, actions[step:step + 1])
        records.append(to_system_vectors(real.state))
    assert not any(entry["dones"].any() for entry in real_log), "the recording must not contain resets"
    states, contacts, terminations = (torch.stack(r) for r in zip(*records))  # (T+1, N, d)
    assert contacts[1:, :, 4:].any() and not contacts[1:, :, 4:].all()  # feet land and lift: air time is exercised

    # Windows ending at the recorded initial state; earlier records and the last action are arbitrary
    # (the last action must never be used: the policy chooses it).
    g = torch.Generator().manual_seed(1)
    windows = {"state": torch.cat([states[0][:, None] + 0.01 * torch.randn(N, M - 1, 45, generator=g),
                                   states[0][:, None]], dim=1),
               "action": torch.cat([torch.randn(N, M - 1, 12, generator=g), torch.full((N, 1, 12), 7.0)], dim=1),
               "contact": contacts[0][:, None].expand(N, M, 8).clone(),
               "termination": terminations[0][:, None].expand(N, M, 1).clone()}
    oracle = OracleModel(states, contacts, terminations, actions, windows, M)

    def initial_windows(n, generator):
        assert n == N  # only the two full resets (simulator construction, env construction) happen
        return {key: value.clone() for key, value in windows.items()}

    sim = ImaginationSimulator(oracle, initial_windows, N, ImaginationCfg(member_per_episode=False))
    cfg = LocomotionEnvCfg(**env_kwargs)
    cfg.noise.enabled = False
    imagined = LocomotionEnv(cfg, sim, seed=seed)
    assert oracle.num_warmups == 2
    torch.testing.assert_close(sim.soft_joint_pos_limits, real.sim.soft_joint_pos_limits, rtol=0, atol=0)
    imagined_log = run_and_record(imagined, actions)
    assert int(oracle.k.min()) == T

    tol = {"rtol": 1e-5, "atol": 1e-4}
    for step, (r, i) in enumerate(zip(real_log, imagined_log)):
        assert set(r["terms"]) == set(i["terms"]) and len(r["terms"]) >= 10
        for name in r["terms"]:
            torch.testing.assert_close(i["terms"][name], r["terms"][name], rtol=1e-4, atol=1e-6,
                                       msg=lambda m, s=step, n=name: f"step {s}, term {n}: {m}")
        torch.testing.assert_close(i["rewards"], r["rewards"], rtol=1e-4, atol=1e-6)
        assert torch.equal(i["dones"], r["dones"])
        for group in ("policy", "system_state", "system_action", "system_contact", "system_termination"):
            torch.testing.assert_close(i["obs"][group], r["obs"][group], **tol,
                                       msg=lambda m, s=step, o=group: f"step {s}, observation {o}: {m}")
    # The heading is integrated from the 50 Hz samples of the yaw rate, so it follows the real
    # yaw (both start at 0) only approximately: within 0.03 rad here, where the yaw reaches 0.11.
    real_heading = torch.stack([r["heading"] for r in real_log])
    imagined_heading = torch.stack([i["heading"] for i in imagined_log])
    assert real_heading.abs().max() > 0.1
    torch.testing.assert_close(imagined_heading, real_heading, rtol=0, atol=0.03)


# ------------------------------------------------------------------------------ resets
@pytest.mark.parametrize("base", ["gru", "mlp"])
def test_predicted_termination_resets_exactly_those_envs(base):
    N, M = 6, 4
    calls: list = []
    model = Recorder(tiny_model(E=2, M=M, base=base))
    model.force_termination = torch.zeros(N, dtype=torch.bool)
    sim = ImaginationSimulator(model, random_windows(M, calls), N, seed=3)
    env = LocomotionEnv(LocomotionEnvCfg(), sim, seed=3)
    actions = torch.zeros(N, 12)
    for _ in range(3):
        _, _, dones, _ = env.step(actions)
        assert not dones.any()
    num_calls = len(calls)
    ids = torch.tensor([1, 4])
    keep = torch.tensor([0, 2, 3, 5])
    model.force_termination[ids] = True
    old_ids = sim.model_ids.clone()

    # what the contexts would be after this step without any reset
    shadow = tiny_model(E=2, M=M, base=base)
    shadow.load_state_dict(model.model.state_dict())
    shadow._state_ctx, shadow._aux_ctx, shadow._batch_size = model._state_ctx, model._aux_ctx, N
    with torch.inference_mode():
        shadow.observe(sim._z_state[:, None], model.action_normalizer(actions)[:, None])
    expected_kept = [c[keep] for c in ctx_rows(shadow)]

    _, _, dones, extras = env.step(actions)
    assert dones.tolist() == [i in (1, 4) for i in range(N)]
    assert extras["terminal"]["ids"].tolist() == [1, 4]
    assert bool(extras["terminal"]["system_termination"].all())
    # exactly one fresh draw of two windows, whose last records are now the current states
    assert len(calls) == num_calls + 1 and calls[-1]["state"].shape == (2, M, 45)
    window = calls[-1]
    torch.testing.assert_close(env.state.joint_pos[ids], window["state"][:, -1, 9:21], rtol=0, atol=0)
    assert not env.state.base_contact[ids].any() and torch.equal(env.state.heading[ids], torch.zeros(2))
    assert torch.equal(sim.model_ids[keep], old_ids[keep])
    # the reset rows were re-warmed on the first M-1 records from zeros, the others untouched
    fresh = tiny_model(E=2, M=M, base=base)
    fresh.load_state_dict(model.model.state_dict())
    with torch.inference_mode():
        fresh.observe(model.state_normalizer(window["state"][:, :-1]),
                      model.action_normalizer(window["action"][:, :-1]))
    for now, kept, warmed in zip(ctx_rows(model.model), expected_kept, ctx_rows(fresh)):
        assert torch.equal(now[keep], kept)
        torch.testing.assert_close(now[ids], warmed, rtol=1e-5, atol=1e-6)
    # and the rollout goes on
    model.force_termination[:] = False
    _, _, dones, _ = env.step(actions)
    assert not dones.any()


# ------------------------------------------------------------------------------ uncertainty
def test_uncertainty_penalty_is_zero_for_one_member():
    M = 4
    sim = ImaginationSimulator(tiny_model(E=1, M=M), random_windows(M), 5)
    assert torch.equal(sim.uncertainty, torch.zeros(5))
    env = LocomotionEnv(LocomotionEnvCfg(reward_weights={"track_lin_vel_xy_exp": 1.0, "uncertainty": -1.0}), sim)
    for _ in range(3):
        env.step(torch.zeros(5, 12))
    assert torch.equal(env.episode_sums["uncertainty"], torch.zeros(5))


def test_uncertainty_penalty_is_weight_times_epistemic_times_dt():
    M, N, w_u = 4, 5, -1.0
    model = Recorder(tiny_model(E=3, M=M))
    sim = ImaginationSimulator(model, random_windows(M), N)
    env = LocomotionEnv(LocomotionEnvCfg(reward_weights={"track_lin_vel_xy_exp": 1.0, "uncertainty": w_u}), sim)
    model.force_termination = torch.zeros(N, dtype=torch.bool)  # keep every episode running
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        before = env.episode_sums["uncertainty"].clone()
        env.step(0.3 * torch.randn(N, 12, generator=g))
        increment = env.episode_sums["uncertainty"] - before
        assert torch.equal(sim.uncertainty, model.last.epistemic)
        assert (sim.uncertainty > 0).all() and (increment < 0).all()
        torch.testing.assert_close(increment, w_u * model.last.epistemic * env.step_dt, rtol=1e-6, atol=0)
        member_mean = model.last.member_mean
        torch.testing.assert_close(sim.uncertainty, member_mean.std(0, unbiased=True).sum(-1))
        torch.testing.assert_close(sim.aleatoric, model.last.member_std.mean(0).sum(-1))


def test_a_base_tipped_past_fall_tilt_is_a_fall_whatever_the_termination_head_says():
    M, N = 4, 4
    model = Recorder(tiny_model(E=2, M=M))
    model.force_termination = torch.zeros(N, dtype=torch.bool)  # the head predicts no fall anywhere
    tilts = torch.tensor([0.0, 0.6, 0.8, 3.0])  # rad from upright; the default limit is 0.7 (40 deg)
    gravity = torch.stack([torch.sin(tilts), torch.zeros(N), -torch.cos(tilts)], dim=-1)  # (N, 3)
    observe = model.observe

    def tipped_observe(z_state, z_action, model_ids=None, ids=None):
        out = observe(z_state, z_action, model_ids=model_ids, ids=ids)
        if ids is None and z_state.shape[1] == 1:  # a step: predict the tilted bases
            raw = model.state_normalizer.inverse(out.mean)
            raw[:, STATE_SLICES["projected_gravity"]] = 0.98 * gravity  # not unit length: the rule normalises
            out.mean = model.state_normalizer(raw)
        return out

    model.observe = tipped_observe
    sim = ImaginationSimulator(model, random_windows(M), N)
    env = LocomotionEnv(LocomotionEnvCfg(), sim)
    _, _, dones, extras = env.step(torch.zeros(N, 12))
    assert dones.tolist() == [False, False, True, True] and not extras["time_outs"].any()
    sim.cfg = ImaginationCfg(fall_tilt=math.pi)  # the rule off: only the head decides
    assert not sim.step(torch.zeros(N, 12)).base_contact.any()
    with pytest.raises(ConfigError, match="imagination.fall_tilt = 0"):
        ImaginationCfg(fall_tilt=0.0)


# ------------------------------------------------------------------------------ members
def test_each_episode_rolls_out_one_member_and_a_reset_redraws_it():
    M, N, E = 4, 32, 4
    model = Recorder(tiny_model(E=E, M=M))
    sim = ImaginationSimulator(model, random_windows(M), N, seed=5)
    assert sim.model_ids.shape == (N,) and len(sim.model_ids.unique()) > 1
    sim.step(torch.zeros(N, 12))
    rows = torch.arange(N)
    expected = model.state_normalizer.inverse(model.last.member_mean[sim.model_ids, rows])
    torch.testing.assert_close(to_system_vectors(sim.state)[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(sim.state.foot_contact, model.last.contact_logits[:, 4:] > 0)
    before = sim.model_ids.clone()
    sim.reset(rows[:16])
    assert torch.equal(sim.model_ids[16:], before[16:]) and not torch.equal(sim.model_ids[:16], before[:16])
    sim.step(torch.zeros(N, 12))
    torch.testing.assert_close(sim._z_state, model.last.member_mean[sim.model_ids, rows], rtol=0, atol=0)


def test_mean_mode_uses_the_ensemble_mean_and_sample_mode_samples():
    M, N = 4, 6
    model = Recorder(tiny_model(E=3, M=M))
    sim = ImaginationSimulator(model, random_windows(M), N, ImaginationCfg(member_per_episode=False))
    assert sim.model_ids is None
    sim.step(torch.zeros(N, 12))
    torch.testing.assert_close(sim._z_state, model.last.member_mean.mean(0), rtol=1e-6, atol=1e-6)
    sampler = ImaginationSimulator(model, random_windows(M), N, ImaginationCfg(sample_state=True))
    sampler.step(torch.zeros(N, 12))
    chosen = model.last.member_mean[sampler.model_ids, torch.arange(N)]
    std = model.last.member_std[sampler.model_ids, torch.arange(N)]
    assert not torch.equal(sampler._z_state, chosen) and ((sampler._z_state - chosen).abs() < 8 * std).all()


def test_a_due_push_adds_its_velocity_to_the_predicted_state_and_the_model_rolls_on_from_it():
    M, N, dt = 4, 64, 0.02
    model = Recorder(tiny_model(E=2, M=M))
    cfg = ImaginationCfg(push=True, push_interval_s=(0.05, 0.1), push_vel_xy=(-0.5, 0.5))
    sim = ImaginationSimulator(model, random_windows(M), N, cfg, seed=3, step_dt=dt)
    assert ((sim._push_timer >= 0.05) & (sim._push_timer <= 0.1)).all()
    pushed_any = torch.zeros(N, dtype=torch.bool)
    for _ in range(6):  # 0.12 s: every environment is pushed once or twice
        due = sim._push_timer - dt <= 0
        sim.step(torch.zeros(N, 12))
        predicted = model.state_normalizer.inverse(model.last.member_mean[sim.model_ids, torch.arange(N)])
        push = to_system_vectors(sim.state)[0] - predicted  # (N, 45)
        assert (push[~due].abs() < 1e-5).all()
        assert (push[due][:, :2].abs() <= 0.5 + 1e-5).all() and (push[due][:, 2:].abs() < 1e-5).all()
        assert (push[due][:, :2].abs().sum(-1) > 0).all()
        torch.testing.assert_close(sim._z_state, model.state_normalizer(to_system_vectors(sim.state)[0]))
        pushed_any |= due
    assert pushed_any.all()
    sim.reset(torch.arange(4))
    assert ((sim._push_timer[:4] >= 0.05) & (sim._push_timer[:4] <= 0.1)).all()
    off = ImaginationSimulator(model, random_windows(M), N, seed=3, step_dt=dt)  # push is off by default
    for _ in range(6):
        off.step(torch.zeros(N, 12))
    torch.testing.assert_close(off._z_state, model.last.member_mean[off.model_ids, torch.arange(N)], rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"imagination.push_interval_s = \(0.0, 1.0\)"):
        ImaginationCfg(push_interval_s=(0.0, 1.0))
    with pytest.raises(ConfigError, match=r"imagination.push_vel_xy = \(0.5, -0.5\)"):
        ImaginationCfg(push_vel_xy=(0.5, -0.5))


# ------------------------------------------------------------------------------ real model, real data
def test_imagined_rollout_from_replay_windows_stays_finite():
    from rwm.tasks import make_task_cfg
    from rwm.training.world_model_learning import collect_replay

    M, N = 4, 16
    task = make_task_cfg("Velocity-Flat-Anymal-D-Pretrain-v0")
    task.sim.num_threads = 1
    g = torch.Generator().manual_seed(0)
    buffer = collect_replay(task, lambda obs: 0.3 * torch.randn(obs.shape[0], 12, generator=g),
                            num_envs=4, steps=30, seed=1)
    model = tiny_model(E=2, M=M)
    sim = ImaginationSimulator(model, lambda n, gen: buffer.sample(n, M, gen), N, seed=2)
    env = LocomotionEnv(LocomotionEnvCfg(reward_weights={**LocomotionEnvCfg().reward_weights, "uncertainty": -1.0}),
                        sim, seed=2)
    assert not isinstance(sim, MujocoSimulator)
    obs = env.get_observations()
    for _ in range(50):
        obs, rewards, _, _ = env.step(0.3 * torch.tanh(obs["policy"][:, :12]))
        for value in (*obs.values(), rewards, sim.uncertainty, sim.aleatoric, sim.state.heading):
            assert torch.isfinite(value).all()
    assert (sim.uncertainty > 0).all() and "uncertainty" in env.episode_sums


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_clear_messages():
    M, N = 4, 3
    sim = ImaginationSimulator(tiny_model(E=1, M=M), random_windows(M), N)
    with pytest.raises(ValueError, match="shape"):
        sim.step(torch.zeros(N, 11))
    with pytest.raises(ValueError, match="NaN"):
        sim.step(torch.full((N, 12), float("nan")))
    with pytest.raises(ValueError, match="torch.Tensor"):
        sim.step([[0.0] * 12] * N)
    with pytest.raises(ValueError, match="history_horizon"):
        ImaginationSimulator(tiny_model(E=1, M=M), random_windows(M - 1), N)
    with pytest.raises(ConfigError, match="step_dt = 0.0"):
        ImaginationSimulator(tiny_model(E=1, M=M), random_windows(M), N, step_dt=0.0)


def test_model_without_auxiliary_heads_predicts_no_contact_and_no_fall():
    M, N = 4, 3
    torch.manual_seed(0)
    model = SystemDynamics(tiny_model(E=2, M=M).cfg, contact_dim=0, termination_dim=0)
    sim = ImaginationSimulator(model, random_windows(M), N)
    assert sim.state.foot_contact.any()  # the window's last record
    state = sim.step(torch.zeros(N, 12))
    assert not (state.foot_contact.any() or state.thigh_contact.any() or state.base_contact.any())
