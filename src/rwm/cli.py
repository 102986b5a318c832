"""The `rwm` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rwm.config import ConfigError, apply_overrides


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
