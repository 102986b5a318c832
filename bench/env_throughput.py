"""Control steps per second of LocomotionEnv vs the raw batched physics of the same model.

Both sides step N ANYmal-D robots with random joint targets through the same MuJoCo batch call
(`Batch.rollout` of `decimation` substeps, recording the contact sensors); "raw" does nothing
else, the env adds the task: read-out to torch, commands, observations with noise, rewards,
terminations, resets and pushes. Prints {"results": [{num_envs, env_steps_per_s, raw_steps_per_s,
ratio}, ...]} as the last line; `--quick` measures N = 1024 only.
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

from rwm.envs.scripted_policies import RandomPolicy  # noqa: E402
from rwm.sim.mujoco import MujocoSimCfg, load_model  # noqa: E402
from rwm.sim.state import DEFAULT_JOINT_POS  # noqa: E402
from rwm.tasks import make_env, make_task_cfg  # noqa: E402
from mujoco import batch as mj_batch  # noqa: E402


def raw_rate(num_envs: int, steps: int, cfg: MujocoSimCfg) -> float:
    model = load_model(cfg)
    batch = mj_batch.Batch(model, num_envs, nthread=cfg.num_threads)
    batch.reset(keyframe=np.zeros(num_envs, np.int32))
    ctrl = batch.bind("ctrl")
    record = {"sensordata": np.zeros((num_envs, cfg.decimation, model.nsensordata))}
    rng = np.random.default_rng(0)
    default = np.asarray(DEFAULT_JOINT_POS)

    def step() -> None:
        ctrl[:] = default + cfg.action_scale * rng.uniform(-1, 1, (num_envs, 12))
        batch.rollout(cfg.decimation, record=("sensordata",), out=record)

    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * num_envs / (time.perf_counter() - start)


def env_rate(num_envs: int, steps: int) -> float:
    cfg = make_task_cfg("Velocity-Flat-Anymal-D-Init-v0")
    cfg.num_envs = num_envs
    env = make_env(cfg)
    policy = RandomPolicy(num_envs, scale=1.0)
    obs = env.get_observations()["policy"]
    with torch.inference_mode():
        for _ in range(10):
            obs = env.step(policy(obs))[0]["policy"]
        start = time.perf_counter()
        for _ in range(steps):
            obs = env.step(policy(obs))[0]["policy"]
    return steps * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 1024 only, short runs (< 1 minute)")
    parser.add_argument("--seconds", type=float, default=None, help="target seconds per measurement")
    args = parser.parse_args()
    sizes = [1024] if args.quick else [64, 256, 1024, 4096]
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    torch.set_num_threads(1)  # the task's tensors are small; MuJoCo's pool gets the cores
    results = []
    for num_envs in sizes:
        steps = max(20, int(seconds * 25_000 / num_envs))
        # interleave the two measurements twice so machine noise hits both alike
        raw = max(raw_rate(num_envs, steps // 2, MujocoSimCfg()) for _ in range(2))
        env = max(env_rate(num_envs, steps // 2) for _ in range(2))
        results.append({"num_envs": num_envs, "env_steps_per_s": round(env), "raw_steps_per_s": round(raw),
                        "ratio": round(env / raw, 3)})
        print(f"N={num_envs:5d}: env {env:9,.0f} steps/s | raw {raw:9,.0f} steps/s | ratio {env / raw:.3f}",
              flush=True)
    emit("env_throughput", {"results": results}, args.quick)


if __name__ == "__main__":
    main()
