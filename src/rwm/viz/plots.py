"""Figures: every run's learning curves, and the world model's autoregressive error curves and
predicted-vs-true trajectories (docs/architecture.md#world-model-evaluation).

Figures are built with matplotlib's object API on an Agg canvas, never through pyplot, so
plotting from a training loop neither opens windows nor changes the process-wide backend, and
works on headless machines. matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rwm.sim.state import CONTACT_SLICES, JOINT_NAMES, LEGS, STATE_SLICES

# Rows of the trajectory grid: (label, stream, indices into the stream, what each index is). At most
# three quantities a row, so a panel holds at most six lines (truth and prediction of each); the
# left-front leg's joints stand for all twelve (the error plot and JSON cover every dimension).
_LF_JOINTS = tuple(i for i, name in enumerate(JOINT_NAMES) if name.startswith("LF_"))  # HAA, HFE, KFE
_LF_JOINT_NAMES = tuple(JOINT_NAMES[i].removeprefix("LF_") for i in _LF_JOINTS)
_XYZ = ("x", "y", "z")


def _state_indices(group: str, within: Sequence[int]) -> tuple[int, ...]:
    return tuple(STATE_SLICES[group].start + i for i in within)


TRAJECTORY_ROWS = (
    ("base lin vel [m/s]", "state", _state_indices("base_lin_vel", range(3)), _XYZ),
    ("base ang vel [rad/s]", "state", _state_indices("base_ang_vel", range(3)), _XYZ),
    ("projected gravity", "state", _state_indices("projected_gravity", range(3)), _XYZ),
    ("LF joint pos [rad]", "state", _state_indices("joint_pos", _LF_JOINTS), _LF_JOINT_NAMES),
    ("LF joint vel [rad/s]", "state", _state_indices("joint_vel", _LF_JOINTS), _LF_JOINT_NAMES),
    ("LF torque [N m]", "state", _state_indices("joint_torque", _LF_JOINTS), _LF_JOINT_NAMES),
    ("LF action", "action", _LF_JOINTS, _LF_JOINT_NAMES),
    ("foot contact", "contact", tuple(CONTACT_SLICES["foot_contact"].start + LEGS.index(leg) for leg in ("LF", "RF")),
     ("LF foot", "RF foot")),
    ("termination", "termination", (0,), ("base contact",)),
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
    """Grid: one row per quantity of `TRAJECTORY_ROWS`, one column per window.

    Each panel draws at most three quantities, one colour each (the row's legend names them): the
    truth solid, the prediction dashed from the end of the history, marked by a vertical grey line.
    States and actions are shown denormalised when `denormalize` is given, in normalised units
    otherwise; y-limits follow the ground truth with a 10 % margin.
    """
    from matplotlib.lines import Line2D

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
    figure = _new_figure(4.0 * cols + 1.6, 1.9 * rows + 0.6)
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True)
    steps = torch.arange(true_state.shape[1])
    colors = ("tab:blue", "tab:orange", "tab:green")
    for r, (label, key, indices, names) in enumerate(TRAJECTORY_ROWS):
        true, pred = series[key]
        for c in range(cols):
            ax = axes[r][c]
            t_vals = true[c][:, list(indices)]  # (L, d)
            for d, color in zip(range(t_vals.shape[-1]), colors):
                ax.plot(steps, t_vals[:, d], color=color, linestyle="-", linewidth=1.3, alpha=0.85)
                if pred is not None:
                    ax.plot(steps[h:], pred[c, h:, indices[d]], color=color, linestyle="--", linewidth=1.3,
                            alpha=0.85)
            ax.axvline(h, color="grey", linewidth=1.0)
            ax.set_ylim(*((-0.1, 1.1) if key in ("contact", "termination") else _limits(t_vals)))
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.25)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0:
                ax.set_title(f"window {c}", fontsize=9)
            if r == rows - 1:
                ax.set_xlabel("step", fontsize=8)
        axes[r][cols - 1].legend([Line2D([], [], color=color, linewidth=2) for color in colors[:len(names)]], names,
                                 loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    styles = [Line2D([], [], color="black", linestyle="-"), Line2D([], [], color="black", linestyle="--"),
              Line2D([], [], color="grey", linewidth=1.0)]
    figure.legend(styles, ["simulator (truth)", "world model (prediction)", "end of the real history"],
                  loc="upper center", bbox_to_anchor=(0.5, 0.985), ncol=3, fontsize=9, frameon=False)
    figure.suptitle(f"World model vs simulator, history {h} steps, noise σ = {rollout.get('noise_std', 0.0):g}; "
                    "the left-front (LF) leg's joints stand for all four legs", fontsize=10, y=0.997)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.5 / figure.get_figheight()))
    return figure

def plot_trajectories(rollout: dict, path: str | Path, num_windows: int = 4,
                      denormalize: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                      | None = None) -> Path:
    """Write `trajectory_figure(...)` for an `autoregressive_rollout` result as a PNG at `path`."""
    return _save(trajectory_figure(rollout, num_windows, denormalize), path)


# ----------------------------------------------------------------------------- learning curves
LEARNING_CURVES_FILE = "learning_curves.png"

# One panel per quantity: (title, y label, [(metrics.jsonl key, legend label)], legend corner, text while
# the run has no data for it, or None: no panel then). "{where}" becomes "in the simulator" or "in
# imagination", after where PPO's episodes ran. Rising curves keep their legend low, falling ones high.
_CURVE_PANELS = (
    ("PPO reward", "mean reward per step", [("Train/mean_step_reward", "{where}")], "lower right",
     "no iteration yet"),
    ("Episode length", "steps (last 100 episodes)", [("Train/mean_episode_length", "{where}")], "lower right",
     "no episode has ended yet"),
    ("Velocity tracking (1 = perfect)", "mean exp(-|v* - v|^2 / 0.25)",
     [("Episode_Reward/track_lin_vel_xy_exp", "{where}: episodes' tracking reward per s"),
      ("Real/tracking_lin_vel", "in the real simulator (rwm play's measure)")], "lower right",
     "no episode has ended yet"),
    ("World model: training loss", "loss (total)",
     [("World_Model/loss_total", "per iteration"), ("Offline/fit_loss_total", "after the initial fit")],
     "upper right", None),
    ("World model: error on held-out data", "relative L1 error, autoregressive",
     [("World_Model/autoregressive_error", "held-out robots"),
      ("Offline/validation_autoregressive_error", "held-out episodes")], "upper right", None),
)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.jsonl as numbers ("nan"/"inf" strings too); a line cut short by a crash
    is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        rows.append({key: float(value) for key, value in record.items()
                     if isinstance(value, (int, float, str)) and _is_number(value)})
    return rows


def _is_number(value) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def learning_curves_figure(rows: Sequence[dict[str, float]], title: str = "", tracking_weight: float = 1.0):
    """Panels of a run's metrics against the iteration: PPO's reward, the episode length, the velocity
    tracking (imagined beside real in Finetune) and, where the run has a world model, its training loss
    and held-out error. `tracking_weight` is the task's track_lin_vel_xy_exp reward weight, which turns
    that reward per second back into the tracking score `rwm play` reports."""
    from matplotlib.ticker import MaxNLocator

    imagined = any(key.startswith("Imagination/") for row in rows for key in row)
    where = "in imagination" if imagined else "in the simulator"
    scale = {"Episode_Reward/track_lin_vel_xy_exp": 1.0 / tracking_weight if tracking_weight else 1.0}
    panels = [panel for panel in _CURVE_PANELS
              if panel[4] is not None or any(key in row for key, _ in panel[2] for row in rows)]
    cols = min(3, len(panels))
    rows_of_panels = math.ceil(len(panels) / cols)
    height = 3.4 * rows_of_panels + 0.6
    figure = _new_figure(5.0 * cols, height)
    # fixed margins (inches turned into fractions): a quarter of the cost of tight_layout, at the end of every run
    figure.subplots_adjust(left=0.9 / (5.0 * cols), right=0.98, bottom=0.55 / height, top=1 - 0.75 / height,
                           wspace=0.3, hspace=0.5)
    axes = figure.subplots(rows_of_panels, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (name, ylabel, series, corner, empty_text) in zip(axes.flat, panels):
        drawn = 0
        for key, label in series:
            points = [(row["iteration"], row[key] * scale.get(key, 1.0)) for row in rows
                      if key in row and "iteration" in row and math.isfinite(row[key])]
            if not points:
                continue
            x, y = zip(*points)
            ax.plot(x, y, marker="o" if len(points) < 20 else None, markersize=4, linewidth=1.5,
                    label=label.format(where=where))
            drawn += 1
        if drawn:
            ax.legend(fontsize=8, loc=corner)
        else:
            ax.text(0.5, 0.5, empty_text or "no data yet", ha="center", va="center", transform=ax.transAxes,
                    fontsize=10, color="grey")
        ax.set_title(name, fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=12, y=1 - 0.15 / height)
    return figure


def plot_learning_curves(run_dir: str | Path, title: str = "", tracking_weight: float = 1.0) -> Path:
    """Write `learning_curves_figure` of `<run_dir>/metrics.jsonl` to `<run_dir>/plots/learning_curves.png`."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    return _save(learning_curves_figure(rows, title, tracking_weight), run_dir / "plots" / LEARNING_CURVES_FILE)
