"""Imagination gap: how a world model rates policies against how they do in the real simulator.

A policy trained only in a learned model can exploit the model's errors: it scores well in
imagination and falls in reality. For each policy checkpoint given, this measures, side by side:

imagined   the policy (deterministic) drives `--num-envs` robots in the Offline task's imagination
           on `--world-model` for `--steps` control steps, episodes starting from windows of the
           dataset's training episodes (the Offline split), observation noise off: linear-velocity
           tracking as `rwm play` defines it, falls per robot-minute, and the epistemic
           uncertainty per step (median and 90th percentile; the RWM-U penalty's input);
real       the same policy under `rwm play`'s conditions (`--real-envs` robots x `--real-seconds`,
           evaluation seed 1): tracking and fall rate; on the robot of its run's config, or on
           `--preset` (a `sim.robot_variant`) for every policy, e.g. a changed robot and a world
           model adapted to it.

A model that would keep an offline policy honest rates the real walkers (Init PPO, Finetune) at
least as high as the policies that fall, and gives the latter a higher epistemic uncertainty.

Prints one JSON object as the last line: per policy, imagined and real tracking, their gap,
imagined falls per robot-minute, real fall rate and the epistemic quantiles. `--quick` uses 64
robots, 50 imagined steps and 5 real seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from rwm.config import apply_overrides  # noqa: E402
from rwm.sim.robot_variant import PRESETS  # noqa: E402
from rwm.tasks import make_task_cfg  # noqa: E402
from rwm.training.checkpoint import find_checkpoint  # noqa: E402
from rwm.training.evaluation import TRACKING_SIGMA_SQ, evaluate_policy  # noqa: E402
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.offline import build_offline  # noqa: E402

OFFLINE = "Velocity-Flat-Anymal-D-Offline-v0"


def imagination_env(world_model: Path, dataset: Path, num_envs: int, seed: int = 0):
    """The Offline task's imagination on `world_model`, starting from `dataset` windows; noise off."""
    cfg = apply_overrides(make_task_cfg(OFFLINE), [
        f"offline.dataset={dataset}", f"offline.world_model_checkpoint={world_model}", "offline.fit_updates=0",
        f"num_envs={num_envs}", f"seed={seed}", "env.noise.enabled=false"])
    _, env, _ = build_offline(cfg, torch.device("cpu"))
    env.sim.model.eval()
    return env


@torch.inference_mode()
def imagined(env, policy, steps: int) -> dict:
    """Tracking, falls per robot-minute and epistemic quantiles of `policy` over `steps` imagined steps."""
    env.reset()
    obs = env.get_observations()["policy"]
    tracking = torch.zeros((), dtype=torch.float64)
    falls = 0
    epistemic = []
    for _ in range(steps):
        command = env.command_manager.command.clone()  # (N, 3) in effect during this step
        obs_dict, _, dones, extras = env.step(policy(obs))
        obs = obs_dict["policy"]
        lin_sq = torch.sum(torch.square(command[:, :2] - env.sim.state.base_lin_vel[:, :2]), dim=1)
        tracking += torch.exp(-lin_sq / TRACKING_SIGMA_SQ).sum()
        falls += int((dones & ~extras["time_outs"]).sum())
        epistemic.append(env.sim.uncertainty.clone())
    per_step = torch.stack(epistemic).flatten()  # (steps * N,)
    quantiles = torch.quantile(per_step[:: max(1, per_step.numel() // 100_000)], torch.tensor([0.5, 0.9]))
    minutes = env.num_envs * steps * env.step_dt / 60.0
    return {"tracking_lin_vel": float(tracking) / (env.num_envs * steps), "falls_per_robot_minute": falls / minutes,
            "epistemic_median": float(quantiles[0]), "epistemic_p90": float(quantiles[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", type=Path, required=True,
                        help="run directory or checkpoint holding the world model (e.g. an Offline run)")
    parser.add_argument("--dataset", type=Path, required=True, help="rwm dataset whose windows start imagination")
    parser.add_argument("--policies", type=Path, nargs="+", required=True,
                        help="run directories or checkpoints holding the policies to compare")
    parser.add_argument("--num-envs", type=int, default=None, help="imagined robots (default 512; quick 64)")
    parser.add_argument("--steps", type=int, default=None, help="imagined control steps (default 256; quick 50)")
    parser.add_argument("--real-envs", type=int, default=None, help="real robots (default 512; quick 64)")
    parser.add_argument("--real-seconds", type=float, default=None, help="real seconds (default 20; quick 5)")
    parser.add_argument("--preset", default=None, choices=list(PRESETS),
                        help="sim.robot_variant every policy is measured on in the real simulator (default: "
                             "each policy's own run config)")
    parser.add_argument("--result-name", default="imagination_gap",
                        help="bench/results/<name>.json of a full run (default imagination_gap)")
    parser.add_argument("--quick", action="store_true", help="64 robots, 50 imagined steps, 5 real seconds")
    args = parser.parse_args()
    num_envs = args.num_envs or (64 if args.quick else 512)
    steps = args.steps or (50 if args.quick else 256)
    real_envs = args.real_envs or (64 if args.quick else 512)
    real_seconds = args.real_seconds or (5.0 if args.quick else 20.0)
    for name, value in (("--num-envs", num_envs), ("--steps", steps), ("--real-envs", real_envs)):
        if value < 1:
            parser.error(f"{name} = {value}; expected a positive integer.")

    world_model = find_checkpoint(args.world_model)
    env = imagination_env(world_model, args.dataset, num_envs)
    rows = []
    for path in args.policies:
        checkpoint = find_checkpoint(path)
        policy, cfg, _ = policy_from_checkpoint(checkpoint)
        if args.preset is not None:
            cfg = apply_overrides(cfg, [f"sim.robot_variant={args.preset}"])
        dream = imagined(env, policy.act_inference, steps)
        real = evaluate_policy(cfg, policy.act_inference, num_envs=real_envs, seconds=real_seconds, seed=1,
                               progress=False)
        row = {"policy": str(checkpoint), "task": cfg.task_id, "real_robot": cfg.sim.robot_variant,
               "imagined": dream,
               "real": {"tracking_lin_vel": real["tracking_lin_vel"], "fall_rate": real["fall_rate"]},
               "tracking_gap": dream["tracking_lin_vel"] - real["tracking_lin_vel"]}
        rows.append(row)
        print(f"[imagination_gap] {checkpoint}: imagined tracking {dream['tracking_lin_vel']:.3f}, real "
              f"{real['tracking_lin_vel']:.3f} (falls {real['fall_rate']:.2f}); epistemic median "
              f"{dream['epistemic_median']:.3f}", flush=True)
    emit(args.result_name, {"world_model": str(world_model), "dataset": str(args.dataset), "preset": args.preset,
                             "num_envs": num_envs, "steps": steps, "real_envs": real_envs,
                             "real_seconds": real_seconds, "policies": rows}, args.quick)


if __name__ == "__main__":
    main()
