"""Pretrain: the world model learns from every real transition while PPO trains in the simulator.

A `RunnerExtension`, so Pretrain is the one training loop plus this: each environment step goes
into the replay buffer (state k with the action taken from it, and the state an episode ended
in), each iteration the world model takes `world_model.num_mini_batches` updates on windows of
M + N steps, and every `eval_interval` iterations it is evaluated autoregressively on windows of
held-out environments (never trained on), logged and plotted.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rwm.config import from_dict
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.torch_files import load_torch_file
from rwm.training.checkpoint import load_weights
from rwm.training.distributed import merge_fitted_statistics
from rwm.training.extension import RunnerExtension
from rwm.training.process_group import DistributedContext
from rwm.world_model import ReplayBuffer, SystemDynamics, WorldModelCfg, WorldModelTrainer
from rwm.world_model.evaluation import autoregressive_rollout, evaluate_world_model
from rwm.world_model.recorder import TransitionRecorder

def mixed_windows(n: int, share: float, draw: Callable[[int], dict[str, torch.Tensor]],
                  draw_recorded: Callable[[int], dict[str, torch.Tensor]] | None) -> dict[str, torch.Tensor]:
    """`n` windows, round(share * n) of them from `draw_recorded` (if given) and the rest from `draw`."""
    k = round(share * n) if draw_recorded is not None else 0
    parts = [source(m) for source, m in ((draw_recorded, k), (draw, n - k)) if m > 0]
    return parts[0] if len(parts) == 1 else {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def build_world_model(cfg: WorldModelCfg, device: torch.device | str) -> SystemDynamics:
    return SystemDynamics(cfg).to(device)


def load_world_model(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> SystemDynamics:
    """The world model of a checkpoint written by a Pretrain (or later) run."""
    config = checkpoint.get("config") or {}
    if "system_dynamics_state_dict" not in checkpoint or not config.get("world_model"):
        raise ValueError("the checkpoint holds no world model (expected 'system_dynamics_state_dict' and a "
                         "'world_model' config section, as written by a Pretrain run).")
    model = build_world_model(from_dict(WorldModelCfg, config["world_model"], key_prefix="world_model"), device)
    load_weights(model, checkpoint["system_dynamics_state_dict"], "the checkpoint's world model (its own configuration)")
    model.reset()
    return model


def load_world_model_file(path: str | Path, device: torch.device | str = "cpu") -> SystemDynamics:
    """The world model in a run checkpoint or a file written by `rwm import-upstream`."""
    path = Path(path)
    checkpoint = load_torch_file(path, "world-model checkpoint", map_location=device)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"'{path}' does not hold a checkpoint dictionary.")
    return load_world_model(checkpoint, device)


class WorldModelLearning(RunnerExtension):
    """Replay buffer + world-model updates + periodic evaluation, hooked into the runner (Pretrain).

    `num_envs` is the number of environments feeding the buffer (the task's, unless another mode
    feeds it from a few real environments of its own), `model` a world model to continue from.
    """

    def __init__(self, cfg: TaskCfg, device: torch.device | str, num_envs: int | None = None,
                 model: SystemDynamics | None = None):
        if cfg.world_model is None or cfg.world_model_learning is None:
            raise ValueError(f"mode '{cfg.mode}' needs the 'world_model' and 'world_model_learning' config sections.")
        num_envs = cfg.num_envs if num_envs is None else num_envs
        self.cfg = cfg.world_model
        self.learning = cfg.world_model_learning
        self.device = torch.device(device)
        self.model = build_world_model(self.cfg, self.device) if model is None else model
        self.trainer = WorldModelTrainer(self.model, self.cfg)
        self.buffer = ReplayBuffer(num_envs, self.learning.replay_capacity, device=self.device)
        self.recorder = TransitionRecorder(self.buffer)
        num_holdout = min(num_envs - 1, math.ceil(num_envs * self.learning.holdout_fraction))
        all_envs = torch.arange(num_envs, device=self.device)
        self.holdout_envs = all_envs[num_envs - num_holdout:]  # (k,) evaluation only
        self.train_envs = all_envs[:num_envs - num_holdout]
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed + 1)
        self.num_updates = 0
        # world_model.normalizer = "fitted": statistics come from the first data, once
        self.normalizer_fitted = self.cfg.normalizer != "fitted" or model is not None
        # Recorded data trained on beside the buffer (Finetune's dataset): `recorded_share` of every
        # mini-batch, all of it while the buffer holds no full window yet.
        self.recorded: ReplayBuffer | None = None
        self.recorded_share = 0.0
        self.ranks: DistributedContext | None = None  # multi-process training (join_process_group)

    # ------------------------------------------------------------------ runner hooks
    def on_learn_start(self, runner) -> None:
        self.recorder.start(runner.env.get_observations())

    def on_env_step(self, runner, obs: dict[str, torch.Tensor], actions: torch.Tensor, rewards: torch.Tensor,
                    dones: torch.Tensor, extras: dict) -> None:
        self.recorder.record(actions, obs, extras)

    def after_update(self, runner, iteration: int) -> dict[str, float]:
        return self.update_and_evaluate(runner.log_dir, iteration)

    def join_process_group(self, ctx: DistributedContext) -> None:
        self.ranks = ctx
        self.trainer.gradient_reducer = ctx.all_reduce_gradients

    def update_and_evaluate(self, log_dir: Path | None, iteration: int) -> dict[str, float]:
        """One iteration's world-model updates and, every `eval_interval` iterations, its evaluation."""
        window = self.cfg.history_horizon + self.cfg.forecast_horizon
        available = self.buffer.num_valid_windows(window, env_ids=self.train_envs)
        scalars = {"World_Model/train_windows": float(available)}
        if self.ranks is not None:
            # every rank updates (and fits its normaliser) or none does: their all-reduces must pair up
            if not self.ranks.all(available > 0):
                return scalars
            self.normalizer_fitted = not self.ranks.any(not self.normalizer_fitted)
        share = self.recorded_share if self.recorded is not None else 0.0
        if available == 0:  # too little data yet: never train on padded windows (docs/upstream.md #8)
            if self.recorded is None:
                return scalars
            share = 1.0

        recorded = self.recorded
        draw_recorded = None if recorded is None else (lambda n: recorded.sample(n, window, self.generator))

        def windows(n: int) -> dict[str, torch.Tensor]:
            return mixed_windows(n, share, lambda m: self.buffer.sample(m, window, self.generator,
                                                                        env_ids=self.train_envs), draw_recorded)

        if not self.normalizer_fitted:
            sample = windows(4096)
            self.model.fit_normalizers(sample["state"], sample["action"])
            if self.ranks is not None:  # the statistics of all ranks' samples
                merge_fitted_statistics(self.ranks, [self.model.state_normalizer, self.model.action_normalizer])
            self.normalizer_fitted = True
        losses = self.trainer.update(lambda: windows(self.cfg.mini_batch_size))
        self.num_updates += self.cfg.num_mini_batches
        scalars.update({f"World_Model/loss_{name}": float(value) for name, value in losses.items()})
        if (iteration + 1) % self.learning.eval_interval == 0:
            scalars.update(self.evaluate(log_dir, iteration + 1))
        return scalars

    def state_dict(self) -> dict[str, Any]:
        return {"system_dynamics_state_dict": self.model.state_dict(),
                "system_dynamics_optimizer_state_dict": self.trainer.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        if "system_dynamics_state_dict" in checkpoint:  # upstream forgot this on resume (docs/upstream.md #18)
            load_weights(self.model, checkpoint["system_dynamics_state_dict"], "the checkpoint's world model")
            self.model.reset()
            self.normalizer_fitted = True  # the checkpoint holds the normaliser statistics
        if "system_dynamics_optimizer_state_dict" in checkpoint:
            self.trainer.load_state_dict(checkpoint["system_dynamics_optimizer_state_dict"])

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, log_dir: Path | None, iteration: int) -> dict[str, float]:
        """Autoregressive error on held-out windows; plots into <run>/plots/ when there is a run directory.

        With several ranks, rank 0 evaluates and the others return nothing."""
        if self.ranks is not None and not self.ranks.is_main:
            return {}
        length = self.learning.eval_length
        env_ids = self.holdout_envs if len(self.holdout_envs) else None
        if self.buffer.num_valid_windows(length, env_ids=env_ids) == 0:
            return {"World_Model/eval_windows": 0.0}
        batch = self.buffer.sample(self.learning.eval_num_windows, length, self.generator, env_ids=env_ids)
        model = copy.deepcopy(self.model)  # evaluation resets contexts; keep the trained model's untouched
        results = evaluate_world_model(model, batch, history=self.cfg.history_horizon,
                                       noise_scales=tuple(self.learning.eval_noise_scales), generator=self.generator)
        scalars = {"World_Model/eval_windows": float(results["num_windows"])}
        for noise, metrics in results["by_noise"].items():
            suffix = "" if float(noise) == 0.0 else f"_noise_{noise}"
            scalars[f"World_Model/autoregressive_error{suffix}"] = float(metrics["relative_l1"])
            if float(noise) == 0.0:
                for group, value in metrics["relative_l1_groups"].items():
                    scalars[f"World_Model/autoregressive_error_{group}"] = float(value)
                for name in ("contact_accuracy", "termination_accuracy"):
                    if metrics.get(name) is not None:
                        scalars[f"World_Model/{name}"] = float(metrics[name])
        if log_dir is not None:
            from rwm.viz.plots import model_denormalizer, plot_error_vs_step, plot_trajectories

            plots = Path(log_dir) / "plots"
            plots.mkdir(parents=True, exist_ok=True)
            plot_error_vs_step(results, plots / f"world_model_error_{iteration}.png")
            rollout = autoregressive_rollout(model, batch, self.cfg.history_horizon)
            plot_trajectories(rollout, plots / f"world_model_trajectories_{iteration}.png",
                              num_windows=self.learning.num_visualizations, denormalize=model_denormalizer(model))
        return scalars


@torch.inference_mode()
def collect_replay(cfg: TaskCfg, policy, *, num_envs: int, steps: int, seed: int, capacity: int | None = None,
                   progress: bool = False) -> ReplayBuffer:
    """Run `policy` in fresh real-simulator environments (the task's training conditions) into a ReplayBuffer.

    Fresh environments and a seed of their own make these held-out data for any model trained
    during the run; `steps` control steps are recorded per environment.
    """
    from tqdm import tqdm

    from rwm.config import apply_overrides
    from rwm.tasks import make_env

    run_cfg = apply_overrides(cfg, [f"num_envs={num_envs}", f"seed={seed}"])
    env = make_env(run_cfg)
    device = torch.device(run_cfg.device)
    buffer = ReplayBuffer(num_envs, capacity or steps + 1, device=device)
    recorder = TransitionRecorder(buffer)
    obs = env.get_observations()
    recorder.start(obs)
    for _ in tqdm(range(steps), desc="collecting", unit="step", leave=False, disable=not progress):
        actions = policy(obs["policy"].to(device))
        obs, _, _, extras = env.step(actions)
        recorder.record(actions, obs, extras)
    return buffer
