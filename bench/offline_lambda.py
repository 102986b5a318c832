"""Offline RWM-U acceptance: a policy learned only in a world model fitted on a recorded dataset.

Stages, each timed:
  fit + policy   `rwm train --task Velocity-Flat-Anymal-D-Offline-v0 --dataset FILE` with the default
                 penalty (lambda = 1, i.e. env.reward_weights.uncertainty = -1); it fits the E = 5
                 ensemble on the dataset, then trains PPO in its imagination
  sweep          the other penalty weights, each a fresh policy on that same fitted world model
                 (offline.world_model_checkpoint = the first run's checkpoint, so no refit);
                 lambda 1 and lambda 0 with every training seed (`--seeds`), the others with the first
  evaluate       every policy, and the Init PPO policy (`--ppo-run`), in the real simulator as
                 `rwm play` measures it (512 robots x 20 s); the lambda 1 and lambda 0 policies under
                 every evaluation seed (`--eval-seeds`, each a fresh set of robots and commands), so
                 their fall rates are compared over all seeds' robots (two-proportion z-test)
  clone alone    the runs' starting policy (cloned from the dataset's best episodes, as Offline
                 does when the dataset has policy observations and rewards) without any PPO, in
                 the real simulator: what PPO in the world model added to it or took from it
  calibration    on held-out episodes of the dataset (the Offline run's own validation split),
                 per window of history + 200 predicted steps: mean epistemic uncertainty against
                 the autoregressive relative L1 error, and their Pearson correlation

The dataset the committed result used (mixed, 1.0 M transitions) came from the Init PPO run's
checkpoints: `rwm dataset record-mixed --run <Init run> --steps 1000000 --stochastic --out mixed.h5`
(Init task: observation noise and pushes on; random actions, then checkpoints 100, 250, 400 and
600, actions sampled from each policy's Gaussian); it ran with the default weights and seeds and
the overrides runner.max_iterations=300 and offline.world_model_checkpoint=<a model fitted on that
dataset>. A training seed other than the first also draws its own train / validation split of the
episodes (and so its own cloned episodes); the loaded model was fitted on the first seed's split.

Prints one JSON object as the last line: tracking_ratio_vs_ppo, tracking_ratio_vs_ppo_no_penalty,
fall_rate, fall_rate_no_penalty, no_penalty_comparison, uncertainty_error_correlation,
dataset_transitions, sweep, behavior_cloning_only.
`--quick` records a tiny random dataset and runs the same path at tiny sizes in under a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_ppo_run_argument,
    emit,
    evaluate_ppo_reference,
    fall_rate_difference,
    last_metrics,
    measure,
    run_wall_clock,
)

from rwm.data import DatasetReader  # noqa: E402
from rwm.training.checkpoint import find_checkpoint, list_checkpoints  # noqa: E402
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.offline import best_episode_pairs, clone_policy, episodes_buffer, split_episodes  # noqa: E402
from rwm.training.runner import build_actor_critic  # noqa: E402
from rwm.training.train import resolve_train_config, train  # noqa: E402
from rwm.training.world_model_learning import load_world_model_file  # noqa: E402
from rwm.world_model.evaluation import autoregressive_rollout, uncertainty_error_correlation  # noqa: E402

TASK = "Velocity-Flat-Anymal-D-Offline-v0"
QUICK = ["runner.num_steps_per_env=8", "runner.save_interval=2", "world_model.ensemble_size=2",
         "world_model.rnn_num_layers=1", "world_model.rnn_hidden_size=32", "world_model.history_horizon=4",
         "world_model.forecast_horizon=2", "world_model.mini_batch_size=16", "world_model.num_mini_batches=1",
         "world_model_learning.eval_length=12", "world_model_learning.eval_num_windows=4", "offline.fit_updates=4",
         "offline.behavior_cloning_updates=20"]


def record_quick_dataset(out: Path) -> None:
    from rwm.data.record import record_dataset
    from rwm.envs.scripted_policies import RandomPolicy
    from rwm.tasks import make_task_cfg

    cfg = make_task_cfg("Velocity-Flat-Anymal-D-Init-v0")
    cfg.num_envs = 8
    record_dataset(cfg, RandomPolicy(8, "cpu", scale=0.3, seed=0), out, steps=8 * 60,
                   source={"kind": "random", "scale": 0.3, "seed": 0}, progress=False)


def calibration(cfg, checkpoint: Path, dataset: Path, predicted_steps: int, num_windows: int) -> dict:
    """Epistemic uncertainty vs autoregressive error on the Offline run's validation episodes."""
    model = load_world_model_file(checkpoint, "cpu")
    history = model.history_horizon
    with DatasetReader(dataset) as reader:
        _, validation = split_episodes(reader.num_episodes, cfg.offline.validation_fraction, cfg.seed)
        buffer = episodes_buffer(reader, validation, "cpu")
    length = history + predicted_steps
    while buffer.num_valid_windows(length) == 0 and length > history + 1:  # short episodes (quick runs)
        length -= 1
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    batch = buffer.sample(num_windows, length, generator)
    result = uncertainty_error_correlation(autoregressive_rollout(model, batch, history))
    return {"uncertainty_error_correlation": None if result["pearson"] is None else round(result["pearson"], 4),
            "windows": num_windows, "predicted_steps": length - history,
            "mean_epistemic": round(sum(result["epistemic"]) / num_windows, 4),
            "mean_relative_l1": round(sum(result["error"]) / num_windows, 4)}


def behavior_cloning_only(cfg, dataset: Path, num_envs: int, seconds: float, seeds: list[int]) -> dict | None:
    """The Offline runs' starting policy, cloned from the dataset as they clone it, in the real simulator
    (None when the runs did not clone): what PPO in the world model added to, or took from, it."""
    off = cfg.offline
    with DatasetReader(dataset) as reader:
        updates = off.resolved_behavior_cloning_updates(reader.columns)
        if updates == 0:
            return None
        train_eps, _ = split_episodes(reader.num_episodes, off.validation_fraction, cfg.seed)
        pairs = best_episode_pairs(reader, train_eps, off.behavior_cloning_top_share)
    observations, actions, episodes = pairs
    torch.manual_seed(cfg.seed)
    policy = build_actor_critic(cfg, observations.shape[1], actions.shape[1])
    stats = clone_policy(policy, pairs, updates, cfg.seed)
    policy.eval()
    return {**measure(cfg, policy.act_inference, num_envs, seconds, seeds),
            "updates": updates, "episodes": episodes, "pairs": int(observations.shape[0]),
            "action_error": round(stats["loss_final"], 4), "action_std": round(stats["std_mean"], 4)}


def trained_run(lam: float, seed: int, dataset: Path | None) -> Path | None:
    """The latest `bench_offline_l<lam>_s<seed>` run with a checkpoint, trained with penalty weight -lam and
    `seed` (on `dataset`).

    A run stopped early (Ctrl-C / SIGTERM write a checkpoint) counts; its iterations are reported.
    """
    for run in sorted(Path("logs").glob(f"anymal_d_flat/*_{run_name(lam, seed)}"), reverse=True):
        checkpoints = list_checkpoints(run)
        if not checkpoints:
            continue
        _, cfg, _ = policy_from_checkpoint(checkpoints[-1])
        same_data = dataset is None or Path(cfg.offline.dataset).resolve() == dataset.resolve()
        if cfg.env.reward_weights["uncertainty"] == -lam and cfg.seed == seed and same_data:
            return run
    return None


def run_name(lam: float, seed: int) -> str:
    return f"bench_offline_l{lam:g}_s{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny dataset and sizes, under a minute")
    parser.add_argument("--dataset", type=Path, default=None, help="rwm dataset file (HDF5); required unless --quick")
    add_ppo_run_argument(parser)
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.0, 0.5, 2.0, 5.0],
                        help="penalty weights lambda (reward weight -lambda); the first one fits the world model")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds of the lambda 1 and lambda 0 policies (default 0 1 2; --quick: 0); "
                             "the other weights train once, with the first seed")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=None,
                        help="evaluation seeds each lambda 1 and lambda 0 policy is measured under, each a fresh "
                             "set of robots (default 1 2 3; --quick: 1); every other policy takes the first")
    parser.add_argument("--overrides", nargs="*", default=[], help="KEY=VALUE overrides for every Offline run")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the latest logs/anymal_d_flat/*_bench_offline_l<lambda>_s<seed> runs "
                             "instead of training (each trained as this script would: `rwm train --seed "
                             "<seed> --run-name bench_offline_l<lambda>_s<seed>`; the first weight's first "
                             "run fits the model the others load)")
    args = parser.parse_args()
    quick = args.quick
    if not quick and args.dataset is None:
        parser.error("--dataset FILE is required (see the recipe above), or pass --quick")
    if 1.0 not in args.weights or 0.0 not in args.weights:
        parser.error("--weights must include 1 (the default penalty) and 0 (no penalty)")
    seeds = args.seeds or ([0] if quick else [0, 1, 2])
    eval_seeds = args.eval_seeds or ([1] if quick else [1, 2, 3])
    scratch = tempfile.TemporaryDirectory()
    dataset = args.dataset
    if dataset is None:
        dataset = Path(scratch.name) / "quick.h5"
        record_quick_dataset(dataset)
    with DatasetReader(dataset) as reader:
        transitions = int(reader.num_records - reader.num_episodes)

    eval_envs, eval_seconds = (8, 2.0) if quick else (512, 20.0)
    sweep, walls, fitted, first_cfg = [], {}, None, None
    for lam in args.weights:
        compared = lam in (0.0, 1.0)  # the acceptance pair: every seed, every evaluation seed
        policies = []
        for seed in seeds if compared else seeds[:1]:
            start = time.perf_counter()
            reused = trained_run(lam, seed, None if quick else dataset) if args.reuse else None
            if args.reuse and reused is None:
                parser.error(f"--reuse: no logs/anymal_d_flat/*_{run_name(lam, seed)} run with penalty weight "
                             f"{-lam:g} and seed {seed} on {dataset}")
            if reused is not None:
                checkpoint = find_checkpoint(reused)
                policy, cfg, payload = policy_from_checkpoint(checkpoint)
                act, run_dir, iterations = policy.act_inference, reused, int(payload["iter"])
                train_s = run_wall_clock(reused)
            else:
                overrides = ["runner.console=line", "runner.progress_bar=false", f"offline.dataset={dataset}",
                             f"env.reward_weights.uncertainty={-lam}",
                             *([f"offline.world_model_checkpoint={fitted}"] if fitted else []),
                             *(QUICK if quick else []), *args.overrides]
                cfg, _ = resolve_train_config(TASK, overrides, run_name=run_name(lam, seed), seed=seed,
                                              num_envs=16 if quick else None, max_iterations=2 if quick else None)
                runner, summary = train(cfg)
                cfg, act, run_dir = runner.cfg, runner.get_inference_policy(), runner.log_dir
                iterations = summary["iterations"]
                checkpoint, train_s = find_checkpoint(run_dir), time.perf_counter() - start
            if fitted is None:
                fitted, first_cfg = checkpoint, cfg
            start = time.perf_counter()
            metrics = measure(cfg, act, eval_envs, eval_seconds, eval_seeds if compared else eval_seeds[:1])
            walls[f"lambda_{lam:g}_seed_{seed}"] = {"train": round(train_s, 1),
                                                    "evaluate": round(time.perf_counter() - start, 1)}
            last = last_metrics(run_dir)  # the imagined episodes at the end of training
            policies.append({
                "seed": seed, "run": str(run_dir), "iterations": iterations, **metrics,
                # None when no imagined episode ended (--quick's two short iterations)
                "imagined_episode_length": (round(last["Train/mean_episode_length"], 1)
                                            if "Train/mean_episode_length" in last else None),
                "imagined_epistemic": round(last["Imagination/epistemic_uncertainty"], 3),
                "imagined_uncertainty_reward": round(last.get("Episode_Reward/uncertainty", 0.0), 4)})
            print(f"[offline_lambda] lambda {lam:g} seed {seed}: tracking {policies[-1]['tracking_lin_vel']:.3f}, "
                  f"falls {metrics['falls']} of {metrics['robots']}", flush=True)
        falls, robots = sum(p["falls"] for p in policies), sum(p["robots"] for p in policies)
        sweep.append({"lambda": lam,
                      "tracking_lin_vel": round(sum(p["tracking_lin_vel"] for p in policies) / len(policies), 4),
                      "tracking_ang_vel": round(sum(p["tracking_ang_vel"] for p in policies) / len(policies), 4),
                      "fall_rate": round(falls / robots, 4), "falls": falls, "robots": robots, "policies": policies})

    start = time.perf_counter()
    ppo_run, ppo, _ = evaluate_ppo_reference(args.ppo_run, eval_envs, eval_seconds)
    walls["evaluate_ppo"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    cloned = behavior_cloning_only(first_cfg, dataset, eval_envs, eval_seconds, eval_seeds)
    walls["behavior_cloning_only"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    calib = calibration(first_cfg, fitted, dataset, predicted_steps=20 if quick else 200,
                        num_windows=8 if quick else 200)
    walls["calibration"] = round(time.perf_counter() - start, 1)
    scratch.cleanup()

    by_lambda = {entry["lambda"]: entry for entry in sweep}
    ppo_tracking = None if ppo is None else ppo["tracking_lin_vel"]

    def ratio(entry: dict) -> float | None:
        return None if ppo_tracking is None else round(entry["tracking_lin_vel"] / ppo_tracking, 4)

    for entry in [*sweep, *([cloned] if cloned else [])]:
        entry["tracking_ratio_vs_ppo"] = ratio(entry)
    penalised, unpenalised = by_lambda[1.0], by_lambda[0.0]
    emit("offline", {
        "tracking_ratio_vs_ppo": penalised["tracking_ratio_vs_ppo"],
        "tracking_ratio_vs_ppo_no_penalty": unpenalised["tracking_ratio_vs_ppo"],
        "fall_rate": penalised["fall_rate"],
        "fall_rate_no_penalty": unpenalised["fall_rate"],
        # does lambda 0 fall more often than lambda 1? all seeds' robots pooled
        "no_penalty_comparison": {
            "falls": penalised["falls"], "robots": penalised["robots"],
            "falls_no_penalty": unpenalised["falls"], "robots_no_penalty": unpenalised["robots"],
            **fall_rate_difference(penalised["falls"], penalised["robots"],
                                   unpenalised["falls"], unpenalised["robots"]),
            "seeds_with_more_falls": sum(a["falls"] > b["falls"] for a, b in
                                         zip(unpenalised["policies"], penalised["policies"])),
            "seeds": len(seeds)},
        "uncertainty_error_correlation": calib["uncertainty_error_correlation"],
        "calibration": calib,
        "dataset_transitions": transitions,
        "dataset": str(args.dataset) if args.dataset else "quick (random, generated)",
        "ppo_tracking_lin_vel": None if ppo_tracking is None else round(ppo_tracking, 4),
        "ppo_run": None if ppo_run is None else str(ppo_run),
        "sweep": sweep,
        "behavior_cloning_only": cloned,
        "evaluation": {"num_envs": eval_envs, "seconds": eval_seconds, "seeds": eval_seeds,
                       "training_seeds": seeds},
        "wall_clock_s": walls,
    }, quick)


if __name__ == "__main__":
    main()
