"""Changed robots: the nominal Init PPO policy on the nominal robot and on every robot-variant preset.

For each robot (nominal, then every preset of rwm.sim.robot_variant.PRESETS, selected as
`sim.robot_variant=NAME`) the latest checkpoint of the Init PPO run `--ppo-run` (bench/ppo_init.py
trains one) is measured as `rwm play` measures it: `--eval-envs` robots (default 512) x 20 s under
each evaluation seed (default 1 2 3), observation noise and pushes off; tracking is the mean over
the seeds, falls are summed over them.
The policy suffers on a preset when its linear-velocity tracking falls by at least 15 % of the
nominal robot's or at least 20 % of the robots fall: a changed robot worth adapting to.

Prints one JSON object as the last line: per robot (`robots`) its changes, tracking_lin_vel,
tracking_ang_vel, fall_rate, falls, robots, tracking_vs_nominal and suffers; `suffering` lists
the presets the policy suffers on. A full run also writes bench/results/robot_variants.json.

    python bench/robot_variants.py --ppo-run logs/anymal_d_flat/<run>   # 18 evaluations of 512 x 20 s
    python bench/robot_variants.py --quick     # a freshly initialised tiny policy, 4 robots x 1 s: seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, measure  # noqa: E402

from rwm.config import apply_overrides  # noqa: E402
from rwm.envs.mdp.observations import POLICY_OBS_DIM  # noqa: E402
from rwm.sim.robot_variant import PRESETS  # noqa: E402
from rwm.sim.state import NUM_JOINTS  # noqa: E402
from rwm.tasks import make_task_cfg  # noqa: E402
from rwm.training.checkpoint import find_checkpoint  # noqa: E402
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.runner import build_actor_critic  # noqa: E402

TRACKING_DROP = 0.15  # the policy suffers when its tracking falls by this share of the nominal robot's ...
FALL_RATE = 0.20  # ... or when this share of the robots fall


def tiny_policy():
    """(config, act) of a freshly initialised small Init policy: the --quick stand-in for a trained one."""
    cfg = apply_overrides(make_task_cfg("Velocity-Flat-Anymal-D-Init-v0"),
                          ["policy.actor_hidden_dims=[16]", "policy.critic_hidden_dims=[16]"])
    return cfg, build_actor_critic(cfg, POLICY_OBS_DIM, NUM_JOINTS).eval().act_inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fresh tiny policy, 4 robots x 1 s, seed 1")
    parser.add_argument("--ppo-run", type=Path, default=None, metavar="DIR",
                        help="the Init PPO run whose latest checkpoint is measured (required unless --quick)")
    parser.add_argument("--eval-envs", type=int, default=512, help="robots per evaluation seed (default 512)")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="evaluation seeds; tracking is averaged and falls are summed over them (default 1 2 3)")
    args = parser.parse_args()
    if args.eval_envs < 1:
        parser.error(f"--eval-envs {args.eval_envs}: expected at least 1 robot.")

    start = time.perf_counter()
    if args.quick:
        cfg, act = tiny_policy()
        source = {"ppo_run": None, "checkpoint": None, "iteration": None}
        num_envs, seconds, seeds = 4, 1.0, [1]
    else:
        if args.ppo_run is None:
            parser.error("--ppo-run DIR is required unless --quick: the Init PPO run to measure.")
        checkpoint = find_checkpoint(args.ppo_run)
        policy, cfg, payload = policy_from_checkpoint(checkpoint)
        act = policy.act_inference
        source = {"ppo_run": str(args.ppo_run), "checkpoint": str(checkpoint), "iteration": payload["iter"]}
        num_envs, seconds, seeds = args.eval_envs, 20.0, args.eval_seeds

    robots = {}
    for name, changes in PRESETS.items():
        variant_cfg = apply_overrides(cfg, [f"sim.robot_variant={name}"])
        robots[name] = {"changes": changes, **measure(variant_cfg, act, num_envs, seconds, seeds)}
        print(f"[robot_variants] {name}: tracking {robots[name]['tracking_lin_vel']:.3f}, "
              f"fall rate {robots[name]['fall_rate']:.3f}", flush=True)
    nominal = robots["nominal"]["tracking_lin_vel"]
    for result in robots.values():
        result["tracking_vs_nominal"] = round(result["tracking_lin_vel"] / nominal, 4) if nominal > 0 else None
        result["suffers"] = bool(result["fall_rate"] >= FALL_RATE or (
            result["tracking_vs_nominal"] is not None and result["tracking_vs_nominal"] <= 1.0 - TRACKING_DROP))

    emit("robot_variants", {
        **source,
        "eval_envs": num_envs, "eval_seconds": seconds, "eval_seeds": seeds,
        "criterion": {"tracking_drop": TRACKING_DROP, "fall_rate": FALL_RATE},
        "robots": robots,
        "suffering": [name for name, result in robots.items() if result["suffers"]],
        "wall_clock_s": round(time.perf_counter() - start, 1),
    }, args.quick)


if __name__ == "__main__":
    main()
