"""World-model figures: autoregressive error curves and predicted-vs-true trajectories
(docs/architecture.md#world-model-evaluation).

Figures are built with matplotlib's object API on an Agg canvas, never through pyplot, so
plotting from a training loop neither opens windows nor changes the process-wide backend, and
works on headless machines. matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from rwm.sim.state import CONTACT_SLICES, STATE_SLICES

# Rows of the trajectory grid: state groups in layout order, then actions, contacts, termination.
TRAJECTORY_ROWS = (
    ("lin vel [m/s]", "state", STATE_SLICES["base_lin_vel"]),
    ("ang vel [rad/s]", "state", STATE_SLICES["base_ang_vel"]),
    ("gravity", "state", STATE_SLICES["projected_gravity"]),
    ("joint pos [rad]", "state", STATE_SLICES["joint_pos"]),
    ("joint vel [rad/s]", "state", STATE_SLICES["joint_vel"]),
    ("torque [N m]", "state", STATE_SLICES["joint_torque"]),
    ("action", "action", slice(None)),
    ("contact", "contact", slice(CONTACT_SLICES["thigh_contact"].start, CONTACT_SLICES["foot_contact"].stop)),
    ("termination", "termination", slice(None)),
)


def _new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("plots need matplotlib; install it with `pip install matplotlib`.") from error
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def error_vs_step_figure(results: dict):
    """Relative L1 error against prediction step, one line per noise scale (from `evaluate_world_model`)."""
    figure = _new_figure(7.0, 4.5)
    ax = figure.add_subplot(1, 1, 1)
    for sigma, metrics in results["by_noise"].items():
        per_step = metrics["relative_l1_per_step"]
        ax.plot(range(1, len(per_step) + 1), per_step, label=f"noise σ = {sigma:g}")
    ax.set_xlabel("prediction step (after the history)")
    ax.set_ylabel("relative L1 error (normalised)")
    ax.set_title(f"Autoregressive error, {results['num_windows']} windows, history {results['history']}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


def plot_error_vs_step(results: dict, path: str | Path) -> Path:
    """Write `error_vs_step_figure(results)` as a PNG at `path`; returns the path."""
    return _save(error_vs_step_figure(results), path)


def model_denormalizer(model) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A `denormalize(z_state, z_action) -> (state, action)` built from the model's fixed normalisers."""
    return lambda z_state, z_action: (model.state_normalizer.inverse(z_state),
                                      model.action_normalizer.inverse(z_action))


def _limits(values: torch.Tensor) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    margin = 0.1 * max(high - low, 1e-6)
    return low - margin, high + margin


def trajectory_figure(rollout: dict, num_windows: int = 4,
                      denormalize: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                      | None = None):
    """Grid: one row per state group, then actions, contacts, termination; one column per window.

    Ground truth is solid (α 0.2), the prediction dashed (α 0.5) from the end of the history,
    marked by a vertical grey line. States and actions are shown denormalised when `denormalize`
    is given, in normalised units otherwise; y-limits follow the ground truth with a 10 % margin.
    """
    import matplotlib

    h = rollout["history"]
    true_state, pred_state, action = rollout["true_state"], rollout["pred_state"], rollout["action"]
    if denormalize is not None:
        true_state, action = denormalize(true_state, action)
        pred_state, _ = denormalize(pred_state, rollout["action"])
    series = {
        "state": (true_state, pred_state),
        "action": (action, None),
        "contact": (rollout["true_contact"], rollout["pred_contact"]),
        "termination": (rollout["true_termination"], rollout["pred_termination"]),
    }
    series = {k: (t.detach().float().cpu(), None if p is None else p.detach().float().cpu())
              for k, (t, p) in series.items()}
    cols = max(1, min(num_windows, true_state.shape[0]))
    rows = len(TRAJECTORY_ROWS)
    figure = _new_figure(4.0 * cols, 1.9 * rows)
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True)
    steps = torch.arange(true_state.shape[1])
    colormap = matplotlib.colormaps["tab20"]
    palette = [colormap(i) for i in (*range(0, 20, 2), *range(1, 20, 2))]  # 10 strong colours first
    for r, (label, key, sl) in enumerate(TRAJECTORY_ROWS):
        true, pred = series[key]
        for c in range(cols):
            ax = axes[r][c]
            t_vals = true[c, :, sl]  # (L, d)
            for d in range(t_vals.shape[-1]):
                color = palette[d % len(palette)]
                ax.plot(steps, t_vals[:, d], color=color, alpha=0.2, linestyle="-", linewidth=1.2)
                if pred is not None:
                    ax.plot(steps[h:], pred[c, h:, sl][:, d], color=color, alpha=0.5, linestyle="--", linewidth=1.0)
            ax.axvline(h, color="grey", linewidth=1.0)
            ax.set_ylim(*((-0.1, 1.1) if key in ("contact", "termination") else _limits(t_vals)))
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0:
                ax.set_title(f"window {c}", fontsize=9)
            if r == rows - 1:
                ax.set_xlabel("step", fontsize=8)
    figure.suptitle(f"World model: truth (solid) vs prediction (dashed), history {h}, "
                    f"noise σ = {rollout.get('noise_std', 0.0):g}", fontsize=10)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 0.98))
    return figure


def plot_trajectories(rollout: dict, path: str | Path, num_windows: int = 4,
                      denormalize: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                      | None = None) -> Path:
    """Write `trajectory_figure(...)` for an `autoregressive_rollout` result as a PNG at `path`."""
    return _save(trajectory_figure(rollout, num_windows, denormalize), path)
