"""Dual-autoregressive world-model loss (docs/architecture.md#world-model-training), with the ensemble defect
fixed (docs/upstream.md #12).

A batch holds B windows of L = M + N consecutive steps (raw units):

    state (B, L, S)   action (B, L, A)   contact (B, L, C)   termination (B, L, 1)   [extension (B, L, X)]

with ``action[:, k]`` the action taken *from* ``state[:, k]``; so ``state[:, k+1]`` follows from
``(state[:, :k+1], action[:, :k+1])``.

State branch (autoregressive): the state base reads the M ground-truth steps and predicts
S[M]; each of the next N-1 steps feeds back the member's own *reparameterised sample* of the
previous prediction (gradients flow through the whole forecast, as upstream) together with
the action taken from it. The model thus learns from its own compounding errors, which is
what it faces in imagination.

Auxiliary branch (teacher-forced, as upstream): the auxiliary base always reads ground-truth
states, so all N auxiliary predictions come from a single pass over the first M+N-1 steps.

Ensemble and bootstrap: member e trains on its own resampled rows idx[e] (E, B). Upstream ran
one stateful base member after member without a reset, so member e > 0 continued another
member's hidden state. Here the ground-truth history is run once on the B distinct rows and
every member *gathers* the outputs and hidden states of its own rows, so each member sees
exactly the context of its rows (and the shared history pass costs B, not E*B, rows); only
the N forecast steps, whose inputs are member-specific samples, run per member (E*B rows in
one batched call).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rwm.world_model.config import WorldModelCfg
from rwm.world_model.model import SystemDynamics

LOSS_NAMES = ("state", "bound", "contact", "termination", "extension")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def check_batch(model: SystemDynamics, batch: dict[str, torch.Tensor], window_length: int) -> int:
    """Validate a training batch; return its size B. Raises ValueError naming the offending key."""
    if not isinstance(batch, dict):
        raise ValueError(f"world-model batch is a {type(batch).__name__}, expected a dict of tensors.")
    dims = {"state": model.state_dim, "action": model.action_dim}
    for key, dim in (("contact", model.contact_dim), ("termination", model.termination_dim),
                     ("extension", model.extension_dim)):
        if dim > 0:
            dims[key] = dim
    size = None
    for key, dim in dims.items():
        if key not in batch:
            raise ValueError(f"world-model batch has no '{key}' entry (keys: {sorted(batch)}), expected "
                             f"a tensor of shape (batch, {window_length}, {dim}).")
        t = batch[key]
        ok = (isinstance(t, torch.Tensor) and t.dim() == 3 and tuple(t.shape[1:]) == (window_length, dim)
              and t.shape[0] >= 1 and (size is None or t.shape[0] == size))
        if not ok:
            raise ValueError(f"world-model batch '{key}' has shape {tuple(getattr(t, 'shape', ()))}, expected "
                             f"({size if size else 'batch'}, {window_length}, {dim}).")
        size = t.shape[0]
        if not torch.isfinite(t).all():
            raise ValueError(f"world-model batch '{key}' holds non-finite values, expected finite numbers.")
    return int(size)


def bootstrap_indices(batch_size: int, ensemble_size: int, bootstrap: bool, device: torch.device,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(E, B) rows per member: resampled with replacement if ``bootstrap``, else 0..B-1 for all."""
    if bootstrap:
        return torch.randint(0, batch_size, (ensemble_size, batch_size), generator=generator, device=device)
    return torch.arange(batch_size, device=device).expand(ensemble_size, batch_size)


def state_loss(model: SystemDynamics, zs: torch.Tensor, za: torch.Tensor, idx: torch.Tensor, cfg: WorldModelCfg,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Autoregressive state loss averaged over members and the N forecast steps.

    zs (B, M+N, S), za (B, M+N, A) normalised; idx (E, B) the rows of each member.
    """
    M, N = cfg.history_horizon, cfg.forecast_horizon
    loop = not model.batched_ensemble
    base, heads = model.state_base, model.state_heads
    # Ground-truth history, once on the distinct rows; members then gather their rows.
    h, ctx = base(torch.cat([zs[:, :M], za[:, :M]], dim=-1), None, members=False)  # (B, H) | (E, B, H)
    h = base.to_members(h, idx)  # (E, B, H)
    ctx = base.select_rows(ctx, idx)
    zs_m = zs[:, M - 1:][idx]  # (E, B, N+1, S): the last history state and the N targets
    za_m = za[:, M:][idx]  # (E, B, N, A): actions taken from the forecast states
    z_last = zs_m[:, :, 0]
    losses = []
    for i in range(N):
        if i > 0:
            x = torch.cat([z_last, za_m[:, :, i - 1]], dim=-1).unsqueeze(2)  # (E, B, 1, S+A)
            h, ctx = base(x, ctx, members=True)  # (E, B, H)
        mean, std, logstd = heads(h, z_last, members=True, loop=loop)  # (E, B, S) each
        target = zs_m[:, :, i + 1]
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        sample = mean + std * eps  # reparameterised: gradients reach mean and std
        if cfg.state_loss == "mse":
            per_row = (sample - target).square().sum(-1)  # (E, B)
        else:  # gaussian_nll
            per_row = (0.5 * ((target - mean) / std).square() + logstd + _HALF_LOG_2PI).sum(-1)
        losses.append(per_row.mean())
        z_last = sample
    return torch.stack(losses).mean()


def auxiliary_losses(model: SystemDynamics, zs: torch.Tensor, za: torch.Tensor, batch: dict[str, torch.Tensor],
                     idx: torch.Tensor, cfg: WorldModelCfg) -> dict[str, torch.Tensor]:
    """Teacher-forced contact / termination (BCE with logits) and extension (MSE) losses."""
    M, N = cfg.history_horizon, cfg.forecast_horizon
    base = model.auxiliary_base
    zero = zs.new_zeros(())
    x = torch.cat([zs[:, :M + N - 1], za[:, :M + N - 1]], dim=-1)  # (B, M+N-1, S+A)
    h, _ = base(x, None, members=False, all_steps=True)  # (B, M+N-1, H) | (E, B, M+N-1, H)
    h = base.to_members(h[..., M - 1:, :], idx)  # (E, B, N, H): the contexts that predict steps M..M+N-1
    out = model.auxiliary_heads(h, members=True, loop=not model.batched_ensemble)  # (E, B, N, d)
    losses = {}
    for name, pos_weight in (("contact", cfg.contact_pos_weight), ("termination", cfg.termination_pos_weight)):
        if out[name] is None:
            losses[name] = zero
            continue
        target = batch[name][:, M:][idx].to(out[name].dtype)  # (E, B, N, d)
        weight = None if pos_weight is None else out[name].new_tensor(pos_weight)
        losses[name] = F.binary_cross_entropy_with_logits(out[name], target, pos_weight=weight)
    if out["extension"] is None:
        losses["extension"] = zero
    else:
        losses["extension"] = F.mse_loss(out["extension"], batch["extension"][:, M:][idx].to(out["extension"].dtype))
    return losses


def world_model_loss(model: SystemDynamics, batch: dict[str, torch.Tensor], cfg: WorldModelCfg | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total loss and its terms {state, bound, contact, termination, extension}.

    ``batch`` holds raw (unnormalised) windows; the model's own normalisers map states and
    actions into its space (contacts and terminations are never normalised). With a frozen
    auxiliary branch its losses are still reported but left out of the total.
    """
    cfg = cfg if cfg is not None else model.cfg
    B = check_batch(model, batch, cfg.window_length)
    zs = model.state_normalizer(batch["state"])  # (B, L, S)
    za = model.action_normalizer(batch["action"])  # (B, L, A)
    idx = bootstrap_indices(B, model.ensemble_size, cfg.bootstrap, zs.device, generator)  # (E, B)
    terms = {"state": state_loss(model, zs, za, idx, cfg, generator), "bound": model.state_heads.bound_loss()}
    if model.freeze_auxiliary:
        with torch.no_grad():
            terms.update(auxiliary_losses(model, zs, za, batch, idx, cfg))
    else:
        terms.update(auxiliary_losses(model, zs, za, batch, idx, cfg))
    total = cfg.state_loss_weight * terms["state"] + cfg.bound_loss_weight * terms["bound"]
    if not model.freeze_auxiliary:
        total = (total + cfg.contact_loss_weight * terms["contact"]
                 + cfg.termination_loss_weight * terms["termination"]
                 + cfg.extension_loss_weight * terms["extension"])
    return total, terms


__all__ = ["LOSS_NAMES", "auxiliary_losses", "bootstrap_indices", "check_batch", "state_loss", "world_model_loss"]
