"""Every number of the world model and of its training, named (docs/architecture.md#world-model,
docs/architecture.md#world-model-training, docs/architecture.md#scales).

Two scales, as everywhere in the project: the dataclass defaults are the **CPU scale** (small
mini-batches, so a laptop updates the model in seconds per iteration); the **paper scale**
(:data:`WORLD_MODEL_PAPER_SCALE`, :meth:`WorldModelCfg.paper`) is the published 20 mini-batches
of 5000 windows. The network itself (two 2x256 GRU bases, heads of width 128, M=32, N=8) is
the published one at both scales; only the amount of data per update changes.

The ensemble size defaults to 5, the RWM-U (offline, uncertainty-penalised) setting; the
online ANYmal extension used 1, which is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from rwm.config import ConfigError, apply_overrides, check

# Fixed normalisation statistics of the 45-dim system_state (docs/architecture.md#normalisation), in STATE_SLICES order.
STATE_MEAN: tuple[float, ...] = (
    (0.0, 0.0, 0.0)  # base linear velocity
    + (0.0, 0.0, 0.0)  # base angular velocity
    + (0.0, 0.0, -1.0)  # projected gravity
    + (0.0,) * 12  # joint position - default
    + (0.0,) * 12  # joint velocity
    + (-2.0, -2.0, 2.0, 2.0, -6.0, 8.0, -6.0, 8.0, 12.0, -12.0, 12.0, -12.0)  # joint torque
)
STATE_STD: tuple[float, ...] = (
    (0.5, 0.5, 0.1)
    + (0.3, 0.3, 0.5)
    + (0.02, 0.02, 0.04)
    + (0.15,) * 12
    + (1.0,) * 4 + (1.5,) * 4 + (2.5,) * 4  # HAA, HFE, KFE joint velocities
    + (15.0,) * 12
)
# The action normaliser is the identity apart from eps (docs/architecture.md#normalisation).
ACTION_MEAN: tuple[float, ...] = (0.0,) * 12
ACTION_STD: tuple[float, ...] = (1.0,) * 12

# The published update size (upstream's system_dynamics_num_mini_batches / _mini_batch_size,
# docs/architecture.md#scales).
WORLD_MODEL_PAPER_SCALE: dict[str, object] = {"num_mini_batches": 20, "mini_batch_size": 5000}


def _is_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) > 0 and all(isinstance(w, int) and w >= 1 for w in shape)


@dataclass
class WorldModelCfg:
    """The recurrent dynamics ensemble and its dual-autoregressive training."""

    # --- structure (docs/architecture.md#world-model) ---------------------------------------
    ensemble_size: int = 5  # E heads of each kind; 1 = a single model (no epistemic estimate)
    history_horizon: int = 32  # M context steps before a forecast
    forecast_horizon: int = 8  # N autoregressive steps trained per window
    base: Literal["gru", "lstm", "mlp"] = "gru"  # the trunk: a recurrent network, or an MLP on the M-step window
    rnn_num_layers: int = 2  # layers of the GRU / LSTM trunk
    rnn_hidden_size: int = 256  # hidden units per layer of the GRU / LSTM trunk
    mlp_base_shape: tuple[int, ...] = (256, 256)  # "mlp" base: widths on the flattened M-step window
    state_mean_shape: tuple[int, ...] = (128,)  # hidden widths of each member's mean head
    state_logstd_shape: tuple[int, ...] | None = (128,)  # None: deterministic model (std 0)
    aux_shape: tuple[int, ...] = (128,)  # hidden widths of the contact/termination/extension heads
    logstd_min_init: float = -5.0  # initial learned lower log-std bound
    logstd_delta_init: float = 0.0  # initial log of (upper - lower) bound: max = min + exp(delta)
    # One trunk per member instead of one shared trunk (upstream shares it: the ensemble then
    # only lives in the heads, so members disagree less than independent models would).
    independent_bases: bool = False

    # --- losses (docs/architecture.md#world-model-training) --------------------------------
    # "mse": upstream's sampled MSE, sum_d (mu + sigma*eps - y)^2; it drives sigma down, so the
    # learned std is not calibrated. "gaussian_nll": sum_d [(y - mu)^2 / (2 sigma^2) + log sigma].
    state_loss: Literal["mse", "gaussian_nll"] = "mse"
    state_loss_weight: float = 1.0  # weight of the state loss
    bound_loss_weight: float = 1.0  # weight of mean_d(logstd_max) - mean_d(logstd_min)
    contact_loss_weight: float = 1.0  # weight of the contact BCE
    termination_loss_weight: float = 1.0  # weight of the termination BCE
    extension_loss_weight: float = 1.0  # weight of the extension heads' loss
    # Positive-class weight of the contact BCE; None = unweighted, as upstream.
    contact_pos_weight: float | None = None
    # Positive-class weight of the termination BCE (a fall is rare, so its flag is easily ignored); None = unweighted.
    termination_pos_weight: float | None = None
    bootstrap: bool = True  # each member trains on its own resampled (with replacement) windows
    freeze_auxiliary: bool = False  # no gradient to the auxiliary base and heads

    # --- optimisation (docs/architecture.md#world-model-training) --------------------------
    learning_rate: float = 1.0e-3  # Adam step size
    weight_decay: float = 0.0  # Adam weight decay
    num_mini_batches: int = 4  # per update; paper: 20
    mini_batch_size: int = 256  # windows of M+N steps per mini-batch; paper: 5000
    max_grad_norm: float = 1.0  # gradient-norm clip

    # --- normalisation (docs/architecture.md#normalisation) --------------------------------
    # "fixed": the statistics below (the published constants). "fitted": identity until
    # SystemDynamics.fit_normalizers(states, actions) computes them from data.
    normalizer: Literal["fixed", "fitted"] = "fixed"
    state_mean: tuple[float, ...] = STATE_MEAN  # "fixed": the 45 state means
    state_std: tuple[float, ...] = STATE_STD  # "fixed": the 45 state standard deviations
    action_mean: tuple[float, ...] = ACTION_MEAN  # "fixed": the 12 action means
    action_std: tuple[float, ...] = ACTION_STD  # "fixed": the 12 action standard deviations

    def __post_init__(self) -> None:
        check(self.ensemble_size >= 1, f"world_model.ensemble_size = {self.ensemble_size}; expected >= 1.")
        check(self.history_horizon >= 1, f"world_model.history_horizon = {self.history_horizon}; expected >= 1.")
        check(self.forecast_horizon >= 1, f"world_model.forecast_horizon = {self.forecast_horizon}; expected >= 1.")
        check(self.rnn_num_layers >= 1, f"world_model.rnn_num_layers = {self.rnn_num_layers}; expected >= 1.")
        check(self.rnn_hidden_size >= 1, f"world_model.rnn_hidden_size = {self.rnn_hidden_size}; expected >= 1.")
        for key in ("mlp_base_shape", "state_mean_shape", "aux_shape"):
            check(_is_shape(tuple(getattr(self, key))),
                  f"world_model.{key} = {getattr(self, key)}; expected a non-empty list of positive layer widths.")
        check(self.state_logstd_shape is None or _is_shape(tuple(self.state_logstd_shape)),
              f"world_model.state_logstd_shape = {self.state_logstd_shape}; expected null or a non-empty list "
              "of positive layer widths.")
        for key in ("logstd_min_init", "logstd_delta_init"):
            value = getattr(self, key)
            check(math.isfinite(value), f"world_model.{key} = {value}; expected a finite number.")
        check(not (self.state_loss == "gaussian_nll" and self.state_logstd_shape is None),
              "world_model.state_loss = 'gaussian_nll' needs a std head; expected state_logstd_shape to be set "
              "(or state_loss = 'mse').")
        for key in ("state_loss_weight", "bound_loss_weight", "contact_loss_weight", "termination_loss_weight",
                    "extension_loss_weight", "weight_decay"):
            value = getattr(self, key)
            check(math.isfinite(value) and value >= 0, f"world_model.{key} = {value}; expected a finite number >= 0.")
        for key in ("contact_pos_weight", "termination_pos_weight"):
            value = getattr(self, key)
            check(value is None or (math.isfinite(value) and value > 0),
                  f"world_model.{key} = {value}; expected null or a finite number > 0.")
        for key in ("learning_rate", "max_grad_norm"):
            value = getattr(self, key)
            check(math.isfinite(value) and value > 0, f"world_model.{key} = {value}; expected a finite number > 0.")
        check(self.num_mini_batches >= 1, f"world_model.num_mini_batches = {self.num_mini_batches}; expected >= 1.")
        check(self.mini_batch_size >= 1, f"world_model.mini_batch_size = {self.mini_batch_size}; expected >= 1.")
        for mean_key, std_key in (("state_mean", "state_std"), ("action_mean", "action_std")):
            mean, std = getattr(self, mean_key), getattr(self, std_key)
            check(len(mean) == len(std) and len(mean) > 0,
                  f"world_model.{mean_key} has {len(mean)} values and world_model.{std_key} {len(std)}; "
                  "expected the same positive number.")
            check(all(math.isfinite(m) for m in mean), f"world_model.{mean_key} = {mean}; expected finite numbers.")
            check(all(math.isfinite(s) and s > 0 for s in std),
                  f"world_model.{std_key} = {std}; expected finite numbers > 0.")

    @property
    def window_length(self) -> int:
        """Steps per training window, M + N (40 for the published model)."""
        return self.history_horizon + self.forecast_horizon

    @classmethod
    def paper(cls, **overrides) -> "WorldModelCfg":
        """The published update size (20 x 5000 windows); other fields from ``overrides`` or defaults."""
        return cls(**{**WORLD_MODEL_PAPER_SCALE, **overrides})


def paper_scale(cfg: WorldModelCfg) -> WorldModelCfg:
    """A copy of ``cfg`` with the published update size (docs/architecture.md#scales), everything else unchanged."""
    return apply_overrides(cfg, [f"{key}={value}" for key, value in WORLD_MODEL_PAPER_SCALE.items()])


__all__ = ["ACTION_MEAN", "ACTION_STD", "STATE_MEAN", "STATE_STD", "WORLD_MODEL_PAPER_SCALE", "WorldModelCfg",
           "paper_scale"]


# The fields a trained model's weights depend on (its architecture and normaliser): a model
# loaded from a checkpoint brings these; training settings (losses, optimiser, batches) stay the task's.
ARCHITECTURE_FIELDS = (
    "ensemble_size", "history_horizon", "base", "rnn_num_layers", "rnn_hidden_size", "mlp_base_shape",
    "state_mean_shape", "state_logstd_shape", "aux_shape", "logstd_min_init", "logstd_delta_init",
    "independent_bases", "normalizer", "state_mean", "state_std", "action_mean", "action_std",
)


def with_architecture_of(cfg: WorldModelCfg, trained: WorldModelCfg) -> WorldModelCfg:
    """`cfg` with the architecture of a trained model's config (see ARCHITECTURE_FIELDS).

    The weights decide the architecture, but a value the user chose is never replaced silently:
    a field that `cfg` sets away from its default (a command-line override, or the record of a
    resumed run) and that the loaded model contradicts is a ConfigError. Fields left at their
    defaults take the model's values (the run's config.yaml records them); an override that
    repeats the default cannot be told apart from no override.
    """
    defaults = type(cfg)()
    contradicted = [name for name in ARCHITECTURE_FIELDS
                    if getattr(trained, name) != getattr(cfg, name) != getattr(defaults, name)]
    if contradicted:
        settings = ", ".join(f"world_model.{name} = {_value(getattr(cfg, name))}" for name in contradicted)
        model = ", ".join(f"{name} = {_value(getattr(trained, name))}" for name in contradicted)
        raise ConfigError(f"{settings} contradicts the loaded world model, which has {model}; drop the override "
                          "(the loaded model's architecture is used) or load another model.")
    return dataclasses.replace(cfg, **{name: getattr(trained, name) for name in ARCHITECTURE_FIELDS})


def _value(value: object) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 40 else text[:37] + "..."
