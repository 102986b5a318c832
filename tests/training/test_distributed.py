"""Multi-process training (rwm.training.distributed): 2 CPU processes with gloo, started by these tests.

The tests launch this file under torchrun (``python -m torch.distributed.run --nproc-per-node 2``);
its ``__main__`` block is the worker. Each worker writes what it saw into a folder the test then
reads: rank 0 and rank 1 must agree bit for bit, and the reduction over 2 ranks x B/2 samples
must equal one process on B samples.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT_S = 170


# ----------------------------------------------------------------------------- launching
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                           "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), str(Path(__file__).resolve()), *args]
    done = subprocess.run(command, env=_child_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


# ----------------------------------------------------------------------------- the worker (runs under torchrun)
def _worker_reduce(out: Path) -> None:
    """The reduction mechanism on fixed synthetic batches (no environments)."""
    import datetime

    import torch.distributed as dist

    from rwm.rl import PPO, ActorCritic
    from rwm.rl.normalizer import EmpiricalNormalization
    from rwm.training.distributed import (DistributedContext, DistributedError, NormalizerSync,
                                          distributed_algorithm)
    from rwm.world_model import SystemDynamics, WorldModelCfg, WorldModelTrainer

    ctx = DistributedContext.from_environment("cpu", timeout_s=60)
    rank, report = ctx.rank, {}

    # --- PPO: 2 ranks x B/2 samples vs 1 process x B samples, one mini-batch step
    B, num_obs, num_actions = 64, 10, 4
    g = torch.Generator().manual_seed(123)
    data = {"observations": torch.randn(B, num_obs, generator=g), "actions": torch.randn(B, num_actions, generator=g),
            "values": torch.randn(B, 1, generator=g), "returns": torch.randn(B, 1, generator=g),
            "advantages": torch.randn(B, 1, generator=g), "actions_log_prob": torch.randn(B, 1, generator=g) - 3.0,
            "mu": 0.3 * torch.randn(B, num_actions, generator=g),
            "sigma": 0.5 + torch.rand(B, num_actions, generator=g)}

    def ppo_step(algorithm_class, rows):
        torch.manual_seed(0)  # the same initial networks everywhere
        policy = ActorCritic(num_obs, num_obs, num_actions, actor_hidden_dims=(16,), critic_hidden_dims=(16,))
        alg = algorithm_class(policy, num_learning_epochs=1, num_mini_batches=1, learning_rate=1e-3,
                              schedule="adaptive", desired_kl=0.01)
        alg.init_storage(len(rows), 1, [num_obs], [num_obs], [num_actions])
        st = alg.storage
        for name, value in data.items():
            getattr(st, name)[0].copy_(value[rows])
        st.critic_observations[0].copy_(data["observations"][rows])
        st.step = 1
        losses = alg.update()
        return policy, alg, losses

    half = torch.arange(rank * B // 2, (rank + 1) * B // 2)
    policy, alg, losses = ppo_step(distributed_algorithm(ctx), half)
    torch.save({k: v.clone() for k, v in policy.state_dict().items()}, out / f"ppo_rank{rank}.pt")
    report["ppo"] = {"learning_rate": alg.learning_rate, "kl": losses["kl"]}
    if rank == 0:
        torch.manual_seed(0)
        torch.save(ActorCritic(num_obs, num_obs, num_actions, actor_hidden_dims=(16,),
                               critic_hidden_dims=(16,)).state_dict(), out / "ppo_initial.pt")
        ref_policy, ref_alg, ref_losses = ppo_step(PPO, torch.arange(B))
        torch.save(ref_policy.state_dict(), out / "ppo_reference.pt")
        report["ppo_reference"] = {"learning_rate": ref_alg.learning_rate, "kl": ref_losses["kl"]}

    # --- world model: the same, through WorldModelTrainer's gradient_reducer hook
    wm_cfg = WorldModelCfg(ensemble_size=2, history_horizon=3, forecast_horizon=2, rnn_num_layers=1,
                           rnn_hidden_size=16, state_mean_shape=(16,), state_logstd_shape=None, aux_shape=(16,),
                           bootstrap=False, num_mini_batches=1, mini_batch_size=8)
    L, W = wm_cfg.history_horizon + wm_cfg.forecast_horizon, 8
    g = torch.Generator().manual_seed(7)
    windows = {"state": torch.randn(W, L, 45, generator=g), "action": torch.randn(W, L, 12, generator=g),
               "contact": (torch.rand(W, L, 8, generator=g) > 0.5).float(),
               "termination": (torch.rand(W, L, 1, generator=g) > 0.9).float()}

    def wm_step(rows, reducer):
        torch.manual_seed(1)
        model = SystemDynamics(wm_cfg)
        trainer = WorldModelTrainer(model, wm_cfg)
        trainer.gradient_reducer = reducer
        trainer.update(lambda: {k: v[rows] for k, v in windows.items()})
        return model

    model = wm_step(torch.arange(rank * W // 2, (rank + 1) * W // 2), ctx.all_reduce_gradients)
    torch.save(model.state_dict(), out / f"wm_rank{rank}.pt")
    if rank == 0:
        torch.manual_seed(1)
        torch.save(SystemDynamics(wm_cfg).state_dict(), out / "wm_initial.pt")
        torch.save(wm_step(torch.arange(W), None).state_dict(), out / "wm_reference.pt")

    # --- running observation statistics: merged exactly over the ranks' data
    g = torch.Generator().manual_seed(3)
    prefix, fresh = torch.randn(50, 5, generator=g) * 2 + 1, [torch.randn(30, 5, generator=g) * 3 - 2 for _ in range(2)]
    norm = EmpiricalNormalization(5)
    norm.update(prefix)
    sync = NormalizerSync(ctx, norm)
    norm.update(fresh[rank])
    sync.sync()
    whole = torch.cat([prefix, *fresh]).double()
    report["normalizer"] = {"mean": norm.mean.tolist(), "var": norm.var.tolist(), "count": int(norm.count),
                            "expected_mean": whole.mean(0).tolist(),
                            "expected_var": whole.var(0, unbiased=False).tolist(),
                            "expected_count": whole.shape[0]}

    # --- mismatched configurations are refused on every rank
    from rwm.training.train import resolve_train_config

    cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Init-v0", [], seed=rank)
    try:
        ctx.check_same_config(cfg)
        report["mismatch"] = None
    except DistributedError as error:
        report["mismatch"] = str(error)
    same, _ = resolve_train_config("Velocity-Flat-Anymal-D-Init-v0", [], seed=0)
    report["same_hash"] = ctx.check_same_config(same)

    # --- a rank that does not answer: the other one stops with a message naming the timeout
    group = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=2), backend="gloo")
    short = DistributedContext(rank, 2, "cpu", timeout_s=2, group=group)
    if rank == 0:
        start = time.perf_counter()
        try:
            short.mean(torch.tensor(1.0))
            report["timeout"] = None
        except DistributedError as error:
            report["timeout"] = str(error)
        report["timeout_after_s"] = time.perf_counter() - start
    else:
        time.sleep(4.0)  # stuck (alive, so the failure is the timeout, not a closed connection)
    (out / f"reduce_rank{rank}.json").write_text(json.dumps(report))
    os._exit(0)  # the timed-out group cannot be torn down cleanly; the results are written


def _worker_train(out: Path, log_root: Path) -> None:
    """Pretrain (new run, then resumed), Finetune and Offline, 2 ranks each, dumping every rank's networks."""
    from rwm.training.distributed import DistributedContext
    from rwm.training.train import resolve_train_config, train
    from tests.training.test_finetune import TINY_FINETUNE
    from tests.training.test_pretrain import TINY_WORLD_MODEL

    quiet = ["runner.console=none", "runner.progress_bar=false", "sim.num_threads=1", "runner.num_steps_per_env=8",
             f"runner.log_root={log_root}"]

    def dump(runner, name):
        learner = runner.extensions[0] if hasattr(runner.extensions[0], "model") else runner.extensions[0].learner
        torch.save({"policy": runner.policy.state_dict(), "world_model": learner.model.state_dict(),
                    "log_dir": str(runner.log_dir) if runner.log_dir else None, "iteration": runner.current_iteration,
                    "learning_rate": runner.alg.learning_rate},
                   out / f"{name}_rank{ctx.rank}.pt")

    with DistributedContext.from_environment("cpu", timeout_s=120) as ctx:
        cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Pretrain-v0",
                                      [*quiet, "runner.save_interval=1", *TINY_WORLD_MODEL,
                                       "world_model.normalizer=fitted"], num_envs=16, max_iterations=2, seed=0)
        runner, _ = train(cfg, distributed=ctx)
        dump(runner, "pretrain")
        run_dir = Path(ctx.broadcast_object(str(runner.log_dir) if ctx.is_main else None))

        cfg, checkpoint = resolve_train_config(None, [], max_iterations=3, resume=run_dir)
        runner, _ = train(cfg, resume_from=checkpoint, distributed=ctx)
        dump(runner, "resumed")

        cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Finetune-v0",
                                      [*quiet, "runner.save_interval=2", *TINY_WORLD_MODEL, *TINY_FINETUNE,
                                       f"finetune.load_run={run_dir}", "finetune.warmup_iterations=1"],
                                      num_envs=16, max_iterations=2, seed=0)
        runner, _ = train(cfg, distributed=ctx)
        dump(runner, "finetune")

        # Offline: rank 0 records a small dataset; each rank trains on its shard of the episodes
        dataset = log_root / "offline.h5"
        if ctx.is_main:
            from rwm.config import apply_overrides
            from rwm.data import record_dataset
            from rwm.envs.scripted_policies import StandingPolicy
            from rwm.tasks import make_task_cfg

            record_cfg = apply_overrides(make_task_cfg("Velocity-Flat-Anymal-D-Init-v0"),
                                         ["num_envs=4", "sim.num_threads=1"])
            record_dataset(record_cfg, StandingPolicy(4, "cpu"), dataset, steps=4 * 60, source={"kind": "test"},
                           progress=False)
        ctx.barrier()
        cfg, _ = resolve_train_config("Velocity-Flat-Anymal-D-Offline-v0",
                                      [*quiet, "runner.save_interval=2", *TINY_WORLD_MODEL,
                                       "offline.validation_fraction=0.25", "offline.fit_updates=8",
                                       f"offline.dataset={dataset}"], num_envs=16, max_iterations=2, seed=0)
        runner, _ = train(cfg, distributed=ctx)
        dump(runner, "offline")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reduce_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("reduce")
    _torchrun("reduce", str(out))
    return out, [json.loads((out / f"reduce_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def train_results(tmp_path_factory):
    out, log_root = tmp_path_factory.mktemp("ranks"), tmp_path_factory.mktemp("logs")
    done = _torchrun("train", str(out), str(log_root))
    return out, log_root, done


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _assert_bit_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{what}: '{name}' differs between rank 0 and rank 1"


# ----------------------------------------------------------------------------- reduction mechanism
def _assert_reduced_step(out: Path, prefix: str, what: str) -> None:
    """Both ranks bit-identical, equal to one process on the whole batch, and actually moved by the step."""
    rank0, rank1, reference = (_load(out / f"{prefix}_{n}.pt") for n in ("rank0", "rank1", "reference"))
    _assert_bit_identical(rank0, rank1, what)
    for name, value in reference.items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-5, atol=1e-6, msg=name)
    initial = _load(out / f"{prefix}_initial.pt")
    assert any(not torch.equal(rank0[name], initial[name]) for name in rank0)  # the step moved the weights


def test_ppo_step_on_two_ranks_of_half_batches_equals_one_process_on_the_whole_batch(reduce_results):
    out, (r0, r1) = reduce_results
    _assert_reduced_step(out, "ppo", "PPO")
    # the adaptive learning rate took the same decision from the averaged KL
    assert r0["ppo"]["learning_rate"] == r1["ppo"]["learning_rate"] == r0["ppo_reference"]["learning_rate"]
    assert r0["ppo"]["kl"] == pytest.approx(r0["ppo_reference"]["kl"], rel=1e-5)


def test_world_model_step_on_two_ranks_of_half_batches_equals_one_process_on_the_whole_batch(reduce_results):
    out, _ = reduce_results
    _assert_reduced_step(out, "wm", "world model")


def test_running_observation_statistics_are_merged_exactly(reduce_results):
    _, (r0, r1) = reduce_results
    for r in (r0, r1):
        n = r["normalizer"]
        assert n["count"] == n["expected_count"]
        assert n["mean"] == pytest.approx(n["expected_mean"], rel=1e-5, abs=1e-6)
        assert n["var"] == pytest.approx(n["expected_var"], rel=1e-5, abs=1e-6)
    assert r0["normalizer"]["mean"] == r1["normalizer"]["mean"] and r0["normalizer"]["var"] == r1["normalizer"]["var"]


def test_mismatched_configurations_are_refused_on_every_rank(reduce_results):
    _, (r0, r1) = reduce_results
    for rank, report in enumerate((r0, r1)):
        message = report["mismatch"]
        assert message is not None and message.startswith(f"rank {rank} of 2: the ranks resolved different "
                                                           "configurations (config hash")
        assert "\n" not in message and "same flags" in message
    assert r0["same_hash"] == r1["same_hash"]


def test_a_rank_that_does_not_answer_stops_the_others_with_a_message_naming_the_timeout(reduce_results):
    _, (r0, _) = reduce_results
    message = r0["timeout"]
    assert message is not None and "timed out after 2 s" in message and "RWM_DISTRIBUTED_TIMEOUT" in message
    assert "\n" not in message
    assert r0["timeout_after_s"] < 3.5  # it did not wait for the stuck rank


# ----------------------------------------------------------------------------- training end to end
@pytest.mark.parametrize("phase", ["pretrain", "resumed", "finetune"])
def test_all_ranks_hold_identical_networks_after_training(train_results, phase):
    out, _, _ = train_results
    rank0, rank1 = _load(out / f"{phase}_rank0.pt"), _load(out / f"{phase}_rank1.pt")
    _assert_bit_identical(rank0["policy"], rank1["policy"], f"{phase} policy")  # incl. normaliser statistics
    _assert_bit_identical(rank0["world_model"], rank1["world_model"], f"{phase} world model")
    assert rank0["learning_rate"] == rank1["learning_rate"]
    assert rank0["iteration"] == rank1["iteration"] == {"pretrain": 2, "resumed": 3, "finetune": 2}[phase]
    # the "fitted" world-model normaliser was fitted (on both ranks' data) and frozen
    assert float(rank0["world_model"]["state_normalizer.count"]) == 0  # fitted, frozen statistics
    assert not torch.equal(rank0["world_model"]["state_normalizer.mean"],
                           torch.zeros_like(rank0["world_model"]["state_normalizer.mean"]))


def test_only_rank_zero_writes_the_run(train_results):
    out, log_root, done = train_results
    for phase in ("pretrain", "resumed", "finetune", "offline"):
        assert _load(out / f"{phase}_rank0.pt")["log_dir"] is not None
        assert _load(out / f"{phase}_rank1.pt")["log_dir"] is None
    runs = sorted(p for p in log_root.glob("*/*") if p.is_dir())
    assert len(runs) == 3, runs  # one Pretrain run (resumed in place), one Finetune and one Offline run
    pretrain = next(p for p in runs if (p / "model_3.pt").exists())
    assert sorted(p.name for p in pretrain.glob("model_*.pt")) == ["model_1.pt", "model_2.pt", "model_3.pt"]
    rows = [json.loads(line) for line in (pretrain / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2, 3]  # one writer: no duplicated rows
    assert rows[0]["env_steps"] == 2 * 16 * 8  # both ranks' environment steps
    assert len(list(pretrain.glob("events.out.tfevents.*"))) == 2  # one per session, rank 0 only
    assert list((pretrain / "plots").glob("world_model_error_*.png"))  # rank 0 evaluated
    assert done.stdout.strip() == ""  # quiet config: no rank printed anything


# ----------------------------------------------------------------------------- clear errors
def test_distributed_without_a_launcher_is_a_one_sentence_error(monkeypatch, capsys):
    from rwm.cli import main

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "--distributed", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rwm train: error: --distributed needs the variables a launcher sets (RANK, LOCAL_RANK")
    assert "torchrun" in err and "\n" not in err and "Traceback" not in err


def test_cli_ranks_with_different_configurations_exit_with_one_sentence(tmp_path):
    """Two `rwm train --distributed` processes given the launcher's variables by hand, with different seeds."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "rwm.cli", "train", "--distributed", "--quiet",
                               "--seed", str(rank), "--num-envs", "4", f"runner.log_root={tmp_path}"],
                              env=_child_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                             MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RWM_DISTRIBUTED_TIMEOUT="60"),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    for rank, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        assert lines[0].startswith(f"rwm train: error: rank {rank} of 2: the ranks resolved different configurations")
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_shard_splits_a_data_set_into_disjoint_balanced_parts():
    from rwm.training.distributed import shard

    parts = [list(shard(10, rank, 3)) for rank in range(3)]
    assert sorted(i for part in parts for i in part) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]
    assert torch.equal(shard(torch.arange(6), 1, 2), torch.tensor([1, 3, 5]))
    with pytest.raises(ValueError, match="rank=2"):
        shard(10, 2, 2)


if __name__ == "__main__":  # the worker, under torchrun
    import faulthandler

    faulthandler.enable()  # a crash of a worker shows its Python stacks in the test's failure message
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    if sys.argv[1] == "reduce":
        _worker_reduce(Path(sys.argv[2]))
    elif sys.argv[1] == "train":
        _worker_train(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(f"unknown worker '{sys.argv[1]}'")
    from rwm.training.distributed import finish_process

    finish_process(0)


def test_offline_ranks_end_with_identical_networks(train_results):
    out, _, _ = train_results
    ranks = [_load(out / f"offline_rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["iteration"] == ranks[1]["iteration"] == 2
    _assert_bit_identical(ranks[0]["policy"], ranks[1]["policy"], "offline policy")
    _assert_bit_identical(ranks[0]["world_model"], ranks[1]["world_model"], "offline world model")
