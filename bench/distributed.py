"""Scaling of multi-process training (`rwm train --distributed`): 1 vs 2 processes on this machine.

Runs the Pretrain loop (PPO in the simulator + world-model updates) under torchrun with
1 and with 2 processes, each process owning the same number of environments (data-parallel,
weak scaling: 2 processes collect twice the data per iteration) and using ONE torch thread and
ONE simulator thread, so that 1 process uses one core and 2 processes use two. It reports

* environment steps/s (all ranks, whole iterations: collection + PPO + world model) and
  collection-only environment steps/s,
* world-model training samples/s (windows per second through WorldModelTrainer.update, all ranks),
* per-phase seconds per iteration (collection, PPO update, world-model update, time inside the
  gradient all-reduces including waiting for the slower rank),
* scaling efficiency = throughput(2 processes) / (2 x throughput(1 process)).

On a 2-core machine the ideal speed-up is at most 2x (efficiency 1.0), and less when other
programs share the cores. A full run also measures 1 process with 2 threads (the best a single
process can do with both cores) for comparison. Prints one JSON object as the last line of
stdout; a full run also writes bench/results/distributed.json.

    python bench/distributed.py            # full: a few minutes on 2 cores
    python bench/distributed.py --quick    # under a minute
    python bench/distributed.py num_envs=512   # config overrides for every process
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
TASK = "Velocity-Flat-Anymal-D-Pretrain-v0"
COMMON = ["runner.console=none", "runner.progress_bar=false", "runner.logger=none",
          "world_model_learning.eval_interval=1000000"]
QUICK = ["num_envs=64", "runner.num_steps_per_env=24", "world_model.history_horizon=8",
         "world_model.forecast_horizon=2", "world_model.rnn_hidden_size=64", "world_model.ensemble_size=2",
         "world_model.num_mini_batches=2", "world_model.mini_batch_size=64", "world_model_learning.replay_capacity=64",
         "world_model_learning.eval_length=12"]
FULL = ["num_envs=512", "runner.num_steps_per_env=24"]


# ----------------------------------------------------------------------------- worker (under torchrun)
def worker(out: Path, overrides: list[str], iterations: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from rwm.training.distributed import DistributedContext
    from rwm.training.modes import build_mode
    from rwm.training.extension import RunnerExtension
    from rwm.training.train import make_runner, resolve_train_config

    with DistributedContext.from_environment("cpu") as ctx:
        cfg, _ = resolve_train_config(TASK, [*COMMON, f"sim.num_threads={threads}", *overrides],
                                      max_iterations=iterations)
        ctx.check_same_config(cfg)
        cfg, env, extensions = build_mode(ctx.rank_config(cfg), torch.device("cpu"))
        reduce_s = [0.0]
        all_reduce = ctx.all_reduce_gradients

        def timed_all_reduce(params) -> None:
            start = time.perf_counter()
            all_reduce(params)
            reduce_s[0] += time.perf_counter() - start

        ctx.all_reduce_gradients = timed_all_reduce  # PPO's and the world model's hooks call it
        trainer = extensions[0].trainer
        update, wm_s = trainer.update, []

        def timed_update(sampler):
            start = time.perf_counter()
            result = update(sampler)
            wm_s.append(time.perf_counter() - start)
            return result

        trainer.update = timed_update
        runner = make_runner(cfg, env=env, log_dir=None, extensions=extensions, distributed=ctx)
        per_iteration, reduce_marks = [], []

        class Mark(RunnerExtension):  # the all-reduce seconds so far, after each iteration
            def after_update(self, runner, iteration):
                reduce_marks.append(reduce_s[0])
                return {}

        runner.extensions.append(Mark())
        summary = runner.learn()
        for i, row in enumerate(runner.history):
            per_iteration.append({"collection_s": row["Perf/collection time"], "learning_s": row["Perf/learning_time"],
                                  "all_reduce_s": reduce_marks[i] - (reduce_marks[i - 1] if i else 0.0)})
        stats = {"rank": ctx.rank, "iterations": per_iteration, "world_model_update_s": wm_s,
                 "wall_clock_s": summary["wall_clock_s"]}
        gathered = ctx.all_gather_object(stats)
        if ctx.is_main:
            learner_cfg = cfg.world_model
            out.write_text(json.dumps({"world_size": ctx.world_size, "ranks": gathered, "num_envs": cfg.num_envs,
                                       "num_steps_per_env": cfg.runner.num_steps_per_env,
                                       "wm_samples_per_update": learner_cfg.num_mini_batches
                                       * learner_cfg.mini_batch_size}))


# ----------------------------------------------------------------------------- driver
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, threads: int, overrides: list[str], iterations: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                   "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(Path(__file__).resolve()),
                   "--worker", str(out), "--iterations", str(iterations), "--threads", str(threads), *overrides]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"torchrun with {processes} processes failed:\n{done.stderr[-3000:]}")
        raw = json.loads(out.read_text())
    raw["launch_wall_clock_s"] = time.perf_counter() - start
    return summarize(raw)


def summarize(raw: dict, skip: int = 1) -> dict:
    """Throughputs from the iterations after the first `skip` (warm-up) ones, as rank 0 measured them."""
    k = raw["world_size"]
    rank0 = raw["ranks"][0]
    rows = rank0["iterations"][skip:]
    wm = rank0["world_model_update_s"]
    wm = wm[skip:] if len(wm) > skip else wm
    steps = k * raw["num_envs"] * raw["num_steps_per_env"]
    collection = statistics.fmean(r["collection_s"] for r in rows)
    learning = statistics.fmean(r["learning_s"] for r in rows)
    wm_s = statistics.fmean(wm) if wm else float("nan")
    per_rank_collection = [round(statistics.fmean(r["collection_s"] for r in rank["iterations"][skip:]), 4)
                           for rank in raw["ranks"]]
    return {
        "processes": k,
        "env_steps_per_s": round(steps / (collection + learning), 1),
        "collection_env_steps_per_s": round(steps / collection, 1),
        "world_model_samples_per_s": round(k * raw["wm_samples_per_update"] / wm_s, 1),
        "seconds_per_iteration": {"collection": round(collection, 4), "ppo_update": round(learning - wm_s, 4),
                                  "world_model_update": round(wm_s, 4),
                                  "gradient_all_reduce": round(statistics.fmean(r["all_reduce_s"] for r in rows), 4)},
        "collection_s_per_rank": per_rank_collection,
        "env_steps_per_iteration": steps,
        "measured_iterations": len(rows),
        "launch_wall_clock_s": round(raw["launch_wall_clock_s"], 1),
    }


def bottleneck(one: dict, two: dict) -> str:
    """The phase whose time per iteration grew the most from 1 to 2 processes (ideal: unchanged)."""
    a, b = one["seconds_per_iteration"], two["seconds_per_iteration"]
    growth = {"collection (environment stepping: the cores are shared)": b["collection"] - a["collection"],
              "PPO update": b["ppo_update"] - a["ppo_update"],
              "world-model update": b["world_model_update"] - a["world_model_update"]}
    name = max(growth, key=growth.get)
    comm = b["gradient_all_reduce"]
    return (f"{name}: +{growth[name]:.3f} s per iteration with 2 processes; time inside the gradient all-reduces "
            f"(incl. waiting for the slower rank) {comm:.3f} s per iteration")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 4 iterations (under a minute)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per launch (first is warm-up)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every process")
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker), args.overrides, args.iterations, args.threads)
        return

    from common import emit

    iterations = args.iterations or (4 if args.quick else 12)
    load = os.getloadavg()[0]
    overrides = [*(QUICK if args.quick else FULL), *args.overrides]
    one = launch(1, 1, overrides, iterations)
    two = launch(2, 1, overrides, iterations)
    result = {
        "task": TASK,
        "overrides": overrides,
        "iterations_per_launch": iterations,
        "threads_per_process": 1,
        "one_process": one,
        "two_processes": two,
        "speedup_env_steps": round(two["env_steps_per_s"] / one["env_steps_per_s"], 3),
        "speedup_world_model_samples": round(two["world_model_samples_per_s"] / one["world_model_samples_per_s"], 3),
        "scaling_efficiency_env_steps": round(two["env_steps_per_s"] / (2 * one["env_steps_per_s"]), 3),
        "scaling_efficiency_world_model": round(
            two["world_model_samples_per_s"] / (2 * one["world_model_samples_per_s"]), 3),
        "ideal_speedup": min(2, os.cpu_count() or 1),
        "note": f"{os.cpu_count()} CPU cores: the ideal speed-up of 2 processes is at most 2x (efficiency 1.0), "
                "and less when other programs share the cores (load average at start "
                f"{load:.2f}).",
        "bottleneck": bottleneck(one, two),
    }
    if not args.quick:
        result["one_process_two_threads"] = launch(1, 2, overrides, iterations)
    emit("distributed", result, quick=args.quick)


if __name__ == "__main__":
    main()
