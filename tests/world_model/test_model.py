"""SystemDynamics: shapes, residual mean, soft log-std bounds, uncertainties, batched ensemble,
partial context resets, persistence, freezing and input validation (docs/architecture.md#world-model)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from rwm.config import ConfigError
from rwm.world_model import SystemDynamics, WorldModelCfg, WorldModelTrainer
from rwm.world_model.config import STATE_MEAN, STATE_STD

S, A, C = 45, 12, 8


def small_cfg(**kw) -> WorldModelCfg:
    """The published structure at toy widths, so every test runs in milliseconds."""
    base = dict(ensemble_size=5, history_horizon=6, forecast_horizon=3, rnn_num_layers=2, rnn_hidden_size=16,
                mlp_base_shape=(16, 16), state_mean_shape=(12,), state_logstd_shape=(12,), aux_shape=(12,),
                mini_batch_size=8, num_mini_batches=1)
    return WorldModelCfg(**{**base, **kw})


def inputs(B: int = 4, T: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, S, generator=g), torch.randn(B, T, A, generator=g)


def make(seed: int = 0, **kw) -> SystemDynamics:
    torch.manual_seed(seed)
    return SystemDynamics(small_cfg(**kw))


@pytest.mark.parametrize("base", ["gru", "lstm", "mlp"])
@pytest.mark.parametrize("E", [1, 5])
def test_output_shapes(base, E):
    model = make(base=base, ensemble_size=E)
    zs, za = inputs(B=4, T=6)
    model.reset()
    out = model.observe(zs, za)
    assert out.mean.shape == (4, S)
    assert out.member_mean.shape == out.member_std.shape == (E, 4, S)
    assert out.aleatoric.shape == out.epistemic.shape == (4,)
    assert out.contact_logits.shape == (4, C)
    assert out.termination_logits.shape == (4, 1)
    assert out.extension is None
    torch.testing.assert_close(out.mean, out.member_mean.mean(0))
    # one more step, selecting a member per row
    ids = torch.tensor([0, E - 1, 0, E - 1])
    out = model.observe(zs[:, :1], za[:, :1], model_ids=ids)
    assert out.mean.shape == (4, S) and out.sample().shape == (4, S)
    torch.testing.assert_close(out.mean, out.member_mean[ids, torch.arange(4)])


def test_extension_head_and_no_auxiliary_heads():
    model = SystemDynamics(small_cfg(), contact_dim=0, termination_dim=0, extension_dim=3)
    out = model.observe(*inputs())
    assert out.extension.shape == (4, 3)
    assert out.contact_logits is None and out.termination_logits is None


@pytest.mark.parametrize("base", ["gru", "lstm", "mlp"])
def test_residual_mean_is_last_input_state_when_head_is_zero(base):
    model = make(base=base)
    last = model.state_heads.mean.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    zs, za = inputs()
    out = model.observe(zs, za)
    for e in range(model.ensemble_size):
        torch.testing.assert_close(out.member_mean[e], zs[:, -1], rtol=0, atol=0)


def test_logstd_soft_bounds_hold_for_extreme_head_outputs():
    model = make(ensemble_size=3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.state_heads.logstd_min.copy_(-5.0 + torch.randn(3, S, generator=g))
        model.state_heads.logstd_delta.copy_(torch.randn(3, S, generator=g))
    l_min, l_max = (t.detach() for t in model.state_heads.logstd_bounds())
    gap = l_max - l_min
    upper = l_max + torch.log1p(torch.exp(-gap))
    zs, za = inputs()
    for raw in (-1e4, -50.0, 0.0, 50.0, 1e4):
        with torch.no_grad():
            model.state_heads.logstd.layers[-1].weight.zero_()
            model.state_heads.logstd.layers[-1].bias.fill_(raw)
        model.reset()
        logstd = model.observe(zs, za).member_std.log()  # (3, B, S)
        assert torch.isfinite(logstd).all()
        assert (logstd >= l_min[:, None] - 1e-5).all() and (logstd <= upper[:, None] + 1e-5).all(), raw
        # the exact formula of docs/architecture.md#world-model
        l1 = l_max - torch.nn.functional.softplus(l_max - raw)
        expected = l_min + torch.nn.functional.softplus(l1 - l_min)
        torch.testing.assert_close(logstd, expected[:, None].expand_as(logstd), rtol=1e-5, atol=1e-5)
    # the extremes sit at the bounds
    assert torch.allclose(logstd, upper[:, None].expand_as(logstd), atol=1e-4)


def test_initial_std_is_between_the_initial_bounds():
    out = make().observe(*inputs())
    assert (out.member_std > math.exp(-5.0) * 0.999).all()
    assert (out.member_std < math.exp(-4.0 + math.log1p(math.exp(-1.0))) * 1.001).all()


def test_deterministic_model_has_zero_std():
    model = make(state_logstd_shape=None)
    out = model.observe(*inputs())
    assert torch.equal(out.member_std, torch.zeros_like(out.member_std))
    assert torch.equal(out.aleatoric, torch.zeros(4))
    out = model.observe(*inputs(T=1), model_ids=torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out.sample(), out.mean)


def test_uncertainties_follow_their_definitions():
    out = make(ensemble_size=1).observe(*inputs())
    assert torch.equal(out.epistemic, torch.zeros(4))
    model = make(ensemble_size=5)  # members initialised differently
    out = model.observe(*inputs())
    assert (out.epistemic > 0).all()
    mu, sigma = out.member_mean.double(), out.member_std.double()
    E = mu.shape[0]
    ale = torch.stack([sum(sigma[e, b, d] for e in range(E)) / E for b in range(4) for d in range(S)]).view(4, S).sum(1)
    mbar = mu.mean(0)
    epi = (((mu - mbar) ** 2).sum(0) / (E - 1)).sqrt().sum(1)
    torch.testing.assert_close(out.aleatoric.double(), ale, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.epistemic.double(), epi, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("base,independent", [("gru", False), ("lstm", False), ("mlp", False), ("gru", True)])
def test_batched_ensemble_equals_per_member_loop(base, independent):
    model = make(base=base, independent_bases=independent)
    zs, za = inputs(B=5, T=6)
    outs = []
    for batched in (True, False):
        model.batched_ensemble = batched
        model.reset()
        model.observe(zs, za)
        outs.append(model.observe(zs[:, :2], za[:, :2]))
    for name in ("member_mean", "member_std", "contact_logits", "termination_logits", "epistemic"):
        torch.testing.assert_close(getattr(outs[0], name), getattr(outs[1], name), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("base", ["gru", "lstm", "mlp"])
def test_partial_reset_clears_selected_rows_only(base):
    model = make(base=base, ensemble_size=2)
    zs, za = inputs(B=6, T=8, seed=3)
    model.observe(zs[:, :6], za[:, :6])
    before = [_ctx_tensors(model)]
    ids = torch.tensor([1, 4])
    model.reset(ids)
    after = _ctx_tensors(model)
    keep = torch.tensor([0, 2, 3, 5])
    for old, new in zip(before[0], after):
        dim = 0 if base == "mlp" else 1
        assert torch.equal(old.index_select(dim, keep), new.index_select(dim, keep))
        assert torch.equal(new.index_select(dim, ids), torch.zeros_like(new.index_select(dim, ids)))
    out = model.observe(zs[:, 6:], za[:, 6:])
    # kept rows continue as if nothing happened
    ref = make(base=base, ensemble_size=2)
    ref.load_state_dict(model.state_dict())
    ref.observe(zs[:, :6], za[:, :6])
    out_ref = ref.observe(zs[:, 6:], za[:, 6:])
    torch.testing.assert_close(out.member_mean[:, keep], out_ref.member_mean[:, keep], rtol=0, atol=1e-6)
    # reset rows behave like a fresh start on the new steps
    ref.reset()
    out_fresh = ref.observe(zs[ids, 6:], za[ids, 6:])
    torch.testing.assert_close(out.member_mean[:, ids], out_fresh.member_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.contact_logits[ids], out_fresh.contact_logits, rtol=1e-5, atol=1e-6)
    # a bool mask works too
    model.reset(torch.tensor([True, False, False, False, False, False]))
    assert torch.equal(_ctx_tensors(model)[0].select(0 if base == "mlp" else 1, 0),
                       torch.zeros_like(_ctx_tensors(model)[0].select(0 if base == "mlp" else 1, 0)))


def _ctx_tensors(model: SystemDynamics) -> list[torch.Tensor]:
    out = []
    for ctx in (model._state_ctx, model._aux_ctx):
        for c in ctx:
            out += list(c) if isinstance(c, tuple) else [c]
    return out


def test_batch_size_changes_only_after_full_reset():
    model = make()
    model.observe(*inputs(B=4))
    with pytest.raises(ValueError, match="reset"):
        model.observe(*inputs(B=3))
    with pytest.raises(ValueError, match="row ids"):
        model.reset(torch.tensor([4]))
    model.reset()
    assert model.observe(*inputs(B=3)).mean.shape == (3, S)


def test_mlp_context_is_a_rolling_window():
    """Feeding M steps at once or one by one gives the same prediction; older steps drop out."""
    model = make(base="mlp")
    zs, za = inputs(T=9)
    model.reset()
    at_once = model.observe(zs[:, 3:], za[:, 3:]).mean
    model.reset()
    for t in range(9):
        step = model.observe(zs[:, t:t + 1], za[:, t:t + 1]).mean
    torch.testing.assert_close(step, at_once, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_includes_normalizers():
    model = make(normalizer="fitted", base="lstm")
    g = torch.Generator().manual_seed(2)
    states = 3.0 + 2.0 * torch.randn(50, 7, S, generator=g)
    actions = torch.randn(50, 7, A, generator=g) - 1.0
    model.fit_normalizers(states, actions)
    torch.testing.assert_close(model.state_normalizer.mean, states.reshape(-1, S).mean(0))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = make(seed=123, normalizer="fitted", base="lstm")
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    zs, za = clone.state_normalizer(states[:4, :6]), clone.action_normalizer(actions[:4, :6])
    torch.testing.assert_close(zs, model.state_normalizer(states[:4, :6]), rtol=0, atol=0)
    a, b = model.observe(zs, za), clone.observe(zs, za)
    for name in ("mean", "member_std", "contact_logits", "termination_logits", "epistemic"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_fixed_normalizer_uses_published_statistics():
    model = SystemDynamics(small_cfg())
    torch.testing.assert_close(model.state_normalizer.mean, torch.tensor(STATE_MEAN))
    torch.testing.assert_close(model.state_normalizer.std, torch.tensor(STATE_STD))
    torch.testing.assert_close(model.action_normalizer.std, torch.ones(A))
    assert "state_normalizer.mean" in model.state_dict()


def test_freeze_auxiliary_keeps_auxiliary_branch_fixed():
    model = make(freeze_auxiliary=True, ensemble_size=2)
    aux = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("auxiliary")}
    heads = model.state_heads.mean.layers[0].weight.detach().clone()
    assert all(not p.requires_grad for p in model.auxiliary_base.parameters())
    model.train()
    assert not model.auxiliary_base.training and not model.auxiliary_heads.training and model.state_base.training
    g = torch.Generator().manual_seed(0)
    batch = {"state": torch.randn(8, 9, S, generator=g) * 0.1, "action": torch.randn(8, 9, A, generator=g),
             "contact": torch.ones(8, 9, C), "termination": torch.zeros(8, 9, 1)}
    losses = WorldModelTrainer(model).update(lambda: batch)
    assert losses["contact"] > 0
    for k, v in model.state_dict().items():
        if k.startswith("auxiliary"):
            assert torch.equal(v, aux[k]), k
    assert not torch.equal(model.state_heads.mean.layers[0].weight, heads)


def test_invalid_inputs_are_refused_with_clear_messages():
    model = make()
    zs, za = inputs()
    with pytest.raises(ValueError, match="z_state"):
        model.observe(zs[..., :10], za)
    with pytest.raises(ValueError, match="z_action"):
        model.observe(zs, za[:, :2])
    with pytest.raises(ValueError, match="model_ids"):
        model.observe(zs, za, model_ids=torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="normaliser"):
        SystemDynamics(small_cfg(), state_dim=4)


@pytest.mark.parametrize("override,match", [
    ({"ensemble_size": 0}, "ensemble_size"),
    ({"state_loss": "gaussian_nll", "state_logstd_shape": None}, "gaussian_nll"),
    ({"state_std": (1.0,) * 44}, "state_std"),
    ({"contact_pos_weight": -1.0}, "contact_pos_weight"),
    ({"mlp_base_shape": ()}, "mlp_base_shape"),
])
def test_config_range_checks(override, match):
    with pytest.raises(ConfigError, match=match):
        WorldModelCfg(**override)


def test_paper_preset():
    cfg = WorldModelCfg.paper()
    assert (cfg.num_mini_batches, cfg.mini_batch_size, cfg.window_length) == (20, 5000, 40)


def test_published_parameter_counts():
    """docs/architecture.md#world-model: about 1.418 M parameters for E = 1 and 1.996 M for E = 5."""
    for E, expected in ((1, 1_417_789), (5, 1_995_569)):
        model = SystemDynamics(WorldModelCfg(ensemble_size=E))
        assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("base", ["gru", "lstm", "mlp"])
def test_observe_subset_advances_only_those_rows(base):
    """observe(..., ids) warms up freshly reset rows on a long history while the others wait untouched."""
    model = make(base=base, ensemble_size=2)
    zs, za = inputs(B=5, T=6, seed=4)
    model.observe(zs, za)
    before = _ctx_tensors(model)
    ids = torch.tensor([1, 3])
    keep = torch.tensor([0, 2, 4])
    dim = 0 if base == "mlp" else 1
    long_s, long_a = inputs(B=2, T=32, seed=5)
    model.reset(ids)
    out = model.observe(long_s, long_a, model_ids=torch.tensor([1, 0]), ids=ids)
    # the k rows are exactly a fresh model observing them alone
    fresh = make(base=base, ensemble_size=2)
    fresh.load_state_dict(model.state_dict())
    ref = fresh.observe(long_s, long_a, model_ids=torch.tensor([1, 0]))
    assert out.mean.shape == (2, S)
    for name in ("mean", "member_mean", "member_std", "contact_logits", "termination_logits", "epistemic"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=1e-5, atol=1e-6)
    for new, fresh_ctx, old in zip(_ctx_tensors(model), _ctx_tensors(fresh), before):
        torch.testing.assert_close(new.index_select(dim, ids), fresh_ctx, rtol=1e-5, atol=1e-6)
        assert torch.equal(new.index_select(dim, keep), old.index_select(dim, keep))  # bit for bit
    # the untouched rows then continue as if the subset had never been observed
    untouched = make(base=base, ensemble_size=2)
    untouched.load_state_dict(model.state_dict())
    untouched.observe(zs, za)
    step_s, step_a = inputs(B=5, T=1, seed=6)
    torch.testing.assert_close(model.observe(step_s, step_a).member_mean[:, keep],
                               untouched.observe(step_s, step_a).member_mean[:, keep], rtol=0, atol=0)


def test_observe_subset_refuses_bad_row_ids():
    model = make()
    zs, za = inputs(B=2, T=3)
    with pytest.raises(ValueError, match="before any batch"):
        model.observe(zs, za, ids=torch.tensor([0, 1]))
    model.observe(*inputs(B=4, T=3))
    with pytest.raises(ValueError, match="repeated"):
        model.observe(zs, za, ids=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="row ids"):
        model.observe(zs, za, ids=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="ids of shape"):
        model.observe(zs, za, ids=torch.tensor([0, 1, 2]))
