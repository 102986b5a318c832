"""Dual-autoregressive loss and trainer (docs/architecture.md#world-model-training, docs/upstream.md #12 fixed):
member alignment against a per-member reference, loss formulas, learning a small dynamical system, failure
handling."""

from __future__ import annotations

import math

import pytest
import torch

from rwm.world_model import SystemDynamics, WorldModelCfg, WorldModelTrainer, world_model_loss
from rwm.world_model.losses import auxiliary_losses, bootstrap_indices, state_loss


# ----------------------------------------------------------------------------- helpers
def toy_cfg(**kw) -> WorldModelCfg:
    base = dict(ensemble_size=3, history_horizon=5, forecast_horizon=4, rnn_num_layers=2, rnn_hidden_size=16,
                mlp_base_shape=(16,), state_mean_shape=(12,), state_logstd_shape=(12,), aux_shape=(12,),
                normalizer="fitted", mini_batch_size=16, num_mini_batches=1)
    return WorldModelCfg(**{**base, **kw})


def toy_model(seed: int = 0, S: int = 6, A: int = 3, C: int = 2, **kw) -> SystemDynamics:
    torch.manual_seed(seed)
    return SystemDynamics(toy_cfg(**kw), state_dim=S, action_dim=A, contact_dim=C, termination_dim=1)


def random_batch(B: int, L: int, S: int = 6, A: int = 3, C: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"state": torch.randn(B, L, S, generator=g), "action": torch.randn(B, L, A, generator=g),
            "contact": (torch.rand(B, L, C, generator=g) > 0.5).float(),
            "termination": (torch.rand(B, L, 1, generator=g) > 0.8).float()}


def member(B: int, e: int) -> torch.Tensor:
    return torch.full((B,), e, dtype=torch.long)


# ----------------------------------------------------------------------------- member alignment
@pytest.mark.parametrize("base,independent", [("gru", False), ("lstm", False), ("mlp", False), ("gru", True)])
def test_every_member_trains_on_its_own_correctly_aligned_context(base, independent):
    """The batched loss equals running each member alone, from a reset model, on its own bootstrap rows.

    This is the fix of docs/upstream.md #12 (members > 0 continued another member's hidden state):
    the reference below uses only the stateful API, one member at a time, feeding back the
    member's reparameterised sample with the action taken from it.
    """
    model = toy_model(base=base, independent_bases=independent)
    cfg = model.cfg
    M, N, E, B = cfg.history_horizon, cfg.forecast_horizon, cfg.ensemble_size, 7
    batch = random_batch(B, M + N)
    zs, za = batch["state"], batch["action"]  # the normalisers are still the identity
    idx = bootstrap_indices(B, E, True, zs.device, torch.Generator().manual_seed(5))
    assert not torch.equal(idx[0], idx[1])
    got = state_loss(model, zs, za, idx, cfg, torch.Generator().manual_seed(9))

    g = torch.Generator().manual_seed(9)
    eps = [torch.randn(E, B, zs.shape[-1], generator=g) for _ in range(N)]  # the same draws, in order
    losses = torch.zeros(E, N)
    with torch.no_grad():
        for e in range(E):
            rows = idx[e]
            model.reset()
            out = model.observe(zs[rows, :M], za[rows, :M])
            for i in range(N):
                sample = out.member_mean[e] + out.member_std[e] * eps[i][e]
                losses[e, i] = (sample - zs[rows, M + i]).square().sum(-1).mean()
                out = model.observe(sample[:, None], za[rows, M + i:M + i + 1])
    torch.testing.assert_close(got.detach(), losses.mean(), rtol=1e-5, atol=1e-5)


def test_auxiliary_losses_are_teacher_forced_per_member_with_pos_weight():
    model = toy_model(base="lstm", contact_pos_weight=3.0, termination_pos_weight=10.0)
    cfg = model.cfg
    M, N, E, B = cfg.history_horizon, cfg.forecast_horizon, cfg.ensemble_size, 6
    batch = random_batch(B, M + N, seed=4)
    zs, za = batch["state"], batch["action"]
    idx = bootstrap_indices(B, E, True, zs.device, torch.Generator().manual_seed(1))
    got = auxiliary_losses(model, zs, za, batch, idx, cfg)

    def bce(logit, y, w):  # spelled out: -(w y log s + (1 - y) log(1 - s))
        s = torch.sigmoid(logit)
        return -(w * y * torch.log(s) + (1 - y) * torch.log(1 - s)).mean()

    ref = {"contact": 0.0, "termination": 0.0}
    with torch.no_grad():
        for e in range(E):
            rows = idx[e]
            model.reset()
            out = model.observe(zs[rows, :M], za[rows, :M], model_ids=member(B, e))
            for i in range(N):
                ref["contact"] += bce(out.contact_logits, batch["contact"][rows, M + i], 3.0) / (E * N)
                ref["termination"] += bce(out.termination_logits, batch["termination"][rows, M + i], 10.0) / (E * N)
                # teacher forcing: the next input is the ground truth
                out = model.observe(zs[rows, M + i:M + i + 1], za[rows, M + i:M + i + 1], model_ids=member(B, e))
    for name, value in ref.items():
        torch.testing.assert_close(got[name].detach(), torch.as_tensor(value), rtol=1e-5, atol=1e-6)


def test_gaussian_nll_and_sampled_mse_formulas():
    """One forecast step, no bootstrap: both state losses against their textbook formulas."""
    B = 5
    for kind in ("mse", "gaussian_nll"):
        model = toy_model(forecast_horizon=1, bootstrap=False, state_loss=kind)
        M, E = model.cfg.history_horizon, model.ensemble_size
        batch = random_batch(B, M + 1, seed=2)
        total, terms = world_model_loss(model, batch, generator=torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        eps = torch.randn(E, B, 6, generator=g)
        with torch.no_grad():
            out = model.observe(batch["state"][:, :M], batch["action"][:, :M])
        mu, std, y = out.member_mean, out.member_std, batch["state"][:, M]
        if kind == "mse":
            expected = (mu + std * eps - y).square().sum(-1).mean()
        else:
            expected = -torch.distributions.Normal(mu, std).log_prob(y).sum(-1).mean()
        torch.testing.assert_close(terms["state"].detach(), expected, rtol=1e-5, atol=1e-5)
        # bound loss = mean(l_max) - mean(l_min) = exp(delta_init) = 1
        torch.testing.assert_close(terms["bound"].detach(), torch.tensor(1.0))
        weights = (1.0, 1.0, 1.0, 1.0)
        expected_total = sum(w * terms[k] for w, k in zip(weights, ("state", "bound", "contact", "termination")))
        torch.testing.assert_close(total, expected_total)


def test_gradients_flow_through_the_fed_back_samples():
    """The state loss reaches the std head (through the reparameterised samples) and the state
    base, and nothing of the auxiliary branch."""
    model = toy_model(forecast_horizon=3)
    batch = random_batch(6, 8)
    total, terms = world_model_loss(model, batch, generator=torch.Generator().manual_seed(0))
    terms["state"].backward()
    assert model.state_heads.logstd.layers[0].weight.grad.abs().sum() > 0
    assert model.state_base.bases[0].rnn.weight_hh_l0.grad.abs().sum() > 0
    assert model.auxiliary_base.bases[0].rnn.weight_hh_l0.grad is None  # only the auxiliary losses reach it


# ----------------------------------------------------------------------------- learning
def oscillators(num: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Two damped oscillators driven by the actions; contact = position > 0, termination = |x1| > 1.5.

    state = (x1, x2, v1, v2), action = (u1, u2); semi-implicit Euler, dt 0.1, stiffness 4, damping 0.6.
    """
    g = torch.Generator().manual_seed(seed)
    dt, k, c = 0.1, 4.0, 0.6
    x = torch.randn(num, 2, generator=g)
    v = torch.randn(num, 2, generator=g)
    actions = torch.randn(num, length, 2, generator=g)
    states = []
    for t in range(length):
        states.append(torch.cat([x, v], -1))
        v = v + dt * (-k * x - c * v + 2.0 * actions[:, t])
        x = x + dt * v
    states = torch.stack(states, 1)  # (num, length, 4); actions[:, t] is taken from states[:, t]
    return {"state": states, "action": actions, "contact": (states[..., :2] > 0).float(),
            "termination": (states[..., :1].abs() > 1.5).float()}


def test_training_learns_a_small_dynamical_system():
    torch.manual_seed(0)
    cfg = toy_cfg(ensemble_size=2, history_horizon=8, forecast_horizon=4, rnn_num_layers=1, rnn_hidden_size=48,
                  state_mean_shape=(48,), state_logstd_shape=(32,), aux_shape=(32,), learning_rate=3e-3,
                  num_mini_batches=4, mini_batch_size=64)
    model = SystemDynamics(cfg, state_dim=4, action_dim=2, contact_dim=2, termination_dim=1)
    data = oscillators(num=64, length=120, seed=1)
    model.fit_normalizers(data["state"], data["action"])
    L = cfg.window_length
    g = torch.Generator().manual_seed(2)

    def sampler() -> dict[str, torch.Tensor]:
        traj = torch.randint(0, 64, (cfg.mini_batch_size,), generator=g)
        start = torch.randint(0, 120 - L + 1, (cfg.mini_batch_size,), generator=g)
        steps = start[:, None] + torch.arange(L)
        return {key: value[traj[:, None], steps] for key, value in data.items()}

    trainer = WorldModelTrainer(model, generator=torch.Generator().manual_seed(3))
    history = [trainer.update(sampler) for _ in range(30)]
    first, last = history[0], history[-1]
    assert last["state"] < 0.05 * first["state"], (first, last)
    assert last["contact"] < 0.5 * first["contact"], (first, last)

    # 100-step autoregressive forecast on unseen trajectories vs holding the last known state.
    test = oscillators(num=32, length=8 + 100, seed=7)
    zs, za = model.state_normalizer(test["state"]), model.action_normalizer(test["action"])
    model.eval()
    with torch.no_grad():
        model.reset()
        out = model.observe(zs[:, :8], za[:, :8])
        preds = []
        for t in range(8, 108):
            preds.append(out.mean)
            if t < 107:
                out = model.observe(out.mean[:, None], za[:, t:t + 1])
    pred = torch.stack(preds, 1)  # (32, 100, 4)
    err = (pred - zs[:, 8:]).square().sum(-1).mean()
    baseline = (zs[:, 7:8] - zs[:, 8:]).square().sum(-1).mean()
    assert err < 0.05 * baseline, (float(err), float(baseline))


# ----------------------------------------------------------------------------- failures and state
def test_non_finite_loss_raises_and_leaves_parameters_unchanged():
    model = toy_model()
    with torch.no_grad():
        model.state_heads.mean.layers[-1].bias[0, 0] = math.nan
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = WorldModelTrainer(model)
    with pytest.raises(FloatingPointError, match="state loss"):
        trainer.update(lambda: random_batch(8, 9))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) or (torch.isnan(v) == torch.isnan(before[k])).all(), k


def test_bad_batches_are_refused():
    model = toy_model()
    batch = random_batch(8, 9)
    with pytest.raises(ValueError, match="'contact'"):
        world_model_loss(model, {k: v for k, v in batch.items() if k != "contact"})
    with pytest.raises(ValueError, match="'action' has shape"):
        world_model_loss(model, {**batch, "action": batch["action"][:, :5]})
    with pytest.raises(ValueError, match="non-finite"):
        world_model_loss(model, {**batch, "state": batch["state"].clone().fill_(math.inf)})


def test_optimizer_state_round_trip():
    model = toy_model()
    trainer = WorldModelTrainer(model, generator=torch.Generator().manual_seed(0))
    trainer.update(lambda: random_batch(8, 9))
    state = trainer.state_dict()
    clone = toy_model()
    clone.load_state_dict(model.state_dict())
    other = WorldModelTrainer(clone)
    other.load_state_dict(state)
    for a, b in zip(trainer.optimizer.state.values(), other.optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    # identical next update from identical state and randomness
    trainer.generator, other.generator = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert trainer.update(lambda: random_batch(8, 9, seed=1)) == other.update(lambda: random_batch(8, 9, seed=1))
    for (k, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), k
