"""The training runner: ONE on-policy loop; what a task mode adds is configuration and extensions.

The loop knows modes only through :class:`rwm.training.extension.RunnerExtension`; which
extensions and environment a mode brings is decided above it, in :mod:`rwm.training.modes`, and
:func:`rwm.training.train.train` creates (or resumes) a run and runs it.

One iteration is

    collect      num_steps_per_env steps of every environment with the current policy
                 (extensions see every step: a world model fills its replay buffer here)
    returns      GAE over the rollout, bootstrapped from the critic
    [after_collection]   extensions act on the collected data (e.g. imagination rollouts)
    update       PPO epochs over the rollout
    [after_update]       extensions learn (e.g. the world model's own update)
    report       TensorBoard, metrics.jsonl, console, progress bar; a checkpoint every save_interval

A run lives in ``<log_root>/<experiment_name>/<YYYY-MM-DD_HH-MM-SS>[_<run_name>]/`` with its
resolved ``config.yaml``, ``model_<iter>.pt`` checkpoints (see :mod:`rwm.training.checkpoint`),
TensorBoard event files and ``metrics.jsonl``. ``runner.max_iterations`` is the run's TOTAL
iteration count: a resumed run (``train`` with ``resume_from``) continues its counter up to
it, in the same directory, with the optimizer and random-generator states of the checkpoint.
Resuming a checkpoint older than the run's latest is refused (it would overwrite newer ones).
The environments themselves are rebuilt, not restored (their physical state is not part of a
checkpoint unless the environment offers ``state_dict``/``load_state_dict``), so a resumed run
is deterministic given its checkpoint but not bit-identical to an uninterrupted one.

SIGINT (Ctrl-C) and SIGTERM end the run cleanly: a rollout in progress is abandoned (an update
in progress is finished), a checkpoint of the completed iterations is written, and
:meth:`Runner.learn` returns normally. A second signal interrupts at once. A non-finite loss
stops the run with a :class:`TrainingError` naming the iteration; nothing is saved after it,
so the last checkpoint on disk is the last good one.

Multi-process training (``train(..., distributed=True)``, ``rwm train --distributed`` under
torchrun, see :mod:`rwm.training.distributed`) runs this same loop on every rank; only rank 0
(``rank``) writes (run directory, checkpoints, config, metrics, TensorBoard, console, plots),
the extension that distributed training adds evaluates on rank 0 only and has all ranks agree
on a stop signal at the end of an iteration, and with several ranks a rollout is always
completed, so that every rank runs the same iterations.
"""

from __future__ import annotations

import collections
import datetime
import random
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rwm.config import ConfigError, save_yaml, to_dict
from rwm.device import resolve_device
from rwm.errors import describe_os_error, os_error_fact
from rwm.rl import PPO, ActorCritic
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    obs_layout,
    restore_rng_state,
    save_checkpoint,
)
from rwm.training.extension import RunnerExtension
from rwm.training.logger import RunLogger
from rwm.viz.plots import plot_learning_curves

__all__ = ["Runner", "TrainingError", "build_actor_critic", "build_algorithm", "create_run_dir", "seed_everything"]


class TrainingError(ValueError):
    """Training cannot go on (e.g. a non-finite loss); the message names the iteration."""


# ----------------------------------------------------------------------------- builders
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (network initialisation and action sampling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_actor_critic(cfg: TaskCfg, num_obs: int, num_actions: int, num_critic_obs: int | None = None) -> ActorCritic:
    p = cfg.policy
    return ActorCritic(num_obs, num_critic_obs or num_obs, num_actions, actor_hidden_dims=tuple(p.actor_hidden_dims),
                       critic_hidden_dims=tuple(p.critic_hidden_dims), activation=p.activation,
                       init_noise_std=p.init_noise_std, obs_normalization=p.obs_normalization)


def build_algorithm(cfg: TaskCfg, policy: ActorCritic, device: torch.device, algorithm_class: type[PPO] = PPO) -> PPO:
    return algorithm_class(policy, device=device, **to_dict(cfg.algorithm))


def create_run_dir(cfg: TaskCfg, now: datetime.datetime | None = None) -> Path:
    """A new, empty ``<log_root>/<experiment_name>/<YYYY-MM-DD_HH-MM-SS>[_<run_name>]`` directory."""
    stamp = (now or datetime.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    name = f"{stamp}_{cfg.runner.run_name}" if cfg.runner.run_name else stamp
    parent = Path(cfg.runner.log_root) / cfg.experiment_name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):  # two runs started within one second get distinct directories
            path = parent / (name if attempt == 0 else f"{name}-{attempt}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as error:
        raise ConfigError(f"runner.log_root = '{cfg.runner.log_root}' cannot hold runs ({os_error_fact(error)}); "
                          "expected a writable directory, or a path where one can be created.") from None
    raise ValueError(f"could not create a new run directory under '{parent}'.")


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop polls; a second signal raises KeyboardInterrupt."""

    def __init__(self, notify: Callable[[str], None]):
        self.signal_name: str | None = None
        self._notify = notify
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self._notify(f"{self.signal_name} received: finishing the current iteration and saving a checkpoint "
                     "(send it again to stop at once).")

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# ----------------------------------------------------------------------------- the runner
class Runner:
    """On-policy training of an actor-critic with PPO on a VecEnv-style environment.

    Args:
        cfg: The task configuration (``policy``, ``algorithm`` and ``runner`` sections drive the loop).
        env: The environment; built from ``cfg`` with :func:`rwm.tasks.make_env` when None.
        log_dir: The run directory; None trains without writing anything (no checkpoints).
        extensions: Mode-specific hooks, see :class:`RunnerExtension`.
        algorithm_class: The PPO class to use (multi-process training averages its gradients).
        rank, world_size: This process's place in multi-process training (see
            :func:`rwm.training.train.make_runner`, which also adds the extension that keeps the
            ranks in step): ranks other than 0 get no run directory (whatever `log_dir` says) and
            print nothing, and environment steps are counted over all ranks.
    """

    def __init__(self, cfg: TaskCfg, env: Any = None, log_dir: str | Path | None = None,
                 extensions: Sequence[RunnerExtension] = (), algorithm_class: type[PPO] = PPO,
                 rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.world_size = world_size
        self.is_main_process = rank == 0
        seed_everything(cfg.seed)
        if env is None:
            from rwm.tasks import make_env

            env = make_env(cfg)
        self.env = env
        # rank-0-only writing: every file a run writes goes under log_dir, or is gated on it
        self.log_dir = Path(log_dir) if log_dir is not None and self.is_main_process else None
        self.extensions = list(extensions)

        obs = env.get_observations()["policy"]
        self.num_obs = int(obs.shape[-1])
        self.num_actions = int(env.num_actions)
        self.num_envs = int(env.num_envs)
        self.obs_layout = obs_layout(self.num_obs, self.num_actions)
        self.policy = build_actor_critic(cfg, self.num_obs, self.num_actions)
        self.alg = build_algorithm(cfg, self.policy, self.device, algorithm_class)
        self.alg.init_storage(self.num_envs, cfg.runner.num_steps_per_env, [self.num_obs], [self.num_obs],
                              [self.num_actions])

        self.current_iteration = 0  # completed iterations
        self.total_env_steps = 0
        self.total_time_s = 0.0  # training wall-clock time over all sessions of this run
        self.last_checkpoint: Path | None = None
        self._last_saved_iteration: int | None = None
        self._reward_sum = torch.zeros(self.num_envs, device=self.device)
        self._episode_length = torch.zeros(self.num_envs, device=self.device)
        self._returns: collections.deque[float] = collections.deque(maxlen=100)
        self._lengths: collections.deque[float] = collections.deque(maxlen=100)
        self.history: list[dict[str, float]] = []  # this session's per-iteration scalars
        self.stopped_by: str | None = None

    # ------------------------------------------------------------------ inference
    def get_inference_policy(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Deterministic policy (normaliser + actor mean) for evaluation: obs (N, num_obs) -> actions (N, 12)."""
        self.policy.eval()
        return self.policy.act_inference

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path | None = None, reason: str = "interval") -> Path:
        """Write a checkpoint of the current state (default: ``<log_dir>/model_<iter>.pt``)."""
        if path is None:
            if self.log_dir is None:
                raise ValueError("this runner has no run directory; pass a path to save().")
            path = self.log_dir / f"model_{self.current_iteration}.pt"
        payload: dict[str, Any] = {
            "model_state_dict": self.policy.state_dict(),
            "optimizer_state_dict": self.alg.optimizer.state_dict(),
            "iter": self.current_iteration,
            "infos": {"reason": reason, "env_steps": self.total_env_steps, "wall_clock_s": self.total_time_s,
                      "saved_at": datetime.datetime.now().isoformat(timespec="seconds")},
            "config": to_dict(self.cfg),
            "obs_layout": dict(self.obs_layout),
            "rng_state": capture_rng_state(self.env),
        }
        state_dict = getattr(self.env, "state_dict", None)  # environments that can be checkpointed are
        if callable(state_dict):
            payload["env_state_dict"] = state_dict()
        for ext in self.extensions:
            entries = ext.state_dict()
            clash = sorted(set(entries) & set(payload))
            if clash:
                raise RuntimeError(f"{type(ext).__name__} checkpoint entries {clash} clash with existing ones.")
            payload.update(entries)
        try:
            path = save_checkpoint(path, payload)
        except OSError as error:  # a full disk, say: say which checkpoint is still good
            kept = f"'{self.last_checkpoint}' is the last checkpoint" if self.last_checkpoint else "none was saved"
            raise TrainingError(f"the checkpoint of iteration {self.current_iteration} could not be written "
                                f"({describe_os_error(error)}); {kept}.") from error
        self.last_checkpoint = path
        self._last_saved_iteration = self.current_iteration
        return path

    def load_optimizer_state(self, state: dict[str, Any], source: str) -> None:
        """PPO's Adam state (moments and learning rate) from `source` (named in the error if it does not fit)."""
        try:
            self.alg.optimizer.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{source} has an optimizer state that does not fit this policy ({error}).") from None
        self.alg.learning_rate = float(self.alg.optimizer.param_groups[0]["lr"])

    def load(self, path: str | Path, load_optimizer: bool = True, load_rng: bool = True) -> dict[str, Any]:
        """Restore policy (with normalisers), optimizer, iteration counter and RNG states from a checkpoint."""
        payload = load_checkpoint(path, expected_layout=self.obs_layout, map_location=self.device)
        load_weights(self.policy, payload["model_state_dict"], f"checkpoint '{path}'")
        if load_optimizer:
            self.load_optimizer_state(payload["optimizer_state_dict"], f"checkpoint '{path}'")
        self.current_iteration = int(payload["iter"])
        self._last_saved_iteration = self.current_iteration
        self.last_checkpoint = Path(path)
        infos = payload.get("infos") or {}
        self.total_env_steps = int(infos.get("env_steps", 0))
        self.total_time_s = float(infos.get("wall_clock_s", 0.0))
        load_state = getattr(self.env, "load_state_dict", None)
        if "env_state_dict" in payload and callable(load_state):
            load_state(payload["env_state_dict"])
        for ext in self.extensions:
            ext.load_state_dict(payload)
        if load_rng and isinstance(payload.get("rng_state"), dict):
            restore_rng_state(payload["rng_state"], self.env)
        return payload

    # ------------------------------------------------------------------ training
    def learn(self, num_iterations: int | None = None, init_at_random_ep_len: bool | None = None) -> dict[str, Any]:
        """Train until ``runner.max_iterations`` completed iterations (or `num_iterations` more).

        Returns a summary: iterations, env steps, wall-clock and per-iteration timings, the last
        checkpoint, and ``stopped_by`` (the signal name when interrupted, else None).
        """
        rc = self.cfg.runner
        start = self.current_iteration
        end = rc.max_iterations if num_iterations is None else start + num_iterations
        if end < start or (end == start and start > 0 and num_iterations is None):
            raise ValueError(f"the run has already completed {start} iterations and runner.max_iterations is "
                             f"{rc.max_iterations}; raise it (--max-iterations) to train further.")
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(self.cfg, self.log_dir / "config.yaml")
        if init_at_random_ep_len if init_at_random_ep_len is not None else rc.init_at_random_ep_len:
            randomize = getattr(self.env, "randomize_episode_lengths", None)
            if callable(randomize):
                randomize()
        for ext in self.extensions:
            ext.on_learn_start(self)

        logger = RunLogger(self.log_dir, logger=rc.logger, console=rc.console if self.is_main_process else "none",
                           progress_bar=rc.progress_bar and self.is_main_process,
                           start_iteration=start, total_iterations=end, title=f"rwm {self.cfg.mode}")
        collection_times: list[float] = []
        learning_times: list[float] = []
        session_start = time.perf_counter()
        self.stopped_by = None
        obs = self.env.get_observations()["policy"].to(self.device)
        try:
            with _StopRequest(logger.message) as stop:
                for it in range(start, end):
                    t0 = time.perf_counter()
                    obs, abandoned, step_stats, ep_infos = self._collect(obs, stop, it)
                    if abandoned:
                        break
                    t1 = time.perf_counter()
                    scalars: dict[str, float] = {}
                    for ext in self.extensions:
                        scalars.update(ext.after_collection(self, it))
                    if all(ext.updates_policy(it) for ext in self.extensions):
                        try:
                            losses = self.alg.update()
                        except FloatingPointError as error:
                            raise self._diverged(it, error) from None
                    else:
                        self.alg.storage.clear()  # warm-up: the rollout is not learned from
                        losses = {}
                    for ext in self.extensions:
                        scalars.update(ext.after_update(self, it))
                    t2 = time.perf_counter()

                    self.current_iteration = it + 1
                    steps = self.num_envs * rc.num_steps_per_env * self.world_size  # environment steps of all ranks
                    self.total_env_steps += steps
                    self.total_time_s += t2 - t0
                    collection_times.append(t1 - t0)
                    learning_times.append(t2 - t1)
                    scalars = {**self._scalars(losses, step_stats, ep_infos, t1 - t0, t2 - t1, steps), **scalars}
                    self.history.append(scalars)
                    done_now = it + 1 - start
                    eta = (time.perf_counter() - session_start) / done_now * (end - it - 1)
                    logger.log_iteration(it + 1, scalars, elapsed_s=self.total_time_s,
                                         env_steps=self.total_env_steps, eta_s=eta)
                    if self.log_dir is not None and (it + 1) % rc.save_interval == 0:
                        self.save(reason="interval")
                    stopping = stop.signal_name is not None
                    for ext in self.extensions:  # several ranks stop after the same iteration
                        stopping = ext.agree_to_stop(stopping)
                    if stopping:
                        self.stopped_by = stop.signal_name or "a signal to another rank"
                        break
                self.stopped_by = self.stopped_by or stop.signal_name
            if self.log_dir is not None and self._last_saved_iteration != self.current_iteration:
                self.save(reason="interrupt" if self.stopped_by else "final")
            if self.stopped_by:
                logger.message(f"stopped by {self.stopped_by} after iteration {self.current_iteration}; "
                               f"checkpoint: {self.last_checkpoint}")
        finally:
            logger.close()
        if self.log_dir is not None:
            self.plot_learning_curves()
        return {
            "iterations": self.current_iteration,
            "session_iterations": len(collection_times),
            "env_steps": self.total_env_steps,
            "wall_clock_s": time.perf_counter() - session_start,
            "collection_s_per_iter": statistics.fmean(collection_times) if collection_times else 0.0,
            "learning_s_per_iter": statistics.fmean(learning_times) if learning_times else 0.0,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "log_dir": str(self.log_dir) if self.log_dir else None,
            "stopped_by": self.stopped_by,
        }

    def plot_learning_curves(self) -> Path | None:
        """Draw the run's metrics.jsonl (every session of it) into <run>/plots/learning_curves.png.

        Called at the end of :meth:`learn`, also after a stop signal. The checkpoint is already on
        disk, so a figure that cannot be written (a full disk) is reported, not raised.
        """
        weight = self.cfg.env.reward_weights.get("track_lin_vel_xy_exp", 1.0)
        try:
            return plot_learning_curves(self.log_dir, title=f"rwm {self.cfg.mode}: {self.log_dir.name}",
                                        tracking_weight=weight)
        except OSError as error:
            print(f"[rwm] learning curves not written ({describe_os_error(error)}).", flush=True)
            return None

    def _collect(self, obs: torch.Tensor, stop: _StopRequest, it: int):
        """One rollout into PPO's storage; returns (next obs, abandoned?, step stats, episode infos)."""
        self.alg.train_mode()
        ep_infos: list[dict[str, float]] = []
        reward_total = 0.0
        with torch.inference_mode():
            for _ in range(self.cfg.runner.num_steps_per_env):
                actions = self.alg.act(obs, obs)
                if not bool(torch.isfinite(actions).all()):
                    raise self._diverged(it, FloatingPointError("the policy produced non-finite actions"))
                obs_dict, rewards, dones, extras = self.env.step(actions)
                self.alg.process_env_step(rewards, dones, extras)
                for ext in self.extensions:
                    ext.on_env_step(self, obs_dict, actions, rewards, dones, extras)
                obs = obs_dict["policy"].to(self.device)
                rewards, dones = rewards.to(self.device), dones.to(self.device)
                reward_total += float(rewards.sum())
                self._track_episodes(rewards, dones)
                if extras.get("log"):
                    ep_infos.append(extras["log"])
                if stop.signal_name is not None and self.world_size == 1:
                    self.alg.storage.clear()  # a partial rollout is not learned from
                    return obs, True, {}, ep_infos
            self.alg.compute_returns(obs)
        step_stats = {"mean_step_reward": reward_total / (self.num_envs * self.cfg.runner.num_steps_per_env)}
        return obs, False, step_stats, ep_infos

    def _track_episodes(self, rewards: torch.Tensor, dones: torch.Tensor) -> None:
        self._reward_sum += rewards
        self._episode_length += 1
        ids = torch.nonzero(dones).flatten()
        if len(ids):
            self._returns.extend(self._reward_sum[ids].tolist())
            self._lengths.extend(self._episode_length[ids].tolist())
            self._reward_sum[ids] = 0.0
            self._episode_length[ids] = 0.0

    def _scalars(self, losses: dict[str, float], step_stats: dict[str, float], ep_infos: list[dict[str, float]],
                 collection_s: float, learning_s: float, steps: int) -> dict[str, float]:
        scalars: dict[str, float] = {}
        keys = sorted({k for info in ep_infos for k in info})
        for key in keys:
            values = [float(info[key]) for info in ep_infos if key in info]
            scalars[key if "/" in key else f"Episode/{key}"] = statistics.fmean(values)
        # no PPO losses when an extension skipped the update (warm-up)
        scalars.update({f"Loss/{name}": float(value) for name, value in losses.items()})
        scalars["Loss/learning_rate"] = float(self.alg.learning_rate)
        scalars["Policy/mean_noise_std"] = float(self.policy.std.detach().mean())
        scalars["Perf/total_fps"] = steps / max(collection_s + learning_s, 1e-9)
        scalars["Perf/collection time"] = collection_s
        scalars["Perf/learning_time"] = learning_s
        scalars["Train/mean_step_reward"] = step_stats["mean_step_reward"]
        if self._returns:
            scalars["Train/mean_reward"] = statistics.fmean(self._returns)
            scalars["Train/mean_episode_length"] = statistics.fmean(self._lengths)
        return scalars

    def _diverged(self, it: int, error: BaseException) -> TrainingError:
        saved = list_checkpoints(self.log_dir) if self.log_dir is not None and self.log_dir.exists() else []
        kept = f"the last good checkpoint is '{saved[-1]}'" if saved else "no checkpoint had been saved yet"
        reason = str(error).strip().rstrip(".") or type(error).__name__
        return TrainingError(f"training stopped at iteration {it + 1}: {reason}; {kept}.")
