"""Offline (RWM-U / MOPO-PPO, docs/architecture.md#offline): PPO learns in a world model fitted on a recorded dataset.

No simulator is stepped. `build_offline` opens the dataset, splits its episodes (deterministically
by seed) into training and validation episodes, loads each part into a replay buffer and builds
the world model (or loads `offline.world_model_checkpoint`). The runner's environment is
`LocomotionEnv` on an `ImaginationSimulator` whose episodes start from windows of the training
episodes; the reward carries the uncertainty penalty `env.reward_weights.uncertainty` (-1.0).

`OfflineLearning` (the mode's extension) fits the world model for `offline.fit_updates`
mini-batch updates when learning starts (a resumed run loads its model instead and skips the
fit), evaluates it autoregressively on the validation episodes, starts the policy from a clone of
the dataset's best episodes (`offline.behavior_cloning_updates`, `rl.behavior_cloning`), re-primes
imagination with the fitted model, and then each iteration logs imagination statistics and, with
`offline.updates_per_iteration` > 0, keeps updating the model on the training episodes.
Checkpoints carry "system_dynamics_state_dict"/"system_dynamics_optimizer_state_dict" like
Pretrain's, so `rwm play`, `rwm evaluate`, `rwm visualize` and Finetune (`--load-run`) use the run.

Multi-process training (`rwm train --distributed`): the runner's process group already exists
when the mode is built, so each rank reads its rank and world size from `torch.distributed` and
trains the world model on its `shard()` of the training episodes; the learner's trainer gets the
gradient all-reduce when the extension joins the process group (`join_process_group`), and every
rank takes the same number of updates, so the all-reduces pair up.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rwm.data.format import BUFFER_NAMES, REQUIRED_COLUMNS
from rwm.envs.locomotion_env import LocomotionEnv
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.extension import RunnerExtension
from rwm.training.process_group import DistributedContext, shard
from rwm.training.world_model_learning import WorldModelLearning, load_world_model_file
from rwm.world_model import ReplayBuffer
from rwm.world_model.config import with_architecture_of

_COLUMNS = tuple(REQUIRED_COLUMNS)  # the four system streams every dataset holds


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: from the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


def split_episodes(num_episodes: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) episode indices: a seeded permutation, at least one training episode."""
    order = np.random.default_rng(seed).permutation(num_episodes)
    num_val = min(num_episodes - 1, math.ceil(num_episodes * validation_fraction)) if validation_fraction > 0 else 0
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def episodes_buffer(reader, episodes, device: torch.device | str, num_lanes: int | None = None) -> ReplayBuffer:
    """A ReplayBuffer holding exactly the dataset episodes `episodes`, whole, packed into lanes.

    Each episode is marked as an episode start and, if it ended, closed by a terminal record, so
    the buffer's windows are exactly the windows of those episodes (like `fill_replay_buffer`).
    """
    episodes = [int(e) for e in episodes]
    if not episodes:
        raise ValueError("episodes_buffer got no episodes.")
    lengths = reader.episode_lengths[episodes]
    total = int(lengths.sum())
    num_lanes = num_lanes or max(1, min(len(episodes), 64))
    target = math.ceil(total / num_lanes)
    lane_of, pos_of, fill = [], [], np.zeros(num_lanes, dtype=np.int64)
    lane = 0
    for length in lengths.tolist():
        if fill[lane] >= target and lane + 1 < num_lanes:
            lane += 1
        lane_of.append(lane)
        pos_of.append(int(fill[lane]))
        fill[lane] += length
    capacity = max(1, int(fill.max()))
    data = {name: np.zeros((num_lanes, capacity, REQUIRED_COLUMNS[name]), dtype=np.float32) for name in _COLUMNS}
    episode_start = np.zeros((num_lanes, capacity), dtype=bool)
    terminal = np.zeros((num_lanes, capacity), dtype=bool)
    for e, lane, pos, length in zip(episodes, lane_of, pos_of, lengths.tolist()):
        ep = reader.episode(e, columns=_COLUMNS)
        for name in _COLUMNS:
            data[name][lane, pos:pos + length] = ep[name]
        episode_start[lane, pos] = True
        if ep["ended"]:
            terminal[lane, pos + length - 1] = True
    return ReplayBuffer.from_records({BUFFER_NAMES[name]: value for name, value in data.items()}, episode_start,
                                     terminal, fill, device=device)


def best_episode_pairs(reader, episodes, top_share: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(policy observations (R, 48), actions (R, 12), number of episodes) of the best of `episodes`.

    The best are the `top_share` of those that did not end in a fall, ranked by mean reward per
    transition; every record but each episode's last, which carries no action, is a pair.
    """
    where = f"dataset '{reader.path}'"
    missing = [c for c in ("policy_observation", "reward") if c not in reader.columns]
    if missing:
        raise ValueError(f"{where} has no {' or '.join(missing)} column, which behaviour cloning "
                         "(offline.behavior_cloning_updates > 0) needs; record the dataset with `rwm dataset record`, "
                         "or set offline.behavior_cloning_updates=0.")
    episodes = np.asarray(episodes, dtype=np.int64)
    episodes = episodes[reader.episode_lengths[episodes] >= 2]  # at least one transition
    starts, lengths = reader.episode_offsets[episodes], reader.episode_lengths[episodes]
    # two (R,) columns read once; each episode's last record (no action) is left out of its mean
    columns = reader.read(0, reader.num_records, ("reward", "system_termination"))
    rewards = columns["reward"].astype(np.float64)
    reward_sums = np.add.reduceat(rewards, reader.episode_offsets[:-1])[episodes] - rewards[starts + lengths - 1]
    fell = reader.episode_ended[episodes] & (columns["system_termination"][starts + lengths - 1, 0] > 0.5)
    candidates = [(total / (length - 1), start, length)
                  for total, start, length, down in zip(reward_sums.tolist(), starts.tolist(), lengths.tolist(),
                                                        fell.tolist()) if not down]
    if not candidates:
        raise ValueError(f"{where}: none of its training episodes has a transition without a fall to clone.")
    candidates.sort(key=lambda c: -c[0])
    kept = candidates[:max(1, math.ceil(len(candidates) * top_share))]
    blocks = [reader.read(start, start + length - 1, ("policy_observation", "system_action"))
              for _, start, length in kept]
    observations = torch.from_numpy(np.concatenate([b["policy_observation"] for b in blocks]))
    actions = torch.from_numpy(np.concatenate([b["system_action"] for b in blocks]))
    return observations, actions, len(kept)


def clone_policy(policy, clone_data: tuple[torch.Tensor, torch.Tensor, int], updates: int, seed: int
                 ) -> dict[str, float]:
    """`rl.behavior_cloning.clone_behavior` of `policy` on `best_episode_pairs`' output, seeded as Offline seeds it."""
    from rwm.rl.behavior_cloning import clone_behavior

    observations, actions, _ = clone_data
    generator = torch.Generator()
    generator.manual_seed(seed + 3)
    return clone_behavior(policy, observations, actions, updates=updates, generator=generator)


def build_offline(cfg: TaskCfg, device: torch.device) -> tuple[TaskCfg, LocomotionEnv, list[OfflineLearning]]:
    """(cfg, imagination env, [OfflineLearning]) for an Offline run; never constructs a simulator."""
    from rwm.data import DatasetReader
    from rwm.sim.imagination import ImaginationSimulator

    off = cfg.offline
    if off is None:
        raise ValueError("mode 'offline' needs the 'offline' config section.")
    if not off.dataset:
        raise ValueError("mode 'offline' needs a dataset: pass --dataset FILE (an rwm dataset, e.g. from "
                         "`rwm dataset record` or `rwm dataset import-csv`).")
    if not Path(off.dataset).exists():
        raise FileNotFoundError(f"dataset '{off.dataset}' (--dataset) does not exist.")
    device = torch.device(device)
    rank, world_size = process_rank()

    model = None
    if off.world_model_checkpoint:
        model = load_world_model_file(off.world_model_checkpoint, device)
        if model.state_dim != 45 or model.action_dim != 12 or model.contact_dim != 8 or model.termination_dim != 1:
            raise ValueError(f"the world model's layout (state {model.state_dim}, action {model.action_dim}, "
                             f"contact {model.contact_dim}, termination {model.termination_dim}) does not match "
                             "this task (45, 12, 8, 1).")
        cfg = dataclasses.replace(cfg, world_model=with_architecture_of(cfg.world_model, model.cfg))
    wm = cfg.world_model
    history = wm.history_horizon
    window = history + wm.forecast_horizon

    with DatasetReader(off.dataset) as reader:
        info = {"num_episodes": reader.num_episodes, "num_records": reader.num_records,
                "step_dt": reader.metadata.get("step_dt")}
        if reader.num_episodes == 0:
            raise ValueError(f"dataset '{off.dataset}' holds no episodes.")
        # the split must agree on every rank: rank_config made the seed cfg.seed + rank
        train_eps, val_eps = split_episodes(reader.num_episodes, off.validation_fraction, cfg.seed - rank)
        # from all training episodes, not a rank's shard: rank 0's clone is broadcast to every rank
        clone_updates = off.resolved_behavior_cloning_updates(reader.columns)
        clone_data = (best_episode_pairs(reader, train_eps, off.behavior_cloning_top_share)
                      if clone_updates > 0 else None)
        if world_size > 1:
            train_eps = shard(train_eps, rank, world_size)
            if len(train_eps) == 0:
                raise ValueError(f"rank {rank} of {world_size}: the dataset's {reader.num_episodes} episodes leave "
                                 "no training episode for this rank; use fewer processes or a larger dataset.")
        train_buffer = episodes_buffer(reader, train_eps, device)
        val_buffer = episodes_buffer(reader, val_eps, device) if len(val_eps) else None
    if train_buffer.num_valid_windows(history) == 0:
        raise ValueError(f"dataset '{off.dataset}': no training episode is as long as the world model's history of "
                         f"{history} records; record longer episodes or lower world_model.history_horizon.")
    fit_updates = off.resolved_fit_updates()
    if (fit_updates > 0 or off.updates_per_iteration > 0) and train_buffer.num_valid_windows(window) == 0:
        raise ValueError(f"dataset '{off.dataset}': no training episode is as long as a world-model training window "
                         f"of {window} records (history + forecast horizon).")

    learner = WorldModelLearning(cfg, device, num_envs=1, model=model)
    learner.buffer = train_buffer  # the training episodes; nothing is recorded into it
    learner.train_envs = torch.arange(train_buffer.num_envs, device=device)
    learner.holdout_envs = torch.arange(0, device=device)

    step_dt = float(info.get("step_dt") or 0.02)  # the control period the data was recorded at
    simulator = ImaginationSimulator(
        learner.model, lambda n, generator: train_buffer.sample(n, history, generator), cfg.num_envs,
        cfg.imagination, device=device, seed=cfg.seed, step_dt=step_dt)
    env = LocomotionEnv(cfg.env, simulator, seed=cfg.seed)
    extension = OfflineLearning(cfg, learner, val_buffer, fit_updates=fit_updates,
                                clone_data=clone_data, clone_updates=clone_updates,
                                dataset_info={**info, "train_episodes": len(train_eps),
                                              "validation_episodes": len(val_eps)})
    return cfg, env, [extension]


class OfflineLearning(RunnerExtension):
    """Initial world-model fit, validation numbers, imagination statistics and optional updates (Offline)."""

    def __init__(self, cfg: TaskCfg, learner: WorldModelLearning, val_buffer: ReplayBuffer | None, *,
                 fit_updates: int,
                 clone_data: tuple[torch.Tensor, torch.Tensor, int] | None = None, clone_updates: int = 0,
                 dataset_info: dict[str, Any] | None = None):
        self.cfg = cfg
        self.off = cfg.offline
        self.learner = learner
        self.val_buffer = val_buffer
        self.fit_updates = int(fit_updates)
        self.dataset_info = dict(dataset_info or {})
        self.fitted = self.fit_updates == 0  # nothing to fit: a loaded model, or fitting switched off
        # (observations, actions, episodes) the policy imitates before PPO and is anchored to during it
        self.clone_data = clone_data
        self.clone_updates = int(clone_updates)
        self.cloned = False  # True once cloned, or when a resumed run brings its own policy
        self.fit_losses: dict[str, float] = {}
        self.validation: dict[str, float] = {}
        self._pending: dict[str, float] = {}  # logged once, with the first iteration of a session
        self._epistemic = 0.0
        self._imagined_steps = 0
        self._imagined_resets = 0

    # ------------------------------------------------------------------ world model
    def _rounds(self, mini_batches: int) -> int:
        return math.ceil(mini_batches / self.learner.cfg.num_mini_batches) if mini_batches > 0 else 0

    def _sampler(self):
        learner = self.learner
        window = learner.cfg.history_horizon + learner.cfg.forecast_horizon
        return lambda: learner.buffer.sample(learner.cfg.mini_batch_size, window, learner.generator)

    def _fit_normalizers(self) -> None:
        learner = self.learner
        if learner.normalizer_fitted:
            return
        window = learner.cfg.history_horizon + learner.cfg.forecast_horizon
        sample = learner.buffer.sample(4096, window, learner.generator)
        learner.model.fit_normalizers(sample["state"], sample["action"])
        learner.normalizer_fitted = True

    def fit(self, progress: bool = False, report_lines: int = 0) -> dict[str, float]:
        """`fit_updates` mini-batch updates on the training episodes; returns the last round's losses.

        `progress` shows a bar; `report_lines` > 0 prints that many evenly spaced progress lines
        instead (for logs and `runner.console=line`), since a fit can take many minutes on a CPU.
        """
        from tqdm import tqdm

        from rwm.training.logger import format_duration

        self._fit_normalizers()
        rounds = self._rounds(self.fit_updates)
        per_round = self.learner.cfg.num_mini_batches
        report_at = {math.ceil(rounds * k / report_lines) for k in range(1, report_lines + 1)}  # empty if 0
        losses: dict[str, float] = {}
        sampler = self._sampler()
        start = time.perf_counter()
        with tqdm(total=rounds * per_round, desc="fitting world model", unit="update",
                  disable=not progress, leave=False) as bar:
            for done in range(1, rounds + 1):
                losses = self.learner.trainer.update(sampler)
                bar.update(per_round)
                bar.set_postfix(loss=f"{losses['total']:.4g}")
                if done in report_at:
                    elapsed = time.perf_counter() - start
                    print(f"[rwm offline] fitting world model: update {done * per_round}/{rounds * per_round} | "
                          f"loss {losses['total']:.4g} | elapsed {format_duration(elapsed)} | "
                          f"ETA {format_duration(elapsed / done * (rounds - done))}", flush=True)
        self.learner.num_updates += rounds * per_round
        self.learner.model.eval()
        self.fitted = True
        return losses

    def evaluate_validation(self) -> dict[str, float]:
        """Autoregressive error on windows of the validation episodes ({} with a note when there are none)."""
        from rwm.world_model.evaluation import evaluate_world_model

        wm, learning = self.learner.cfg, self.learner.learning
        if self.val_buffer is None:
            return {"Offline/validation_windows": 0.0}
        length = learning.eval_length
        if self.val_buffer.num_valid_windows(length) == 0:  # fall back to the longest validation episode
            length = int(self.val_buffer.num_stored.max())
            while length > wm.history_horizon and self.val_buffer.num_valid_windows(length) == 0:
                length -= 1
        if length <= wm.history_horizon or self.val_buffer.num_valid_windows(length) == 0:
            return {"Offline/validation_windows": 0.0}
        generator = torch.Generator(device=self.learner.device)
        generator.manual_seed(self.cfg.seed + 2)
        batch = self.val_buffer.sample(learning.eval_num_windows, length, generator)
        model = copy.deepcopy(self.learner.model)  # evaluation resets contexts: keep imagination's untouched
        results = evaluate_world_model(model, batch, history=wm.history_horizon,
                                       noise_scales=tuple(learning.eval_noise_scales), generator=generator)
        scalars = {"Offline/validation_windows": float(results["num_windows"]),
                   "Offline/validation_length": float(length)}
        for noise, metrics in results["by_noise"].items():
            suffix = "" if float(noise) == 0.0 else f"_noise_{noise}"
            scalars[f"Offline/validation_autoregressive_error{suffix}"] = float(metrics["relative_l1"])
            if float(noise) == 0.0:
                for name in ("contact_accuracy", "termination_accuracy", "uncertainty_error_correlation", "epistemic"):
                    if metrics.get(name) is not None:
                        scalars[f"Offline/validation_{name}"] = float(metrics[name])
        return scalars

    # ------------------------------------------------------------------ runner hooks
    def on_learn_start(self, runner) -> None:
        main = getattr(runner, "is_main_process", True)
        pending = {f"Offline/dataset_{k}": float(v) for k, v in self.dataset_info.items()
                   if isinstance(v, (int, float)) and v is not None}
        if not self.fitted:
            show = main and runner.cfg.runner.progress_bar
            lines = 10 if main and not show and runner.cfg.runner.console != "none" else 0
            self.fit_losses = self.fit(progress=show, report_lines=lines)
            if main and runner.cfg.runner.console != "none":
                text = ", ".join(f"{k} {v:.4g}" for k, v in self.fit_losses.items())
                print(f"[rwm offline] world model fitted for {self.fit_updates} mini-batch updates: {text}",
                      flush=True)
            pending.update({f"Offline/fit_loss_{k}": float(v) for k, v in self.fit_losses.items()})
        self.learner.model.eval()
        self.validation = self.evaluate_validation()
        if self.validation.get("Offline/validation_windows", 0.0) == 0.0 and main \
                and runner.cfg.runner.console != "none":
            print("[rwm offline] no validation episode is longer than the world model's history; "
                  "validation skipped.", flush=True)
        elif main and runner.cfg.runner.console != "none":
            print(f"[rwm offline] validation ({int(self.validation['Offline/validation_windows'])} windows of "
                  f"{int(self.validation['Offline/validation_length'])} steps from held-out episodes): "
                  f"autoregressive relative L1 {self.validation['Offline/validation_autoregressive_error']:.4g}, "
                  f"mean epistemic uncertainty {self.validation.get('Offline/validation_epistemic', 0.0):.4g}",
                  flush=True)
        pending.update(self.validation)
        if self.clone_data is not None and not self.cloned:
            pending.update(self.clone_behavior(runner, announce=main and runner.cfg.runner.console != "none"))
        if self.clone_data is not None and self.off.behavior_cloning_weight > 0:
            self.anchor_to_clone(runner)
        self._pending = pending
        # imagination was primed with the model as it was when the env was built: start it afresh
        env = runner.env
        env.reset()
        if runner.cfg.runner.init_at_random_ep_len and callable(getattr(env, "randomize_episode_lengths", None)):
            env.randomize_episode_lengths()

    def clone_behavior(self, runner, announce: bool) -> dict[str, float]:
        """The policy imitates the dataset's best episodes (offline.behavior_cloning_updates > 0)."""
        observations, _, episodes = self.clone_data
        self.cloned = True
        start = time.perf_counter()
        stats = clone_policy(runner.policy, self.clone_data, self.clone_updates, self.cfg.seed)
        if announce:
            print(f"[rwm offline] policy cloned from the dataset's {episodes} best episodes ({observations.shape[0]:,} "
                  f"pairs, {self.clone_updates} updates, {time.perf_counter() - start:.0f} s): "
                  f"action error {stats['loss_initial']:.3g} -> {stats['loss_final']:.3g}, "
                  f"action std {stats['std_mean']:.3g}", flush=True)
        return {f"Offline/behavior_cloning_{k}": v for k, v in stats.items()} | {
            "Offline/behavior_cloning_pairs": float(observations.shape[0])}

    def anchor_to_clone(self, runner) -> None:
        """Add offline.behavior_cloning_weight x the cloning loss to every PPO mini-batch."""
        from rwm.rl.behavior_cloning import cloning_loss

        observations, actions, _ = self.clone_data
        observations, actions = observations.to(runner.device), actions.to(runner.device)
        weight, policy = self.off.behavior_cloning_weight, runner.policy
        generator = torch.Generator()
        generator.manual_seed(self.cfg.seed + 4)
        runner.alg.auxiliary_loss = lambda: weight * cloning_loss(policy, observations, actions, 4096, generator)

    def on_env_step(self, runner, obs, actions, rewards, dones, extras) -> None:
        sim = runner.env.sim
        self._epistemic += float(sim.uncertainty.mean())
        self._imagined_steps += 1
        self._imagined_resets += int(dones.sum())

    def after_update(self, runner, iteration: int) -> dict[str, float]:
        scalars = {
            "Imagination/epistemic_uncertainty": self._epistemic / max(1, self._imagined_steps),
            "Imagination/reset_share": self._imagined_resets / max(1, self._imagined_steps * runner.num_envs),
        }
        self._epistemic, self._imagined_steps, self._imagined_resets = 0.0, 0, 0
        scalars.update(self._pending)
        self._pending = {}
        rounds = self._rounds(self.off.updates_per_iteration)
        if rounds:
            sampler = self._sampler()
            losses: dict[str, float] = {}
            model = self.learner.model
            # the trainer resets the model's context; imagination's rolling context is kept across the update
            context = (model._state_ctx, model._aux_ctx, model._batch_size)
            for _ in range(rounds):
                losses = self.learner.trainer.update(sampler)
            self.learner.num_updates += rounds * self.learner.cfg.num_mini_batches
            model.eval()
            model._state_ctx, model._aux_ctx, model._batch_size = context
            scalars.update({f"World_Model/loss_{k}": float(v) for k, v in losses.items()})
        return scalars

    def join_process_group(self, ctx: DistributedContext) -> None:
        self.learner.join_process_group(ctx)  # its trainer averages the gradients of every rank's shard

    def state_dict(self) -> dict[str, Any]:
        return {**self.learner.state_dict(), "offline_world_model_updates": self.learner.num_updates}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.learner.load_state_dict(checkpoint)
        if "system_dynamics_state_dict" in checkpoint:
            self.fitted = True  # a resumed run continues with its model: no second initial fit
        if "model_state_dict" in checkpoint:
            self.cloned = True  # and with its policy
        self.learner.num_updates = int(checkpoint.get("offline_world_model_updates", self.learner.num_updates))
