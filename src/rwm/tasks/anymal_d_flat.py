"""ANYmal D, flat ground, velocity tracking: the configuration of every task mode.

Each mode is a `TaskCfg`; later modes add their learning sections to it. The sections are

    env        the task (commands, observations, rewards, terminations)      rwm.envs
    sim        the real simulator (MuJoCo timing, actuation, randomisation)   rwm.sim.mujoco
    policy     the actor-critic network                                       PolicyCfg
    algorithm  every PPO number                                               PPOCfg
    runner     the training loop: rollout length, iterations, checkpoints,
               logging, and the evaluation used by `rwm play`                 RunnerCfg

Two scales
----------
The dataclass defaults are the **CPU scale**: sized so that a 2-core laptop trains the Init
policy to good velocity tracking in about a quarter of an hour (1024 environments x 24 steps x
600 iterations, observation normalisation on). The **paper scale** (``scale=paper``) is the
published setting (docs/architecture.md#scales: 4096 environments x 24 steps, 300 Init / 2000
Pretrain iterations, no observation normalisation), meant for big machines or a GPU. Select
it with the override ``scale=paper`` on the command line (it is applied before every other
override, so ``scale=paper num_envs=2048`` works) or with :func:`with_scale` in code; the
written ``config.yaml`` records both the label and every resolved value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rwm.config import ConfigError, apply_overrides, check, from_dict
from rwm.envs.locomotion_env import LocomotionEnvCfg
from rwm.envs.mdp.rewards import FLAT_REWARD_WEIGHTS, IMAGINATION_TERMINATION_PENALTY, INIT_REWARD_WEIGHTS
from rwm.sim.imagination import ImaginationCfg
from rwm.sim.mujoco import MujocoSimCfg
from rwm.world_model.config import WorldModelCfg

Mode = Literal["init", "pretrain", "finetune", "visualize", "offline"]
Scale = Literal["cpu", "paper"]


# ----------------------------------------------------------------------------- learning sections
@dataclass
class PolicyCfg:
    """Gaussian MLP actor-critic (docs/architecture.md#ppo): actor 48 -> hidden -> 12, critic 48 -> hidden -> 1."""

    actor_hidden_dims: list[int] = field(default_factory=lambda: [128, 128, 128])  # hidden layer widths of the actor
    critic_hidden_dims: list[int] = field(default_factory=lambda: [128, 128, 128])  # hidden layer widths of the critic
    activation: Literal["elu", "relu", "tanh"] = "elu"  # activation of both networks
    init_noise_std: float = 1.0  # initial std of every action dimension
    # Running mean/std normalisation of actor and critic inputs. Off in the paper; on at CPU
    # scale because joint velocities (tens of rad/s) and unit-scale commands share one input
    # vector, and normalised inputs learn faster when every sample is expensive.
    obs_normalization: bool = True

    def __post_init__(self) -> None:
        for key in ("actor_hidden_dims", "critic_hidden_dims"):
            dims = getattr(self, key)
            check(len(dims) > 0 and all(d >= 1 for d in dims),
                  f"policy.{key} = {dims}; expected a non-empty list of positive layer widths.")
        check(math.isfinite(self.init_noise_std) and self.init_noise_std > 0,
              f"policy.init_noise_std = {self.init_noise_std}; expected a finite number > 0.")


@dataclass
class PPOCfg:
    """Every PPO number (docs/architecture.md#ppo; rsl_rl / Isaac Lab values for flat ANYmal D)."""

    num_learning_epochs: int = 5  # passes over each rollout
    num_mini_batches: int = 4  # mini-batches per pass
    clip_param: float = 0.2  # ratio clip, also the value-update clip
    gamma: float = 0.99  # discount factor
    lam: float = 0.95  # GAE lambda
    value_loss_coef: float = 1.0  # weight of the value loss
    entropy_coef: float = 0.005  # weight of the entropy bonus
    learning_rate: float = 1.0e-3  # initial Adam step; adapted by the KL rule when schedule="adaptive"
    max_grad_norm: float = 1.0  # gradient-norm clip
    use_clipped_value_loss: bool = True  # clip the value update to clip_param around the old values
    schedule: Literal["adaptive", "fixed"] = "adaptive"  # "adaptive": the learning rate follows the KL rule
    desired_kl: float = 0.01  # the KL the adaptive schedule aims at
    normalize_advantage_per_mini_batch: bool = False  # False: once over the whole rollout (rsl_rl)

    def __post_init__(self) -> None:
        check(self.num_learning_epochs >= 1, f"algorithm.num_learning_epochs = {self.num_learning_epochs}; expected >= 1.")
        check(self.num_mini_batches >= 1, f"algorithm.num_mini_batches = {self.num_mini_batches}; expected >= 1.")
        for key in ("clip_param", "learning_rate", "max_grad_norm", "desired_kl"):
            value = getattr(self, key)
            check(math.isfinite(value) and value > 0, f"algorithm.{key} = {value}; expected a finite number > 0.")
        for key in ("gamma", "lam"):
            value = getattr(self, key)
            check(0.0 <= value <= 1.0, f"algorithm.{key} = {value}; expected a number in [0, 1].")
        for key in ("value_loss_coef", "entropy_coef"):
            value = getattr(self, key)
            check(math.isfinite(value) and value >= 0, f"algorithm.{key} = {value}; expected a finite number >= 0.")


@dataclass
class EvalCfg:
    """How `rwm play` (and the benchmark) measure a policy in the real simulator.

    As in Isaac Lab's *Play* configurations, observation noise and pushes are off by default,
    so the numbers measure the policy rather than the disturbances; both can be switched on.
    """

    num_envs: int = 128  # robots measured
    seconds: float = 20.0  # simulated time; 20 s is one full episode per environment
    observation_noise: bool = False  # the policy sees noisy observations while measured
    pushes: bool = False  # the robots are pushed while measured
    seed: int = 1  # differs from the training seed so the policy meets unseen episodes
    video_envs: int = 4  # environments shown side by side in the video
    video_seconds: float = 10.0  # the video covers the first this-many seconds
    video_fps: int = 25  # frames per second of the video
    video_width: int = 480  # pixels per environment tile
    video_height: int = 360  # pixels per environment tile

    def __post_init__(self) -> None:
        check(self.num_envs >= 1, f"runner.eval.num_envs = {self.num_envs}; expected >= 1.")
        check(self.seconds > 0, f"runner.eval.seconds = {self.seconds}; expected > 0.")
        check(self.video_envs >= 1, f"runner.eval.video_envs = {self.video_envs}; expected >= 1.")
        check(self.video_seconds > 0, f"runner.eval.video_seconds = {self.video_seconds}; expected > 0.")
        check(1 <= self.video_fps <= 50, f"runner.eval.video_fps = {self.video_fps}; expected 1..50 (the control rate).")
        check(self.video_width >= 16 and self.video_height >= 16,
              f"runner.eval.video_width/height = {self.video_width}x{self.video_height}; expected at least 16x16.")


@dataclass
class RunnerCfg:
    """The training loop: what one iteration is, how many, and what is written where."""

    num_steps_per_env: int = 24  # rollout length per environment and iteration
    max_iterations: int = 600  # TOTAL iterations of the run (a resumed run continues up to it)
    save_interval: int = 50  # checkpoint every this-many iterations (and always at the end)
    init_at_random_ep_len: bool = True  # spread the first time-outs over an episode
    logger: Literal["tensorboard", "none"] = "tensorboard"  # metrics.jsonl is always written
    console: Literal["summary", "line", "none"] = "summary"  # per-iteration console output
    progress_bar: bool = True  # a progress bar on stderr
    run_name: str = ""  # appended to the run directory's time stamp
    log_root: str = "logs"  # runs go to <log_root>/<experiment_name>/<YYYY-MM-DD_HH-MM-SS>[_<run_name>]/
    # Init and Pretrain (`--load-run`): a run directory or checkpoint whose policy (actor, critic,
    # observation normaliser, optimizer state) a new run starts from, e.g. to continue a policy on a changed robot
    start_policy: str = ""
    eval: EvalCfg = field(default_factory=EvalCfg)  # how `rwm play` measures a policy

    def __post_init__(self) -> None:
        check(self.num_steps_per_env >= 1, f"runner.num_steps_per_env = {self.num_steps_per_env}; expected >= 1.")
        check(self.max_iterations >= 0, f"runner.max_iterations = {self.max_iterations}; expected >= 0.")
        check(self.save_interval >= 1, f"runner.save_interval = {self.save_interval}; expected >= 1.")
        check(self.log_root != "", "runner.log_root is empty; expected a directory path.")
        check("/" not in self.run_name and "\\" not in self.run_name,
              f"runner.run_name = '{self.run_name}'; expected a name without path separators.")


@dataclass
class WorldModelLearningCfg:
    """How the training loop feeds and checks the world model (Pretrain): replay data and evaluation.

    The model, its losses and its update schedule are in `WorldModelCfg` (section `world_model`).
    """

    replay_capacity: int = 1000  # records kept per environment (published: 1000)
    holdout_fraction: float = 0.1  # share of environments never trained on: the evaluation's data
    eval_interval: int = 50  # iterations between autoregressive evaluations (and plots)
    eval_num_windows: int = 64  # windows per evaluation; paper: 100
    eval_length: int = 400  # history + predicted steps (published: 32 + 368)
    eval_noise_scales: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.4, 0.5, 0.8])  # input noise
    num_visualizations: int = 4  # windows drawn in the trajectory plot

    def __post_init__(self) -> None:
        check(self.replay_capacity >= 2, f"world_model_learning.replay_capacity = {self.replay_capacity}; expected >= 2.")
        check(0.0 <= self.holdout_fraction < 1.0,
              f"world_model_learning.holdout_fraction = {self.holdout_fraction}; expected a value in [0, 1).")
        check(self.eval_interval >= 1, f"world_model_learning.eval_interval = {self.eval_interval}; expected >= 1.")
        check(self.eval_num_windows >= 1,
              f"world_model_learning.eval_num_windows = {self.eval_num_windows}; expected >= 1.")
        check(all(math.isfinite(x) and x >= 0 for x in self.eval_noise_scales),
              f"world_model_learning.eval_noise_scales = {self.eval_noise_scales}; expected numbers >= 0.")


@dataclass
class FinetuneCfg:
    """MBPO-PPO (Finetune): the policy learns in imagination; a few real environments keep feeding the world model.

    The imagined rollouts are the runner's: `num_envs` imagination environments x
    `runner.num_steps_per_env` steps per iteration (paper: 4096 x 96). The uncertainty penalty is
    the reward weight `env.reward_weights.uncertainty` (0 for RWM, -1.0 for RWM-U).
    """

    # Pretrain run directory (or checkpoint) to start the world model (and policy) from; with neither
    # this nor world_model_checkpoint, Finetune starts from scratch (untrained model, random policy)
    load_run: str = ""
    world_model_checkpoint: str = ""  # a world-model file (run checkpoint or `rwm import-upstream` output)
    load_policy: bool = False  # start PPO from load_run's policy (and its optimizer state) instead of a random one
    num_real_envs: int = 16  # real environments feeding the replay buffer (paper: 10)
    real_steps_per_iteration: int = 24  # real control steps per environment and iteration
    initial_real_steps: int = 100  # real steps collected before imagining (>= the model's history)
    # Real transitions learning may use, the initial steps included: once spent, the real robots stop
    # and the run goes on with the world model and imagination alone. 0: no limit.
    real_budget: int = 0
    warmup_iterations: int = 0  # iterations that update only the world model (paper: 500)
    real_eval_interval: int = 100  # iterations between evaluations in the real simulator (`rwm play` metrics)
    real_eval_num_envs: int = 64  # robots of each evaluation in the real simulator
    # s of each evaluation: a whole episode, as `rwm play`, so that it sees the command change at 10 s
    # (most falls of a policy trained in imagination come soon after one)
    real_eval_seconds: float = 20.0
    # Recorded real data (an rwm dataset, e.g. `rwm dataset record` from the Pretrain run's
    # checkpoints) the world model keeps learning from beside the few new real robots, so its
    # updates follow the policy's new states without overwriting what it learned before.
    dataset: str = ""
    dataset_share: float = 0.5  # share of every world-model mini-batch and of imagination's starts taken from it

    def __post_init__(self) -> None:
        check(0.0 <= self.dataset_share <= 1.0,
              f"finetune.dataset_share = {self.dataset_share}; expected a value in [0, 1].")
        check(self.num_real_envs >= 1, f"finetune.num_real_envs = {self.num_real_envs}; expected >= 1.")
        check(self.real_steps_per_iteration >= 0,
              f"finetune.real_steps_per_iteration = {self.real_steps_per_iteration}; expected >= 0.")
        check(self.initial_real_steps >= 1, f"finetune.initial_real_steps = {self.initial_real_steps}; expected >= 1.")
        initial = self.initial_real_steps * self.num_real_envs
        check(self.real_budget == 0 or self.real_budget >= initial,
              f"finetune.real_budget = {self.real_budget}; expected 0 (no limit) or at least the initial real steps, "
              f"finetune.initial_real_steps x finetune.num_real_envs = {initial}.")
        check(self.warmup_iterations >= 0, f"finetune.warmup_iterations = {self.warmup_iterations}; expected >= 0.")
        check(self.real_eval_interval >= 1, f"finetune.real_eval_interval = {self.real_eval_interval}; expected >= 1.")
        check(self.real_eval_num_envs >= 1, f"finetune.real_eval_num_envs = {self.real_eval_num_envs}; expected >= 1.")
        check(self.real_eval_seconds > 0, f"finetune.real_eval_seconds = {self.real_eval_seconds}; expected > 0.")


@dataclass
class OfflineCfg:
    """RWM-U / MOPO-PPO (Offline): the world model is fitted on a recorded dataset, then PPO learns only in
    its imagination; no simulator is stepped during training (docs/architecture.md#offline).

    Counts of world-model updates are optimizer steps (mini-batches of `world_model.mini_batch_size`
    windows); they are taken in rounds of `world_model.num_mini_batches`, rounded up.
    The uncertainty penalty is the reward weight `env.reward_weights.uncertainty` (-1.0 by default).
    """

    dataset: str = ""  # the rwm dataset file (HDF5) to learn from (`rwm train --dataset FILE`); required
    validation_fraction: float = 0.1  # share of the dataset's episodes held out for world-model validation
    # Mini-batch updates of the world model before policy learning starts. -1: 2000 when the model
    # starts from scratch, 0 (no fitting) when it starts from `world_model_checkpoint`.
    fit_updates: int = -1
    updates_per_iteration: int = 0  # world-model mini-batch updates per iteration during policy learning (0: frozen)
    world_model_checkpoint: str = ""  # start from a trained world model (run checkpoint or `rwm import-upstream` file)
    # Before PPO, the policy imitates the dataset's best episodes (`rl.behavior_cloning`): this many
    # mini-batch updates of the actor on their recorded (policy observation, action) pairs; 0: PPO
    # starts from a random policy; -1: 2000 when the dataset has policy_observation and reward
    # columns (`rwm dataset record` writes them), else 0. PPO from a random policy learns to exploit
    # the fitted model (docs/results.md).
    behavior_cloning_updates: int = -1
    # Share of the training episodes cloned: those without a fall, ranked by mean reward per step.
    behavior_cloning_top_share: float = 0.25
    # Weight of the cloning loss (mean squared action error on a mini-batch of the cloned pairs)
    # added to every PPO mini-batch, keeping the policy near the data the world model knows
    # (TD3+BC's anchor, on PPO; weights 0 and 1 fell far more often, docs/results.md). 0: the clone
    # is only the starting point.
    behavior_cloning_weight: float = 10.0

    def __post_init__(self) -> None:
        check(self.behavior_cloning_updates >= -1,
              f"offline.behavior_cloning_updates = {self.behavior_cloning_updates}; expected >= 0 (or -1: automatic).")
        check(math.isfinite(self.behavior_cloning_weight) and self.behavior_cloning_weight >= 0,
              f"offline.behavior_cloning_weight = {self.behavior_cloning_weight}; expected a number >= 0.")
        check(0.0 < self.behavior_cloning_top_share <= 1.0,
              f"offline.behavior_cloning_top_share = {self.behavior_cloning_top_share}; expected a value in (0, 1].")
        check(0.0 <= self.validation_fraction < 1.0,
              f"offline.validation_fraction = {self.validation_fraction}; expected a value in [0, 1).")
        check(self.fit_updates >= -1, f"offline.fit_updates = {self.fit_updates}; expected >= 0 (or -1: automatic).")
        check(self.updates_per_iteration >= 0,
              f"offline.updates_per_iteration = {self.updates_per_iteration}; expected >= 0.")

    def resolved_behavior_cloning_updates(self, dataset_columns) -> int:
        """Behaviour-cloning updates for a dataset holding `dataset_columns`."""
        if self.behavior_cloning_updates >= 0:
            return self.behavior_cloning_updates
        return 2000 if {"policy_observation", "reward"} <= set(dataset_columns) else 0

    def resolved_fit_updates(self) -> int:
        if self.fit_updates >= 0:
            return self.fit_updates
        return 0 if self.world_model_checkpoint else 2000


# ----------------------------------------------------------------------------- the task
# The optional sections of a task, the modes that use them, and how an error names those (so an
# override of a section the task does not use fails instead of being carried along unused).
_SECTION_USE: dict[str, tuple[tuple[str, ...], str, str]] = {
    "world_model": (("pretrain", "finetune", "offline"), "the Pretrain, Finetune and Offline tasks", ""),
    "world_model_learning": (("pretrain", "finetune", "offline"), "the Pretrain, Finetune and Offline tasks", ""),
    "finetune": (("finetune",), "the Finetune task", " (e.g. --load-run, --world-model)"),
    "offline": (("offline",), "the Offline task", " (e.g. --dataset)"),
    "imagination": (("finetune", "offline"), "the Finetune and Offline tasks", ""),
}
_SECTIONS = ("env", "sim", "policy", "algorithm", "runner", *_SECTION_USE)


@dataclass
class TaskCfg:
    task_id: str = "Velocity-Flat-Anymal-D-Init-v0"  # the registered task (`rwm list`)
    mode: Mode = "init"  # what the run trains and on what (Init, Pretrain, Finetune, Offline, Visualize)
    scale: Scale = "cpu"  # a label; `with_scale` sets the values it stands for
    experiment_name: str = "anymal_d_flat"  # runs go to <runner.log_root>/<experiment_name>/
    num_envs: int = 1024  # robots stepped in parallel (imagined ones in Finetune and Offline)
    seed: int = 0  # seeds networks, environments and sampling
    device: str = "cpu"  # "cpu", "cuda" or "cuda:<index>"
    env: LocomotionEnvCfg = field(default_factory=LocomotionEnvCfg)  # the task: commands, noise, rewards, episodes
    sim: MujocoSimCfg = field(default_factory=MujocoSimCfg)  # the real simulator
    policy: PolicyCfg = field(default_factory=PolicyCfg)  # the actor-critic network
    algorithm: PPOCfg = field(default_factory=PPOCfg)  # PPO
    runner: RunnerCfg = field(default_factory=RunnerCfg)  # the training loop, its output and `rwm play`
    # Modes that learn or use a world model (Pretrain, Finetune, Offline) set these; Init has none.
    world_model: WorldModelCfg | None = None  # the world model and its training
    world_model_learning: WorldModelLearningCfg | None = None  # its replay data and evaluation during a run
    finetune: FinetuneCfg | None = None  # Finetune only
    offline: OfflineCfg | None = None  # Offline only
    imagination: ImaginationCfg | None = None  # how the world model is rolled out (Finetune, Offline)

    def __post_init__(self) -> None:
        check(self.num_envs >= 1, f"num_envs = {self.num_envs}; expected >= 1.")
        check(self.device == "cpu" or self.device.startswith("cuda"),
              f"device = '{self.device}'; expected 'cpu', 'cuda' or 'cuda:<index>'.")
        check(self.experiment_name != "" and "/" not in self.experiment_name,
              f"experiment_name = '{self.experiment_name}'; expected a non-empty name without '/'.")
        sections = ", ".join(name for name in _SECTIONS
                             if name not in _SECTION_USE or self.mode in _SECTION_USE[name][0])
        for name, (modes, tasks, hint) in _SECTION_USE.items():
            check(getattr(self, name) is None or self.mode in modes,
                  f"the '{name}' settings{hint} apply to {tasks} only; '{self.task_id}' is mode '{self.mode}', "
                  f"whose sections are {sections}.")
        if self.world_model_learning is not None and self.world_model is not None:
            window = self.world_model.history_horizon + 1
            check(self.world_model_learning.eval_length >= window,
                  f"world_model_learning.eval_length = {self.world_model_learning.eval_length}; expected at least "
                  f"world_model.history_horizon + 1 = {window}.")
            check(self.world_model_learning.eval_length <= self.world_model_learning.replay_capacity,
                  f"world_model_learning.eval_length = {self.world_model_learning.eval_length}; expected at most "
                  f"world_model_learning.replay_capacity = {self.world_model_learning.replay_capacity}.")
        check(not self.runner.start_policy or self.mode in ("init", "pretrain"),
              f"runner.start_policy (--load-run) applies to Init and Pretrain; '{self.task_id}' is mode "
              f"'{self.mode}'" + (", whose --load-run is finetune.load_run (with finetune.load_policy=true for its "
                                  "policy)." if self.mode == "finetune" else "."))
        batch = self.num_envs * self.runner.num_steps_per_env
        check(self.algorithm.num_mini_batches <= batch,
              f"algorithm.num_mini_batches = {self.algorithm.num_mini_batches}; expected at most "
              f"num_envs x runner.num_steps_per_env = {batch} samples.")


# The published experiment sizes (docs/architecture.md#scales), per mode, as dotted overrides.
_PAPER_COMMON = {
    "num_envs": 4096,
    "runner.num_steps_per_env": 24,
    "runner.save_interval": 50,
    "policy.obs_normalization": False,
}
PAPER_SCALE: dict[str, dict[str, object]] = {
    "init": {**_PAPER_COMMON, "runner.max_iterations": 300},
    "pretrain": {**_PAPER_COMMON, "runner.max_iterations": 2000, "world_model.num_mini_batches": 20,
                 "world_model.mini_batch_size": 5000, "world_model_learning.eval_num_windows": 100,
                 **{f"env.reward_weights.{term}": weight for term, weight in FLAT_REWARD_WEIGHTS.items()}},
    # 4095 imagined robots (rounded to 4096) x 96 steps, 10 real robots, 500 warm-up
    # iterations of the world model alone
    "finetune": {**_PAPER_COMMON, "runner.num_steps_per_env": 96, "runner.max_iterations": 2000,
                 "world_model.num_mini_batches": 20, "world_model.mini_batch_size": 5000,
                 "finetune.num_real_envs": 10, "finetune.warmup_iterations": 500},
    # the lite's: 8192 imagined robots, episodes of 256 steps, 500 iterations
    "offline": {**_PAPER_COMMON, "num_envs": 8192, "runner.max_iterations": 500,
                "world_model.num_mini_batches": 20, "world_model.mini_batch_size": 5000},
}


def with_scale(cfg: TaskCfg, scale: Scale) -> TaskCfg:
    """A copy of `cfg` at `scale`: "paper" sets the published sizes of its mode, "cpu" keeps `cfg` as is."""
    if scale not in ("cpu", "paper"):
        raise ConfigError(f"scale = {scale!r}; expected 'cpu' or 'paper'.")
    items = [f"scale={scale}"]
    if scale == "paper":
        if cfg.mode not in PAPER_SCALE:
            raise ConfigError(f"scale 'paper' is not defined for mode '{cfg.mode}'; expected one of {sorted(PAPER_SCALE)}.")
        items += [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
                  for key, value in PAPER_SCALE[cfg.mode].items()]
    return apply_overrides(cfg, items)


# Settings that earlier versions stored in `finetune` or `offline` and that now live in `imagination`.
_MOVED_TO_IMAGINATION = ("sample_state", "member_per_episode", "fall_tilt")
# Settings that earlier versions had and rwm no longer has: experiments that did not help
# (docs/results.md, "What did not help"). Stored configurations that name them still load.
REMOVED_SETTINGS = ("env.uncertainty_offset", "imagination.episode_start_share", "imagination.before_fall_share",
                    "imagination.before_fall_s", "imagination.halt_epistemic", "offline.penalty_start_iteration",
                    "offline.penalty_ramp_iterations")


def stored_task_cfg(data: Mapping[str, Any], source: str | Path) -> TaskCfg:
    """The `TaskCfg` a checkpoint stored (its "config"), with settings that have since moved section
    carried over and removed ones dropped (one line says which), so runs of earlier versions still
    resume and evaluate."""
    data = {name: dict(value) if isinstance(value, Mapping) else value for name, value in data.items()}
    for old in ("finetune", "offline"):
        moved = {key: data[old].pop(key) for key in _MOVED_TO_IMAGINATION
                 if isinstance(data.get(old), dict) and key in data[old]}
        if moved and (data.get("imagination") is None or isinstance(data["imagination"], dict)):
            data["imagination"] = {**moved, **(data.get("imagination") or {})}
    dropped = []
    for name in REMOVED_SETTINGS:
        section, key = name.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            dropped.append(f"{name}={data[section].pop(key)}")
    if dropped:
        print(f"[rwm] '{source}' names settings rwm no longer has (experiments that did not help, see "
              f"docs/results.md); ignoring {', '.join(dropped)}", flush=True)
    try:
        return from_dict(TaskCfg, data)
    except ConfigError as error:
        raise ConfigError(f"the configuration stored in '{source}' is not valid here ({error}).") from None


def split_scale(overrides: Sequence[str]) -> tuple[Scale | None, list[str]]:
    """Pull a `scale=...` item out of command-line overrides (it must be applied first)."""
    scale, rest = None, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.strip() == "scale":
            value = value.strip()
            if value not in ("cpu", "paper"):
                raise ConfigError(f"override '{item}' is invalid; expected scale=cpu or scale=paper.")
            scale = value
        else:
            rest.append(item)
    return scale, rest


def init_cfg() -> TaskCfg:
    """Mode Init: model-free PPO in the real simulator (Isaac Lab's rough-task weights, on flat ground)."""
    return TaskCfg(task_id="Velocity-Flat-Anymal-D-Init-v0", mode="init",
                   env=LocomotionEnvCfg(reward_weights=dict(INIT_REWARD_WEIGHTS)))


def pretrain_cfg() -> TaskCfg:
    """Mode Pretrain: PPO in the real simulator while the world model learns from its transitions.

    At CPU scale its PPO uses the Init weights: the world model can only teach Finetune the gaits
    it has seen, and within 600 iterations x 1024 robots the flat weights (the published Pretrain
    weights, kept at `scale=paper`'s 2000 x 4096) never reached walking (docs/results.md).
    """
    return TaskCfg(task_id="Velocity-Flat-Anymal-D-Pretrain-v0", mode="pretrain",
                   env=LocomotionEnvCfg(reward_weights=dict(INIT_REWARD_WEIGHTS)),
                   runner=RunnerCfg(run_name="pretrain"),
                   world_model=WorldModelCfg(), world_model_learning=WorldModelLearningCfg())


# Imagined episodes (Finetune, Offline) last 256 steps, as the lite's (docs/architecture.md#scales): each one starts
# from a real window, so a shorter episode bounds how far the model's errors can compound before
# imagination is brought back to real states (MBPO's short branched rollouts).
IMAGINED_EPISODE_S = 5.12


def imagined_env_cfg(uncertainty_weight: float) -> LocomotionEnvCfg:
    """The task as Finetune and Offline imagine it: the flat weights with a priced fall and the
    uncertainty penalty, 256-step episodes, and a first command that lasts a random share of its
    10 s, so that short imagined episodes also see commands change."""
    env = LocomotionEnvCfg(reward_weights={**FLAT_REWARD_WEIGHTS, "uncertainty": uncertainty_weight,
                                           "termination_penalty": IMAGINATION_TERMINATION_PENALTY},
                           episode_length_s=IMAGINED_EPISODE_S)
    env.commands.random_first_duration = True
    return env


def finetune_cfg() -> TaskCfg:
    """Mode Finetune: MBPO-PPO, the policy learns only in imagination (world model from a Pretrain run)."""
    env = imagined_env_cfg(uncertainty_weight=0.0)
    env.noise.enabled = False  # no observation corruption in Finetune (docs/architecture.md#observations)
    # Practise the fast commands policies fall on most, and (below) push the imagined robots: the
    # two together helped, pushes alone did not (docs/results.md).
    env.commands.fast_share = 0.3
    # The model arrives trained (Pretrain): one mini-batch per iteration keeps it following the
    # policy's new states at a quarter of Pretrain's update cost, which would otherwise dominate.
    # 1800 iterations: from a random policy, imagined walking takes off after about 550 at CPU scale
    # and the real tracking levels off near 1500.
    return TaskCfg(task_id="Velocity-Flat-Anymal-D-Finetune-v0", mode="finetune", env=env,
                   runner=RunnerCfg(run_name="finetune", max_iterations=1800),
                   world_model=WorldModelCfg(num_mini_batches=1),
                   world_model_learning=WorldModelLearningCfg(), finetune=FinetuneCfg(),
                   imagination=ImaginationCfg(push=True))


def offline_cfg() -> TaskCfg:
    """Mode Offline (RWM-U, docs/architecture.md#offline): world model fitted on a dataset, PPO in its
    imagination with the uncertainty penalty; observation noise stays on (the lite pipeline's setting)."""
    env = imagined_env_cfg(uncertainty_weight=-1.0)
    return TaskCfg(task_id="Velocity-Flat-Anymal-D-Offline-v0", mode="offline", env=env,
                   runner=RunnerCfg(run_name="offline"), world_model=WorldModelCfg(),
                   world_model_learning=WorldModelLearningCfg(), offline=OfflineCfg(),
                   imagination=ImaginationCfg())


def visualize_cfg() -> TaskCfg:
    """Mode Visualize (`rwm visualize`): a run's policy drives the real robot and its world model side by side.

    Only the real environment's conditions live here (the policy and world model come from the
    run): flat reward weights, no observation noise and no pushes, so the two robots differ by
    the model's error alone, and commands resampled every 2 s as upstream's Visualize task does
    (docs/architecture.md#visualize); the command only enters the policy's inputs.
    """
    env = LocomotionEnvCfg(reward_weights=dict(FLAT_REWARD_WEIGHTS))
    env.noise.enabled = False
    env.commands.resampling_time_s = (2.0, 2.0)
    sim = MujocoSimCfg()
    sim.randomization.push = False
    return TaskCfg(task_id="Velocity-Flat-Anymal-D-Visualize-v0", mode="visualize", env=env, sim=sim,
                   runner=RunnerCfg(run_name="visualize"))
