"""`rwm demo`: a simulator check, then a shortened training pipeline, told against references.

A demo is a list of stages run in order (`demo_stages`): each returns its result, which is
written to ``<log_root>/demo/<time>/<k>_<stage>.json``, and ``summary.json`` beside them names
every file. A pipeline is only a tuple of stages, so it can be changed without touching the
loop: a stage reads what earlier ones left in `DemoRun` (the runs trained so far, the policy to
measure) and works with whatever is there (Finetune without a Pretrain before it starts from an
untrained world model, as `rwm train` does without --load-run).

The trained policy is measured like the committed benchmarks (``runner.eval``: 128 robots x
20 s, observation noise and pushes off) beside a robot that stands still under the same
commands, and the verdict says in words whether the robot walks (`walk_verdict`).

One Ctrl-C ends the whole demo: a training stage saves its checkpoint and returns (see
`rwm.training.Runner.learn`), any other stage is cut short; the stages after it do not run, and one
line names the summary of what was done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rwm.io import save_json

if TYPE_CHECKING:  # the command line imports this module: torch and MuJoCo load only when a stage runs
    from rwm.tasks.anymal_d_flat import TaskCfg
    from rwm.training.runner import Runner

# The model-based pipeline, shortened from the 600-iteration CPU-scale runs to about 20 minutes on
# 2 cores (Pretrain ~4.1 s and Finetune ~1.9 s per iteration there): it shows every stage and output,
# not a walking robot (`--pipeline init` trains one in ~10 minutes).
DEMO_PRETRAIN_ITERATIONS = 200
DEMO_FINETUNE_ITERATIONS = 100
SIDE_BY_SIDE_SECONDS = 5.0

# The full CPU-scale runs the demo shortens, measured as the demo measures its policy (`rwm play`).
PPO_REFERENCE = {"what": "Init, 600 iterations x 1024 robots, 15 min on 2 cores",
                 "tracking_lin_vel": 0.9407, "tracking_ang_vel": 0.9753, "fall_rate": 0.0,
                 "source": "bench/results/ppo_init.json", "command": "python bench/ppo_init.py"}
MBPO_REFERENCE = {"what": "Pretrain 600 + Finetune 1800 iterations, 3.4 h on 2 cores",
                  "tracking_lin_vel": 0.9338, "fall_rate": 0.0312,
                  "source": "bench/results/mbpo.json", "command": "python bench/mbpo.py"}
# The side-by-side error of a world model trained on a full PPO run's data, for scale: the same relative
# L1 error (normalised states), over 368 predicted steps instead of the demo's 250.
WORLD_MODEL_REFERENCE = {"what": "a world model trained on a full PPO run's data", "relative_l1": 0.6196,
                         "predicted_steps": 368, "source": "bench/results/world_model_quality.json "
                                                           "(python bench/world_model_quality.py), gru_ar at noise 0"}
# A policy walks when it tracks at least this share of PPO's tracking with at most this fall rate
# (bench/ppo_init.py's own targets are 0.80 and 0.05).
WALKING_SHARE_OF_PPO = 0.8
WALKING_MAX_FALL_RATE = 0.05


@dataclass(frozen=True)
class Stage:
    """One step of the demo: `run` does it and returns its result (a JSON-able dict)."""

    name: str  # its result file is <demo dir>/<k>_<name>.json
    title: str  # how the console names it
    run: Callable[["DemoRun"], dict[str, Any]]
    describe: Callable[[dict[str, Any]], list[str]]  # the result in a line or two of the summary


@dataclass
class DemoRun:
    """What the stages share: the command's arguments, the demo directory and what earlier stages left."""

    args: argparse.Namespace
    cfg: TaskCfg  # the simulator check's task config (`check_config`)
    directory: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage name -> result
    runs: dict[str, Runner] = field(default_factory=dict)  # stage name -> the Runner it trained
    policy_run: Runner | None = None  # the Runner whose policy the later stages measure: the last one trained
    label: str = ""  # "k/n title" of the stage running

    def announce(self, text: str) -> None:
        print(f"[rwm demo] {self.label}: {text}", flush=True)


# ----------------------------------------------------------------------------- the stages
def check_simulator(demo: DemoRun) -> dict[str, Any]:
    """The simulator with a standing, then a random policy: throughput, falls, base height, reward."""
    import torch
    from tqdm import tqdm

    from rwm.envs.scripted_policies import RandomPolicy, StandingPolicy
    from rwm.tasks import make_env

    args, cfg = demo.args, demo.cfg
    demo.announce(f"{cfg.task_id}: {cfg.num_envs} environments on {cfg.device}, seed {cfg.seed}")
    env = make_env(cfg)
    steps = max(1, round(args.seconds / env.step_dt))
    report = {"task": cfg.task_id, "num_envs": cfg.num_envs, "seconds_per_policy": args.seconds}
    for name, policy in (("standing", StandingPolicy(env.num_envs, env.device, dt=env.step_dt)),
                         ("random", RandomPolicy(env.num_envs, env.device, scale=1.0, seed=cfg.seed))):
        obs = env.reset()["policy"]
        falls, reward_sum, height = 0, 0.0, 0.0
        start = time.perf_counter()
        for _ in tqdm(range(steps), desc=f"{name:>8} policy", unit="step", leave=False, disable=args.quiet):
            observations, rewards, dones, extras = env.step(policy(obs))
            obs = observations["policy"]
            falls += int((dones & ~extras["time_outs"]).sum())
            reward_sum += float(rewards.mean())
            height += float(env.sim.base_pos_w[:, 2].mean())
            if isinstance(policy, StandingPolicy):
                policy.reset(torch.nonzero(dones).flatten())
        elapsed = time.perf_counter() - start
        report[name] = {
            "control_steps_per_s": round(steps * env.num_envs / elapsed),
            "falls_per_env_per_minute": round(falls / env.num_envs / (steps * env.step_dt / 60), 3),
            "mean_base_height_m": round(height / steps, 3),
            "mean_reward_per_step": round(reward_sum / steps, 5),
        }
        r = report[name]
        print(f"  {name:>8} policy: {r['control_steps_per_s']:>8,} control steps/s | "
              f"falls/env/min {r['falls_per_env_per_minute']:.3f} | base height {r['mean_base_height_m']:.3f} m | "
              f"reward/step {r['mean_reward_per_step']:+.5f}")
    return report


def check_config(args: argparse.Namespace) -> TaskCfg:
    """The simulator check's task config: --task with --num-envs, --seed, --device and its own overrides."""
    from rwm.config import apply_overrides
    from rwm.tasks import make_task_cfg

    cfg = make_task_cfg(args.task)
    cfg.num_envs, cfg.seed, cfg.device = args.num_envs, args.seed, args.device
    # the overrides also configure the pipeline's tasks: sections this check's task does not have are theirs
    own = [item for item in args.overrides if getattr(cfg, item.partition("=")[0].split(".")[0].strip(), 0) is not None]
    return apply_overrides(cfg, own)


def train_stage(demo: DemoRun, task_id: str, iterations: int, run_name: str, what: str,
                overrides: tuple[str, ...] = ()) -> tuple[Runner, dict[str, Any]]:
    """Train `task_id` for `iterations` (a Ctrl-C saves a checkpoint and returns); the runner becomes the
    policy later stages measure. Returns (runner, the training summary)."""
    from rwm.tasks import make_task_cfg
    from rwm.training import resolve_train_config, train

    args = demo.args
    cfg, _ = resolve_train_config(task_id, ["runner.console=line", *args.overrides, *overrides], seed=args.seed,
                                  device=args.device, max_iterations=iterations, run_name=run_name)
    full = make_task_cfg(task_id).runner.max_iterations  # the task's CPU-scale length
    demo.announce(f"{what}, {iterations} iterations ({cfg.num_envs} {'imagined ' if cfg.mode == 'finetune' else ''}"
                  f"robots x {cfg.runner.num_steps_per_env} steps; a full CPU-scale run is {full})")
    runner, summary = train(cfg)
    demo.policy_run = runner
    return runner, summary


def pretrain(demo: DemoRun) -> dict[str, Any]:
    runner, summary = train_stage(demo, "Velocity-Flat-Anymal-D-Pretrain-v0", demo.args.pretrain_iterations,
                                  "demo_pretrain", "PPO in the simulator while the world model learns")
    demo.runs["pretrain"] = runner
    return {"pretrain_run": str(runner.log_dir), "pretrain_iterations": runner.current_iteration,
            "wall_clock_s": {"pretrain": round(summary["wall_clock_s"], 1)}, "env_steps": summary["env_steps"],
            "checkpoint": summary["last_checkpoint"], "stopped_by": summary["stopped_by"]}


def finetune(demo: DemoRun) -> dict[str, Any]:
    """A new policy learns only in imagination, with the world model of the Pretrain stage if there was one."""
    pretrained = demo.runs.get("pretrain")
    load = () if pretrained is None else (f"finetune.load_run={pretrained.log_dir}",)
    runner, summary = train_stage(demo, "Velocity-Flat-Anymal-D-Finetune-v0", demo.args.finetune_iterations,
                                  "demo_finetune", "a new policy learns only in the world model's imagination", load)
    demo.runs["finetune"] = runner
    earlier = demo.results.get("pretrain", {}).get("env_steps", 0)
    return {"finetune_run": str(runner.log_dir), "finetune_iterations": runner.current_iteration,
            "wall_clock_s": {"finetune": round(summary["wall_clock_s"], 1)},
            "real_transitions": int(earlier + runner.extensions[0].real_transitions),
            "checkpoint": summary["last_checkpoint"], "stopped_by": summary["stopped_by"]}


def train_init(demo: DemoRun) -> dict[str, Any]:
    runner, summary = train_stage(demo, demo.args.task, demo.args.train_iterations, "demo", "model-free PPO")
    demo.runs["init"] = runner
    return {"run_dir": str(runner.log_dir), "iterations": runner.current_iteration,
            "wall_clock_s": round(summary["wall_clock_s"], 1), "checkpoint": summary["last_checkpoint"],
            "stopped_by": summary["stopped_by"]}


def evaluate_in_simulator(demo: DemoRun) -> dict[str, Any]:
    """The trained policy, then a robot standing still, in the real simulator under the same commands."""
    if not demo.args.no_video:
        os.environ.setdefault("MUJOCO_GL", "egl")
    from rwm.envs.scripted_policies import StandingPolicy
    from rwm.training.evaluation import evaluate_policy

    runner = demo.policy_run
    cfg, e = runner.cfg, runner.cfg.runner.eval
    demo.announce(f"the trained policy, then a standing robot, in the real simulator ({e.num_envs} robots x "
                  f"{e.seconds:g} s each, as the references were measured)")
    video = None if demo.args.no_video else runner.log_dir / "videos" / f"demo_{runner.current_iteration}.mp4"
    policy = evaluate_policy(cfg, runner.get_inference_policy(), video_path=video, progress=not demo.args.quiet)
    standing = evaluate_policy(cfg, StandingPolicy(e.num_envs, cfg.device, dt=cfg.sim.step_dt),
                               progress=not demo.args.quiet)
    verdict, reason = walk_verdict(policy["tracking_lin_vel"], policy["fall_rate"], standing["tracking_lin_vel"])
    return {"tracking_lin_vel": policy["tracking_lin_vel"], "tracking_ang_vel": policy["tracking_ang_vel"],
            "fall_rate": policy["fall_rate"], "video": None if video is None else str(video),
            "verdict": verdict, "verdict_reason": reason, "checkpoint": str(runner.last_checkpoint),
            "policy": policy, "standing_robot": standing,
            "references": {"ppo": PPO_REFERENCE, "mbpo": MBPO_REFERENCE}}


def side_by_side(demo: DemoRun) -> dict[str, Any]:
    """The real robot and the world model's imagined twin under the same actions (`rwm visualize`)."""
    if not demo.args.no_video:
        os.environ.setdefault("MUJOCO_GL", "egl")
    from rwm.training import find_checkpoint
    from rwm.training.visualize import visualize_run

    demo.announce("the real robot and its imagined twin side by side")
    report = visualize_run(find_checkpoint(demo.policy_run.log_dir), seconds=SIDE_BY_SIDE_SECONDS,
                           video=not demo.args.no_video, progress=not demo.args.quiet)
    return {"world_model_relative_l1": report["relative_l1"], "horizon_steps": report["horizon_steps"],
            "side_by_side_video": report["video"], "plots": report["plots"], "errors": report["json"],
            "reference": WORLD_MODEL_REFERENCE}


# ----------------------------------------------------------------------------- the pipelines
def _describe_check(r: dict) -> list[str]:
    s, q = r["standing"], r["random"]
    return [f"{r['task']}, {r['num_envs']} robots: {s['control_steps_per_s']:,} control steps/s; falls/env/min "
            f"{s['falls_per_env_per_minute']:.3f} standing, {q['falls_per_env_per_minute']:.3f} random"]


def _describe_training(run_key: str, iterations_key: str, seconds: Callable[[dict], float]
                       ) -> Callable[[dict], list[str]]:
    return lambda r: [f"{r[iterations_key]} iterations in {seconds(r):.0f} s" + (
        f", {r['real_transitions']:,} real transitions in all" if "real_transitions" in r else ""),
        f"run: {r[run_key]}"]


def _describe_evaluation(r: dict) -> list[str]:
    p = r["policy"]
    return [f"{p['num_envs']} robots x {p['seconds']:g} s: tracking {r['tracking_lin_vel']:.3f}, fall rate "
            f"{r['fall_rate']:.1%} (the table below)", *([] if r["video"] is None else [f"video: {r['video']}"])]


def _describe_side_by_side(r: dict) -> list[str]:
    ref = r["reference"]
    return [f"world-model error {r['world_model_relative_l1']:.3f} (relative L1 over {r['horizon_steps']} steps; "
            f"{ref['what']}: {ref['relative_l1']:.3f} over {ref['predicted_steps']})",
            f"plots: {r['plots']['trajectories']}",
            *([] if r["side_by_side_video"] is None else [f"video: {r['side_by_side_video']}"])]


SIMULATOR_CHECK = Stage("simulator_check", "simulator check", check_simulator, _describe_check)
PRETRAIN = Stage("pretrain", "Pretrain", pretrain,
                 _describe_training("pretrain_run", "pretrain_iterations", lambda r: r["wall_clock_s"]["pretrain"]))
FINETUNE = Stage("finetune", "Finetune", finetune,
                 _describe_training("finetune_run", "finetune_iterations", lambda r: r["wall_clock_s"]["finetune"]))
TRAIN_INIT = Stage("train", "PPO", train_init, _describe_training("run_dir", "iterations", lambda r: r["wall_clock_s"]))
EVALUATE = Stage("evaluate", "real simulator", evaluate_in_simulator, _describe_evaluation)
SIDE_BY_SIDE = Stage("side_by_side", "side by side", side_by_side, _describe_side_by_side)

# --pipeline -> (the key of its results in the JSON line, the stages after the simulator check)
PIPELINES: dict[str, tuple[str, tuple[Stage, ...]]] = {
    "mbpo": ("mbpo", (PRETRAIN, FINETUNE, EVALUATE, SIDE_BY_SIDE)),
    "init": ("trained", (TRAIN_INIT, EVALUATE)),
}


def demo_stages(args: argparse.Namespace) -> tuple[Stage, ...]:
    """The simulator check, then the pipeline's stages unless its training is skipped (0 iterations)."""
    iterations = args.pretrain_iterations if args.pipeline == "mbpo" else args.train_iterations
    return (SIMULATOR_CHECK, *(PIPELINES[args.pipeline][1] if iterations > 0 else ()))


# ----------------------------------------------------------------------------- the verdict
def walk_verdict(tracking: float, fall_rate: float, standing_tracking: float) -> tuple[str, str]:
    """(verdict, why) for a policy's linear-velocity tracking and fall rate, against a standing robot's
    tracking and PPO's: "walks", "does not walk", "moves but does not track its commands" or
    "tracks its commands but falls"."""
    ppo = PPO_REFERENCE["tracking_lin_vel"]
    walking = WALKING_SHARE_OF_PPO * ppo
    if tracking <= standing_tracking:
        return "does not walk", (f"it tracks its commands ({tracking:.3f}) no better than a robot standing still "
                                 f"({standing_tracking:.3f})")
    if tracking < walking:
        return "moves but does not track its commands", (
            f"its tracking {tracking:.3f} is above a standing robot's {standing_tracking:.3f} but below {walking:.3f} "
            f"({WALKING_SHARE_OF_PPO:.0%} of PPO's {ppo:.3f})")
    if fall_rate > WALKING_MAX_FALL_RATE:
        return "tracks its commands but falls", (f"it tracks {tracking:.3f} ({tracking / ppo:.0%} of PPO's), but "
                                                 f"{fall_rate:.1%} of the robots fell (walking: at most "
                                                 f"{WALKING_MAX_FALL_RATE:.0%})")
    return "walks", (f"it tracks {tracking:.3f} ({tracking / ppo:.0%} of PPO's {ppo:.3f}) and {fall_rate:.1%} of the "
                     f"robots fell (walking: at least {walking:.3f} and at most {WALKING_MAX_FALL_RATE:.0%})")


def reference_table(evaluation: dict[str, Any]) -> list[str]:
    """The policy's numbers beside a standing robot's and PPO's, as console lines."""
    policy, standing = evaluation["policy"], evaluation["standing_robot"]
    rows = [("linear-velocity tracking", "tracking_lin_vel", "{:.3f}"), ("yaw-rate tracking", "tracking_ang_vel",
                                                                         "{:.3f}"),
            ("fall rate", "fall_rate", "{:.1%}")]
    lines = [f"the trained policy in the real simulator, {policy['num_envs']} robots x {policy['seconds']:g} s "
             "(noise and pushes off; tracking 1 is perfect):",
             f"  {'':<26}{'this demo':>11}{'standing robot':>16}{'PPO, full run':>15}"]
    for label, key, form in rows:
        # a standing robot's own falls come from the scripted controller, not from standing: not a reference
        still = "-" if key == "fall_rate" else form.format(standing[key])
        lines.append(f"  {label:<26}{form.format(policy[key]):>11}{still:>16}{form.format(PPO_REFERENCE[key]):>15}")
    ppo, mbpo = PPO_REFERENCE, MBPO_REFERENCE
    lines += [f"PPO, full run: {ppo['what']} ({ppo['source']})",
              f"a full MBPO run ({mbpo['what']}): tracking {mbpo['tracking_lin_vel']:.3f}, fall rate "
              f"{mbpo['fall_rate']:.1%} ({mbpo['source']})"]
    return lines


# ----------------------------------------------------------------------------- the demo
def run_demo(args: argparse.Namespace) -> int:
    """Run the stages in order, each result into its file; a Ctrl-C ends the demo after saving what was done.

    Returns the exit code: 0, or 130 when interrupted (the stages after the interrupted one do not run).
    """
    cfg = check_config(args)  # bad task ids and overrides fail before anything is written
    demo = DemoRun(args, cfg, new_demo_directory(cfg))
    stages = demo_stages(args)
    done: list[dict[str, Any]] = []
    interrupted_by = None
    for k, stage in enumerate(stages, 1):
        demo.label = f"{k}/{len(stages)} {stage.title}"
        entry = {"stage": demo.label, "status": "done", "file": None}
        done.append(entry)
        try:
            result = stage.run(demo)
        except KeyboardInterrupt:
            entry["status"], interrupted_by = "interrupted by Ctrl-C (no result)", "Ctrl-C"
            break
        demo.results[stage.name] = result
        entry["file"] = str(save_json(demo.directory / f"{k}_{stage.name}.json", result))
        if result.get("stopped_by"):  # the training saved a checkpoint at the signal and returned
            interrupted_by = "Ctrl-C" if result["stopped_by"] == "SIGINT" else result["stopped_by"]
            entry["status"] = f"interrupted by {interrupted_by} (checkpoint saved)"
            break
    not_run = [f"{k}/{len(stages)} {stage.title}" for k, stage in enumerate(stages, 1) if k > len(done)]
    evaluation = demo.results.get(EVALUATE.name)
    summary = {"pipeline": args.pipeline, "directory": str(demo.directory),
               "interrupted": None if interrupted_by is None else {"by": interrupted_by, "stage": demo.label},
               "stages": done + [{"stage": label, "status": "not run", "file": None} for label in not_run],
               "verdict": None if evaluation is None else evaluation["verdict"],
               "references": {"ppo": PPO_REFERENCE, "mbpo": MBPO_REFERENCE, "world_model": WORLD_MODEL_REFERENCE,
                              "walking": {"share_of_ppo_tracking": WALKING_SHARE_OF_PPO,
                                          "max_fall_rate": WALKING_MAX_FALL_RATE}}}
    path = save_json(demo.directory / "summary.json", summary)
    if interrupted_by is not None:
        later = f"{', '.join(not_run)} not run" if not_run else "it was the last stage"
        print(f"[rwm demo] interrupted by {interrupted_by} during {demo.label}: {later}; what was done is in {path}",
              flush=True)
        return 130
    print_summary(stages, demo, done, path)
    report = dict(demo.results[SIMULATOR_CHECK.name])
    pipeline = {}
    for stage in stages[1:]:
        for key, value in demo.results[stage.name].items():  # the stages' wall-clock times side by side
            both_dicts = isinstance(value, dict) and isinstance(pipeline.get(key), dict)
            pipeline[key] = {**pipeline[key], **value} if both_dicts else value
    if pipeline:
        report[PIPELINES[args.pipeline][0]] = pipeline
    print(json.dumps({**report, "summary": str(path), "verdict": summary["verdict"], "interrupted": False}))
    return 0


def new_demo_directory(cfg: TaskCfg) -> Path:
    """A new ``<runner.log_root>/demo/<YYYY-MM-DD_HH-MM-SS>`` directory (the runs stay in their usual place)."""
    from rwm.training.runner import create_run_dir

    return create_run_dir(dataclasses.replace(cfg, experiment_name="demo",
                                              runner=dataclasses.replace(cfg.runner, run_name="")))


def print_summary(stages: tuple[Stage, ...], demo: DemoRun, done: list[dict[str, Any]], path: Path) -> None:
    """Every stage in one line with its result file, then the policy against the references and the verdict."""
    lines = [f"[rwm demo] summary (also in {path}):"]
    for stage, entry in zip(stages, done):
        first, *more = stage.describe(demo.results[stage.name])
        lines += [f"  {entry['stage']}: {first}", *(f"      {line}" for line in more), f"      result: {entry['file']}"]
    if EVALUATE.name in demo.results:
        evaluation = demo.results[EVALUATE.name]
        lines += [f"  {line}" for line in reference_table(evaluation)]
        lines.append(f"[rwm demo] the robot {evaluation['verdict']}: {evaluation['verdict_reason']}")
    print("\n".join(lines), flush=True)
