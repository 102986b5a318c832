"""MBPO-PPO acceptance: Pretrain -> Finetune in imagination -> the policy in the real simulator.

Stages, each timed:
  pretrain    a CPU-scale Pretrain run (or `--pretrain-run DIR` to reuse one)
  record      with `--record-dataset N`: N real transitions recorded from the Pretrain run (random
              actions 10 %, then four of its checkpoints, early to last, 15/20/25/30 %, 256 robots
              each: `rwm dataset record-mixed`, like the Offline benchmark's mixed dataset; the
              policies' sampled actions with `--stochastic-dataset`) into <pretrain run>/mixed.h5, which
              Finetune's world model keeps learning from (finetune.dataset); `--finetune-dataset
              FILE` uses an existing recording instead. Its transitions count as real data.
  finetune    a Finetune run from a randomly initialised policy; world model from the Pretrain run
              (or `--finetune-run DIR` to reuse one)
A reused run's wall-clock is its own (the last `elapsed_s` in its metrics.jsonl).
  evaluate    the Finetune policy and the Init PPO policy (`--ppo-run`, default the latest
              bench/ppo_init.py run) measured alike, as `rwm play` (`--eval-envs`, default 512,
              x 20 s: a fall rate near 5 % is a handful of robots, and at 128 environments one
              evaluation seed against another moves it by 0.03); then the run's
              `--recent-checkpoints` saved checkpoints before the last, measured the same way,
              since the fall rate moves by several points between checkpoints 50 iterations apart
  throughput  imagined control steps/s at 4096 environments against the real simulator's, in
              the same run, with the machine's large-matmul GFLOP/s beside it

Prints one JSON object as the last line: tracking_ratio_vs_ppo, fall_rate,
imagination_vs_real_speed, real_transitions_mbpo, real_transitions_ppo, wall_clock_s (per stage),
and fall_rate_recent (last checkpoint and the ones before it) with its mean.
`--quick` is a seconds-long smoke run of the same path at tiny sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_ppo_run_argument,
    emit,
    evaluate_ppo_reference,
    matmul_gflops,
    observe_flops_per_row,
    run_wall_clock,
)

from rwm.config import apply_overrides  # noqa: E402
from rwm.data import DatasetReader  # noqa: E402
from rwm.envs.locomotion_env import LocomotionEnv  # noqa: E402
from rwm.envs.scripted_policies import RandomPolicy, StandingPolicy  # noqa: E402
from rwm.sim.imagination import ImaginationSimulator  # noqa: E402
from rwm.tasks import make_env  # noqa: E402
from rwm.training.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint  # noqa: E402
from rwm.training.evaluation import evaluate_policy  # noqa: E402
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.recording import record_mixed_dataset  # noqa: E402
from rwm.training.train import resolve_train_config, train  # noqa: E402
from rwm.training.world_model_learning import collect_replay, load_world_model_file  # noqa: E402

QUICK_COMMON = ["runner.num_steps_per_env=8", "runner.save_interval=2", "runner.progress_bar=false",
                "world_model.ensemble_size=2", "world_model.rnn_num_layers=1", "world_model.rnn_hidden_size=32",
                "world_model.history_horizon=4", "world_model.forecast_horizon=2", "world_model.mini_batch_size=16",
                "world_model.num_mini_batches=1", "world_model_learning.replay_capacity=64",
                "world_model_learning.eval_length=12", "world_model_learning.eval_interval=100"]
QUICK_FINETUNE = ["finetune.num_real_envs=4", "finetune.initial_real_steps=24", "finetune.real_eval_interval=100"]


def steps_per_second(env, steps: int) -> tuple[float, float]:
    """(control steps/s, share of env-steps that ended an episode) of `env` under random actions.

    The reset share matters for imagination: every reset warms a fresh history window up through
    the model, so a model that predicts falls everywhere (an untrained one can) is many times slower.
    """
    policy = RandomPolicy(env.num_envs, env.device)
    obs = env.get_observations()["policy"]
    resets = 0
    with torch.inference_mode():
        for _ in range(3):
            obs = env.step(policy(obs))[0]["policy"]
        start = time.perf_counter()
        for _ in range(steps):
            observations, _, dones, _ = env.step(policy(obs))
            obs = observations["policy"]
            resets += int(dones.sum())
    return steps * env.num_envs / (time.perf_counter() - start), resets / (steps * env.num_envs)


def imagination_vs_real(cfg, model, num_envs: int, steps: int) -> dict:
    """Imagined vs real control steps/s of LocomotionEnv at `num_envs`, random actions, same run."""
    real_env = make_env(apply_overrides(cfg, [f"num_envs={num_envs}"]))
    real, real_resets = steps_per_second(real_env, steps)
    del real_env
    history = model.history_horizon
    buffer = collect_replay(cfg, StandingPolicy(8, dt=0.02), num_envs=8, steps=history + 8, seed=3)
    simulator = ImaginationSimulator(model, lambda n, g: buffer.sample(n, history, g), num_envs)
    imagined, imagined_resets = steps_per_second(LocomotionEnv(cfg.env, simulator), steps)
    matmul = matmul_gflops(torch.device("cpu"))
    # the model's own rate inside the imagined env steps (warm-ups of reset rows not counted)
    model_gflops = observe_flops_per_row(model) * imagined / 1e9
    return {"num_envs": num_envs, "imagined_steps_per_s": round(imagined), "real_steps_per_s": round(real),
            "imagination_vs_real_speed": round(imagined / real, 3), "imagined_reset_share": round(imagined_resets, 4),
            "real_reset_share": round(real_resets, 4), "model_gflops_per_s": round(model_gflops, 1),
            "matmul_gflops_per_s": round(matmul, 1), "fraction_of_matmul": round(model_gflops / matmul, 3)}


def dataset_transitions(path: str | Path) -> int:
    with DatasetReader(path) as reader:
        return int(reader.num_transitions)


def real_transitions_of(run_dir: Path) -> int:
    """Real transitions a world-model source used: a Pretrain run's environment steps, an Offline run's dataset."""
    checkpoint = find_checkpoint(run_dir)
    _, cfg, payload = policy_from_checkpoint(checkpoint)
    if cfg.mode == "offline":
        return dataset_transitions(cfg.offline.dataset)
    return int(payload["infos"]["env_steps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--pretrain-run", type=Path, default=None,
                        help="reuse this Pretrain run (skip stage 1); an Offline run stands for a world model fitted "
                             "on a recorded dataset, whose transitions are then the real data it used")
    add_ppo_run_argument(parser)
    parser.add_argument("--finetune-run", type=Path, default=None, help="reuse this Finetune run (skip stage 2)")
    parser.add_argument("--record-dataset", type=int, default=0, metavar="N",
                        help="record N real transitions from the Pretrain run for Finetune's world model (stage record)")
    parser.add_argument("--stochastic-dataset", action="store_true",
                        help="record the policies' sampled actions, not their means (`rwm dataset record --stochastic`)")
    parser.add_argument("--finetune-dataset", type=Path, default=None,
                        help="an existing recording for Finetune's world model (finetune.dataset)")
    parser.add_argument("--finetune-overrides", nargs="*", default=[], help="KEY=VALUE overrides for Finetune")
    parser.add_argument("--eval-envs", type=int, default=512,
                        help="real environments each policy is evaluated in, 20 s each (default 512)")
    parser.add_argument("--recent-checkpoints", type=int, default=4, metavar="N",
                        help="also evaluate the N saved checkpoints before the last (default 4)")
    parser.add_argument("--result-name", default="mbpo", help="bench/results/<name>.json of a full run (default mbpo)")
    args = parser.parse_args()
    if args.recent_checkpoints < 0:
        parser.error(f"--recent-checkpoints {args.recent_checkpoints}: expected 0 or more checkpoints.")
    quick = args.quick
    walls: dict[str, float] = {}

    # 1. Pretrain
    start = time.perf_counter()
    if args.pretrain_run is not None:
        pretrain_dir = args.pretrain_run
        pretrain_steps = real_transitions_of(pretrain_dir)
        walls["pretrain"] = run_wall_clock(pretrain_dir)
    else:
        overrides = ["runner.console=line", *(QUICK_COMMON if quick else [])]
        cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Pretrain-v0", overrides, run_name="bench_pretrain",
                                      num_envs=16 if quick else None, max_iterations=2 if quick else None)
        runner, summary = train(cfg)
        pretrain_dir, pretrain_steps = runner.log_dir, summary["env_steps"]
        walls["pretrain"] = round(time.perf_counter() - start, 1)

    # 1b. Recorded data for Finetune's world model
    dataset = args.finetune_dataset
    if args.record_dataset > 0 and args.finetune_run is None:
        start = time.perf_counter()
        dataset = Path(pretrain_dir) / "mixed.h5"
        _, record_cfg, _ = policy_from_checkpoint(find_checkpoint(pretrain_dir))
        record_cfg = apply_overrides(record_cfg, [f"num_envs={8 if quick else 256}", "seed=0"])
        record_mixed_dataset(record_cfg, Path(pretrain_dir), dataset, steps=args.record_dataset,
                             stochastic=args.stochastic_dataset, overwrite=True, progress=False)
        walls["record"] = round(time.perf_counter() - start, 1)

    # 2. Finetune from a random policy, purely in imagination
    start = time.perf_counter()
    if args.finetune_run is not None:
        finetune_dir = args.finetune_run
        payload = load_checkpoint(find_checkpoint(finetune_dir))
        finetune_transitions, iterations = int(payload["finetune_real_transitions"]), int(payload["iter"])
        policy, finetune_cfg, _ = policy_from_checkpoint(find_checkpoint(finetune_dir))
        dataset = finetune_cfg.finetune.dataset or None
        finetune_policy = policy.act_inference
        model = load_world_model_file(find_checkpoint(finetune_dir))
        walls["finetune"] = run_wall_clock(finetune_dir)
    else:
        overrides = ["runner.console=line", f"finetune.load_run={pretrain_dir}",
                     *([f"finetune.dataset={dataset}"] if dataset else []),
                     *((QUICK_COMMON + QUICK_FINETUNE) if quick else []), *args.finetune_overrides]
        cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Finetune-v0", overrides, run_name="bench_finetune",
                                      num_envs=16 if quick else None, max_iterations=2 if quick else None)
        runner, summary = train(cfg)
        finetune_dir, finetune_cfg, iterations = runner.log_dir, runner.cfg, summary["iterations"]
        finetune_transitions = runner.extensions[0].real_transitions
        finetune_policy, model = runner.get_inference_policy(), runner.extensions[0].learner.model
        walls["finetune"] = round(time.perf_counter() - start, 1)

    recorded_transitions = dataset_transitions(dataset) if dataset else 0

    # 3. Both policies in the real simulator, measured alike
    start = time.perf_counter()
    eval_envs, eval_seconds = (8, 2.0) if quick else (args.eval_envs, 20.0)
    mbpo = evaluate_policy(finetune_cfg, finetune_policy, num_envs=eval_envs, seconds=eval_seconds, progress=False)
    ppo_run, ppo, ppo_steps = evaluate_ppo_reference(args.ppo_run, eval_envs, eval_seconds)
    recent_falls = {iterations: round(mbpo["fall_rate"], 4)}
    for path in list_checkpoints(finetune_dir)[-1 - args.recent_checkpoints:-1]:
        policy, cfg, payload = policy_from_checkpoint(path)
        result = evaluate_policy(cfg, policy.act_inference, num_envs=eval_envs, seconds=eval_seconds, progress=False)
        recent_falls[int(payload["iter"])] = round(result["fall_rate"], 4)
    walls["evaluate"] = round(time.perf_counter() - start, 1)

    # 4. Imagination vs real throughput
    start = time.perf_counter()
    throughput = imagination_vs_real(finetune_cfg, model, num_envs=256 if quick else 4096,
                                     steps=5 if quick else 20)
    walls["throughput"] = round(time.perf_counter() - start, 1)

    emit(args.result_name, {
        "tracking_lin_vel": round(mbpo["tracking_lin_vel"], 4),
        "tracking_ratio_vs_ppo": None if ppo is None else round(mbpo["tracking_lin_vel"] / ppo["tracking_lin_vel"], 4),
        "ppo_tracking_lin_vel": None if ppo is None else round(ppo["tracking_lin_vel"], 4),
        "fall_rate": round(mbpo["fall_rate"], 4),
        "fall_rate_recent": {str(k): recent_falls[k] for k in sorted(recent_falls)},
        "fall_rate_recent_mean": round(sum(recent_falls.values()) / len(recent_falls), 4),
        "falls": {key: mbpo[key] for key in ("falls", "falls_after_start", "falls_after_command_change")},
        "eval_envs": eval_envs, "eval_seconds": eval_seconds,
        "imagination_vs_real_speed": throughput["imagination_vs_real_speed"],
        "throughput": throughput,
        "real_transitions_mbpo": int(pretrain_steps + recorded_transitions + finetune_transitions),
        "real_transitions_pretrain": int(pretrain_steps), "real_transitions_finetune": int(finetune_transitions),
        "real_transitions_recorded": int(recorded_transitions), "finetune_dataset": str(dataset) if dataset else None,
        "real_transitions_ppo": ppo_steps,
        "wall_clock_s": walls,
        "pretrain_run": str(pretrain_dir), "finetune_run": str(finetune_dir),
        "ppo_run": None if ppo_run is None else str(ppo_run),
        "finetune_iterations": iterations,
        "finetune_overrides": list(args.finetune_overrides),  # beyond the task defaults
    }, quick)


if __name__ == "__main__":
    main()
