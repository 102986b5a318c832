"""Train the Init policy at CPU scale with the runner, then measure it like `rwm play`.

Training uses the task's CPU-scale defaults (1024 environments x 24 steps x 600 iterations,
see rwm.tasks.anymal_d_flat) through `rwm.training.train`, in-process, writing a normal run
directory under logs/. The trained policy is then evaluated deterministically in fresh
environments (>= 100 environments x 20 s, observation noise and pushes off, as `rwm play`).

Prints one JSON object as the last line of stdout: tracking_lin_vel, tracking_ang_vel,
fall_rate, wall_clock_s (training + evaluation), env_steps (training), collection_s_per_iter,
learning_s_per_iter, and more. The acceptance target is tracking_lin_vel >= 0.80 and
fall_rate <= 0.05 within about 20 minutes on 2 cores. A full run also writes
bench/results/ppo_init.json; `--quick` is a seconds-long smoke run of the same path.

    python bench/ppo_init.py            # full: about a quarter of an hour on 2 cores
    python bench/ppo_init.py --quick    # under a minute
    python bench/ppo_init.py runner.max_iterations=400   # any config override
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

import torch  # noqa: E402

from rwm.training.evaluation import evaluate_policy  # noqa: E402
from rwm.training.train import resolve_train_config, train  # noqa: E402

TARGETS = {"tracking_lin_vel": 0.80, "fall_rate": 0.05}
QUICK = ["num_envs=64", "runner.max_iterations=5", "runner.save_interval=5"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (64 envs x 5 iterations, 100 envs x 5 s eval)")
    parser.add_argument("--eval-envs", type=int, default=None, help="evaluation environments (default 128; >= 100)")
    parser.add_argument("--eval-seconds", type=float, default=None, help="evaluation seconds (default 20)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    args = parser.parse_args()

    overrides = ["runner.console=line", *(QUICK if args.quick else []), *args.overrides]
    cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Init-v0", overrides,
                                  run_name="bench_quick" if args.quick else "bench")
    eval_envs = args.eval_envs or (100 if args.quick else max(100, cfg.runner.eval.num_envs))
    eval_seconds = args.eval_seconds or (5.0 if args.quick else cfg.runner.eval.seconds)

    start = time.perf_counter()
    runner, summary = train(cfg)
    train_s = time.perf_counter() - start
    metrics = evaluate_policy(cfg, runner.get_inference_policy(), num_envs=eval_envs, seconds=eval_seconds,
                              progress=False)
    wall = time.perf_counter() - start

    result = {
        "tracking_lin_vel": round(metrics["tracking_lin_vel"], 4),
        "tracking_ang_vel": round(metrics["tracking_ang_vel"], 4),
        "fall_rate": round(metrics["fall_rate"], 4),
        "wall_clock_s": round(wall, 1),
        "env_steps": summary["env_steps"],
        "collection_s_per_iter": round(summary["collection_s_per_iter"], 4),
        "learning_s_per_iter": round(summary["learning_s_per_iter"], 4),
        "train_wall_clock_s": round(train_s, 1),
        "eval_wall_clock_s": round(metrics["eval_wall_clock_s"], 1),
        "iterations": summary["iterations"],
        "num_envs": cfg.num_envs,
        "num_steps_per_env": cfg.runner.num_steps_per_env,
        "lin_vel_error": round(metrics["lin_vel_error"], 4),
        "ang_vel_error": round(metrics["ang_vel_error"], 4),
        "falls_per_env_minute": round(metrics["falls_per_env_minute"], 4),
        "mean_episode_length_s": metrics["mean_episode_length_s"],
        "eval_num_envs": metrics["num_envs"],
        "eval_seconds": metrics["seconds"],
        "eval_observation_noise": metrics["observation_noise"],
        "eval_pushes": metrics["pushes"],
        "targets": TARGETS,
        "meets_targets": metrics["tracking_lin_vel"] >= TARGETS["tracking_lin_vel"]
        and metrics["fall_rate"] <= TARGETS["fall_rate"],
        "stopped_by": summary["stopped_by"],
        "run_dir": summary["log_dir"],
        "torch_threads": torch.get_num_threads(),
        "overrides": args.overrides,
    }
    emit("ppo_init", result, quick=args.quick)


if __name__ == "__main__":
    main()
