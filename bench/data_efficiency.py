"""Data efficiency: a walking policy from nothing with a small, counted real-data budget, against PPO.

Stages, each timed:
  model-based  per training seed (`--seeds`), `rwm train --task Velocity-Flat-Anymal-D-Finetune-v0`
               with no run or world model to load: an untrained world model and a random policy;
               a few real robots run the current policy and feed the model, the policy learns only
               in imagination (or `--runs DIR ...` reuses finished runs, one per seed)
  ppo          the Init PPO reference, trained here with a checkpoint every `--ppo-save-interval`
               iterations so its tracking can be read at any budget (or `--ppo-run DIR`)
  evaluate     as `rwm play` (512 robots x 20 s, `--eval-seeds` 1 2 3): each run's LAST checkpoint
               and PPO's last one; PPO's checkpoint with the most real transitions within each
               run's budget (`ppo_tracking_at_same_budget`); and, for the curves, a few earlier
               checkpoints of both under the first evaluation seed
  plot         real tracking against real transitions (log x), both methods, each run's budget
               marked: bench/results/data_efficiency.png (or <name>.png)

Counting, both read from the run's last checkpoint: `real_transitions` is every real simulator step
that learning used (the initial random steps and every iteration's real robots); `real_eval_transitions`
the real steps of the in-run progress evaluations (`finetune.real_eval_interval`), which never
reach the model, the policy or the choice of checkpoint.

Prints one JSON object as the last line: real_transitions, real_eval_transitions,
tracking_ratio_vs_ppo, fall_rate, wall_clock_s, ppo_tracking_at_same_budget (means over the seeds),
seeds (per-seed figures), machine.
`--quick` runs the same path at tiny sizes in under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, emit, fall_rate_difference, measure, run_wall_clock  # noqa: E402

from rwm.training.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.train import resolve_train_config, train  # noqa: E402

FINETUNE = "Velocity-Flat-Anymal-D-Finetune-v0"
INIT = "Velocity-Flat-Anymal-D-Init-v0"
QUICK_FINETUNE = ["runner.num_steps_per_env=8", "runner.save_interval=1", "world_model.ensemble_size=2",
                  "world_model.rnn_num_layers=1", "world_model.rnn_hidden_size=32", "world_model.history_horizon=4",
                  "world_model.forecast_horizon=2", "world_model.mini_batch_size=16",
                  "world_model_learning.replay_capacity=128", "world_model_learning.eval_length=12",
                  "finetune.num_real_envs=4", "finetune.initial_real_steps=24", "finetune.real_eval_interval=2",
                  "finetune.real_eval_num_envs=4", "finetune.real_eval_seconds=0.5"]
QUICK_PPO = ["runner.num_steps_per_env=8", "runner.save_interval=1"]


def spread(checkpoints: list[Path], points: int) -> list[Path]:
    """About `points` checkpoints spread over the run (the last one left out: it is measured apart)."""
    earlier = checkpoints[:-1]
    if len(earlier) <= points:
        return earlier
    if points == 1:
        return earlier[-1:]
    return [earlier[round(i * (len(earlier) - 1) / (points - 1))] for i in range(points)]


def measure_checkpoint(path: Path, envs: int, seconds: float, seeds: list[int]) -> dict:
    policy, cfg, payload = policy_from_checkpoint(path)
    return {"iteration": int(payload["iter"]), **measure(cfg, policy.act_inference, envs, seconds, seeds)}


def model_based_run(seed: int, overrides: list[str], quick: bool) -> Path:
    cfg, _ = resolve_train_config(FINETUNE, ["runner.console=line", f"seed={seed}",
                                             *(QUICK_FINETUNE if quick else []), *overrides],
                                  run_name=f"bench_scratch_s{seed}", num_envs=16 if quick else None,
                                  max_iterations=3 if quick else None)
    runner, _ = train(cfg)
    return runner.log_dir


def ppo_run(save_interval: int, quick: bool) -> Path:
    cfg, _ = resolve_train_config(INIT, ["runner.console=line", f"runner.save_interval={save_interval}",
                                         *(QUICK_PPO if quick else [])], run_name="bench_ppo_curve",
                                  num_envs=16 if quick else None, max_iterations=3 if quick else None)
    runner, _ = train(cfg)
    return runner.log_dir


def ppo_transitions(path: Path) -> int:
    return int(load_checkpoint(path)["infos"]["env_steps"])


def plot(path: Path, runs: list[dict], ppo_curve: list[tuple[int, float]], ppo_final: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    xs, ys = zip(*sorted(ppo_curve))
    ax.plot(xs, ys, "o-", color="tab:gray", label="PPO in the real simulator (Init)")
    for i, run in enumerate(runs):
        color = f"C{i}"
        curve = sorted((point["real_transitions"], point["tracking_lin_vel"]) for point in run["curve"])
        ax.plot(*zip(*curve), "s-", color=color, label=f"world model, from scratch (seed {run['seed']})")
        ax.axvline(run["real_transitions"], color=color, linestyle=":", linewidth=1)
    ax.axhline(0.9 * ppo_final["tracking_lin_vel"], color="tab:gray", linestyle="--", linewidth=1,
               label="0.9 x PPO's final tracking")
    ax.set_xscale("log")
    ax.set_xlabel("real transitions used for learning (dotted: each run's budget)")
    ax.set_ylabel("linear-velocity tracking (rwm play)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Real data needed to learn to walk (512 robots x 20 s per point)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, under a minute")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--runs", type=Path, nargs="+", default=None,
                        help="finished from-scratch Finetune runs to measure instead of training (one per seed)")
    parser.add_argument("--overrides", nargs="*", default=[], help="KEY=VALUE overrides of the model-based runs")
    parser.add_argument("--ppo-run", type=Path, default=None, help="Init PPO run with checkpoints (default: train one)")
    parser.add_argument("--ppo-save-interval", type=int, default=5,
                        help="checkpoint interval of the PPO run trained here (default 5: 123 k transitions)")
    parser.add_argument("--eval-envs", type=int, default=512, help="robots per evaluation (default 512)")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1, 2, 3], help="evaluation seeds (default 1 2 3)")
    parser.add_argument("--curve-points", type=int, default=5, help="earlier checkpoints per curve (default 5)")
    parser.add_argument("--result-name", default="data_efficiency", help="bench/results/<name>.json and .png")
    args = parser.parse_args()
    quick = args.quick
    envs, seconds = (8, 1.0) if quick else (args.eval_envs, 20.0)
    eval_seeds = args.eval_seeds[:1] if quick else args.eval_seeds
    walls: dict[str, float] = {}

    start = time.perf_counter()
    run_dirs = args.runs or [model_based_run(seed, args.overrides, quick) for seed in args.seeds]
    walls["model_based"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    ppo_dir = args.ppo_run or ppo_run(args.ppo_save_interval, quick)
    walls["ppo"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    ppo_checkpoints = list_checkpoints(ppo_dir)
    ppo_final = {"real_transitions": ppo_transitions(ppo_checkpoints[-1]),
                 **measure_checkpoint(ppo_checkpoints[-1], envs, seconds, eval_seeds)}
    runs = []
    for run_dir in run_dirs:
        checkpoints = list_checkpoints(run_dir)
        payload = load_checkpoint(checkpoints[-1])
        final = measure_checkpoint(checkpoints[-1], envs, seconds, eval_seeds)
        budget = int(payload["finetune_real_transitions"])
        within = [path for path in ppo_checkpoints if ppo_transitions(path) <= budget] or ppo_checkpoints[:1]
        ppo_same = {"real_transitions": ppo_transitions(within[-1]),
                    **measure_checkpoint(within[-1], envs, seconds, eval_seeds)}
        curve = [{"real_transitions": int(load_checkpoint(path)["finetune_real_transitions"]),
                  **measure_checkpoint(path, envs, seconds, eval_seeds[:1])}
                 for path in spread(checkpoints, args.curve_points)]
        curve.append({"real_transitions": budget, **final})
        _, cfg, _ = policy_from_checkpoint(checkpoints[-1])
        runs.append({
            "seed": cfg.seed, "run": str(run_dir), "iterations": int(payload["iter"]),
            "real_transitions": budget, "real_eval_transitions": int(payload["finetune_real_eval_transitions"]),
            "tracking_lin_vel": final["tracking_lin_vel"],
            "tracking_ratio_vs_ppo": round(final["tracking_lin_vel"] / ppo_final["tracking_lin_vel"], 4),
            "fall_rate": final["fall_rate"], "falls": final["falls"], "robots": final["robots"],
            "wall_clock_s": run_wall_clock(run_dir),
            "ppo_tracking_at_same_budget": ppo_same["tracking_lin_vel"], "ppo_at_same_budget": ppo_same,
            "curve": curve,
        })
    ppo_curve = [(ppo_transitions(path), measure_checkpoint(path, envs, seconds, eval_seeds[:1])["tracking_lin_vel"])
                 for path in spread(ppo_checkpoints, 2 * args.curve_points)]
    ppo_curve.append((ppo_final["real_transitions"], ppo_final["tracking_lin_vel"]))
    walls["evaluate"] = round(time.perf_counter() - start, 1)

    image = RESULTS / f"{args.result_name}.png" if not quick else Path(f"/tmp/{args.result_name}_quick.png")
    RESULTS.mkdir(exist_ok=True)
    plot(image, runs, ppo_curve, ppo_final)

    def mean(key: str) -> float:
        return round(sum(run[key] for run in runs) / len(runs), 4)

    falls, robots = sum(run["falls"] for run in runs), sum(run["robots"] for run in runs)
    emit(args.result_name, {
        "real_transitions": max(run["real_transitions"] for run in runs),
        "real_eval_transitions": max(run["real_eval_transitions"] for run in runs),
        "tracking_ratio_vs_ppo": mean("tracking_ratio_vs_ppo"),
        "fall_rate": round(falls / robots, 4),
        "wall_clock_s": max(run["wall_clock_s"] for run in runs),
        "ppo_tracking_at_same_budget": mean("ppo_tracking_at_same_budget"),
        "ppo_tracking": ppo_final["tracking_lin_vel"],
        "ppo_real_transitions": ppo_final["real_transitions"],
        "fall_rate_vs_ppo": fall_rate_difference(ppo_final["falls"], ppo_final["robots"], falls, robots),
        "seeds": runs,
        "ppo": {"run": str(ppo_dir), "final": ppo_final, "curve": [list(point) for point in sorted(ppo_curve)],
                "wall_clock_s": run_wall_clock(ppo_dir)},
        "evaluation": {"num_envs": envs, "seconds": seconds, "seeds": eval_seeds},
        "overrides": list(args.overrides),
        "stage_wall_clock_s": walls,
        "plot": str(image),
    }, quick)


if __name__ == "__main__":
    main()
