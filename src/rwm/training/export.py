"""Deployable policies: observation normaliser + actor mean as one standalone network.

``policy.onnx`` (input ``obs`` (batch, 48) float32, output ``actions`` (batch, 12)) runs in
any ONNX runtime; ``policy.pt`` is a TorchScript module for ``torch.jit.load``. Neither needs
this package. Both are checked against the torch policy on random observations before the
command reports success.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rwm.rl import ActorCritic
from rwm.tasks.anymal_d_flat import TaskCfg, stored_task_cfg
from rwm.training.checkpoint import load_checkpoint, load_weights, obs_layout
from rwm.training.runner import build_actor_critic

__all__ = ["PolicyExport", "policy_from_checkpoint", "export_policy", "EXPORT_TOLERANCE"]

EXPORT_TOLERANCE = 1e-4  # max abs difference between exported and torch actions


class PolicyExport(nn.Module):
    """obs (B, num_obs) -> deterministic actions (B, num_actions): (obs - mean) / (std + eps) -> actor MLP,
    clipped to [-clip_actions, clip_actions] when the task clips (env.clip_actions), as the robot received them."""

    def __init__(self, policy: ActorCritic, clip_actions: float | None = None):
        super().__init__()
        self.clip_actions = clip_actions
        self.actor = copy.deepcopy(policy.actor).cpu().eval()
        normalizer = policy.actor_obs_normalizer
        if policy.obs_normalization:
            mean = normalizer.mean.detach().cpu().clone()
            scale = (normalizer.std + normalizer.eps).detach().cpu().clone()
        else:
            mean = torch.zeros(policy.num_actor_obs)
            scale = torch.ones(policy.num_actor_obs)
        self.register_buffer("obs_mean", mean)
        self.register_buffer("obs_scale", scale)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        actions = self.actor((obs - self.obs_mean) / self.obs_scale)
        if self.clip_actions is not None:
            actions = actions.clamp(-self.clip_actions, self.clip_actions)
        return actions


def policy_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                           ) -> tuple[ActorCritic, TaskCfg, dict[str, Any]]:
    """The actor-critic stored in a checkpoint (eval mode), its task config, and the raw payload."""
    from rwm.envs.mdp.observations import POLICY_OBS_DIM
    from rwm.sim.state import NUM_JOINTS

    payload = load_checkpoint(path, expected_layout=obs_layout(POLICY_OBS_DIM, NUM_JOINTS), map_location=device)
    cfg = stored_task_cfg(payload["config"], path)
    policy = build_actor_critic(cfg, POLICY_OBS_DIM, NUM_JOINTS)
    load_weights(policy, payload["model_state_dict"], f"checkpoint '{path}'")
    policy.to(device).eval()
    return policy, cfg, payload


def _random_observations(num_obs: int, batch: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, num_obs, generator=generator) * 2.0


def export_policy(policy: ActorCritic, out_dir: str | os.PathLike, fmt: str = "onnx",
                  clip_actions: float | None = None) -> dict[str, Any]:
    """Write the policy as ``policy.onnx`` or ``policy.pt`` into `out_dir`; returns path and max abs error.

    `clip_actions`: the task's env.clip_actions, applied to the exported actions as the task applies it.
    """
    if fmt not in ("onnx", "jit"):
        raise ValueError(f"export format '{fmt}' is not supported; expected 'onnx' or 'jit'.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = PolicyExport(policy, clip_actions).eval()
    obs = _random_observations(policy.num_actor_obs)
    with torch.no_grad():
        reference = module(obs)
    if fmt == "jit":
        path = out_dir / "policy.pt"
        tmp = out_dir / ".policy.pt.tmp"
        with warnings.catch_warnings():  # TorchScript is deprecated in torch but still what deployments load
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(module), str(tmp))
            os.replace(tmp, path)
            with torch.no_grad():
                exported = torch.jit.load(str(path))(obs)
        max_diff = float((exported - reference).abs().max())
    else:
        path = out_dir / "policy.onnx"
        tmp = out_dir / ".policy.onnx.tmp"
        _export_onnx(module, policy.num_actor_obs, tmp)
        os.replace(tmp, path)
        max_diff = float(abs(_run_onnx(path, obs.numpy()) - reference.numpy()).max())
    if not max_diff <= EXPORT_TOLERANCE:
        raise ValueError(f"the exported {fmt} policy differs from the torch policy by {max_diff:.3g} "
                         f"(tolerance {EXPORT_TOLERANCE:g}); '{path}' should not be used.")
    return {"path": str(path), "format": fmt, "max_abs_diff": max_diff, "num_obs": policy.num_actor_obs,
            "num_actions": policy.num_actions, "checked_samples": int(obs.shape[0]), "clip_actions": clip_actions}


def _export_onnx(module: nn.Module, num_obs: int, path: Path) -> None:
    example = torch.zeros(1, num_obs)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter: fast, and needs nothing beyond torch
            torch.onnx.export(module, (example,), str(path), input_names=["obs"], output_names=["actions"],
                              dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        except (TypeError, RuntimeError, AttributeError):  # a torch without it: the torch.export-based one
            batch = torch.export.Dim("batch")
            torch.onnx.export(module, (example,), str(path), input_names=["obs"], output_names=["actions"],
                              dynamic_shapes={"obs": {0: batch}}, dynamo=True)


def _run_onnx(path: Path, obs):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError("checking the ONNX export needs onnxruntime (pip install onnxruntime).") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: obs.astype("float32")})[0]
