"""Autoregressive evaluation of a world model on real windows (docs/architecture.md#world-model-evaluation;
docs/upstream.md #7 and #8 fixed).

The model is fed `history` ground-truth steps, then its own predictions, one step at a time,
for the rest of the window, exactly as imagination uses it. Unlike upstream, the state at step k
is paired with the action taken *from* it (the same alignment as training and imagination,
docs/upstream.md #7), and a window shorter than history + 1 is refused instead of being zero-padded into a
zero denominator (docs/upstream.md #8).

Errors are measured in normalised space with upstream's relative L1 formula
(docs/architecture.md#world-model-evaluation),
    e = mean over windows and predicted steps of  sum_d |s_hat - s| / sum_d |s|,
overall, per state group and per prediction step, for several input-noise scales; noise
N(0, sigma^2) is added to the whole normalised state and action trajectories (history included)
and the error is taken against the noised ground truth, as upstream does.

The model API used here: `reset(ids=None)`, `observe(z_state (B,T,45), z_action (B,T,12)) -> out`
with `out.mean` (B,45), the predicted next normalised state, `out.contact_logits` (B,8) or None,
`out.termination_logits` (B,1) or None, `out.epistemic` (B,); `state_normalizer`,
`action_normalizer` (callables with `.inverse`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rwm.sim.state import STATE_SLICES

# Groups of system_state dimensions reported separately (velocities = linear + angular).
ERROR_GROUPS = {
    "velocities": slice(STATE_SLICES["base_lin_vel"].start, STATE_SLICES["base_ang_vel"].stop),
    "gravity": STATE_SLICES["projected_gravity"],
    "joint_pos": STATE_SLICES["joint_pos"],
    "joint_vel": STATE_SLICES["joint_vel"],
    "joint_torque": STATE_SLICES["joint_torque"],
}
DEFAULT_NOISE_SCALES = (0.0, 0.1, 0.2, 0.4, 0.5, 0.8)
_BATCH_KEYS = ("state", "action", "contact", "termination")


def _check_batch(batch: dict[str, torch.Tensor], history: int) -> tuple[int, int]:
    missing = [key for key in _BATCH_KEYS if key not in batch]
    if missing:
        raise ValueError(f"evaluation batch is missing {missing}; expected keys {list(_BATCH_KEYS)}.")
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ValueError(f"history = {history!r}; expected an integer >= 1.")
    state = batch["state"]
    if state.dim() != 3:
        raise ValueError(f"evaluation batch state has shape {tuple(state.shape)}; expected (windows, length, dim).")
    num_windows, length = state.shape[:2]
    for key in _BATCH_KEYS:
        if batch[key].dim() != 3 or tuple(batch[key].shape[:2]) != (num_windows, length):
            raise ValueError(f"evaluation batch {key} has shape {tuple(batch[key].shape)}; expected "
                             f"({num_windows}, {length}, d) like the state.")
        if not bool(torch.isfinite(batch[key]).all()):
            raise ValueError(f"evaluation batch {key} contains NaN or infinite values; expected finite data.")
    if length < history + 1:
        raise ValueError(f"evaluation windows have {length} steps but at least history + 1 = {history + 1} are "
                         f"needed; collect more data before evaluating instead of padding.")
    return num_windows, length


def autoregressive_rollout(model, batch: dict[str, torch.Tensor], history: int, noise_std: float = 0.0,
                           generator: torch.Generator | None = None) -> dict:
    """Predict every step after the first `history` ones from the model's own predictions.

    batch: raw "state" (B, L, 45), "action" (B, L, 12), "contact" (B, L, 8), "termination" (B, L, 1),
    with action[:, t] taken from state[:, t]. Returns, in normalised space (noised if noise_std > 0):
    "true_state" (B, L, 45), "pred_state" (B, L, 45) (the history copied from the truth),
    "action" (B, L, 12) as fed, "true_contact"/"true_termination" (B, L, d) raw flags,
    "pred_contact"/"pred_termination" (B, L, d) probabilities (history copied) or None,
    "epistemic" (B, L - history), "history", "noise_std".
    """
    num_windows, length = _check_batch(batch, history)
    if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std = {noise_std!r}; expected a finite number >= 0.")
    z_state = model.state_normalizer(batch["state"])  # (B, L, 45)
    z_action = model.action_normalizer(batch["action"])  # (B, L, 12)
    if noise_std > 0:
        z_state = z_state + noise_std * torch.randn(z_state.shape, generator=generator, device=z_state.device)
        z_action = z_action + noise_std * torch.randn(z_action.shape, generator=generator, device=z_action.device)

    pred_state = z_state.clone()
    contact = batch["contact"].float()
    termination = batch["termination"].float()
    pred_contact, pred_termination = contact.clone(), termination.clone()
    has_contact = has_termination = True
    epistemic = torch.zeros(num_windows, length - history, device=z_state.device)

    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            model.reset()
            out = model.observe(z_state[:, :history], z_action[:, :history])  # predicts step `history`
            for t in range(history, length):
                if t > history:  # one step at a time from here: the model keeps its hidden state
                    out = model.observe(pred_state[:, t - 1:t], z_action[:, t - 1:t])
                pred_state[:, t] = out.mean
                epistemic[:, t - history] = out.epistemic
                if out.contact_logits is None:
                    has_contact = False
                else:
                    pred_contact[:, t] = torch.sigmoid(out.contact_logits)
                if out.termination_logits is None:
                    has_termination = False
                else:
                    pred_termination[:, t] = torch.sigmoid(out.termination_logits)
            model.reset()  # leave no evaluation context behind in the model
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return {
        "true_state": z_state, "pred_state": pred_state, "action": z_action,
        "true_contact": contact, "pred_contact": pred_contact if has_contact else None,
        "true_termination": termination, "pred_termination": pred_termination if has_termination else None,
        "epistemic": epistemic, "history": history, "noise_std": float(noise_std),
    }


def relative_l1(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per window and step: sum_d |pred - true| / sum_d |true|; (B, T, d) -> (B, T).

    The denominator is floored at 1e-12 so an exactly-zero state gives a large number, not NaN.
    """
    return (pred - true).abs().sum(-1) / true.abs().sum(-1).clamp_min(1e-12)


def _accuracy(pred: torch.Tensor | None, true: torch.Tensor, history: int) -> float | None:
    if pred is None:
        return None
    return ((pred[:, history:] > 0.5) == (true[:, history:] > 0.5)).float().mean().item()


def pearson(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Pearson correlation of two (B,) samples; None when either is constant (or B < 2)."""
    if x.numel() < 2 or bool(x.eq(x[0]).all()) or bool(y.eq(y[0]).all()):
        return None
    return torch.corrcoef(torch.stack([x, y]).double())[0, 1].item()


def uncertainty_error_correlation(rollout: dict) -> dict:
    """How well the epistemic uncertainty predicts the model's own error, window by window.

    Per window: the mean epistemic uncertainty and the mean relative L1 error over its predicted
    steps; returns both (B,) lists and their Pearson correlation ("pearson", None for E = 1,
    whose uncertainty is constant 0). RWM-U's claim is that the two rise together.
    """
    h = rollout["history"]
    error = relative_l1(rollout["pred_state"][:, h:], rollout["true_state"][:, h:]).mean(1)  # (B,)
    epistemic = rollout["epistemic"].mean(1)  # (B,)
    return {"pearson": pearson(epistemic, error), "epistemic": epistemic.tolist(), "error": error.tolist()}


def rollout_metrics(rollout: dict) -> dict:
    """Error summary of one rollout; every value is a plain float (or list of floats, or None)."""
    h = rollout["history"]
    pred, true = rollout["pred_state"][:, h:], rollout["true_state"][:, h:]  # (B, L-h, 45)
    error = relative_l1(pred, true)  # (B, L-h)
    return {
        "relative_l1": error.mean().item(),
        "relative_l1_groups": {name: relative_l1(pred[..., sl], true[..., sl]).mean().item()
                               for name, sl in ERROR_GROUPS.items()},
        "relative_l1_per_step": error.mean(0).tolist(),  # index i = prediction step i + 1
        "contact_accuracy": _accuracy(rollout["pred_contact"], rollout["true_contact"], h),
        "termination_accuracy": _accuracy(rollout["pred_termination"], rollout["true_termination"], h),
        "epistemic": rollout["epistemic"].mean().item(),
        # per window, as uncertainty_error_correlation (the error above is already per step)
        "uncertainty_error_correlation": pearson(rollout["epistemic"].mean(1), error.mean(1)),
    }


def evaluate_world_model(model, batch: dict[str, torch.Tensor], history: int = 32,
                         noise_scales: Sequence[float] = DEFAULT_NOISE_SCALES,
                         generator: torch.Generator | None = None) -> dict:
    """Autoregressive errors for every noise scale.

    Returns {"history", "length", "num_windows", "noise_scales": [...],
    "by_noise": {sigma: rollout_metrics(...)}} with float keys in the given order.
    """
    num_windows, length = _check_batch(batch, history)
    scales = [float(s) for s in noise_scales]
    if not scales or any(not math.isfinite(s) or s < 0 for s in scales):
        raise ValueError(f"noise_scales = {list(noise_scales)}; expected a non-empty list of finite numbers >= 0.")
    by_noise = {}
    for sigma in scales:
        rollout = autoregressive_rollout(model, batch, history, noise_std=sigma, generator=generator)
        by_noise[sigma] = rollout_metrics(rollout)
    return {"history": history, "length": length, "num_windows": num_windows, "noise_scales": scales,
            "by_noise": by_noise}


def log_scalars(results: dict, prefix: str = "System Dynamics") -> dict[str, float]:
    """Flat scalars for TensorBoard, named like upstream (`autoregressive_error[_noised_{sigma}]`)."""
    scalars = {}
    for sigma, metrics in results["by_noise"].items():
        suffix = "" if sigma == 0.0 else f"_noised_{sigma:g}"
        scalars[f"{prefix}/autoregressive_error{suffix}"] = metrics["relative_l1"]
        for group, value in metrics["relative_l1_groups"].items():
            scalars[f"{prefix}/autoregressive_error_{group}{suffix}"] = value
        for name in ("contact_accuracy", "termination_accuracy"):
            if metrics[name] is not None:
                scalars[f"{prefix}/{name}{suffix}"] = metrics[name]
    return scalars


def format_table(results: dict) -> str:
    """A fixed-width text table: one row per noise scale, relative L1 errors and accuracies."""
    groups = list(ERROR_GROUPS)
    header = ["noise", "rel_l1", *groups, "contact_acc", "term_acc"]
    widths = [max(len(h), 8) for h in header]

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"world model, {results['num_windows']} windows x {results['length']} steps, "
             f"history {results['history']} (relative L1 in normalised space)",
             "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    for sigma, m in results["by_noise"].items():
        row = [f"{sigma:g}", fmt(m["relative_l1"]), *(fmt(m["relative_l1_groups"][g]) for g in groups),
               fmt(m["contact_accuracy"]), fmt(m["termination_accuracy"])]
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)
