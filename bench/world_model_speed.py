"""Speed of the world model: training updates, imagination steps, batched vs looped ensemble heads.

Measures, on one device (``--device``, default cpu):

* ``matmul``: the machine's float32 GFLOP/s on one large square matmul, as the yardstick;
* ``training``: ms per training update (one mini-batch of windows of M+N = 32+8 steps: loss,
  backward, clip, Adam step) for E = 1 and E = 5 at the published network size;
* ``imagination``: ms per imagination step, one ``observe`` of T = 1 for every environment after
  a 32-step warm-up, for E = 1 and E = 5;
* ``ensemble``: E = 5 with the heads evaluated as batched products vs a per-member loop, for
  the heads alone (64 rows, where call overhead dominates, and one row per environment), the
  imagination step and the training update.

Each case reports the model's floating-point operations per call, counted with
``torch.utils.flop_counter.FlopCounterMode`` on a CPU copy at a small batch and scaled
linearly (every operation is per row), and the achieved GFLOP/s. The full run uses batch 1024
for training and 4096 environments for imagination; ``--quick`` (< 1 minute on a laptop CPU)
uses 128 and 1024 and fewer repetitions. Prints one JSON object as the last line; a full run
also writes ``bench/results/world_model_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, matmul_gflops, observe_flops_per_row, timed  # noqa: E402

from rwm.world_model import SystemDynamics, WorldModelCfg, WorldModelTrainer  # noqa: E402
from rwm.world_model.losses import world_model_loss  # noqa: E402

S, A, C = 45, 12, 8
FLOP_ROWS = 8  # batch used to count operations on the CPU


def make_model(E: int, device: torch.device, seed: int = 0) -> SystemDynamics:
    torch.manual_seed(seed)
    return SystemDynamics(WorldModelCfg(ensemble_size=E, num_mini_batches=1)).to(device)


def random_batch(B: int, L: int, device: torch.device, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"state": torch.randn(B, L, S, generator=g).to(device),
            "action": torch.randn(B, L, A, generator=g).to(device),
            "contact": (torch.rand(B, L, C, generator=g) > 0.5).float().to(device),
            "termination": (torch.rand(B, L, 1, generator=g) > 0.95).float().to(device)}


# ----------------------------------------------------------------------------- operation counts
def training_flops(E: int, batched: bool) -> int:
    """Forward + backward operations of one training mini-batch, per window."""
    model = make_model(E, torch.device("cpu"))
    model.batched_ensemble = batched
    batch = random_batch(FLOP_ROWS, model.cfg.window_length, torch.device("cpu"), torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        total, _ = world_model_loss(model, batch)
        total.backward()
    return counter.get_total_flops() // FLOP_ROWS


def observe_flops(E: int) -> int:
    """Operations of one observe(T=1) after a warm-up, per environment."""
    return observe_flops_per_row(make_model(E, torch.device("cpu")), FLOP_ROWS)


def heads_flops(E: int) -> int:
    model = make_model(E, torch.device("cpu"))
    h = torch.randn(FLOP_ROWS, model.state_base.output_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run_heads(model, h, torch.randn(FLOP_ROWS, S), loop=False)
    return counter.get_total_flops() // FLOP_ROWS


def run_heads(model: SystemDynamics, h: torch.Tensor, z_last: torch.Tensor, loop: bool):
    return model.state_heads(h, z_last, members=False, loop=loop), model.auxiliary_heads(h, members=False, loop=loop)


def rate(flops: int, seconds: float) -> float:
    return round(flops / seconds / 1e9, 2)


# ----------------------------------------------------------------------------- cases
def training_case(E: int, batch_size: int, device: torch.device, repeats: int, batched: bool = True) -> dict:
    model = make_model(E, device)
    model.batched_ensemble = batched
    trainer = WorldModelTrainer(model)
    g = torch.Generator().manual_seed(1)
    batch = random_batch(batch_size, model.cfg.window_length, device, g)
    seconds = timed(lambda: trainer.update(lambda: batch), device, repeats)
    flops = training_flops(E, batched) * batch_size
    return {"ensemble_size": E, "batch_size": batch_size, "batched_heads": batched, "ms": round(seconds * 1e3, 1),
            "gflop_per_call": round(flops / 1e9, 3), "gflops_per_s": rate(flops, seconds)}


def imagination_case(E: int, num_envs: int, device: torch.device, repeats: int, batched: bool = True) -> dict:
    model = make_model(E, device).eval()
    model.batched_ensemble = batched
    g = torch.Generator().manual_seed(2)
    zs, za = torch.randn(num_envs, 33, S, generator=g).to(device), torch.randn(num_envs, 33, A, generator=g).to(device)
    ids = torch.randint(0, E, (num_envs,), generator=g).to(device)
    with torch.inference_mode():
        model.reset()
        model.observe(zs[:, :32], za[:, :32])  # warm-up context
        seconds = timed(lambda: model.observe(zs[:, 32:], za[:, 32:], model_ids=ids), device, repeats)
    flops = observe_flops(E) * num_envs
    return {"ensemble_size": E, "num_envs": num_envs, "batched_heads": batched, "ms": round(seconds * 1e3, 2),
            "gflop_per_call": round(flops / 1e9, 3), "gflops_per_s": rate(flops, seconds)}


def heads_case(E: int, rows: int, device: torch.device, repeats: int) -> dict:
    """The E state and auxiliary heads alone on one shared base output: batched vs per-member loop."""
    model = make_model(E, device).eval()
    h = torch.randn(rows, model.state_base.output_dim, device=device)
    z_last = torch.randn(rows, S, device=device)
    flops = heads_flops(E) * rows
    out = {"ensemble_size": E, "rows": rows, "gflop_per_call": round(flops / 1e9, 3)}
    best = {"batched": float("inf"), "loop": float("inf")}
    with torch.inference_mode():
        for _ in range(3):  # interleaved, so that a busy moment hits both alike
            for name, loop in (("batched", False), ("loop", True)):
                best[name] = min(best[name], timed(lambda: run_heads(model, h, z_last, loop), device, repeats))
    for name, seconds in best.items():
        out[f"{name}_ms"] = round(seconds * 1e3, 3)
        out[f"{name}_gflops_per_s"] = rate(flops, seconds)
    out["speedup"] = round(out["loop_ms"] / out["batched_ms"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer repeats (< 1 minute)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    train_batch, num_envs = (128, 1024) if quick else (1024, 4096)
    reps = 2 if quick else 3
    n = 2048 if device.type == "cpu" and quick else (4096 if device.type == "cpu" else 8192)

    result: dict = {"device": str(device), "threads": torch.get_num_threads(),
                    "matmul": {"n": n, "gflops_per_s": round(matmul_gflops(device, n, 3), 1)}}
    result["training"] = [training_case(E, train_batch, device, reps) for E in (1, 5)]
    result["imagination"] = [imagination_case(E, num_envs, device, reps * 3) for E in (1, 5)]
    # E = 5 once more in both modes, interleaved; keep the better of the two batched runs
    loop_train = training_case(5, train_batch, device, reps, batched=False)
    again = training_case(5, train_batch, device, reps)
    result["training"][1] = min(result["training"][1], again, key=lambda case: case["ms"])
    loop_imag = imagination_case(5, num_envs, device, reps * 3, batched=False)
    again = imagination_case(5, num_envs, device, reps * 3)
    result["imagination"][1] = min(result["imagination"][1], again, key=lambda case: case["ms"])
    result["ensemble"] = {
        "heads": [heads_case(5, rows, device, reps * 10) for rows in (64, num_envs)],
        "imagination": {"batched_ms": result["imagination"][1]["ms"], "loop_ms": loop_imag["ms"],
                        "speedup": round(loop_imag["ms"] / result["imagination"][1]["ms"], 2)},
        "training": {"batched_ms": result["training"][1]["ms"], "loop_ms": loop_train["ms"],
                     "speedup": round(loop_train["ms"] / result["training"][1]["ms"], 2)},
    }
    # the yardstick again at the end, so a machine that got busier shows up
    result["matmul"]["gflops_per_s_end"] = round(matmul_gflops(device, n, 3), 1)
    for case in result["training"] + result["imagination"]:
        case["fraction_of_matmul"] = round(case["gflops_per_s"] / result["matmul"]["gflops_per_s"], 3)
    emit("world_model_speed", result, quick)


if __name__ == "__main__":
    main()
