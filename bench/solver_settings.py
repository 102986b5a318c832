"""MuJoCo solver settings: speed against contact stability, to justify the simulator's defaults.

For each setting, N robots hold the default pose (StandingPolicy) for 4 s, then take random
actions for 4 s. Reported: control steps/s (random phase), and while standing after 1 s of
settling: share of foot-steps in contact, foot-contact flicker (share of foot-steps whose flag
changed), base-height jitter (mean per-robot std, mm), falls; in the random phase, falls and
simulations MuJoCo rejected. Last line: JSON {"results": [...]}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from rwm.config import apply_overrides  # noqa: E402
from rwm.envs.scripted_policies import RandomPolicy, StandingPolicy  # noqa: E402
from rwm.tasks import make_env, make_task_cfg  # noqa: E402

SETTINGS = [
    ("implicitfast", "pyramidal", 4),
    ("implicitfast", "pyramidal", 1),
    ("implicitfast", "pyramidal", 2),
    ("implicitfast", "pyramidal", 10),
    ("implicitfast", "elliptic", 4),
    ("euler", "pyramidal", 4),
]


def measure(integrator: str, cone: str, iterations: int, num_envs: int, seconds: float) -> dict:
    cfg = make_task_cfg("Velocity-Flat-Anymal-D-Init-v0")
    cfg.num_envs = num_envs
    cfg = apply_overrides(cfg, [f"sim.solver.integrator={integrator}", f"sim.solver.cone={cone}",
                                f"sim.solver.iterations={iterations}", "sim.randomization.push=false",
                                "sim.randomization.base_vel=[0,0]", "sim.randomization.joint_pos_scale=[1,1]"])
    env = make_env(cfg)
    steps = round(seconds / env.step_dt)
    settle = round(1.0 / env.step_dt)
    standing = StandingPolicy(num_envs, dt=env.step_dt)
    obs = env.get_observations()["policy"]
    contacts, heights, falls_standing = [], [], 0
    with torch.inference_mode():
        for step in range(steps):
            observations, _, dones, extras = env.step(standing(obs))
            obs = observations["policy"]
            falls_standing += int((dones & ~extras["time_outs"]).sum())
            if step >= settle:
                contacts.append(env.state.foot_contact.numpy().copy())
                heights.append(env.sim.base_pos_w[:, 2])
        contacts, heights = np.array(contacts), np.array(heights)
        random = RandomPolicy(num_envs, scale=1.0)
        falls_random = 0
        start = time.perf_counter()
        for _ in range(steps):
            observations, _, dones, extras = env.step(random(obs))
            obs = observations["policy"]
            falls_random += int((dones & ~extras["time_outs"]).sum())
        rate = steps * num_envs / (time.perf_counter() - start)
    return {
        "integrator": integrator, "cone": cone, "iterations": iterations,
        "control_steps_per_s": round(rate),
        "standing_foot_contact_share": round(float(contacts.mean()), 4),
        "standing_contact_flicker": round(float((np.diff(contacts, axis=0) != 0).mean()), 5),
        "standing_height_jitter_mm": round(float(heights.std(axis=0).mean() * 1000), 3),
        "standing_falls": falls_standing,
        "random_falls_per_env_min": round(falls_random / num_envs / (seconds / 60), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 robots, 2 s per phase, three settings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = SETTINGS[:3] if args.quick else SETTINGS
    num_envs, seconds = (256, 2.0) if args.quick else (1024, 4.0)
    results = []
    for setting in settings:
        row = measure(*setting, num_envs=num_envs, seconds=seconds)
        results.append(row)
        print(row, flush=True)
    emit("solver_settings", {"num_envs": num_envs, "seconds_per_phase": seconds, "results": results}, args.quick)


if __name__ == "__main__":
    main()
