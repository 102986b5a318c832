"""Finetune (MBPO-PPO): PPO learns in the world model's imagination; a few real robots keep it honest.

The runner is the same loop as every mode; here its environment is `LocomotionEnv` on an
`ImaginationSimulator` (the same task: commands, observations, rewards, terminations), and one
extension does the rest each iteration: a few real environments take `real_steps_per_iteration`
steps with the current policy into the replay buffer, the world model is updated on it, and
every `real_eval_interval` iterations the policy is measured in the real simulator with the
`rwm play` metrics, so the imagined-vs-real gap is a curve in TensorBoard. During
`warmup_iterations` only the world model learns.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from rwm.config import apply_overrides
from rwm.envs.locomotion_env import LocomotionEnv
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.training.checkpoint import find_checkpoint
from rwm.training.extension import RunnerExtension
from rwm.training.process_group import DistributedContext
from rwm.training.start_policy import StartPolicy
from rwm.training.world_model_learning import WorldModelLearning, load_world_model_file, mixed_windows
from rwm.world_model import ReplayBuffer
from rwm.world_model.config import with_architecture_of


def world_model_source(cfg: TaskCfg) -> Path:
    """The checkpoint to take the world model from: `finetune.world_model_checkpoint`, else `load_run`'s latest."""
    ft = cfg.finetune
    if ft.world_model_checkpoint:
        path = Path(ft.world_model_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"world-model checkpoint '{path}' (--world-model) does not exist.")
        return path
    if ft.load_run:
        if not Path(ft.load_run).exists():
            raise FileNotFoundError(f"run '{ft.load_run}' (--load-run) does not exist.")
        return find_checkpoint(ft.load_run)
    raise ValueError("mode 'finetune' has no world model to load: pass --load-run RUN_DIR (a Pretrain run) or "
                     "--world-model CHECKPOINT, or neither to start from scratch.")


def recorded_buffer(path: str, history: int, step_dt: float, device: torch.device) -> tuple[ReplayBuffer, int]:
    """(the episodes of dataset `path` in a ReplayBuffer, its number of transitions), checked against
    the task's control period."""
    from rwm.data import DatasetReader

    if not Path(path).is_file():
        raise FileNotFoundError(f"dataset '{path}' (finetune.dataset) does not exist.")
    with DatasetReader(path) as reader:
        recorded_dt = reader.metadata.get("step_dt")
        if recorded_dt is not None and abs(float(recorded_dt) - step_dt) > 1e-9:
            raise ValueError(f"dataset '{path}' was recorded at step_dt {recorded_dt} s; this task steps at "
                             f"{step_dt} s.")
        buffer = reader.fill_replay_buffer(num_envs=max(1, min(reader.num_episodes, 64)), device=device)
        transitions = int(reader.num_transitions)
    if buffer.num_valid_windows(history) == 0:
        raise ValueError(f"dataset '{path}' holds no episode as long as the world model's history of {history} "
                         "records.")
    return buffer, transitions


def build_finetune(cfg: TaskCfg, device: torch.device
                   ) -> tuple[TaskCfg, LocomotionEnv, list[RunnerExtension]]:
    """(cfg with the loaded model's architecture, imagination env, [ModelBasedFinetuning, StartPolicy when
    finetune.load_policy]) for a Finetune run."""
    from rwm.envs.scripted_policies import RandomPolicy, StandingPolicy
    from rwm.sim.imagination import ImaginationSimulator
    from rwm.tasks import make_env
    from rwm.training.export import policy_from_checkpoint

    ft = cfg.finetune
    if ft is None:
        raise ValueError("mode 'finetune' needs the 'finetune' config section.")
    if ft.load_policy and not ft.load_run:
        raise ValueError("finetune.load_policy=true needs a run to load the policy from (--load-run RUN_DIR).")
    # Without a run or a world-model file, the world model starts untrained (from scratch) and
    # learns only from the real robots of this run.
    from_scratch = not ft.load_run and not ft.world_model_checkpoint
    model = None
    if not from_scratch:
        model = load_world_model_file(world_model_source(cfg), device)
        if model.state_dim != 45 or model.action_dim != 12 or model.contact_dim != 8 or model.termination_dim != 1:
            raise ValueError(f"the world model's layout (state {model.state_dim}, action {model.action_dim}, "
                             f"contact {model.contact_dim}, termination {model.termination_dim}) does not match "
                             "this task (45, 12, 8, 1).")
        cfg = dataclasses.replace(cfg, world_model=with_architecture_of(cfg.world_model, model.cfg))

    pretrain_policy = pretrain_payload = None
    if ft.load_run:
        pretrain_policy, _, pretrain_payload = policy_from_checkpoint(find_checkpoint(ft.load_run), device=device)

    learner = WorldModelLearning(cfg, device, num_envs=ft.num_real_envs, model=model)
    model = learner.model
    real_env = make_env(apply_overrides(cfg, [f"num_envs={ft.num_real_envs}", f"seed={cfg.seed + 1000}"]))
    recorded_transitions = 0
    if ft.dataset:
        learner.recorded, recorded_transitions = recorded_buffer(ft.dataset, model.history_horizon,
                                                                 real_env.step_dt, device)
        learner.recorded_share = ft.dataset_share
    # First real data, so imagination has starting windows: the Pretrain policy if there is one;
    # from scratch, random actions (what the fresh policy's noise does), so the untrained model
    # sees the joints move; else a standing robot.
    if pretrain_policy is not None:
        collect = pretrain_policy.act_inference
    elif from_scratch:
        collect = RandomPolicy(ft.num_real_envs, device, seed=cfg.seed)
    else:
        collect = StandingPolicy(ft.num_real_envs, device, dt=real_env.step_dt)
    obs = real_env.get_observations()
    learner.recorder.start(obs)
    with torch.inference_mode():
        for _ in range(ft.initial_real_steps):
            actions = collect(obs["policy"])
            obs, _, _, extras = real_env.step(actions)
            learner.recorder.record(actions, obs, extras)
    history = model.history_horizon
    if learner.buffer.num_valid_windows(history) == 0:
        raise ValueError(f"no real episode lasted the world model's history of {history} steps during the "
                         f"{ft.initial_real_steps} initial steps; raise finetune.initial_real_steps.")

    def initial_windows(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        draw_recorded = None if learner.recorded is None else (
            lambda m: learner.recorded.sample(m, history, generator))
        return mixed_windows(n, ft.dataset_share, lambda m: learner.buffer.sample(m, history, generator),
                             draw_recorded)

    simulator = ImaginationSimulator(
        model, initial_windows, cfg.num_envs, cfg.imagination, device=device, seed=cfg.seed,
        step_dt=real_env.step_dt)
    env = LocomotionEnv(cfg.env, simulator, seed=cfg.seed)
    extensions: list[RunnerExtension] = [ModelBasedFinetuning(cfg, learner, real_env,
                                                              recorded_transitions=recorded_transitions)]
    if ft.load_policy:
        extensions.append(StartPolicy(pretrain_policy.state_dict(), pretrain_payload["optimizer_state_dict"],
                                      ft.load_run))
    return cfg, env, extensions


class ModelBasedFinetuning(RunnerExtension):
    """Real data, world-model updates, imagination statistics and real-simulator evaluation for Finetune."""

    def __init__(self, cfg: TaskCfg, learner: WorldModelLearning, real_env: LocomotionEnv,
                 recorded_transitions: int = 0):
        self.cfg = cfg
        self.ft = cfg.finetune
        self.learner = learner
        self.real_env = real_env
        # Real simulator steps learning used: the initial ones and every iteration's. Not the
        # buffer's record count, which also holds one extra terminal record per ended episode.
        self.real_transitions = cfg.finetune.initial_real_steps * real_env.num_envs
        # Real steps spent only on measuring progress (the `real_eval_interval` evaluations), which
        # never reach the model or the policy; reported apart from `real_transitions`.
        self.real_eval_transitions = 0
        # recorded transitions the world model also learns from (finetune.dataset)
        self.recorded_transitions = recorded_transitions
        self._real_obs = real_env.get_observations()
        self.measures_real = True  # with several ranks, rank 0 alone measures in the real simulator
        self._epistemic = 0.0
        self._imagined_steps = 0
        self._imagined_resets = 0
        self._budget_spent = False

    def join_process_group(self, ctx: DistributedContext) -> None:
        self.learner.join_process_group(ctx)
        self.measures_real = ctx.is_main

    def on_env_step(self, runner, obs, actions, rewards, dones, extras) -> None:
        # runner.env is the imagination env: collect its statistics, never its data
        self._epistemic += float(runner.env.sim.uncertainty.mean())
        self._imagined_steps += 1
        self._imagined_resets += int(dones.sum())

    def updates_policy(self, iteration: int) -> bool:
        return iteration >= self.ft.warmup_iterations

    def after_update(self, runner, iteration: int) -> dict[str, float]:
        scalars = {
            "Imagination/epistemic_uncertainty": self._epistemic / max(1, self._imagined_steps),
            "Imagination/reset_share": self._imagined_resets / max(1, self._imagined_steps * runner.num_envs),
            "Imagination/warmup": float(not self.updates_policy(iteration)),
        }
        self._epistemic, self._imagined_steps, self._imagined_resets = 0.0, 0, 0
        policy = runner.policy
        steps = self.real_steps_this_iteration()
        with torch.inference_mode():
            for _ in range(steps):
                actions = policy.act(self._real_obs["policy"])
                self._real_obs, _, _, extras = self.real_env.step(actions)
                self.learner.recorder.record(actions, self._real_obs, extras)
        self.real_transitions += steps * self.real_env.num_envs
        scalars["Real/transitions"] = float(self.real_transitions)
        if self.recorded_transitions:
            scalars["Real/recorded_transitions"] = float(self.recorded_transitions)
        scalars.update(self.learner.update_and_evaluate(runner.log_dir, iteration))
        if self.measures_real and (iteration + 1) % self.ft.real_eval_interval == 0:
            from rwm.training.evaluation import evaluate_policy

            metrics = evaluate_policy(self.cfg, runner.get_inference_policy(), num_envs=self.ft.real_eval_num_envs,
                                      seconds=self.ft.real_eval_seconds, progress=False)
            for key in ("tracking_lin_vel", "tracking_ang_vel", "fall_rate", "lin_vel_error", "ang_vel_error"):
                scalars[f"Real/{key}"] = float(metrics[key])
            self.real_eval_transitions += int(metrics["env_steps"])
        if self.real_eval_transitions:
            scalars["Real/eval_transitions"] = float(self.real_eval_transitions)
        return scalars

    def real_steps_this_iteration(self) -> int:
        """Real steps per real robot this iteration: `real_steps_per_iteration`, fewer once `real_budget` runs out."""
        if not self.ft.real_budget:
            return self.ft.real_steps_per_iteration
        left = self.ft.real_budget - self.real_transitions
        steps = min(self.ft.real_steps_per_iteration, left // self.real_env.num_envs)
        if steps < self.ft.real_steps_per_iteration and not self._budget_spent:
            self._budget_spent = True
            print(f"[rwm finetune] the real budget of {self.ft.real_budget} transitions is spent "
                  f"({self.real_transitions + steps * self.real_env.num_envs} used); the run goes on in imagination "
                  "alone.", flush=True)
        return steps

    def state_dict(self) -> dict[str, Any]:
        # The replay buffer is small here (num_real_envs x replay_capacity records, ~4 MB at the
        # defaults) and travels with the checkpoint: a resumed run that restarted from the few
        # initial real steps would draw most of its model updates and imagination starts from a
        # handful of windows for the ~40 iterations it takes to refill.
        return {**self.learner.state_dict(), "finetune_real_transitions": self.real_transitions,
                "finetune_real_eval_transitions": self.real_eval_transitions,
                "finetune_replay_buffer": self.learner.buffer.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.learner.load_state_dict(checkpoint)
        self.real_transitions = int(checkpoint.get("finetune_real_transitions", self.real_transitions))
        self.real_eval_transitions = int(checkpoint.get("finetune_real_eval_transitions", 0))
        saved = checkpoint.get("finetune_replay_buffer")
        if saved is None:  # checkpoints of earlier versions
            return
        try:
            self.learner.buffer.load_state_dict(saved)
        except ValueError as error:  # finetune.num_real_envs or the replay capacity changed on resume
            print(f"[rwm finetune] not restoring the checkpoint's replay buffer ({error}); continuing from the "
                  "real data collected at start.", flush=True)
