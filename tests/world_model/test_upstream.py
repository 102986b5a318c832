"""Importing upstream (rsl_rl_rwm) checkpoints (docs/architecture.md#checkpoints): our forward on converted
weights equals an independent re-implementation of the upstream forward (docs/architecture.md#world-model) on
the upstream tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rwm.world_model import SystemDynamics, convert_upstream_state_dict, load_upstream_checkpoint, load_upstream_model
from rwm.world_model.config import STATE_MEAN, STATE_STD
from rwm.world_model.upstream import infer_upstream_cfg

S, A, C, T1 = 45, 12, 8, 1
H, LAYERS, HEAD, E, HIST = 16, 2, 10, 3, 4


# ----------------------------------------------------------------------------- upstream layout
def upstream_state_dict(base: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the parameter names and shapes of docs/architecture.md#checkpoints."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: 0.3 * torch.randn(*shape, generator=g)  # noqa: E731
    sd = {}
    for branch in ("state_base", "auxiliary_base"):
        if base == "mlp":
            sd[f"{branch}.layers.0.weight"], sd[f"{branch}.layers.0.bias"] = rnd(H, HIST * (S + A)), rnd(H)
            sd[f"{branch}.layers.2.weight"], sd[f"{branch}.layers.2.bias"] = rnd(H, H), rnd(H)
        else:
            gates = 3 if base == "gru" else 4
            for n in range(LAYERS):
                width = S + A if n == 0 else H
                sd[f"{branch}.memory.rnn.weight_ih_l{n}"] = rnd(gates * H, width)
                sd[f"{branch}.memory.rnn.weight_hh_l{n}"] = rnd(gates * H, H)
                sd[f"{branch}.memory.rnn.bias_ih_l{n}"] = rnd(gates * H)
                sd[f"{branch}.memory.rnn.bias_hh_l{n}"] = rnd(gates * H)
    for e in range(E):
        for name, out in (("state_mean_layers", S), ("state_logstd_layers", S)):
            sd[f"state_heads.{e}.{name}.0.weight"], sd[f"state_heads.{e}.{name}.0.bias"] = rnd(HEAD, H), rnd(HEAD)
            sd[f"state_heads.{e}.{name}.2.weight"], sd[f"state_heads.{e}.{name}.2.bias"] = rnd(out, HEAD), rnd(out)
        sd[f"state_heads.{e}.state_min_logstd"] = -5.0 + rnd(1, S)
        sd[f"state_heads.{e}.state_log_delta_logstd"] = rnd(1, S)
        for name, out in (("contact_layers", C), ("termination_layers", T1)):
            p = f"auxiliary_heads.{e}.{name}"
            sd[f"{p}.0.weight"], sd[f"{p}.0.bias"] = rnd(HEAD, H), rnd(HEAD)
            sd[f"{p}.2.weight"], sd[f"{p}.2.bias"] = rnd(out, HEAD), rnd(out)
    return sd


# ----------------------------------------------------------------------------- reference forward
class UpstreamReference:
    """A stateful re-implementation of SystemDynamicsEnsemble.forward as upstream writes it, with
    explicit gate equations (PyTorch's gate order) and per-member loops."""

    def __init__(self, sd: dict, base: str):
        self.sd, self.base = sd, base
        self.hidden = {"state_base": None, "auxiliary_base": None}

    def _rnn(self, branch: str, x: torch.Tensor) -> torch.Tensor:
        sd, B = self.sd, x.shape[0]
        state = self.hidden[branch] or [(torch.zeros(B, H), torch.zeros(B, H)) for _ in range(LAYERS)]
        for t in range(x.shape[1]):
            inp = x[:, t]
            for n in range(LAYERS):
                p = f"{branch}.memory.rnn."
                gi = inp @ sd[p + f"weight_ih_l{n}"].t() + sd[p + f"bias_ih_l{n}"]
                h, c = state[n]
                gh = h @ sd[p + f"weight_hh_l{n}"].t() + sd[p + f"bias_hh_l{n}"]
                if self.base == "gru":  # reset, update, new
                    ir, iz, in_ = gi.chunk(3, -1)
                    hr, hz, hn = gh.chunk(3, -1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    nn_ = torch.tanh(in_ + r * hn)
                    h = (1 - z) * nn_ + z * h
                else:  # input, forget, cell, output
                    i, f, g_, o = (gi + gh).chunk(4, -1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g_)
                    h = torch.sigmoid(o) * torch.tanh(c)
                state[n] = (h, c)
                inp = h
        self.hidden[branch] = state
        return inp

    def _mlp_base(self, branch: str, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1, 2)  # (B, HIST * 57), time-major
        for k in (0, 2):
            y = F.relu(y @ self.sd[f"{branch}.layers.{k}.weight"].t() + self.sd[f"{branch}.layers.{k}.bias"])
        return y

    def _seq(self, prefix: str, h: torch.Tensor) -> torch.Tensor:
        y = F.relu(h @ self.sd[f"{prefix}.0.weight"].t() + self.sd[f"{prefix}.0.bias"])
        return y @ self.sd[f"{prefix}.2.weight"].t() + self.sd[f"{prefix}.2.bias"]

    def forward(self, zs: torch.Tensor, za: torch.Tensor, model_ids=None):
        x = torch.cat([zs, za], -1)
        run = self._mlp_base if self.base == "mlp" else self._rnn
        hs, ha = run("state_base", x), run("auxiliary_base", x)
        means, stds, contacts, terms = [], [], [], []
        for e in range(E):
            p = f"state_heads.{e}"
            means.append(self._seq(f"{p}.state_mean_layers", hs) + zs[:, -1])
            raw = self._seq(f"{p}.state_logstd_layers", hs)
            l_min = self.sd[f"{p}.state_min_logstd"]
            l_max = l_min + torch.exp(self.sd[f"{p}.state_log_delta_logstd"])
            raw = l_max - F.softplus(l_max - raw)
            raw = l_min + F.softplus(raw - l_min)
            stds.append(torch.exp(raw))
            contacts.append(self._seq(f"auxiliary_heads.{e}.contact_layers", ha))
            terms.append(self._seq(f"auxiliary_heads.{e}.termination_layers", ha))
        means, stds, contacts, terms = map(torch.stack, (means, stds, contacts, terms))
        if model_ids is None:
            mean, contact, term = means.mean(0), contacts.mean(0), terms.mean(0)
        else:  # upstream: model_ids (1, B, 1) gathered along the member axis
            ids = model_ids.view(1, -1, 1)
            mean = torch.gather(means, 0, ids.repeat(1, 1, S)).squeeze(0)
            contact = torch.gather(contacts, 0, ids.repeat(1, 1, C)).squeeze(0)
            term = torch.gather(terms, 0, ids.repeat(1, 1, T1)).squeeze(0)
        return mean, stds.mean(0).sum(1), means.std(0).sum(1), contact, term, means, stds


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("base", ["gru", "lstm", "mlp"])
def test_converted_upstream_model_matches_upstream_forward(base, tmp_path):
    sd = upstream_state_dict(base)
    path = tmp_path / "model_5000.pt"
    torch.save({"model_state_dict": {}, "system_dynamics_state_dict": sd, "optimizer_state_dict": {},
                "system_dynamics_optimizer_state_dict": {}, "iter": 5000, "infos": None}, path)
    ours_sd, cfg = load_upstream_checkpoint(path, **({"history_horizon": HIST} if base != "mlp" else {}))
    assert (cfg.base, cfg.ensemble_size, cfg.history_horizon) == (base, E, HIST)
    model = SystemDynamics(cfg)
    model.load_state_dict(ours_sd)
    torch.testing.assert_close(model.state_normalizer.mean, torch.tensor(STATE_MEAN))
    torch.testing.assert_close(model.state_normalizer.std, torch.tensor(STATE_STD))

    ref = UpstreamReference(sd, base)
    g = torch.Generator().manual_seed(1)
    B = 5
    zs, za = torch.randn(B, HIST + 2, S, generator=g), torch.randn(B, HIST + 2, A, generator=g)
    ids = torch.tensor([0, 2, 1, 1, 0])
    with torch.no_grad():
        model.reset()
        for step, (sl, model_ids) in enumerate(((slice(0, HIST), None), (slice(HIST, HIST + 1), ids),
                                                (slice(HIST + 1, HIST + 2), None))):
            if base == "mlp":  # upstream's MLP reads the whole H-step window each call
                window = slice(sl.stop - HIST, sl.stop)
                expected = ref.forward(zs[:, window], za[:, window], model_ids)
            else:
                expected = ref.forward(zs[:, sl], za[:, sl], model_ids)
            out = model.observe(zs[:, sl], za[:, sl], model_ids=model_ids)
            got = (out.mean, out.aleatoric, out.epistemic, out.contact_logits, out.termination_logits,
                   out.member_mean, out.member_std)
            for name, a, b in zip(("mean", "aleatoric", "epistemic", "contact", "termination", "member_mean",
                                   "member_std"), got, expected):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{base} step {step}: {name}")


def test_load_upstream_model_and_bare_state_dict(tmp_path):
    sd = upstream_state_dict("gru", seed=3)
    path = tmp_path / "bare.pt"
    torch.save(sd, path)
    model = load_upstream_model(path)
    assert not model.training and model.ensemble_size == E and model.cfg.rnn_hidden_size == H
    assert model.cfg.history_horizon == 32  # not recorded by recurrent upstream models: the published value
    torch.testing.assert_close(model.state_heads.mean.layers[0].weight[1],
                               sd["state_heads.1.state_mean_layers.0.weight"].t())


def test_layout_mismatches_fail_with_clear_messages(tmp_path):
    sd = upstream_state_dict("gru")
    cfg = infer_upstream_cfg(sd)
    broken = {k: v for k, v in sd.items() if k != "state_heads.2.state_min_logstd"}
    with pytest.raises(ValueError, match="state_heads.2.state_min_logstd"):
        convert_upstream_state_dict(broken, cfg)
    with pytest.raises(ValueError, match="state_heads.1.state_mean_layers.2.weight' has shape"):
        convert_upstream_state_dict({**sd, "state_heads.1.state_mean_layers.2.weight": torch.zeros(S, HEAD + 1)}, cfg)
    small = infer_upstream_cfg(sd, ensemble_size=2)
    with pytest.raises(ValueError, match="state_heads.2"):
        convert_upstream_state_dict(sd, small)  # a member the config does not account for
    path = tmp_path / "other.pt"
    torch.save({"model_state_dict": {}, "iter": 3}, path)
    with pytest.raises(ValueError, match="system_dynamics_state_dict"):
        load_upstream_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_upstream_checkpoint(tmp_path / "missing.pt")
