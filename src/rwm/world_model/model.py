"""The learned simulator: a recurrent dynamics ensemble with contact and termination heads
(docs/architecture.md#world-model).

Structure (as upstream): a *state base* and a separate *auxiliary base*, each a stacked GRU/LSTM
(or an MLP on a flattened M-step window) reading ``concat(z_state, z_action)`` per step; E state
heads on the state base (a residual mean and a softly bounded log-std) and E auxiliary heads on
the auxiliary base (contact logits, termination logit, optional extension values). With the
default shared bases the ensemble lives only in the heads.

What differs from upstream, and why:

* The E heads are evaluated **together**: every head layer is one batched matrix product with
  weights shaped (E, in, out) instead of a Python loop over E ``nn.Sequential`` heads (faster,
  see ``bench/world_model_speed.py``; :attr:`SystemDynamics.batched_ensemble` switches to the
  per-member loop, kept as the reference the tests compare against).
* The recurrent context is explicit. The bases are stateless functions of
  ``(input, context) -> (output, context)``; :meth:`SystemDynamics.observe` and
  :meth:`SystemDynamics.reset` keep one context per branch for the imagination simulator and
  the evaluation, and training keeps its own. Partial resets work for GRU, LSTM (whose context
  is an ``(h, c)`` tuple, docs/upstream.md #14) and the MLP's rolling window alike.
* The state and action normalisers are submodules, so their statistics travel in
  ``state_dict`` (upstream took them from the config at load time and forgot them otherwise).

Every tensor the bases and heads see is in the normalised space of docs/architecture.md#normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rwm.rl.normalizer import EmpiricalNormalization
from rwm.sim.state import ACTION_DIM, CONTACT_DIM, STATE_DIM, TERMINATION_DIM
from rwm.world_model.config import WorldModelCfg

# A base's context: GRU (layers, rows, hidden); LSTM (h, c) of that shape; MLP (rows, M, input).
# None stands for zeros of any number of rows.
Context = Any


# ============================================================================ ensemble layers
class EnsembleLinear(nn.Module):
    """E independent linear layers evaluated as one batched product.

    ``weight`` (E, in, out), ``bias`` (E, out). The input is either shared by all members,
    (R, in), which becomes a single (R, in) x (in, E*out) product, or one block per member,
    (E, R, in), which becomes one ``baddbmm``. Either way the output is (E, R, out).
    """

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        self.num_members, self.in_features, self.out_features = num_members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default, drawn independently for every member so the members differ.
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: bool) -> torch.Tensor:
        """x (R, in) if not ``members`` else (E, R, in) -> (E, R, out)."""
        E, out = self.num_members, self.out_features
        if not members:
            w = self.weight.permute(1, 0, 2).reshape(self.in_features, E * out)  # (in, E*out)
            y = torch.addmm(self.bias.reshape(1, E * out), x, w)  # (R, E*out)
            return y.view(x.shape[0], E, out).transpose(0, 1)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def forward_loop(self, x: torch.Tensor, members: bool) -> torch.Tensor:
        """Reference path: one ordinary linear layer per member, in a Python loop."""
        outs = [F.linear(x[e] if members else x, self.weight[e].t(), self.bias[e]) for e in range(self.num_members)]
        return torch.stack(outs)

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleMLP(nn.Module):
    """E MLPs ``in -> hidden... -> out`` with ReLU between layers and none after the last."""

    def __init__(self, num_members: int, in_features: int, hidden: tuple[int, ...], out_features: int):
        super().__init__()
        widths = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(EnsembleLinear(num_members, a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor, members: bool, loop: bool = False) -> torch.Tensor:
        """x (*, in) shared, or (E, *, in) per member -> (E, *, out)."""
        lead = x.shape[1:-1] if members else x.shape[:-1]
        x = x.reshape(x.shape[0], -1, x.shape[-1]) if members else x.reshape(-1, x.shape[-1])
        for k, layer in enumerate(self.layers):
            x = layer.forward_loop(x, members) if loop else layer(x, members)
            members = True
            if k < len(self.layers) - 1:
                x = F.relu(x)
        return x.reshape(x.shape[0], *lead, x.shape[-1])


class StateHeads(nn.Module):
    """E state heads: residual mean and softly bounded log-std (docs/architecture.md#world-model).

    ``mu = MLP(h) + z_last`` predicts the next state as a change of the last input state, which
    is what a 50 Hz system mostly does. The log-std is pushed into [l_min, l_max] with two
    softplus "soft clamps" (l_max = l_min + exp(delta), both learned per member and dimension),
    so it has gradients everywhere yet cannot run off.
    """

    def __init__(self, num_members: int, in_features: int, state_dim: int, cfg: WorldModelCfg):
        super().__init__()
        self.num_members, self.state_dim = num_members, state_dim
        self.mean = EnsembleMLP(num_members, in_features, tuple(cfg.state_mean_shape), state_dim)
        self.stochastic = cfg.state_logstd_shape is not None
        if self.stochastic:
            self.logstd = EnsembleMLP(num_members, in_features, tuple(cfg.state_logstd_shape), state_dim)
            self.logstd_min = nn.Parameter(torch.full((num_members, state_dim), float(cfg.logstd_min_init)))
            self.logstd_delta = nn.Parameter(torch.full((num_members, state_dim), float(cfg.logstd_delta_init)))

    def logstd_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(l_min, l_max), each (E, state_dim)."""
        return self.logstd_min, self.logstd_min + torch.exp(self.logstd_delta)

    def bounded_logstd(self, raw: torch.Tensor) -> torch.Tensor:
        """Soft-clamp raw log-std (E, *, state_dim) into the learned bounds, exactly as upstream."""
        l_min, l_max = self.logstd_bounds()
        shape = (self.num_members,) + (1,) * (raw.dim() - 2) + (self.state_dim,)
        l_min, l_max = l_min.view(shape), l_max.view(shape)
        l1 = l_max - F.softplus(l_max - raw)
        return l_min + F.softplus(l1 - l_min)

    def forward(self, h: torch.Tensor, z_last: torch.Tensor, members: bool, loop: bool = False):
        """h (*, H) or (E, *, H); z_last (*, S) or (E, *, S) -> mean, std, logstd, each (E, *, S).

        For a deterministic head std is 0 and logstd is -inf.
        """
        mean = self.mean(h, members, loop) + z_last
        if not self.stochastic:
            std = torch.zeros_like(mean)
            return mean, std, torch.full_like(mean, -math.inf)
        logstd = self.bounded_logstd(self.logstd(h, members, loop))
        return mean, torch.exp(logstd), logstd

    def bound_loss(self) -> torch.Tensor:
        """mean_d(l_max) - mean_d(l_min), averaged over members (= mean exp(delta)); 0 if deterministic."""
        if not self.stochastic:
            return self.mean.layers[0].weight.new_zeros(())
        l_min, l_max = self.logstd_bounds()
        return l_max.mean() - l_min.mean()


class AuxiliaryHeads(nn.Module):
    """E auxiliary heads: contact logits, termination logit(s), extension values (no residual)."""

    def __init__(self, num_members: int, in_features: int, contact_dim: int, termination_dim: int,
                 extension_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.dims = {"contact": contact_dim, "termination": termination_dim, "extension": extension_dim}
        for name, dim in self.dims.items():
            if dim > 0:
                self.add_module(name, EnsembleMLP(num_members, in_features, hidden, dim))

    def forward(self, h: torch.Tensor, members: bool, loop: bool = False) -> dict[str, torch.Tensor | None]:
        """h (*, H) or (E, *, H) -> {"contact", "termination", "extension"}: (E, *, d) or None."""
        return {name: getattr(self, name)(h, members, loop) if dim > 0 else None for name, dim in self.dims.items()}


# ============================================================================ bases
class RecurrentBase(nn.Module):
    """A stacked batch-first GRU or LSTM; the context is its hidden state."""

    def __init__(self, input_dim: int, kind: str, num_layers: int, hidden_size: int):
        super().__init__()
        cls = nn.GRU if kind == "gru" else nn.LSTM
        self.kind = kind
        self.rnn = cls(input_size=input_dim, hidden_size=hidden_size, num_layers=num_layers, batch_first=True)
        self.output_dim = hidden_size

    def forward(self, x: torch.Tensor, ctx: Context, all_steps: bool = False) -> tuple[torch.Tensor, Context]:
        """x (R, T, in) continuing from ``ctx`` -> (output (R, H), or (R, T, H) if all_steps; new ctx)."""
        out, ctx = self.rnn(x, ctx)
        return (out if all_steps else out[:, -1]), ctx

    @staticmethod
    def select_rows(ctx: Context, rows: torch.Tensor) -> Context:
        """The context of rows ``rows`` (R',) (repeats allowed)."""
        if ctx is None:
            return None
        if isinstance(ctx, tuple):
            return tuple(c.index_select(1, rows) for c in ctx)
        return ctx.index_select(1, rows)

    @staticmethod
    def zero_rows(ctx: Context, ids: torch.Tensor) -> Context:
        """A copy of ``ctx`` with rows ``ids`` set to zeros (the start-of-sequence state)."""
        if ctx is None:
            return None
        if isinstance(ctx, tuple):
            return tuple(c.index_fill(1, ids, 0.0) for c in ctx)
        return ctx.index_fill(1, ids, 0.0)

    @staticmethod
    def assign_rows(ctx: Context, ids: torch.Tensor, rows_ctx: Context) -> Context:
        """A copy of ``ctx`` whose rows ``ids`` (k,) are replaced by ``rows_ctx`` (k rows)."""
        if isinstance(ctx, tuple):
            return tuple(c.index_copy(1, ids, r) for c, r in zip(ctx, rows_ctx))
        return ctx.index_copy(1, ids, rows_ctx)

    @staticmethod
    def detach(ctx: Context) -> Context:
        if ctx is None:
            return None
        return tuple(c.detach() for c in ctx) if isinstance(ctx, tuple) else ctx.detach()


class MLPBase(nn.Module):
    """Linear + ReLU layers on the flattened window of the last M input steps.

    The context is that rolling window (R, M, in), zeros at the start, so feeding T steps at
    a time behaves exactly like the recurrent bases (the window is upstream's input history).
    """

    def __init__(self, input_dim: int, history_horizon: int, shape: tuple[int, ...]):
        super().__init__()
        self.input_dim, self.history_horizon = input_dim, history_horizon
        layers: list[nn.Module] = []
        width = history_horizon * input_dim
        for w in shape:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        self.layers = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor, ctx: Context, all_steps: bool = False) -> tuple[torch.Tensor, Context]:
        """x (R, T, in) appended to the window ``ctx`` -> (output (R, H) or (R, T, H); new window)."""
        R, T, _ = x.shape
        M = self.history_horizon
        if ctx is None:
            ctx = x.new_zeros(R, M, self.input_dim)
        seq = torch.cat([ctx, x], dim=1)  # (R, M+T, in)
        new_ctx = seq[:, -M:]
        if all_steps:
            # window ending at new step t = seq[:, t+1 : t+1+M]
            windows = seq.unfold(1, M, 1)[:, 1:]  # (R, T, in, M)
            flat = windows.transpose(2, 3).reshape(R, T, M * self.input_dim)
        else:
            flat = new_ctx.reshape(R, M * self.input_dim)  # time-major, as upstream's flatten(1, 2)
        return self.layers(flat), new_ctx

    @staticmethod
    def select_rows(ctx: Context, rows: torch.Tensor) -> Context:
        return None if ctx is None else ctx.index_select(0, rows)

    @staticmethod
    def zero_rows(ctx: Context, ids: torch.Tensor) -> Context:
        return None if ctx is None else ctx.index_fill(0, ids, 0.0)

    @staticmethod
    def assign_rows(ctx: Context, ids: torch.Tensor, rows_ctx: Context) -> Context:
        return ctx.index_copy(0, ids, rows_ctx)

    @staticmethod
    def detach(ctx: Context) -> Context:
        return None if ctx is None else ctx.detach()


class BaseStack(nn.Module):
    """One trunk shared by all E members, or E independent trunks (``independent_bases``).

    The input is either shared by the members, x (R, T, in), or one block per member,
    x (E, R, T, in) (training: the members follow their own bootstrap rows and their own
    sampled predictions). A shared trunk runs member blocks as E*R rows in one call. The
    context is a list with one entry per trunk; for a shared trunk fed member blocks that
    entry has E*R rows, member-major.
    """

    def __init__(self, bases: list[nn.Module]):
        super().__init__()
        self.bases = nn.ModuleList(bases)
        self.output_dim = bases[0].output_dim

    @property
    def shared(self) -> bool:
        return len(self.bases) == 1

    def forward(self, x: torch.Tensor, ctx: list[Context] | None, members: bool,
                all_steps: bool = False) -> tuple[torch.Tensor, list[Context]]:
        """-> (output, ctx). The output is shared, (R, [T,] H), iff the trunk is shared and the
        input was shared; otherwise it is per member, (E, R, [T,] H)."""
        ctx = ctx if ctx is not None else [None] * len(self.bases)
        if self.shared:
            base = self.bases[0]
            if not members:
                out, c = base(x, ctx[0], all_steps)
                return out, [c]
            E, R = x.shape[:2]
            out, c = base(x.reshape(E * R, *x.shape[2:]), ctx[0], all_steps)
            return out.reshape(E, R, *out.shape[1:]), [c]
        outs, new_ctx = [], []
        for e, base in enumerate(self.bases):
            out, c = base(x[e] if members else x, ctx[e], all_steps)
            outs.append(out)
            new_ctx.append(c)
        return torch.stack(outs), new_ctx

    def output_is_shared(self, members: bool) -> bool:
        return self.shared and not members

    def to_members(self, out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Per-member rows of a shared-input output: member e gets rows idx[e]. idx (E, B) -> (E, B, ...)."""
        if self.shared:
            return out[idx]
        return out[torch.arange(idx.shape[0], device=idx.device).unsqueeze(1), idx]

    def select_rows(self, ctx: list[Context], idx: torch.Tensor) -> list[Context]:
        """Turn a shared-input context (R rows) into a member context: member e continues rows idx[e]."""
        cls = type(self.bases[0])
        if self.shared:
            return [cls.select_rows(ctx[0], idx.reshape(-1))]
        return [cls.select_rows(c, idx[e]) for e, c in enumerate(ctx)]

    def zero_rows(self, ctx: list[Context] | None, ids: torch.Tensor) -> list[Context] | None:
        if ctx is None:
            return None
        cls = type(self.bases[0])
        return [cls.zero_rows(c, ids) for c in ctx]

    def take_rows(self, ctx: list[Context], ids: torch.Tensor) -> list[Context]:
        """The context of rows ``ids`` (k,) of a shared-input context, for every trunk."""
        cls = type(self.bases[0])
        return [cls.select_rows(c, ids) for c in ctx]

    def put_rows(self, ctx: list[Context], ids: torch.Tensor, rows_ctx: list[Context]) -> list[Context]:
        """A copy of ``ctx`` with rows ``ids`` (k,) replaced by ``rows_ctx`` (k rows); other rows bit for bit."""
        cls = type(self.bases[0])
        return [cls.assign_rows(c, ids, r) for c, r in zip(ctx, rows_ctx)]

    def detach(self, ctx: list[Context]) -> list[Context]:
        cls = type(self.bases[0])
        return [cls.detach(c) for c in ctx]


# ============================================================================ output
@dataclass
class WorldModelOutput:
    """One prediction of the next state, in normalised space; (B,) is the batch of environments.

    ``mean`` and the auxiliary outputs are the ensemble average, or member ``model_ids[b]`` for
    row b when ``model_ids`` was given. The uncertainties always use all members.
    """

    mean: torch.Tensor  # (B, S) normalised next state
    member_mean: torch.Tensor  # (E, B, S)
    member_std: torch.Tensor  # (E, B, S); zeros for a deterministic model
    aleatoric: torch.Tensor  # (B,) sum_d mean_e sigma_e
    epistemic: torch.Tensor  # (B,) sum_d std_e(mu_e) (unbiased); exactly 0 for E = 1
    contact_logits: torch.Tensor | None  # (B, C)
    termination_logits: torch.Tensor | None  # (B, 1)
    extension: torch.Tensor | None  # (B, X)
    model_ids: torch.Tensor | None = None  # (B,) the selected members, if any

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised sample (B, S) of the next normalised state: mu + sigma * eps.

        With ``model_ids`` it samples the selected member of each row; without, each row first
        draws a member uniformly (a sample of the ensemble's mixture distribution).
        """
        E, B, S = self.member_mean.shape
        ids = self.model_ids
        if ids is None:
            ids = torch.randint(0, E, (B,), generator=generator, device=self.mean.device)
        rows = torch.arange(B, device=self.mean.device)
        mu, std = self.member_mean[ids, rows], self.member_std[ids, rows]
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + std * eps


# ============================================================================ the model
class SystemDynamics(nn.Module):
    """Recurrent dynamics ensemble: predicts the next normalised state, contacts and termination.

    Stateful use (the imagination simulator, the evaluation)::

        model.reset()                                   # all contexts to zeros
        out = model.observe(z_s[:, :32], z_a[:, :32])   # warm up on 32 real steps -> S[32]
        out = model.observe(out.mean[:, None], a[:, None])   # one imagined step -> S[33]
        model.reset(done_ids)                            # restart some rows only
        model.observe(z_s2, z_a2, ids=done_ids)          # warm up those rows; the others stay as they are

    Alignment: ``z_action[:, t]`` is the action taken *from* ``z_state[:, t]``.
    """

    def __init__(self, cfg: WorldModelCfg | None = None, state_dim: int = STATE_DIM, action_dim: int = ACTION_DIM,
                 contact_dim: int = CONTACT_DIM, termination_dim: int = TERMINATION_DIM, extension_dim: int = 0):
        super().__init__()
        cfg = cfg if cfg is not None else WorldModelCfg()
        if not isinstance(cfg, WorldModelCfg):
            raise TypeError(f"SystemDynamics got cfg of type {type(cfg).__name__}, expected a WorldModelCfg.")
        for name, value, low in (("state_dim", state_dim, 1), ("action_dim", action_dim, 1),
                                 ("contact_dim", contact_dim, 0), ("termination_dim", termination_dim, 0),
                                 ("extension_dim", extension_dim, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SystemDynamics got {name}={value!r}, expected an integer >= {low}.")
        if cfg.normalizer == "fixed":
            if len(cfg.state_mean) != state_dim or len(cfg.action_mean) != action_dim:
                raise ValueError(
                    f"SystemDynamics got fixed normaliser statistics for {len(cfg.state_mean)} state and "
                    f"{len(cfg.action_mean)} action dimensions, expected {state_dim} and {action_dim} "
                    "(set cfg.state_mean/state_std/action_mean/action_std, or cfg.normalizer='fitted')."
                )
        self.cfg = cfg
        self.state_dim, self.action_dim = state_dim, action_dim
        self.contact_dim, self.termination_dim, self.extension_dim = contact_dim, termination_dim, extension_dim
        self.ensemble_size = cfg.ensemble_size
        self.history_horizon = cfg.history_horizon
        # Evaluate the E heads as batched products (True) or in a per-member loop (reference).
        self.batched_ensemble = True

        self.state_normalizer = EmpiricalNormalization(state_dim)
        self.action_normalizer = EmpiricalNormalization(action_dim)
        if cfg.normalizer == "fixed":
            self.state_normalizer.set_statistics(torch.tensor(cfg.state_mean), torch.tensor(cfg.state_std))
            self.action_normalizer.set_statistics(torch.tensor(cfg.action_mean), torch.tensor(cfg.action_std))
        else:  # identity until fit_normalizers()
            self.state_normalizer.freeze()
            self.action_normalizer.freeze()

        num_bases = cfg.ensemble_size if cfg.independent_bases else 1
        self.state_base = BaseStack([self._make_base() for _ in range(num_bases)])
        self.auxiliary_base = BaseStack([self._make_base() for _ in range(num_bases)])
        hidden = self.state_base.output_dim
        self.state_heads = StateHeads(cfg.ensemble_size, hidden, state_dim, cfg)
        self.auxiliary_heads = AuxiliaryHeads(cfg.ensemble_size, hidden, contact_dim, termination_dim,
                                              extension_dim, tuple(cfg.aux_shape))
        self.freeze_auxiliary = cfg.freeze_auxiliary
        if self.freeze_auxiliary:
            for p in list(self.auxiliary_base.parameters()) + list(self.auxiliary_heads.parameters()):
                p.requires_grad_(False)
            self.auxiliary_base.eval()
            self.auxiliary_heads.eval()

        # Contexts of the stateful API (see observe / reset); never saved.
        self._state_ctx: list[Context] | None = None
        self._aux_ctx: list[Context] | None = None
        self._batch_size: int | None = None

    def _make_base(self) -> nn.Module:
        cfg, width = self.cfg, self.state_dim + self.action_dim
        if cfg.base == "mlp":
            return MLPBase(width, cfg.history_horizon, tuple(cfg.mlp_base_shape))
        return RecurrentBase(width, cfg.base, cfg.rnn_num_layers, cfg.rnn_hidden_size)

    # ------------------------------------------------------------------ nn.Module
    def train(self, mode: bool = True) -> "SystemDynamics":
        """As nn.Module.train, but a frozen auxiliary branch stays in eval mode."""
        super().train(mode)
        if self.freeze_auxiliary:
            self.auxiliary_base.eval()
            self.auxiliary_heads.eval()
        return self

    def forward(self, z_state: torch.Tensor, z_action: torch.Tensor,
                model_ids: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> WorldModelOutput:
        """Same as :meth:`observe`."""
        return self.observe(z_state, z_action, model_ids, ids)

    # ------------------------------------------------------------------ normalisers
    @torch.no_grad()
    def fit_normalizers(self, states: torch.Tensor, actions: torch.Tensor, min_std: float = 1e-6) -> None:
        """Set the state/action statistics from raw data (..., state_dim), (..., action_dim) and freeze them.

        The std is floored at ``min_std`` so that a feature that never moved in the data does
        not divide by (almost) zero later.
        """
        for name, x, dim in (("states", states, self.state_dim), ("actions", actions, self.action_dim)):
            if x.shape[-1] != dim or x.numel() < 2 * dim:
                raise ValueError(f"fit_normalizers got {name} of shape {tuple(x.shape)}, expected (..., {dim}) "
                                 "with at least two rows.")
            if not torch.isfinite(x).all():
                raise ValueError(f"fit_normalizers got non-finite {name}, expected finite values.")
        for norm, x in ((self.state_normalizer, states), (self.action_normalizer, actions)):
            x = x.reshape(-1, x.shape[-1]).to(norm.mean)
            norm.set_statistics(x.mean(0), x.std(0, unbiased=False).clamp_min(min_std), freeze=True)

    # ------------------------------------------------------------------ stateful API
    def reset(self, ids: torch.Tensor | None = None) -> None:
        """Clear the context of rows ``ids`` (LongTensor of row indices or a (B,) bool mask); all if None.

        Cleared rows restart from zeros (recurrent state, or MLP window) as at the start of a
        sequence; other rows keep theirs bit for bit. After a full reset the batch size may change.
        """
        if ids is None:
            self._state_ctx = self._aux_ctx = None
            self._batch_size = None
            return
        ids = torch.as_tensor(ids)
        if ids.dtype == torch.bool:
            if self._batch_size is not None and ids.shape != (self._batch_size,):
                raise ValueError(f"reset got a bool mask of shape {tuple(ids.shape)}, expected ({self._batch_size},).")
            ids = ids.nonzero().flatten()
        if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"reset got ids of shape {tuple(ids.shape)} and dtype {ids.dtype}, "
                             "expected a 1-d integer tensor of row indices or a bool mask.")
        if self._batch_size is None or ids.numel() == 0:
            return  # nothing observed yet: every row is already at zeros
        if int(ids.min()) < 0 or int(ids.max()) >= self._batch_size:
            raise ValueError(f"reset got row ids in [{int(ids.min())}, {int(ids.max())}], "
                             f"expected indices in [0, {self._batch_size}).")
        ids = ids.to(device=self.state_heads.mean.layers[0].weight.device, dtype=torch.long)
        self._state_ctx = self.state_base.zero_rows(self._state_ctx, ids)
        self._aux_ctx = self.auxiliary_base.zero_rows(self._aux_ctx, ids)

    def observe(self, z_state: torch.Tensor, z_action: torch.Tensor,
                model_ids: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> WorldModelOutput:
        """Feed T >= 1 more steps of normalised context and predict the next state.

        Args:
            z_state: (B, T, state_dim) normalised states.
            z_action: (B, T, action_dim) normalised actions; z_action[:, t] is taken from z_state[:, t].
            model_ids: optional (B,) member per row, for ``mean`` and the auxiliary outputs.
            ids: optional (B,) distinct row indices into the observed batch: the inputs are those
                rows only, and only their contexts advance; every other row's context stays bit for
                bit (so freshly reset rows can be warmed up on a long history while the others
                continue). Needs a batch observed in full first, which fixes the number of rows.

        Returns the prediction for the step after the last one given (for the B rows given). The
        stored contexts are detached: this API is for rollouts (training keeps its own contexts,
        see losses.py).
        """
        B, T = self._check_inputs(z_state, z_action)
        if ids is not None:
            ids = self._check_row_ids(ids, B)
        elif self._batch_size is not None and B != self._batch_size:
            raise ValueError(f"observe got a batch of {B} rows after {self._batch_size} were observed; "
                             "call reset() (all rows) before changing the batch size.")
        if model_ids is not None:
            model_ids = self._check_model_ids(model_ids, B, z_state.device)
        loop = not self.batched_ensemble
        state_ctx, aux_ctx = self._state_ctx, self._aux_ctx
        if ids is not None:  # continue the selected rows' contexts only
            state_ctx = self.state_base.take_rows(state_ctx, ids)
            aux_ctx = self.auxiliary_base.take_rows(aux_ctx, ids)
        x = torch.cat([z_state, z_action], dim=-1)  # (B, T, S+A)
        h, state_ctx = self.state_base(x, state_ctx, members=False)
        shared = self.state_base.output_is_shared(False)
        mean, std, _ = self.state_heads(h, z_state[:, -1], members=not shared, loop=loop)
        h_aux, aux_ctx = self.auxiliary_base(x, aux_ctx, members=False)
        aux = self.auxiliary_heads(h_aux, members=not self.auxiliary_base.output_is_shared(False), loop=loop)
        state_ctx, aux_ctx = self.state_base.detach(state_ctx), self.auxiliary_base.detach(aux_ctx)
        if ids is None:
            self._state_ctx, self._aux_ctx = state_ctx, aux_ctx
            self._batch_size = B
        else:
            self._state_ctx = self.state_base.put_rows(self._state_ctx, ids, state_ctx)
            self._aux_ctx = self.auxiliary_base.put_rows(self._aux_ctx, ids, aux_ctx)
        return self.make_output(mean, std, aux, model_ids)

    # ------------------------------------------------------------------ helpers
    def make_output(self, member_mean: torch.Tensor, member_std: torch.Tensor,
                    aux: dict[str, torch.Tensor | None], model_ids: torch.Tensor | None) -> WorldModelOutput:
        """Select/average members and compute the uncertainties (docs/architecture.md#world-model). Inputs (E, B, d)."""
        E, B, _ = member_mean.shape
        if model_ids is None:
            select = lambda t: None if t is None else t.mean(0)  # noqa: E731
        else:
            rows = torch.arange(B, device=member_mean.device)
            select = lambda t: None if t is None else t[model_ids, rows]  # noqa: E731
        aleatoric = member_std.mean(0).sum(-1)  # (B,)
        if E > 1:
            # unbiased std over members, written out: torch.std over the leading dim of an
            # (E, B, d) tensor is ~25x slower on CPU (35 ms vs 1.4 ms at E=5, B=4096, d=45)
            deviation = member_mean - member_mean.mean(0)
            epistemic = (deviation.square().sum(0) / (E - 1)).sqrt().sum(-1)  # (B,)
        else:
            epistemic = torch.zeros(B, device=member_mean.device, dtype=member_mean.dtype)
        return WorldModelOutput(
            mean=select(member_mean), member_mean=member_mean, member_std=member_std,
            aleatoric=aleatoric, epistemic=epistemic,
            contact_logits=select(aux["contact"]), termination_logits=select(aux["termination"]),
            extension=select(aux["extension"]), model_ids=model_ids,
        )

    def _check_inputs(self, z_state: torch.Tensor, z_action: torch.Tensor) -> tuple[int, int]:
        if not (isinstance(z_state, torch.Tensor) and z_state.dim() == 3 and z_state.shape[-1] == self.state_dim):
            raise ValueError(f"observe got z_state of shape {tuple(getattr(z_state, 'shape', ()))}, "
                             f"expected (batch, steps, {self.state_dim}).")
        B, T, _ = z_state.shape
        if not (isinstance(z_action, torch.Tensor) and tuple(z_action.shape) == (B, T, self.action_dim)):
            raise ValueError(f"observe got z_action of shape {tuple(getattr(z_action, 'shape', ()))}, "
                             f"expected ({B}, {T}, {self.action_dim}) to match z_state.")
        if T < 1 or B < 1:
            raise ValueError(f"observe got {B} rows of {T} steps, expected at least one of each.")
        return B, T

    def _check_row_ids(self, ids: torch.Tensor, B: int) -> torch.Tensor:
        if self._batch_size is None:
            raise ValueError("observe got row ids before any batch was observed; observe all rows once "
                             "(after reset()) so the number of rows is known.")
        ids = torch.as_tensor(ids)
        if ids.shape != (B,) or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"observe got ids of shape {tuple(ids.shape)} and dtype {ids.dtype}, "
                             f"expected an integer tensor of shape ({B},), one row index per input row.")
        if int(ids.min()) < 0 or int(ids.max()) >= self._batch_size:
            raise ValueError(f"observe got row ids in [{int(ids.min())}, {int(ids.max())}], "
                             f"expected indices in [0, {self._batch_size}).")
        if ids.unique().numel() != B:
            raise ValueError("observe got repeated row ids, expected each row at most once.")
        return ids.to(device=self.state_heads.mean.layers[0].weight.device, dtype=torch.long)

    def _check_model_ids(self, model_ids: torch.Tensor, B: int, device: torch.device) -> torch.Tensor:
        model_ids = torch.as_tensor(model_ids)
        if model_ids.shape != (B,) or model_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"observe got model_ids of shape {tuple(model_ids.shape)} and dtype {model_ids.dtype}, "
                             f"expected an integer tensor of shape ({B},).")
        if B and (int(model_ids.min()) < 0 or int(model_ids.max()) >= self.ensemble_size):
            raise ValueError(f"observe got model_ids in [{int(model_ids.min())}, {int(model_ids.max())}], "
                             f"expected members in [0, {self.ensemble_size}).")
        return model_ids.to(device=device, dtype=torch.long)


__all__ = ["AuxiliaryHeads", "BaseStack", "EnsembleLinear", "EnsembleMLP", "MLPBase", "RecurrentBase",
           "StateHeads", "SystemDynamics", "WorldModelOutput"]
