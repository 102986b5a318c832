"""World-model quality: 368-step autoregressive error of three training set-ups on the same data.

Data: a trained policy (the latest checkpoint of `--run`, e.g. the run written by
bench/ppo_init.py) drives fresh MuJoCo environments under the Pretrain task's training
conditions (observation noise, pushes, randomisation) and every transition goes to a replay
buffer; 10 % of the environments are held out. Three models with the same trunk size, batch
and number of updates are trained on the rest:

    gru_ar  GRU base, dual-autoregressive training (N = 8 forecast steps), the RWM recipe
    gru_tf  GRU base, teacher forcing (N = 1: one-step prediction only)
    mlp     MLP base on the flattened 32-step history, N = 8

and evaluated on held-out windows of 32 + 368 steps at input-noise scales 0 and 0.4 (relative
L1 error in normalised space, docs/architecture.md#world-model-evaluation). The paper's ordering
is gru_ar lowest. Prints one JSON object as the last line ({"error_368": {model: {"0": ..., "0.4": ...}}, ...}); `--quick` is a
seconds-long smoke run (a scripted policy if no run is given, short windows).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from rwm.config import apply_overrides  # noqa: E402
from rwm.envs.scripted_policies import StandingPolicy  # noqa: E402
from rwm.tasks import make_task_cfg  # noqa: E402
from rwm.training.checkpoint import find_checkpoint  # noqa: E402
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.world_model_learning import collect_replay  # noqa: E402
from rwm.world_model import SystemDynamics, WorldModelCfg, WorldModelTrainer, evaluate_world_model  # noqa: E402

VARIANTS = {
    "gru_ar": {"base": "gru", "forecast_horizon": 8},
    "gru_tf": {"base": "gru", "forecast_horizon": 1},
    "mlp": {"base": "mlp", "forecast_horizon": 8},
}


def latest_run(log_root: Path) -> Path | None:
    runs = sorted(p for p in log_root.glob("anymal_d_flat/*") if list(p.glob("model_*.pt")))
    return runs[-1] if runs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data, 20 updates, 100-step windows (< 1 minute)")
    parser.add_argument("--run", type=Path, default=None, help="run whose policy collects the data "
                        "(default: the latest run under logs/anymal_d_flat/)")
    parser.add_argument("--num-envs", type=int, default=None, help="data-collecting environments (default 256)")
    parser.add_argument("--steps", type=int, default=None, help="control steps per environment (default 1000)")
    parser.add_argument("--updates", type=int, default=None, help="training mini-batches per model (default 600)")
    parser.add_argument("--batch", type=int, default=256, help="windows per mini-batch (default 256)")
    parser.add_argument("--eval-windows", type=int, default=100, help="held-out evaluation windows (default 100)")
    args = parser.parse_args()
    torch.manual_seed(0)
    num_envs = args.num_envs or (32 if args.quick else 256)
    steps = args.steps or (160 if args.quick else 1000)
    updates = args.updates or (10 if args.quick else 600)
    length = 100 if args.quick else 400
    history = 32

    cfg = make_task_cfg("Velocity-Flat-Anymal-D-Pretrain-v0")
    run = args.run or (None if args.quick else latest_run(Path("logs")))
    if run is not None:
        policy_module, _, _ = policy_from_checkpoint(find_checkpoint(run))
        policy, source = policy_module.act_inference, str(find_checkpoint(run))
    elif args.quick:
        standing = StandingPolicy(num_envs, dt=0.02)
        policy, source = standing, "standing controller (quick run)"
    else:
        raise SystemExit("no trained run found under logs/anymal_d_flat/; run bench/ppo_init.py first or pass --run.")
    cfg = apply_overrides(cfg, ["sim.num_threads=0"])

    start = time.perf_counter()
    buffer = collect_replay(cfg, policy, num_envs=num_envs, steps=steps, seed=7, progress=True)
    collect_s = time.perf_counter() - start
    num_holdout = max(1, num_envs // 10)
    train_envs = torch.arange(num_envs - num_holdout)
    holdout_envs = torch.arange(num_envs - num_holdout, num_envs)
    generator = torch.Generator().manual_seed(0)
    eval_batch = buffer.sample(args.eval_windows, length, generator, env_ids=holdout_envs)
    print(f"data: {num_envs} envs x {steps} steps from {source} ({collect_s:.0f} s); "
          f"{buffer.num_valid_windows(length, env_ids=holdout_envs)} held-out windows of {length}", flush=True)

    errors, timings = {}, {}
    for name, variant in VARIANTS.items():
        wm_cfg = WorldModelCfg(ensemble_size=1, history_horizon=history, num_mini_batches=1,
                               mini_batch_size=args.batch, **variant)
        model = SystemDynamics(wm_cfg)
        trainer = WorldModelTrainer(model, wm_cfg, generator=torch.Generator().manual_seed(1))
        window = wm_cfg.history_horizon + wm_cfg.forecast_horizon
        sample_gen = torch.Generator().manual_seed(2)
        t0 = time.perf_counter()
        for update in range(updates):
            losses = trainer.update(lambda: buffer.sample(args.batch, window, sample_gen, env_ids=train_envs))
            if (update + 1) % max(1, updates // 5) == 0:
                print(f"  {name}: update {update + 1}/{updates} state loss {losses['state']:.4f}", flush=True)
        timings[name] = round(time.perf_counter() - t0, 1)
        results = evaluate_world_model(copy.deepcopy(model), eval_batch, history=history, noise_scales=(0.0, 0.4),
                                       generator=torch.Generator().manual_seed(3))
        errors[name] = {f"{noise:g}": round(float(m["relative_l1"]), 4) for noise, m in
                        ((float(k), v) for k, v in results["by_noise"].items())}
        print(f"  {name}: relative L1 over {length - history} steps {errors[name]} ({timings[name]} s)", flush=True)

    ordering = sorted(errors, key=lambda k: errors[k]["0"])
    emit("world_model_quality", {
        f"error_{length - history}": errors, "ordering_at_noise_0": ordering,
        "gru_ar_lowest": ordering[0] == "gru_ar", "data_source": source, "num_envs": num_envs,
        "steps_per_env": steps, "updates_per_model": updates, "batch": args.batch, "eval_windows": args.eval_windows,
        "window_length": length, "train_seconds": timings, "collect_seconds": round(collect_s, 1),
    }, args.quick)


if __name__ == "__main__":
    main()
