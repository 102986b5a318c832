"""The `rwm` command line: list, demo, train, play, export."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rwm.config import ConfigError, apply_overrides


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not >= 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not > 0")
    return value


def cmd_list(args: argparse.Namespace) -> int:
    from rwm.tasks import describe, task_ids

    width = max(len(task_id) for task_id in task_ids())
    for task_id in task_ids():
        print(f"{task_id:<{width}}  {describe(task_id)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Runs the simulator with a standing, then a random policy, and reports what it measured."""
    import torch
    from tqdm import tqdm

    from rwm.envs.scripted_policies import RandomPolicy, StandingPolicy
    from rwm.tasks import make_env, make_task_cfg

    cfg = make_task_cfg(args.task)
    cfg.num_envs, cfg.seed, cfg.device = args.num_envs, args.seed, args.device
    cfg = apply_overrides(cfg, args.overrides)
    print(f"[rwm demo] {cfg.task_id}: {cfg.num_envs} environments on {cfg.device}, seed {cfg.seed}")
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
    print(json.dumps(report))
    return 0


def _print_json_line(report: dict) -> None:
    print(json.dumps(report))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a policy (new run or --resume); Ctrl-C / SIGTERM save a checkpoint and exit 0."""
    from rwm.training.runner import resolve_train_config, train

    overrides = list(args.overrides)
    if args.quiet:
        overrides += ["runner.console=none", "runner.progress_bar=false"]
    cfg, checkpoint = resolve_train_config(args.task, overrides, num_envs=args.num_envs,
                                           max_iterations=args.max_iterations, seed=args.seed, device=args.device,
                                           run_name=args.run_name, resume=args.resume)
    where = f"resuming {checkpoint}" if checkpoint else f"new run under {cfg.runner.log_root}/{cfg.experiment_name}"
    print(f"[rwm train] {cfg.task_id} ({cfg.scale} scale): {cfg.num_envs} environments x "
          f"{cfg.runner.num_steps_per_env} steps, {cfg.runner.max_iterations} iterations on {cfg.device}, "
          f"seed {cfg.seed}; {where}", flush=True)
    runner, summary = train(cfg, resume_from=checkpoint)
    status = f"stopped by {summary['stopped_by']}" if summary["stopped_by"] else "finished"
    print(f"[rwm train] {status} after iteration {summary['iterations']}; run directory {summary['log_dir']}; "
          f"checkpoint {summary['last_checkpoint']}")
    _print_json_line({"task": cfg.task_id, **summary})
    return 0


def _checkpoint_path(args: argparse.Namespace):
    from rwm.training.checkpoint import find_checkpoint

    run = Path(args.run)
    if not run.exists():
        raise FileNotFoundError(f"run directory '{run}' does not exist.")
    return find_checkpoint(run, args.checkpoint)


def cmd_play(args: argparse.Namespace) -> int:
    """Run a trained policy deterministically in the real simulator and report tracking and falls."""
    if args.video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco
    from rwm.training.evaluation import evaluate_policy
    from rwm.training.export import policy_from_checkpoint

    checkpoint = _checkpoint_path(args)
    policy, cfg, payload = policy_from_checkpoint(checkpoint, device=args.device or "cpu")
    run_dir = checkpoint.parent
    video_path = run_dir / "videos" / f"play_{checkpoint.stem}.mp4" if args.video else None
    num_envs = args.num_envs or cfg.runner.eval.num_envs
    seconds = args.seconds or cfg.runner.eval.seconds
    print(f"[rwm play] {checkpoint} (iteration {payload['iter']}): {num_envs} environments x {seconds:g} s, "
          f"observation noise {'on' if cfg.runner.eval.observation_noise else 'off'}, "
          f"pushes {'on' if cfg.runner.eval.pushes else 'off'}", flush=True)
    metrics = evaluate_policy(cfg, policy.act_inference, num_envs=num_envs, seconds=seconds, seed=args.seed,
                              device=args.device, video_path=video_path, progress=not args.quiet)
    report = {"checkpoint": str(checkpoint), "iteration": payload["iter"], "task": cfg.task_id, **metrics}
    out = run_dir / "eval" / f"play_{checkpoint.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    episode = report["mean_episode_length_s"]
    print(f"  tracking: linear {report['tracking_lin_vel']:.3f} (error {report['lin_vel_error']:.3f} m/s) | "
          f"yaw rate {report['tracking_ang_vel']:.3f} (error {report['ang_vel_error']:.3f} rad/s)")
    print(f"  falls: {report['fall_rate']:.1%} of environments ({report['falls']} falls, "
          f"{report['falls_per_env_minute']:.3f} per env-minute) | mean episode length "
          f"{'n/a' if episode is None else f'{episode:.2f} s'}")
    if video_path is not None:
        print(f"  video: {report['video']}")
    print(f"  written to {out}")
    _print_json_line(report)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the deterministic policy (normaliser + actor mean) as ONNX or TorchScript, checked against torch."""
    from rwm.training.export import export_policy, policy_from_checkpoint

    checkpoint = _checkpoint_path(args)
    policy, cfg, payload = policy_from_checkpoint(checkpoint)
    result = export_policy(policy, checkpoint.parent / "exported", args.format)
    print(f"[rwm export] {checkpoint} (iteration {payload['iter']}) -> {result['path']}; max abs difference to "
          f"torch {result['max_abs_diff']:.2e} over {result['checked_samples']} random observations")
    _print_json_line({"checkpoint": str(checkpoint), **result})
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (with a pointer to --help) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rwm",
        description="Robotic World Model: simulate ANYmal D in MuJoCo, learn its dynamics, train policies in imagination.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="print the registered task ids, one per line",
                       description="Print every registered task id with a one-line description.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="run the simulator with scripted policies and print measurements",
                       description="Run the ANYmal-D simulator with a standing policy, then a random one, and "
                                   "print throughput, falls, base height and reward (last line: JSON).")
    p.add_argument("--task", default="Velocity-Flat-Anymal-D-Init-v0", help="task id (see `rwm list`)")
    p.add_argument("--num-envs", type=_positive_int, default=256, help="parallel environments (default 256)")
    p.add_argument("--seconds", type=_positive_float, default=5.0,
                   help="simulated seconds per policy (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for the task tensors: cpu or cuda (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. env.noise.enabled=false sim.randomization.push=false")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a PPO policy in the simulator (or resume a run)",
                       description="Train a velocity-tracking PPO policy in the MuJoCo simulator. A run is written to "
                                   "<runner.log_root>/<experiment_name>/<YYYY-MM-DD_HH-MM-SS>[_<run name>]/ with "
                                   "config.yaml, model_<iter>.pt checkpoints, TensorBoard events and metrics.jsonl. "
                                   "Ctrl-C (or SIGTERM) saves a checkpoint and exits 0. Settings are applied in this "
                                   "order: the task's defaults, scale=cpu|paper, the flags below, then KEY=VALUE "
                                   "overrides. The last line printed is a JSON summary.")
    p.add_argument("--task", default=None,
                   help="task id (see `rwm list`; default Velocity-Flat-Anymal-D-Init-v0, or the resumed run's task)")
    p.add_argument("--num-envs", type=_positive_int, default=None,
                   help="parallel environments (default: the task's, 1024 at CPU scale)")
    p.add_argument("--max-iterations", type=_non_negative_int, default=None,
                   help="total training iterations of the run; a resumed run continues up to this count "
                        "(default: the task's, 600 for Init at CPU scale)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the task's, 0)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda or cuda:<index> (default cpu)")
    p.add_argument("--run-name", default=None, help="suffix of the run directory's name")
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="continue a run from a checkpoint file or a run directory (its latest model_<iter>.pt): "
                        "iteration counter, optimizer and random states carry on, and the run keeps writing into "
                        "the same directory; its stored config is used, with the flags and overrides given here on top")
    p.add_argument("--quiet", action="store_true", help="no per-iteration console summary and no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. scale=paper runner.save_interval=25 policy.obs_normalization=false "
                        "algorithm.entropy_coef=0.01 (put them after the flags)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("play", help="evaluate a trained policy in the simulator (metrics, optional video)",
                       description="Run a run's policy deterministically (its mean action) in fresh simulated "
                                   "environments with observation noise and pushes off, print tracking and fall "
                                   "metrics and write them to <run>/eval/play_<checkpoint>.json (last line: JSON). "
                                   "Tracking is the mean over env-steps of exp(-error^2/0.25) for the planar and the "
                                   "yaw velocity; fall rate is the share of environments that fell at least once.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="the run directory (logs/<experiment>/<time>...)")
    p.add_argument("--checkpoint", default=None, metavar="model_K.pt",
                   help="checkpoint file name inside the run directory (default: the latest)")
    p.add_argument("--num-envs", type=_positive_int, default=None,
                   help="environments to evaluate (default: runner.eval.num_envs, 128)")
    p.add_argument("--seconds", type=_positive_float, default=None,
                   help="simulated seconds (default: runner.eval.seconds, 20 = one full episode)")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: runner.eval.seed, 1)")
    p.add_argument("--device", default=None, help="torch device for the policy and task tensors (default cpu)")
    p.add_argument("--video", action="store_true",
                   help="also render the first environments with the tracking camera into <run>/videos/ (MP4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("export", help="export a trained policy as ONNX or TorchScript",
                       description="Write the deterministic policy (observation normaliser + actor mean) of a run "
                                   "to <run>/exported/policy.onnx (input 'obs' (batch, 48), output 'actions' "
                                   "(batch, 12)) or policy.pt (TorchScript). The export is checked against the torch "
                                   "policy on random observations and fails if they differ by more than 1e-4.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="the run directory")
    p.add_argument("--checkpoint", default=None, metavar="model_K.pt",
                   help="checkpoint file name inside the run directory (default: the latest)")
    p.add_argument("--format", choices=("onnx", "jit"), default="onnx", help="onnx (default) or jit (TorchScript)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"rwm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rwm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
