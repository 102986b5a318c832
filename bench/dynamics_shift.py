"""A changed robot and a small real budget: world-model adaptation against model-free fine-tuning.

The changed robot (`--preset`, a `sim.robot_variant`) stands in for the real one. Every method
starts from the same nominal run (`--nominal-run`: a Pretrain or Finetune run, which holds a world
model and a policy) and may take at most B real transitions from the changed robot:

  rwm         `rwm train --task Velocity-Flat-Anymal-D-Finetune-v0 --load-run NOMINAL
              finetune.load_policy=true sim.robot_variant=PRESET finetune.real_budget=B
              world_model.num_mini_batches=MODEL_MINI_BATCHES`: the nominal world model (the nominal run's, or
              `--world-model FILE`) keeps learning from the changed robot's real robots, the nominal
              policy learns in its imagination; `--rwm-iterations` iterations (100), the budget spent over
              the first `SPEND_SHARE` of them (finetune.num_real_envs chosen so). Imagination rewards the
              Init task's terms with Init's weights (and prices a fall), so that both methods pursue the
              objective the nominal policy was trained for
  model_free  `rwm train --task Velocity-Flat-Anymal-D-Init-v0 --load-run NOMINAL sim.robot_variant=PRESET`:
              PPO continues the nominal policy on `--model-free-envs` changed robots for B real transitions
  oracle      PPO continues the nominal policy on the changed robot with Init's full budget (1024 robots x
              600 iterations, 14.7 M transitions: the upper bound; or `--oracle-runs DIR ...`, one per seed).
              Init PPO from scratch on the weak_motors robot only learns to stand (docs/results.md), so
              the oracle starts where the other methods start
  nominal     the nominal policy unchanged, on the nominal and on the changed robot (the lower bound)

Each result is the run's LAST checkpoint measured as `rwm play` measures it (`--eval-envs` robots x
20 s under each `--eval-seeds` seed) on the changed robot; the measurement is kept beside the
checkpoint and reused by a later invocation. Every budget is trained with each of `--seeds`, but
those in `--one-seed-budgets` with the first only. At `--test-budget` the two methods are
compared: falls with a two-proportion test (robots pooled over seeds), tracking with an exact
permutation test over the (training seed, evaluation seed) means.

Prints one JSON object as the last line: preset, nominal_on_nominal, nominal_on_shifted, oracle,
rwm and model_free (per budget: per-seed tracking, fall_rate, real_transitions, wall_clock_s, and
their means), comparison (at the test budget, with rwm_vs_oracle), comparison_by_budget, machine.
A full run writes bench/results/dynamics_shift.json and the plot bench/results/dynamics_shift.png
(tracking and fall rate against B, log x; oracle and nominal as horizontal lines).

    python bench/dynamics_shift.py --nominal-run logs/anymal_d_flat/<run> [--oracle-runs DIR DIR]
    python bench/dynamics_shift.py --quick   # tiny runs of every stage, under a minute
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, emit, fall_rate_difference, measure, run_wall_clock  # noqa: E402

from rwm.config import apply_overrides  # noqa: E402
from rwm.envs.mdp.rewards import INIT_REWARD_WEIGHTS  # noqa: E402
from rwm.sim.robot_variant import PRESETS  # noqa: E402
from rwm.training.checkpoint import (  # noqa: E402
    checkpoint_iteration, find_checkpoint, list_checkpoints, load_checkpoint)
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.train import resolve_train_config, train  # noqa: E402

FINETUNE = "Velocity-Flat-Anymal-D-Finetune-v0"
INIT = "Velocity-Flat-Anymal-D-Init-v0"
PRETRAIN = "Velocity-Flat-Anymal-D-Pretrain-v0"
STEPS = 24  # real control steps per robot and iteration, in both methods
SPEND_SHARE = 0.8  # rwm spends its budget over this share of its iterations, then learns in imagination alone
# World-model mini-batches (of 256 windows) per adaptation iteration; with Finetune's one, the model
# still misfits the changed robot when the run ends (docs/results.md, changed robots)
MODEL_MINI_BATCHES = 4
QUICK_MODEL = ["world_model.ensemble_size=2", "world_model.rnn_num_layers=1", "world_model.rnn_hidden_size=32",
               "world_model.history_horizon=4", "world_model.forecast_horizon=2", "world_model.mini_batch_size=16",
               "world_model_learning.replay_capacity=128", "world_model_learning.eval_length=12",
               "world_model_learning.eval_interval=2", "world_model_learning.eval_num_windows=4"]


# --quick writes its runs to a temporary folder, not beside the real ones; a full run writes to logs/
RUN_ITEMS: list[str] = []


def finished_run(run_name: str, iterations: int) -> Path | None:
    """The latest run named `run_name` whose last checkpoint is iteration `iterations` (a finished one), if any."""
    log_root = next((item.split("=", 1)[1] for item in RUN_ITEMS if item.startswith("runner.log_root=")), "logs")
    for run_dir in sorted(Path(log_root, "anymal_d_flat").glob(f"*_{run_name}"), reverse=True):
        checkpoints = list_checkpoints(run_dir)
        if checkpoints and checkpoint_iteration(checkpoints[-1]) == iterations:
            return run_dir
    return None


def train_or_reuse(cfg) -> Path:
    """A finished run of this name and length if there is one (a benchmark split over several invocations
    with --train-only), else a new one."""
    found = finished_run(cfg.runner.run_name, cfg.runner.max_iterations)
    if found is not None:
        print(f"[dynamics_shift] reusing the finished run {found}", flush=True)
        return found
    return train(cfg)[0].log_dir


def quick_nominal_run() -> Path:
    """A 2-iteration tiny Pretrain run: the --quick stand-in for a trained nominal run."""
    cfg, _ = resolve_train_config(PRETRAIN, [*RUN_ITEMS, "runner.console=none", "runner.progress_bar=false",
                                             "runner.num_steps_per_env=8", *QUICK_MODEL],
                                  run_name="bench_shift_nominal", num_envs=16, max_iterations=2)
    return train(cfg)[0].log_dir


def rwm_overrides(budget: int, iterations: int, initial_steps: int) -> list[str]:
    """Finetune settings that spend `budget` real transitions over SPEND_SHARE of `iterations`."""
    spend = max(1, int(SPEND_SHARE * iterations))
    robots = max(1, budget // (STEPS * spend + initial_steps))
    return [f"world_model.num_mini_batches={MODEL_MINI_BATCHES}",
            f"finetune.num_real_envs={robots}", f"finetune.real_steps_per_iteration={STEPS}",
            f"finetune.initial_real_steps={initial_steps}", f"finetune.real_budget={budget}"]


# Imagination pursues the Init task: its reward weights, the imagined fall still priced
INIT_OBJECTIVE = [f"env.reward_weights.{term}={weight}" for term, weight in INIT_REWARD_WEIGHTS.items()
                  if term != "termination_penalty"]


def adapt_rwm(nominal: Path, world_model: Path | None, preset: str, budget: int, seed: int, iterations: int,
              quick: bool) -> Path:
    quick_items = ["runner.num_steps_per_env=8", "finetune.real_eval_interval=1000"] if quick else []
    model_items = [f"finetune.world_model_checkpoint={world_model}"] if world_model else []
    cfg, _ = resolve_train_config(FINETUNE, [*RUN_ITEMS, "runner.console=line", "runner.progress_bar=false",
                                             f"finetune.load_run={nominal}", "finetune.load_policy=true",
                                             *model_items, *INIT_OBJECTIVE,
                                             f"sim.robot_variant={preset}", f"seed={seed}", *quick_items,
                                             *rwm_overrides(budget, iterations, 8 if quick else 100)],
                                  run_name=f"bench_shift_rwm_{preset}_{budget}_s{seed}",
                                  num_envs=16 if quick else None, max_iterations=iterations)
    return train_or_reuse(cfg)


def adapt_model_free(nominal: Path, preset: str, budget: int, seed: int, envs: int) -> Path:
    iterations = max(1, budget // (envs * STEPS))
    cfg, _ = resolve_train_config(INIT, [*RUN_ITEMS, "runner.console=line", "runner.progress_bar=false",
                                         f"runner.start_policy={nominal}", f"sim.robot_variant={preset}",
                                         f"seed={seed}", f"runner.num_steps_per_env={STEPS}"],
                                  run_name=f"bench_shift_ppo_{preset}_{budget}_s{seed}", num_envs=envs,
                                  max_iterations=iterations)
    return train_or_reuse(cfg)


def train_oracle(nominal: Path, preset: str, seed: int, quick: bool) -> Path:
    cfg, _ = resolve_train_config(INIT, [*RUN_ITEMS, "runner.console=line", "runner.progress_bar=false",
                                         f"runner.start_policy={nominal}", f"sim.robot_variant={preset}",
                                         f"seed={seed}", *(["runner.num_steps_per_env=8"] if quick else [])],
                                  run_name=f"bench_shift_oracle_adapted_{preset}_s{seed}",
                                  num_envs=16 if quick else None, max_iterations=2 if quick else None)
    return train_or_reuse(cfg)


def real_transitions(checkpoint: Path) -> int:
    """Real simulator steps the run learned from: Finetune counts its own, PPO's are its env steps."""
    payload = load_checkpoint(checkpoint)
    return int(payload.get("finetune_real_transitions", payload["infos"]["env_steps"]))


def measure_on(checkpoint: Path, preset: str, envs: int, seconds: float, seeds: list[int]) -> dict:
    """`rwm play`'s figures of a checkpoint's policy on robot `preset`.

    Written beside the checkpoint and read back by a later invocation, so that a benchmark split over
    several invocations measures each checkpoint once (the measurement is deterministic given its seeds).
    """
    seed_names = "-".join(map(str, seeds))
    saved = checkpoint.with_name(f"{checkpoint.stem}_play_{preset}_{envs}x{seconds:g}s_seeds{seed_names}.json")
    if saved.is_file():
        return json.loads(saved.read_text())
    policy, cfg, _ = policy_from_checkpoint(checkpoint)
    measured = measure(apply_overrides(cfg, [f"sim.robot_variant={preset}"]), policy.act_inference, envs, seconds,
                       seeds)
    saved.write_text(json.dumps(measured))
    return measured


def run_result(run_dir: Path, seed: int, preset: str, envs: int, seconds: float, seeds: list[int]) -> dict:
    checkpoint = find_checkpoint(run_dir)
    measured = measure_on(checkpoint, preset, envs, seconds, seeds)
    return {"seed": seed, "run": str(run_dir), "tracking": measured["tracking_lin_vel"],
            "fall_rate": measured["fall_rate"], "falls": measured["falls"], "robots": measured["robots"],
            "tracking_per_eval_seed": measured["tracking_per_eval_seed"],
            "real_transitions": real_transitions(checkpoint), "wall_clock_s": run_wall_clock(run_dir)}


def summary(runs: list[dict]) -> dict:
    """Per-seed figures and their means (falls pooled over the seeds' robots)."""
    falls, robots = sum(r["falls"] for r in runs), sum(r["robots"] for r in runs)
    return {"tracking": round(statistics.fmean(r["tracking"] for r in runs), 4), "fall_rate": round(falls / robots, 4),
            "falls": falls, "robots": robots, "real_transitions": max(r["real_transitions"] for r in runs),
            "wall_clock_s": round(statistics.fmean(r["wall_clock_s"] for r in runs), 1), "seeds": runs}


def permutation_p_value(a: list[float], b: list[float]) -> float:
    """Two-sided exact permutation test of the difference of means of `a` and `b`."""
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    values, count, extreme = a + b, 0, 0
    for chosen in itertools.combinations(range(len(values)), len(a)):
        group = [values[i] for i in chosen]
        rest = [values[i] for i in range(len(values)) if i not in chosen]
        count += 1
        extreme += abs(statistics.fmean(group) - statistics.fmean(rest)) >= observed - 1e-12
    return round(extreme / count, 4)


def compare(rwm: dict, model_free: dict) -> dict:
    """World-model adaptation against model-free fine-tuning at one budget: falls and tracking tested."""
    tracking = lambda result: [t for run in result["seeds"] for t in run["tracking_per_eval_seed"]]  # noqa: E731
    return {"tracking_rwm": rwm["tracking"], "tracking_model_free": model_free["tracking"],
            "tracking_permutation_p_value": permutation_p_value(tracking(rwm), tracking(model_free)),
            "fall_rate_rwm": rwm["fall_rate"], "fall_rate_model_free": model_free["fall_rate"],
            # z > 0: the world model's robots fall less often
            "falls_two_proportion": fall_rate_difference(rwm["falls"], rwm["robots"],
                                                         model_free["falls"], model_free["robots"])}


def plot(path: Path, preset: str, results: dict, envs: int, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.5))
    oracle, nominal = results["oracle"], results["nominal_on_shifted"]
    measured_budgets = sorted({int(b) for name in ("rwm", "model_free") for b in results[name]})
    for ax, key, nominal_key, label in ((axes[0], "tracking", "tracking_lin_vel", "linear-velocity tracking"),
                                        (axes[1], "fall_rate", "fall_rate", "fall rate")):
        for name, method, color in (("rwm", "world model adapts, policy learns in imagination", "C0"),
                                    ("model_free", "PPO continues on the changed robot", "C1")):
            budgets = sorted(results[name], key=int)
            ax.plot([int(b) for b in budgets], [results[name][b][key] for b in budgets], "o-", color=color,
                    label=method)
            for b in budgets:  # one dot per training seed
                ax.scatter([int(b)] * len(results[name][b]["seeds"]), [r[key] for r in results[name][b]["seeds"]],
                           color=color, s=12, alpha=0.5)
        ax.axhline(oracle[key], color="tab:green", linestyle="--",
                   label=f"oracle: PPO on the changed robot with {oracle['real_transitions'] / 1e6:.1f} M")
        ax.axhline(nominal[nominal_key], color="tab:gray", linestyle=":", label="nominal policy unchanged")
        ax.set_xscale("log")
        ax.set_xticks(measured_budgets, [f"{b / 1000:g} k" for b in measured_budgets])
        ax.minorticks_off()
        ax.set_xlabel("real transitions B from the changed robot")
        ax.set_ylabel(f"{label} (rwm play)")
        if key == "tracking":  # from a tenth below the lowest line, so that the methods' gap is visible
            ax.set_ylim(max(0.0, math.floor(10 * ax.get_ylim()[0] - 0.5) / 10), 1.0)
        else:
            ax.set_ylim(0.0, max(0.1, 1.15 * ax.get_ylim()[1]))
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"Adapting to the '{preset}' robot ({envs} robots x {seconds:g} s, last checkpoints)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny runs of every stage, under a minute")
    parser.add_argument("--nominal-run", type=Path, default=None,
                        help="run on the nominal robot whose policy every method starts from, and whose world model "
                             "rwm adapts unless --world-model (required unless --quick)")
    parser.add_argument("--world-model", type=Path, default=None,
                        help="the nominal world model file, e.g. an Offline run's checkpoint fitted on data recorded "
                             "from the nominal robot (default: --nominal-run's)")
    parser.add_argument("--preset", default="weak_motors", choices=list(PRESETS),
                        help="sim.robot_variant of the changed robot")
    parser.add_argument("--budgets", type=int, nargs="+", default=[50_000, 100_000, 200_000, 500_000],
                        help="real-transition budgets B (default 50k 100k 200k 500k)")
    parser.add_argument("--test-budget", type=int, default=200_000, help="the budget the two methods are tested at")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--one-seed-budgets", type=int, nargs="+", default=[],
                        help="budgets measured with the first of --seeds only, to save time (default: none)")
    parser.add_argument("--rwm-iterations", type=int, default=100,
                        help="iterations of each world-model adaptation (default 100)")
    parser.add_argument("--model-free-envs", type=int, default=128, help="changed robots PPO continues on")
    parser.add_argument("--oracle-runs", type=Path, nargs="+", default=None,
                        help="Init PPO runs on the changed robot, one per oracle seed (default: train them)")
    parser.add_argument("--oracle-seeds", type=int, nargs="+", default=None,
                        help="training seeds of the oracle (default: --seeds)")
    parser.add_argument("--train-only", choices=["rwm", "model_free", "oracle"], default=None,
                        help="only train (or find) this method's runs and stop, to split the benchmark over several "
                             "invocations: a later full invocation reuses every finished run of the same name")
    parser.add_argument("--eval-envs", type=int, default=512, help="robots per evaluation (default 512)")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1, 2, 3], help="evaluation seeds (default 1 2 3)")
    args = parser.parse_args()
    if not args.quick and args.nominal_run is None:
        parser.error("--nominal-run DIR is required unless --quick: the run on the nominal robot to adapt.")
    if args.test_budget in args.one_seed_budgets:
        parser.error(f"--one-seed-budgets names the test budget {args.test_budget}; expected it measured with every "
                     f"one of --seeds.")
    if args.test_budget not in args.budgets:
        parser.error(f"--test-budget {args.test_budget}: expected one of --budgets {args.budgets}.")
    oracle_seeds = args.oracle_seeds or args.seeds
    if args.oracle_runs is not None and len(args.oracle_runs) != len(oracle_seeds):
        parser.error(f"--oracle-runs names {len(args.oracle_runs)} runs; expected one per oracle seed "
                     f"({len(oracle_seeds)}).")
    quick = args.quick
    if quick:
        RUN_ITEMS.append(f"runner.log_root={tempfile.mkdtemp(prefix='rwm_dynamics_shift_')}")
    budgets = [400, 800] if quick else args.budgets
    test_budget = budgets[-1] if quick else args.test_budget
    seeds = args.seeds[:1] if quick else args.seeds
    one_seed_budgets = [] if quick else args.one_seed_budgets
    seeds_at = lambda budget: seeds[:1] if budget in one_seed_budgets else seeds  # noqa: E731
    oracle_seeds = oracle_seeds[:1] if quick else oracle_seeds
    envs, seconds = (4, 1.0) if quick else (args.eval_envs, 20.0)
    eval_seeds = args.eval_seeds[:2] if quick else args.eval_seeds
    rwm_iterations = 3 if quick else args.rwm_iterations
    model_free_envs = 8 if quick else args.model_free_envs

    started = time.perf_counter()
    nominal = quick_nominal_run() if quick else args.nominal_run
    adapters = {"rwm": lambda b, s: adapt_rwm(nominal, args.world_model, args.preset, b, s, rwm_iterations, quick),
                "model_free": lambda b, s: adapt_model_free(nominal, args.preset, b, s, model_free_envs)}
    if args.train_only:
        if args.train_only == "oracle":
            runs = [train_oracle(nominal, args.preset, seed, quick) for seed in oracle_seeds]
        else:
            runs = [adapters[args.train_only](budget, seed) for budget in budgets for seed in seeds_at(budget)]
        print(f"[dynamics_shift] {args.train_only}: {len(runs)} finished runs: {', '.join(map(str, runs))}")
        return
    nominal_checkpoint = find_checkpoint(nominal)
    results: dict = {"preset": args.preset, "nominal_run": str(nominal),
                     "world_model": str(args.world_model or nominal),
                     "nominal_on_nominal": measure_on(nominal_checkpoint, "nominal", envs, seconds, eval_seeds),
                     "nominal_on_shifted": measure_on(nominal_checkpoint, args.preset, envs, seconds, eval_seeds)}
    print(f"[dynamics_shift] nominal policy: tracking {results['nominal_on_nominal']['tracking_lin_vel']:.3f} on the "
          f"nominal robot, {results['nominal_on_shifted']['tracking_lin_vel']:.3f} on '{args.preset}'", flush=True)
    oracle_dirs = args.oracle_runs or [train_oracle(nominal, args.preset, seed, quick) for seed in oracle_seeds]
    results["oracle"] = summary([run_result(d, s, args.preset, envs, seconds, eval_seeds)
                                for d, s in zip(oracle_dirs, oracle_seeds)])
    for name, adapt in adapters.items():
        results[name] = {}
        for budget in budgets:
            runs = [run_result(adapt(budget, seed), seed, args.preset, envs, seconds, eval_seeds)
                    for seed in seeds_at(budget)]
            results[name][str(budget)] = summary(runs)
            print(f"[dynamics_shift] {name} B={budget}: tracking {results[name][str(budget)]['tracking']:.3f}, "
                  f"fall rate {results[name][str(budget)]['fall_rate']:.3f}", flush=True)
    by_budget = {str(b): compare(results["rwm"][str(b)], results["model_free"][str(b)]) for b in budgets}
    tracking_at_test = results["rwm"][str(test_budget)]["tracking"]
    results["comparison"] = {"budget": test_budget, **by_budget[str(test_budget)],
                             "rwm_vs_oracle": round(tracking_at_test / results["oracle"]["tracking"], 4)
                             if results["oracle"]["tracking"] > 0 else math.nan}
    results["comparison_by_budget"] = by_budget
    image = RESULTS / "dynamics_shift.png" if not quick else Path("/tmp/dynamics_shift_quick.png")
    RESULTS.mkdir(exist_ok=True)
    plot(image, args.preset, results, envs, seconds)
    emit("dynamics_shift", {**results, "evaluation": {"num_envs": envs, "seconds": seconds, "seeds": eval_seeds},
                            "settings": {"seeds": seeds, "one_seed_budgets": one_seed_budgets,
                                         "rwm_iterations": rwm_iterations, "spend_share": SPEND_SHARE,
                                         "rwm_model_mini_batches": MODEL_MINI_BATCHES,
                                         "model_free_envs": model_free_envs, "steps_per_iteration": STEPS},
                            "plot": str(image), "wall_clock_s": round(time.perf_counter() - started, 1)}, quick)


if __name__ == "__main__":
    main()
