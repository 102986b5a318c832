"""Import a pretrained upstream (rsl_rl_rwm ``SystemDynamicsEnsemble``) model
(docs/architecture.md#checkpoints).

Upstream keeps one ``nn.Sequential`` per member and head kind; here the members' head weights
are stacked into the batched (E, in, out) tensors of :class:`EnsembleLinear`. The trunks map
one to one (upstream shares them, so ``independent_bases`` must be False). Upstream checkpoints
hold no normaliser statistics; the importer fills in the fixed ones of docs/architecture.md#normalisation (from the
config), which are the ones every upstream ANYmal model was trained with.
"""

from __future__ import annotations

import os
import re

import torch

from rwm.torch_files import load_torch_file
from rwm.world_model.config import WorldModelCfg
from rwm.world_model.model import SystemDynamics

_RNN = re.compile(r"^state_base\.memory\.rnn\.weight_ih_l(\d+)$")
_MLP = re.compile(r"^state_base\.layers\.(\d+)\.weight$")
_HEADS = re.compile(r"^state_heads\.(\d+)\.")


def _get(sd: dict, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"upstream system-dynamics state dict has no '{key}', expected the layout of an "
                         "rsl_rl_rwm SystemDynamicsEnsemble (docs/architecture.md#checkpoints).")
    t = sd[key]
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"upstream entry '{key}' is a {type(t).__name__}, expected a tensor.")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"upstream entry '{key}' has shape {tuple(t.shape)}, expected {tuple(shape)}.")
    return t


def _sequential_widths(sd: dict, prefix: str) -> list[tuple[int, int]]:
    """(in, out) of the linear layers ``prefix.0``, ``prefix.2``, ... of an upstream nn.Sequential."""
    widths, k = [], 0
    while f"{prefix}.{k}.weight" in sd:
        out_f, in_f = sd[f"{prefix}.{k}.weight"].shape
        widths.append((int(in_f), int(out_f)))
        k += 2
    return widths


def upstream_dims(upstream_sd: dict) -> dict[str, int]:
    """state/action/contact/termination/extension dims read off the tensor shapes."""
    mean = _sequential_widths(upstream_sd, "state_heads.0.state_mean_layers")
    if not mean:
        _get(upstream_sd, "state_heads.0.state_mean_layers.0.weight")
    state_dim = mean[-1][1]
    rnn_key = "state_base.memory.rnn.weight_ih_l0"
    if rnn_key in upstream_sd:
        width, history = int(upstream_sd[rnn_key].shape[1]), 1
    else:
        width, history = int(_get(upstream_sd, "state_base.layers.0.weight").shape[1]), None
    dims = {"state_dim": state_dim}
    for name in ("contact", "termination", "extension"):
        layers = _sequential_widths(upstream_sd, f"auxiliary_heads.0.{name}_layers")
        dims[f"{name}_dim"] = layers[-1][1] if layers else 0
    if history is None:  # mlp: input = H * (S + A) does not tell A apart from H; assume ANYmal's 12
        dims["action_dim"] = 12
    else:
        dims["action_dim"] = width - state_dim
    return dims


def infer_upstream_cfg(upstream_sd: dict, **overrides) -> WorldModelCfg:
    """A :class:`WorldModelCfg` whose structure matches ``upstream_sd``; ``overrides`` set other fields.

    Recurrent checkpoints do not record the history horizon (32 for every published model).
    """
    keys = list(upstream_sd)
    members = sorted({int(m.group(1)) for k in keys if (m := _HEADS.match(k))})
    if not members or members != list(range(len(members))):
        raise ValueError(f"upstream state dict has state heads {members}, "
                         "expected state_heads.0 ... state_heads.<E-1>.")
    fields: dict = {"ensemble_size": len(members)}
    rnn_layers = sorted(int(m.group(1)) for k in keys if (m := _RNN.match(k)))
    dims = upstream_dims(upstream_sd)
    if rnn_layers:
        w_hh = _get(upstream_sd, "state_base.memory.rnn.weight_hh_l0")
        hidden = int(w_hh.shape[1])
        gates = int(w_hh.shape[0]) // hidden
        if gates not in (3, 4):
            raise ValueError(f"upstream recurrent weight has {w_hh.shape[0]} rows for hidden size {hidden}, "
                             "expected 3x (GRU) or 4x (LSTM).")
        fields.update(base="gru" if gates == 3 else "lstm", rnn_num_layers=len(rnn_layers), rnn_hidden_size=hidden)
    else:
        base = _sequential_widths(upstream_sd, "state_base.layers")
        if not base:
            raise ValueError("upstream state dict has neither 'state_base.memory.rnn.weight_ih_l0' (recurrent base) "
                             "nor 'state_base.layers.0.weight' (MLP base).")
        step = dims["state_dim"] + dims["action_dim"]
        if base[0][0] % step:
            raise ValueError(f"upstream MLP base reads {base[0][0]} inputs, expected a multiple of {step} "
                             "(history x (state + action)).")
        fields.update(base="mlp", history_horizon=base[0][0] // step, mlp_base_shape=tuple(w for _, w in base))
    mean = _sequential_widths(upstream_sd, "state_heads.0.state_mean_layers")
    fields["state_mean_shape"] = tuple(w for _, w in mean[:-1])
    logstd = _sequential_widths(upstream_sd, "state_heads.0.state_logstd_layers")
    fields["state_logstd_shape"] = tuple(w for _, w in logstd[:-1]) if logstd else None
    aux_shapes = {tuple(w for _, w in layers[:-1])
                  for name in ("contact", "termination", "extension")
                  if (layers := _sequential_widths(upstream_sd, f"auxiliary_heads.0.{name}_layers"))}
    if len(aux_shapes) > 1:
        raise ValueError(f"upstream auxiliary heads have different hidden widths {sorted(aux_shapes)}, "
                         "expected one shape for contact, termination and extension.")
    if aux_shapes:
        fields["aux_shape"] = aux_shapes.pop()
    fields.update(overrides)
    return WorldModelCfg(**fields)


def convert_upstream_state_dict(upstream_sd: dict, cfg: WorldModelCfg) -> dict[str, torch.Tensor]:
    """Map an upstream ``system_dynamics_state_dict`` to this package's :class:`SystemDynamics` keys.

    Every upstream tensor must be used and have the shape ``cfg`` implies; otherwise a
    ValueError names the first offending key. Normaliser buffers come from ``cfg``'s fixed
    statistics.
    """
    if not isinstance(upstream_sd, dict):
        raise ValueError(f"upstream system-dynamics state dict is a {type(upstream_sd).__name__}, expected a dict.")
    if cfg.independent_bases:
        raise ValueError("upstream models share one base per branch; expected cfg.independent_bases = False.")
    dims = upstream_dims(upstream_sd)
    S, A, E = dims["state_dim"], dims["action_dim"], cfg.ensemble_size
    if len(cfg.state_mean) != S or len(cfg.action_mean) != A:
        raise ValueError(f"upstream model has {S} state and {A} action dimensions, but the config's fixed "
                         f"normaliser statistics have {len(cfg.state_mean)} and {len(cfg.action_mean)}.")
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def take(key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        used.add(key)
        return _get(upstream_sd, key, shape).detach().to(torch.float32)

    # Trunks.
    for branch in ("state_base", "auxiliary_base"):
        if cfg.base == "mlp":
            width = cfg.history_horizon * (S + A)
            for k, w in enumerate(cfg.mlp_base_shape):
                out[f"{branch}.bases.0.layers.{2 * k}.weight"] = take(f"{branch}.layers.{2 * k}.weight", (w, width))
                out[f"{branch}.bases.0.layers.{2 * k}.bias"] = take(f"{branch}.layers.{2 * k}.bias", (w,))
                width = w
        else:
            g, H = (3 if cfg.base == "gru" else 4) * cfg.rnn_hidden_size, cfg.rnn_hidden_size
            for n in range(cfg.rnn_num_layers):
                width = S + A if n == 0 else H
                for name, shape in ((f"weight_ih_l{n}", (g, width)), (f"weight_hh_l{n}", (g, H)),
                                    (f"bias_ih_l{n}", (g,)), (f"bias_hh_l{n}", (g,))):
                    out[f"{branch}.bases.0.rnn.{name}"] = take(f"{branch}.memory.rnn.{name}", shape)
    hidden = cfg.mlp_base_shape[-1] if cfg.base == "mlp" else cfg.rnn_hidden_size

    # Heads: stack member e's nn.Linear (out, in) as slice e of (E, in, out).
    def stack_mlp(ours: str, theirs: str, shape: tuple[int, ...], out_dim: int) -> None:
        widths = [hidden, *shape, out_dim]
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            out[f"{ours}.layers.{k}.weight"] = torch.stack(
                [take(f"{theirs.format(e=e)}.{2 * k}.weight", (b, a)).t() for e in range(E)]).contiguous()
            out[f"{ours}.layers.{k}.bias"] = torch.stack(
                [take(f"{theirs.format(e=e)}.{2 * k}.bias", (b,)) for e in range(E)])

    stack_mlp("state_heads.mean", "state_heads.{e}.state_mean_layers", tuple(cfg.state_mean_shape), S)
    if cfg.state_logstd_shape is not None:
        stack_mlp("state_heads.logstd", "state_heads.{e}.state_logstd_layers", tuple(cfg.state_logstd_shape), S)
        out["state_heads.logstd_min"] = torch.cat([take(f"state_heads.{e}.state_min_logstd", (1, S)) for e in range(E)])
        out["state_heads.logstd_delta"] = torch.cat(
            [take(f"state_heads.{e}.state_log_delta_logstd", (1, S)) for e in range(E)])
    for name in ("contact", "termination", "extension"):
        if dims[f"{name}_dim"] > 0:
            stack_mlp(f"auxiliary_heads.{name}", f"auxiliary_heads.{{e}}.{name}_layers", tuple(cfg.aux_shape),
                      dims[f"{name}_dim"])

    unused = [k for k in upstream_sd if k not in used]
    if unused:
        raise ValueError(f"upstream state dict has {len(unused)} entries the config does not account for "
                         f"(first: '{unused[0]}'); expected ensemble_size={E}, base='{cfg.base}' and the head "
                         "shapes of the config.")

    # Normalisers: the fixed statistics (never in upstream checkpoints).
    for name, mean, std in (("state_normalizer", cfg.state_mean, cfg.state_std),
                            ("action_normalizer", cfg.action_mean, cfg.action_std)):
        out[f"{name}.mean"] = torch.tensor(mean, dtype=torch.float32)
        out[f"{name}.var"] = torch.tensor(std, dtype=torch.float32).square()
        out[f"{name}.count"] = torch.zeros((), dtype=torch.long)
        out[f"{name}.frozen"] = torch.ones((), dtype=torch.bool)
    return out


def _read_upstream(path: str | os.PathLike) -> dict:
    ckpt = load_torch_file(path, "upstream checkpoint")
    if not isinstance(ckpt, dict):
        raise ValueError(f"upstream checkpoint '{path}' holds a {type(ckpt).__name__}, expected a dict.")
    if "system_dynamics_state_dict" in ckpt:
        return ckpt["system_dynamics_state_dict"]
    if any(isinstance(k, str) and k.startswith("state_heads.") for k in ckpt):
        return ckpt  # a bare system-dynamics state dict
    raise ValueError(f"upstream checkpoint '{path}' has no 'system_dynamics_state_dict' "
                     f"(keys: {sorted(map(str, ckpt))}).")


def load_upstream_checkpoint(path: str | os.PathLike, **cfg_overrides) -> tuple[dict[str, torch.Tensor], WorldModelCfg]:
    """Read an upstream checkpoint (``torch.load(weights_only=True)``) -> (our state dict, matching cfg).

    The state dict loads into ``SystemDynamics(cfg, **upstream_dims(...))``; for the ANYmal
    models that is ``SystemDynamics(cfg)``. :func:`load_upstream_model` does both steps.
    """
    upstream_sd = _read_upstream(path)
    cfg = infer_upstream_cfg(upstream_sd, **cfg_overrides)
    return convert_upstream_state_dict(upstream_sd, cfg), cfg


def load_upstream_model(path: str | os.PathLike, **cfg_overrides) -> SystemDynamics:
    """A ready :class:`SystemDynamics` (eval mode) holding an upstream checkpoint's weights."""
    upstream_sd = _read_upstream(path)
    cfg = infer_upstream_cfg(upstream_sd, **cfg_overrides)
    model = SystemDynamics(cfg, **upstream_dims(upstream_sd))
    model.load_state_dict(convert_upstream_state_dict(upstream_sd, cfg))
    return model.eval()


__all__ = ["convert_upstream_state_dict", "infer_upstream_cfg", "load_upstream_checkpoint", "load_upstream_model",
           "upstream_dims"]
