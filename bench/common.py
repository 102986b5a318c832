"""Helpers shared by the benchmarks: machine facts and the JSON result convention."""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import time
from pathlib import Path
from statistics import NormalDist

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import mujoco
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "mujoco": mujoco.__version__, "processor": platform.processor()}


def emit(name: str, result: dict, quick: bool) -> None:
    """Print the result as the last line of stdout; a full run is also written to bench/results/<name>.json."""
    result = {"benchmark": name, "quick": quick, "machine": machine(), **result}
    if not quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Best seconds per call over ``repeats`` calls after ``warmup`` untimed ones.

    The best, not the median: on a shared machine the fastest call is the one least disturbed
    by other work, and disturbance only ever adds time.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(device: torch.device, n: int = 4096, repeats: int = 3) -> float:
    """The machine's large float32 matmul rate: the ceiling the model's GFLOP/s are compared with."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    seconds = min(timed(lambda: a @ b, device, 1) for _ in range(repeats))
    return 2 * n**3 / seconds / 1e9


def observe_flops_per_row(model, rows: int = 8) -> int:
    """Floating-point operations of one imagination step (observe, T = 1, one member per row) per row.

    Counted by torch's FlopCounterMode on a CPU copy of `model` after a warm-up on its history.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).to("cpu").eval()
    S, A, M = model.state_dim, model.action_dim, model.history_horizon
    with torch.no_grad():
        model.reset()
        model.observe(torch.randn(rows, M, S), torch.randn(rows, M, A))
        with FlopCounterMode(display=False) as counter:
            model.observe(torch.randn(rows, 1, S), torch.randn(rows, 1, A),
                          model_ids=torch.zeros(rows, dtype=torch.long))
    return counter.get_total_flops() // rows


def last_metrics(run_dir: str | os.PathLike) -> dict:
    """The last iteration's record in a run's metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().strip().splitlines()
    return json.loads(lines[-1])


def run_wall_clock(run_dir: str | os.PathLike) -> float:
    """Training seconds a finished run took: the last `elapsed_s` of its metrics.jsonl."""
    return round(float(last_metrics(run_dir)["elapsed_s"]), 1)


def add_ppo_run_argument(parser) -> None:
    parser.add_argument("--ppo-run", type=Path, default=None,
                        help="Init PPO run to compare with (default: the latest logs/anymal_d_flat/*_bench, "
                             "i.e. bench/ppo_init.py's)")


def evaluate_ppo_reference(ppo_run: Path | None, num_envs: int,
                           seconds: float) -> tuple[Path | None, dict | None, int | None]:
    """(run, `rwm play` metrics, env steps) of the Init PPO policy the model-based results are compared with.

    `ppo_run` None takes the latest bench/ppo_init.py run; (None, None, None) when there is none.
    """
    from rwm.training.checkpoint import find_checkpoint
    from rwm.training.evaluation import evaluate_policy
    from rwm.training.export import policy_from_checkpoint

    ppo_run = ppo_run or next(iter(sorted(Path("logs").glob("anymal_d_flat/*_bench"), reverse=True)), None)
    if ppo_run is None:
        return None, None, None
    policy, cfg, payload = policy_from_checkpoint(find_checkpoint(ppo_run))
    metrics = evaluate_policy(cfg, policy.act_inference, num_envs=num_envs, seconds=seconds, progress=False)
    return ppo_run, metrics, int(payload["infos"]["env_steps"])


def measure(cfg, act, num_envs: int, seconds: float, seeds: list[int]) -> dict:
    """`rwm play`'s tracking (mean, and per seed) and falls (summed) of one policy under each evaluation seed's robots."""
    from rwm.training.evaluation import evaluate_policy

    measured = [evaluate_policy(cfg, act, num_envs=num_envs, seconds=seconds, seed=seed, progress=False)
                for seed in seeds]
    falls = sum(round(m["fall_rate"] * num_envs) for m in measured)
    return {"tracking_lin_vel": round(sum(m["tracking_lin_vel"] for m in measured) / len(seeds), 4),
            "tracking_ang_vel": round(sum(m["tracking_ang_vel"] for m in measured) / len(seeds), 4),
            "fall_rate": round(falls / (num_envs * len(seeds)), 4), "falls": falls, "robots": num_envs * len(seeds),
            "tracking_per_eval_seed": [round(m["tracking_lin_vel"], 4) for m in measured]}


def fall_rate_difference(falls: int, robots: int, falls_other: int, robots_other: int) -> dict:
    """Two-proportion z-test of `falls_other / robots_other` against `falls / robots` (pooled variance).

    Every robot counts as one independent trial; `z` > 0 when the other rate is the higher one,
    `p_value` is two-sided.
    """
    pooled = (falls + falls_other) / (robots + robots_other)
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / robots + 1.0 / robots_other))
    z = (falls_other / robots_other - falls / robots) / spread if spread > 0 else 0.0
    return {"z": round(z, 2), "p_value": round(2.0 * (1.0 - NormalDist().cdf(abs(z))), 4)}
