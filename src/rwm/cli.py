"""The `rwm` command line: list, demo, train, play, export."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from rwm.config import apply_overrides
from rwm.demo import DEMO_FINETUNE_ITERATIONS, DEMO_PRETRAIN_ITERATIONS


def _number(kind: type, minimum: float, strict: bool, what: str):
    """An argparse type: `kind` parsed from the text, above (`strict`) or at least `minimum`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{value} is not {'>' if strict else '>='} {minimum:g}")
        return value

    return parse


_positive_int = _number(int, 1, strict=False, what="an integer")
_non_negative_int = _number(int, 0, strict=False, what="an integer")
_positive_float = _number(float, 0.0, strict=True, what="a number")

def cmd_list(args: argparse.Namespace) -> int:
    from rwm.tasks import describe, task_ids

    width = max(len(task_id) for task_id in task_ids())
    for task_id in task_ids():
        print(f"{task_id:<{width}}  {describe(task_id)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The simulator check, then a shortened pipeline, told against references (see rwm.demo)."""
    from rwm.demo import run_demo

    return run_demo(args)


def _print_json_line(report: dict) -> None:
    print(json.dumps(report))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a policy (new run or --resume); Ctrl-C / SIGTERM save a checkpoint and exit 0."""
    from rwm.training.train import resolve_train_config, train

    main_process = True
    if args.distributed:  # fail at once, in one sentence, when not started by a launcher
        from rwm.training.distributed import LaunchEnvironment

        main_process = LaunchEnvironment.from_environ().rank == 0
    overrides = list(args.overrides)
    if args.load_run:
        from rwm.tasks import make_task_cfg

        start_policy = args.task is not None and make_task_cfg(args.task).mode in ("init", "pretrain")
        overrides.append(f"{'runner.start_policy' if start_policy else 'finetune.load_run'}={args.load_run}")
    if args.world_model:
        overrides.append(f"finetune.world_model_checkpoint={args.world_model}")
    if args.dataset is not None:
        from rwm.tasks import make_task_cfg

        section = "finetune" if args.task and make_task_cfg(args.task).mode == "finetune" else "offline"
        overrides.append(f"{section}.dataset={args.dataset}")
    if args.quiet:
        overrides += ["runner.console=none", "runner.progress_bar=false"]
    cfg, checkpoint = resolve_train_config(args.task, overrides, num_envs=args.num_envs,
                                           max_iterations=args.max_iterations, seed=args.seed, device=args.device,
                                           run_name=args.run_name, resume=args.resume)
    where = f"resuming {checkpoint}" if checkpoint else f"new run under {cfg.runner.log_root}/{cfg.experiment_name}"
    if main_process:
        ranks = f" per process, {os.environ.get('WORLD_SIZE')} processes" if args.distributed else ""
        print(f"[rwm train] {cfg.task_id} ({cfg.scale} scale): {cfg.num_envs} environments x "
              f"{cfg.runner.num_steps_per_env} steps{ranks}, {cfg.runner.max_iterations} iterations on {cfg.device}, "
              f"seed {cfg.seed}; {where}", flush=True)
    runner, summary = train(cfg, resume_from=checkpoint, distributed=args.distributed)
    if not main_process:
        return 0
    status = f"stopped by {summary['stopped_by']}" if summary["stopped_by"] else "finished"
    print(f"[rwm train] {status} after iteration {summary['iterations']}; run directory {summary['log_dir']}; "
          f"checkpoint {summary['last_checkpoint']}")
    _print_json_line({"task": cfg.task_id, **summary})
    return 0


def _checkpoint_path(args: argparse.Namespace):
    from rwm.training.checkpoint import find_checkpoint

    run = Path(args.run)
    if not run.exists():
        raise FileNotFoundError(f"run directory '{run}' does not exist.")
    return find_checkpoint(run, args.checkpoint)


def cmd_play(args: argparse.Namespace) -> int:
    """Run a trained policy deterministically in the real simulator and report tracking and falls."""
    if args.video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco
    from rwm.io import save_json
    from rwm.training.evaluation import evaluate_policy, format_by_command
    from rwm.training.export import policy_from_checkpoint

    checkpoint = _checkpoint_path(args)
    policy, cfg, payload = policy_from_checkpoint(checkpoint, device=args.device or "cpu")
    cfg = apply_overrides(cfg, args.overrides)  # the environment played in, e.g. sim.robot_variant=payload
    run_dir = checkpoint.parent
    video_path = run_dir / "videos" / f"play_{checkpoint.stem}.mp4" if args.video else None
    num_envs = args.num_envs or cfg.runner.eval.num_envs
    seconds = args.seconds or cfg.runner.eval.seconds
    print(f"[rwm play] {checkpoint} (iteration {payload['iter']}): {num_envs} environments x {seconds:g} s, "
          f"observation noise {'on' if cfg.runner.eval.observation_noise else 'off'}, "
          f"pushes {'on' if cfg.runner.eval.pushes else 'off'}", flush=True)
    metrics = evaluate_policy(cfg, policy.act_inference, num_envs=num_envs, seconds=seconds, seed=args.seed,
                              device=args.device, video_path=video_path, progress=not args.quiet)
    report = {"checkpoint": str(checkpoint), "iteration": payload["iter"], "task": cfg.task_id,
              "overrides": args.overrides, **metrics}
    # A play under overrides (another robot, say) gets a file of its own beside the plain one.
    suffix = "".join(f"__{re.sub(r'[^A-Za-z0-9._-]+', '-', item)}" for item in args.overrides)
    out = save_json(run_dir / "eval" / f"play_{checkpoint.stem}{suffix}.json", report)
    episode = report["mean_episode_length_s"]
    print(f"  tracking: linear {report['tracking_lin_vel']:.3f} (error {report['lin_vel_error']:.3f} m/s) | "
          f"yaw rate {report['tracking_ang_vel']:.3f} (error {report['ang_vel_error']:.3f} rad/s)")
    print(f"  falls: {report['fall_rate']:.1%} of environments ({report['falls']} falls, "
          f"{report['falls_per_env_minute']:.3f} per env-minute) | mean episode length "
          f"{'n/a' if episode is None else f'{episode:.2f} s'}")
    print("  " + format_by_command(report["by_command"]).replace("\n", "\n  "))
    if video_path is not None:
        print(f"  video: {report['video']}")
    print(f"  written to {out}")
    _print_json_line(report)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the deterministic policy (normaliser + actor mean) as ONNX or TorchScript, checked against torch."""
    from rwm.training.export import export_policy, policy_from_checkpoint

    checkpoint = _checkpoint_path(args)
    policy, cfg, payload = policy_from_checkpoint(checkpoint)
    result = export_policy(policy, checkpoint.parent / "exported", args.format, clip_actions=cfg.env.clip_actions)
    print(f"[rwm export] {checkpoint} (iteration {payload['iter']}) -> {result['path']}; max abs difference to "
          f"torch {result['max_abs_diff']:.2e} over {result['checked_samples']} random observations")
    _print_json_line({"checkpoint": str(checkpoint), **result})
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (with a pointer to --help) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Autoregressive world-model evaluation on fresh held-out data from the run's own policy."""
    import torch

    from rwm.io import save_json
    from rwm.training.export import policy_from_checkpoint
    from rwm.training.world_model_learning import collect_replay, load_world_model
    from rwm.viz.plots import model_denormalizer, plot_error_vs_step, plot_trajectories
    from rwm.world_model.evaluation import (
        autoregressive_rollout,
        evaluate_world_model,
        format_table,
    )

    checkpoint = _checkpoint_path(args)
    policy, cfg, payload = policy_from_checkpoint(checkpoint)
    model = load_world_model(payload)
    history = model.cfg.history_horizon
    if args.length < history + 1:
        raise ValueError(f"--length {args.length} is too short; expected at least the history ({history}) + 1.")
    print(f"[rwm evaluate] {checkpoint}: collecting {args.num_envs} environments x {args.length} steps "
          f"with the run's policy (seed {args.seed})")
    buffer = collect_replay(cfg, policy.act_inference, num_envs=args.num_envs, steps=args.length + 1, seed=args.seed,
                            progress=not args.quiet)
    windows = buffer.num_valid_windows(args.length)
    if windows == 0:
        raise ValueError(f"no episode of the run's policy lasted {args.length} steps (every robot fell); "
                         "evaluate a later checkpoint or pass a shorter --length.")
    generator = torch.Generator().manual_seed(args.seed)
    batch = buffer.sample(min(args.num_envs, windows), args.length, generator)
    results = evaluate_world_model(model, batch, history=history, noise_scales=tuple(args.noise),
                                   generator=generator)
    print(format_table(results))
    out_dir = checkpoint.parent / "eval"
    out = save_json(out_dir / f"world_model_{checkpoint.stem}.json",
                    {"checkpoint": str(checkpoint), "num_windows": results["num_windows"], "length": args.length,
                     **{k: v for k, v in results.items() if k not in ("num_windows", "length")}})
    plots = checkpoint.parent / "plots"
    plot_error_vs_step(results, plots / f"evaluate_{checkpoint.stem}_error.png")
    rollout = autoregressive_rollout(model, batch, history)
    plot_trajectories(rollout, plots / f"evaluate_{checkpoint.stem}_trajectories.png",
                      denormalize=model_denormalizer(model))
    print(f"[rwm evaluate] wrote {out} and plots in {plots}")
    return 0


def cmd_import_upstream(args: argparse.Namespace) -> int:
    """Converts an rsl_rl_rwm checkpoint's world model into this project's checkpoint layout."""
    from pathlib import Path

    import torch

    from rwm.config import apply_overrides, to_dict
    from rwm.io import atomic_write
    from rwm.world_model.upstream import load_upstream_checkpoint

    source = Path(args.checkpoint)
    if not source.is_file():
        raise FileNotFoundError(f"upstream checkpoint '{source}' does not exist.")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ValueError(f"'{out}' already exists; pass --force to replace it.")
    state_dict, cfg = load_upstream_checkpoint(source)
    if args.overrides:
        cfg = apply_overrides(cfg, args.overrides)
    payload = {"system_dynamics_state_dict": state_dict, "config": {"world_model": to_dict(cfg)},
               "infos": {"imported_from": str(source)}}
    atomic_write(out, lambda fh: torch.save(payload, fh))
    print(f"[rwm import-upstream] {source} -> {out} (ensemble {cfg.ensemble_size}, base {cfg.base}, "
          f"history {cfg.history_horizon})")
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    """The real robot and the run's world model side by side under the policy's real actions."""
    if not args.no_video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco
    from rwm.training.visualize import visualize_run

    checkpoint = _checkpoint_path(args)
    print(f"[rwm visualize] {checkpoint}: {args.num_envs} real environments, warm-up {args.warmup_seconds:g} s, "
          f"then {args.seconds:g} s of real and imagined steps under the same actions", flush=True)
    report = visualize_run(checkpoint, seconds=args.seconds, num_envs=args.num_envs,
                           warmup_seconds=args.warmup_seconds, seed=args.seed, device=args.device,
                           video=not args.no_video, video_envs=args.video_envs, progress=not args.quiet)
    falls = report["falls"]
    print(f"  relative L1 error over {report['horizon_steps']} predicted steps: {report['relative_l1']:.4f} "
          f"({report['num_compared_envs']} environments; "
          f"{len(falls)} real fall{'s' if len(falls) != 1 else ''} ended a comparison early)")
    print(f"  trajectories plot: {report['plots']['trajectories']}")
    print(f"  error plot: {report['plots']['error']}")
    print(f"  errors (JSON): {report['json']}")
    if report["video"] is not None:
        print(f"  video: {report['video']}")
    _print_json_line({k: v for k, v in report.items() if k not in ("relative_l1_per_step", "relative_l1_per_env")})
    return 0


def _dataset_groups(name: str, width: int) -> list[tuple[str, slice]]:
    """Named column groups of a dataset stream, for `rwm dataset info`."""
    from rwm.envs.mdp.observations import POLICY_SLICES
    from rwm.sim.state import CONTACT_SLICES, STATE_SLICES

    named = {"system_state": STATE_SLICES, "system_contact": CONTACT_SLICES, "policy_observation": POLICY_SLICES}
    if name in named:
        return [(f"{name}.{group}", sl) for group, sl in named[name].items()]
    return [(name, slice(0, width))]


def _describe_source(source) -> str:
    if not isinstance(source, dict):
        return str(source)
    kind = source.get("kind", "unknown")
    if kind == "policy":
        sampled = ", actions sampled from its Gaussian" if source.get("deterministic") is False else ""
        return f"policy {source.get('run')}/{source.get('checkpoint')} (iteration {source.get('iteration')}{sampled})"
    if kind == "random":
        scale = source.get("scale", 1.0)
        return f"random actions in [-{scale}, {scale}] (seed {source.get('seed')})"
    if kind == "merge":
        parts = [f"{Path(i['path']).name} [{_describe_source(i.get('source'))}]" for i in source.get("inputs", [])]
        return "merge of " + "; ".join(parts)
    if kind == "csv":
        return f"upstream CSV files in {source.get('directory')} ({len(source.get('files', []))} files)"
    if kind == "minari":
        return f"Minari dataset {source.get('dataset_id')}"
    return kind


def cmd_dataset_record(args: argparse.Namespace) -> int:
    """Record transitions of a policy (a run's checkpoint, or random actions) in the real simulator."""
    from rwm.data.record import record_dataset
    from rwm.envs.scripted_policies import RandomPolicy
    from rwm.training.recording import policy_actions

    if args.checkpoint and not args.run:
        raise ValueError("--checkpoint chooses a checkpoint inside --run RUN_DIR; pass --run too.")
    cfg = _recording_cfg(args)
    if args.run:
        act, source = policy_actions(_checkpoint_path(args), cfg.device, stochastic=args.stochastic, seed=cfg.seed)
    elif args.stochastic:
        raise ValueError("--stochastic samples a run's policy; pass --run (random actions are random already).")
    else:
        act = RandomPolicy(cfg.num_envs, cfg.device, scale=args.action_scale, seed=cfg.seed)
        source = {"kind": "random", "scale": args.action_scale, "seed": cfg.seed}
    per_env = -(-args.steps // cfg.num_envs)
    print(f"[rwm dataset record] {cfg.task_id}: {_describe_source(source)}; {cfg.num_envs} environments x "
          f"{per_env} steps = {per_env * cfg.num_envs} transitions, seed {cfg.seed} -> {args.out}", flush=True)
    summary = _recording("record", args.out, lambda: record_dataset(
        cfg, act, args.out, steps=args.steps, source=source, overwrite=args.force, progress=not args.quiet))
    print(f"[rwm dataset record] wrote {summary['num_transitions']} transitions in {summary['num_episodes']} "
          f"episodes to {summary['path']}")
    _print_json_line(summary)
    return 0


def _recording(command: str, out: str, record):
    """`record()`'s summary; on Ctrl-C, first says that nothing was written (recordings are atomic)."""
    try:
        return record()
    except KeyboardInterrupt:
        print(f"[rwm dataset {command}] interrupted: nothing was written to {out}", file=sys.stderr)
        raise


def _recording_cfg(args: argparse.Namespace):
    """The task config a recording runs in: --task with --num-envs, --seed, --device and the overrides."""
    from rwm.tasks import make_task_cfg

    from rwm.device import resolve_device

    overrides = [f"num_envs={args.num_envs}", f"seed={args.seed}", *([f"device={args.device}"] if args.device else []),
                 *args.overrides]
    cfg = apply_overrides(make_task_cfg(args.task), overrides)
    resolve_device(cfg.device)  # the random policy draws on it before any environment exists
    return cfg


def cmd_dataset_record_mixed(args: argparse.Namespace) -> int:
    """Record RWM-U's mixed dataset (random actions, then four checkpoints of one run) into one file."""
    from rwm.training.recording import MIXED_SOURCES, mixed_checkpoints, record_mixed_dataset

    run = Path(args.run)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory '{run}' (--run) does not exist.")
    cfg = _recording_cfg(args)
    sampled = ", actions sampled from each policy's Gaussian" if args.stochastic else ""
    parts = ["random actions"] + [c.name for c in mixed_checkpoints(run)]
    shares = " + ".join(f"{share:.0%} {part}" for (_, share), part in zip(MIXED_SOURCES, parts))
    print(f"[rwm dataset record-mixed] {cfg.task_id}: {args.steps} transitions of {run}: {shares}{sampled}; "
          f"{cfg.num_envs} environments, seeds {cfg.seed + 1}..{cfg.seed + len(parts)} -> {args.out}", flush=True)
    summary = _recording("record-mixed", args.out, lambda: record_mixed_dataset(
        cfg, run, args.out, steps=args.steps, stochastic=args.stochastic, overwrite=args.force,
        progress=not args.quiet))
    print(f"[rwm dataset record-mixed] wrote {summary['num_records']} records in {summary['num_episodes']} episodes "
          f"to {summary['path']}")
    _print_json_line(summary)
    return 0


def cmd_dataset_info(args: argparse.Namespace) -> int:
    """Print a dataset's summary: sizes, episode lengths, terminations, source, per-column statistics."""
    from rwm.data import DatasetError, DatasetReader

    with DatasetReader(args.file) as reader:
        check = reader.verify() if args.verify else None
        if check is not None and check["problem"] is not None:
            if args.json:
                _print_json_line({"path": str(reader.path), "verification": check})
            else:
                print(f"dataset {reader.path}: verification failed")
                _print_verification(check)
            raise DatasetError(check["problem"])
        info = reader.info()
    if args.json:
        _print_json_line({**info, **({} if check is None else {"verification": check})})
        return 0
    lengths, dt = info["episode_length"], info["step_dt"] or 0.02
    share = info["termination_share"]
    print(f"dataset {info['path']}")
    print(f"  robot {info['robot']}, step {dt} s, layout version {info['layout_version']}, "
          f"created {info['created_at']}")
    print(f"  source: {_describe_source(info['source'])}")
    print(f"  {info['num_transitions']} transitions ({info['num_records']} records) in {info['num_episodes']} "
          f"episodes: "
          f"{info['episodes_fell']} fell, {info['episodes_timed_out']} timed out, {info['episodes_cut']} cut by the "
          "end of the recording")
    print(f"  episode length (records): min {lengths['min']}, mean {lengths['mean']:.1f}, "
          f"median {lengths['median']:.0f}, "
          f"max {lengths['max']} ({lengths['mean'] * dt:.2f} s on average)")
    print(f"  termination share: {share['episodes']:.1%} of episodes end in a fall; {share['records']:.2%} of records "
          "have system_termination = 1")
    print("  per-column mean / std:")
    for name, stats in info["statistics"].items():
        if not stats:
            continue
        for label, sl in _dataset_groups(name, len(stats["mean"])):
            mean = " ".join(f"{v:+.3g}" for v in stats["mean"][sl])
            std = " ".join(f"{v:.3g}" for v in stats["std"][sl])
            print(f"    {label:<32} mean [{mean}]  std [{std}]")
    if check is not None:
        _print_verification(check)
    return 0


def _print_verification(check: dict) -> None:
    """`rwm dataset info`'s lines about DatasetReader.verify: checksums, NaN / inf and damage per column."""
    checksums = "checked" if check["checksums"] else "absent (written before rwm stored them)"
    print(f"  verified: every row of every column read; chunk checksums {checksums}")
    counts = ", ".join(f"{name} {c['nan']}/{c['inf']}" for name, c in check["columns"].items())
    print(f"  NaN / inf per column: {counts}")
    for name, counts in check["columns"].items():
        for first, last in counts["damaged_rows"]:
            print(f"  damaged: {name} rows {first}-{last}")


def cmd_dataset_merge(args: argparse.Namespace) -> int:
    """Concatenate datasets (e.g. random + medium + expert) into one mixed dataset."""
    from rwm.data.merge import merge_datasets

    summary = merge_datasets(args.inputs, args.out, overwrite=args.force)
    note = f"; dropped columns {summary['dropped_columns']} (not in every input)" if summary["dropped_columns"] else ""
    print(f"[rwm dataset merge] {summary['inputs']} datasets -> {summary['path']}: {summary['num_records']} records in "
          f"{summary['num_episodes']} episodes{note}")
    _print_json_line(summary)
    return 0


def cmd_dataset_import_csv(args: argparse.Namespace) -> int:
    """Convert the upstream lite's state_action_data_<i>.csv files into a dataset."""
    from rwm.data.csv_import import import_csv

    summary = import_csv(args.directory, args.out, overwrite=args.force, min_rows=args.min_rows,
                         progress=not args.quiet)
    print(f"[rwm dataset import-csv] {summary['files']} files -> {summary['path']}: {summary['num_transitions']} "
          f"transitions in {summary['num_episodes']} episodes")
    _print_json_line(summary)
    return 0


def cmd_dataset_export_minari(args: argparse.Namespace) -> int:
    """Write a dataset as a local Minari dataset."""
    from rwm.data.minari_io import export_minari

    summary = export_minari(args.file, args.dataset_id, out_dir=args.out_dir)
    print(f"[rwm dataset export-minari] {args.file} -> Minari dataset '{summary['dataset_id']}' at {summary['path']}: "
          f"{summary['episodes']} episodes, {summary['steps']} steps")
    _print_json_line(summary)
    return 0


def cmd_dataset_import_minari(args: argparse.Namespace) -> int:
    """Convert a local Minari dataset (id or directory) into a dataset file."""
    from rwm.data.minari_io import import_minari

    summary = import_minari(args.source, args.out, overwrite=args.force, datasets_dir=args.datasets_dir)
    print(f"[rwm dataset import-minari] '{summary['dataset_id']}' -> {summary['path']}: {summary['num_records']} "
          f"records in {summary['num_episodes']} episodes")
    _print_json_line(summary)
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--run RUN_DIR and --checkpoint model_K.pt, shared by every command that reads a run."""
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help=f"{what} (a run directory logs/<experiment>/<time>..., or one checkpoint file)")
    parser.add_argument("--checkpoint", default=None, metavar="model_K.pt",
                        help="checkpoint file name inside the run directory (default: the latest)")


def _add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --stochastic, --out, --force, --quiet and the overrides, shared by the recording commands."""
    parser.add_argument("--device", default=None, help="torch device (default: the task's, cpu)")
    parser.add_argument("--stochastic", action="store_true",
                        help="sample every action from the policy's Gaussian (its learned std, as in training) "
                             "instead of taking its mean, so the data also shows how the robot answers actions "
                             "other than the policy's own")
    parser.add_argument("--out", required=True, help="dataset file to write (.h5)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="task config overrides, e.g. env.noise.enabled=false")


def _add_list_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm list`: its arguments."""
    p = subparsers.add_parser("list", help="print the registered task ids, one per line",
                              description="Print every registered task id with a one-line description.")
    p.set_defaults(func=cmd_list)


def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm demo`: its arguments."""
    p = subparsers.add_parser("demo", help="measure the simulator, then the model-based pipeline at a short CPU scale",
                              description="Run the ANYmal-D simulator with a standing, then a random policy, and "
                                          "print throughput, falls, base height and reward. Then (--pipeline mbpo, "
                                          "the default) Pretrain a policy and the world model in the simulator, "
                                          "Finetune a new policy only in the world model's imagination, measure it "
                                          "in the real simulator with a video, and film the real robot beside its "
                                          "imagined twin; or (--pipeline init) train and film a model-free PPO "
                                          "policy. Ends with a summary: the trained policy's tracking and fall "
                                          "rate beside a standing robot's and a full PPO run's, whether the robot "
                                          "walks, and where every stage's result is "
                                          "(<runner.log_root>/demo/<time>/summary.json; last line: JSON). One "
                                          "Ctrl-C ends the whole demo (a training stage saves its checkpoint first).")
    p.add_argument("--task", default="Velocity-Flat-Anymal-D-Init-v0",
                   help="task id of the simulator check and of --pipeline init (see `rwm list`)")
    p.add_argument("--num-envs", type=_positive_int, default=256,
                   help="parallel environments of the simulator check (default 256)")
    p.add_argument("--seconds", type=_positive_float, default=5.0,
                   help="simulated seconds per policy (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for the task tensors: cpu or cuda (default cpu)")
    p.add_argument("--pipeline", choices=("mbpo", "init"), default="mbpo",
                   help="what to train after the simulator check: 'mbpo' (default) Pretrain, then Finetune in "
                        "imagination, the policy in the real simulator and the side-by-side video; 'init' "
                        "model-free PPO only")
    p.add_argument("--pretrain-iterations", type=_non_negative_int, default=DEMO_PRETRAIN_ITERATIONS,
                   help=f"mbpo: Pretrain iterations (default {DEMO_PRETRAIN_ITERATIONS}; 0 skips training)")
    p.add_argument("--finetune-iterations", type=_positive_int, default=DEMO_FINETUNE_ITERATIONS,
                   help=f"mbpo: Finetune iterations (default {DEMO_FINETUNE_ITERATIONS})")
    p.add_argument("--train-iterations", type=int, default=400,
                   help="init: PPO iterations (default 400, about 10 minutes on 2 cores: the robot walks from "
                        "about 350 on; 0 skips training)")
    p.add_argument("--no-video", action="store_true", help="do not render the trained policy's video")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. env.noise.enabled=false sim.randomization.push=false")
    p.set_defaults(func=cmd_demo)


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm train`: its arguments."""
    p = subparsers.add_parser("train", help="train a task: PPO in the simulator or in imagination (or resume a run)",
                              description="Train a velocity-tracking PPO policy: in the MuJoCo simulator (Init, "
                                          "Pretrain, which also trains the world model) or in the world model's "
                                          "imagination (Finetune, Offline). A run is written to "
                                          "<runner.log_root>/<experiment_name>/<YYYY-MM-DD_HH-MM-SS>[_<run name>]/ "
                                          "with config.yaml, model_<iter>.pt checkpoints, TensorBoard events and "
                                          "metrics.jsonl. Ctrl-C (or SIGTERM) saves a checkpoint and exits 0. "
                                          "Settings are applied in this order: the task's defaults, scale=cpu|paper, "
                                          "the flags below, then KEY=VALUE overrides. The last line printed is a "
                                          "JSON summary.")
    p.add_argument("--task", default=None,
                   help="task id (see `rwm list`; default Velocity-Flat-Anymal-D-Init-v0, or the resumed run's task)")
    p.add_argument("--num-envs", type=_positive_int, default=None,
                   help="parallel environments (default: the task's, 1024 at CPU scale)")
    p.add_argument("--max-iterations", type=_non_negative_int, default=None,
                   help="total training iterations of the run; a resumed run continues up to this count "
                        "(default: the task's, 600 for Init at CPU scale)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the task's, 0)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda or cuda:<index> (default cpu)")
    p.add_argument("--run-name", default=None, help="suffix of the run directory's name")
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="continue a run from a checkpoint file or a run directory (its latest model_<iter>.pt): "
                        "iteration counter, optimizer and random states carry on, and the run keeps writing into "
                        "the same directory; its stored config is used, with the flags and overrides given here on top")
    p.add_argument("--load-run", default=None, metavar="RUN_DIR",
                   help="Finetune: the Pretrain run to take the world model from (and the policy, with "
                        "finetune.load_policy=true); its latest checkpoint is used. Without --load-run and "
                        "--world-model, Finetune starts from scratch: an untrained world model and a random policy. "
                        "Init and Pretrain: a run whose policy the new run starts from (runner.start_policy). The "
                        "policy's optimizer state (Adam's moments, the adaptive learning rate) comes with it")
    p.add_argument("--world-model", default=None, metavar="CHECKPOINT",
                   help="Finetune: a world-model checkpoint (a run's model_<iter>.pt or an `rwm import-upstream` "
                        "file); takes precedence over --load-run's world model")
    p.add_argument("--dataset", default=None, metavar="FILE",
                   help="Offline: the recorded dataset (rwm dataset file) the world model is fitted on and "
                        "imagination starts from (override offline.dataset=FILE); Finetune: recorded data the "
                        "world model keeps learning from beside the new real data (finetune.dataset=FILE)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration console summary and no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="train as one process of a torchrun launch (`torchrun --nproc-per-node K -m rwm.cli train "
                        "... --distributed`): each process steps its own num_envs environments with seed + rank, "
                        "gradients are averaged across processes (gloo on CPU, NCCL on cuda:LOCAL_RANK), and only "
                        "rank 0 writes the run; RWM_DISTRIBUTED_TIMEOUT (seconds, default 600) bounds how long a "
                        "process waits for the others")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. scale=paper runner.save_interval=25 policy.obs_normalization=false "
                        "algorithm.entropy_coef=0.01 (put them after the flags)")
    p.set_defaults(func=cmd_train)


def _add_play_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm play`: its arguments."""
    p = subparsers.add_parser("play", help="evaluate a trained policy in the simulator (metrics, optional video)",
                              description="Run a run's policy deterministically (its mean action) in fresh simulated "
                                          "environments with observation noise and pushes off, print tracking and "
                                          "fall metrics and write them to <run>/eval/play_<checkpoint>[__<overrides>].json (last "
                                          "line: JSON). Tracking is the mean over env-steps of exp(-error^2/0.25) "
                                          "for the planar and the yaw velocity; fall rate is the share of "
                                          "environments that fell at least once.")
    _add_run_arguments(p, "the run whose policy to play")
    p.add_argument("--num-envs", type=_positive_int, default=None,
                   help="environments to evaluate (default: runner.eval.num_envs, 128)")
    p.add_argument("--seconds", type=_positive_float, default=None,
                   help="simulated seconds (default: runner.eval.seconds, 20 = one full episode)")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: runner.eval.seed, 1)")
    p.add_argument("--device", default=None, help="torch device for the policy and task tensors (default cpu)")
    p.add_argument("--video", action="store_true",
                   help="also render the first environments with the tracking camera into <run>/videos/ (MP4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the run's config for the environment played in, e.g. sim.robot_variant=payload "
                        "(a changed robot, see README) or runner.eval.pushes=true")
    p.set_defaults(func=cmd_play)


def _add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm export`: its arguments."""
    p = subparsers.add_parser("export", help="export a trained policy as ONNX or TorchScript",
                              description="Write the deterministic policy (observation normaliser + actor mean) of a "
                                          "run to <run>/exported/policy.onnx (input 'obs' (batch, 48), output "
                                          "'actions' (batch, 12)) or policy.pt (TorchScript). The export is checked "
                                          "against the torch policy on random observations and fails if they differ "
                                          "by more than 1e-4.")
    _add_run_arguments(p, "the run whose policy to export")
    p.add_argument("--format", choices=("onnx", "jit"), default="onnx", help="onnx (default) or jit (TorchScript)")
    p.set_defaults(func=cmd_export)


def _add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm evaluate`: its arguments."""
    p = subparsers.add_parser("evaluate", help="evaluate a run's world model autoregressively (table, JSON, plots)",
                              description="Collect fresh data with the run's policy in the simulator and measure the "
                                          "world model's autoregressive error: relative L1 overall, per state group "
                                          "and per predicted step, contact and termination accuracy, for each "
                                          "input-noise scale. Writes <run>/eval/world_model_<checkpoint>.json and "
                                          "plots.")
    _add_run_arguments(p, "a Pretrain, Finetune or Offline run")
    p.add_argument("--num-envs", type=_positive_int, default=100, help="evaluation windows / environments (default 100)")
    p.add_argument("--length", type=_positive_int, default=400,
                   help="window length: history + predicted steps (default 400 = 32 + 368)")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4, 0.5, 0.8],
                   help="input-noise scales (default 0 0.1 0.2 0.4 0.5 0.8)")
    p.add_argument("--seed", type=int, default=1, help="seed of the evaluation environments (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)


def _add_import_upstream_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm import-upstream`: its arguments."""
    p = subparsers.add_parser("import-upstream", help="convert an upstream rsl_rl_rwm world-model checkpoint",
                              description="Convert the system_dynamics_state_dict of an upstream rsl_rl_rwm "
                                          "checkpoint into this project's layout (batched ensemble heads, "
                                          "normalisers with the fixed statistics), so it predicts exactly what "
                                          "upstream's model predicts.")
    p.add_argument("checkpoint", help="the upstream checkpoint (.pt)")
    p.add_argument("--out", required=True, help="the converted checkpoint to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="world-model settings the upstream file cannot tell, e.g. history_horizon=32")
    p.set_defaults(func=cmd_import_upstream)


def _add_visualize_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm visualize`: its arguments."""
    p = subparsers.add_parser(
        "visualize", help="the real robot and the run's world model side by side (plots, JSON, video)",
        description="From the same real starting history, run the real simulator and a Pretrain or Finetune run's "
                    "world model side by side under the actions the policy takes in the real robot (observation "
                    "noise and pushes off, commands resampled every 2 s). The world model never sees a real state "
                    "again after the start; a real fall ends that environment's comparison. Writes predicted-vs-true "
                    "plots to <run>/plots/, the relative L1 error over the horizon to "
                    "<run>/eval/visualize_<checkpoint>.json and a video of the imagined robot (transparent blue) "
                    "walking beside the real one to <run>/videos/ (last line: JSON).")
    _add_run_arguments(p, "a Pretrain, Finetune or Offline run")
    p.add_argument("--seconds", type=_positive_float, default=5.0,
                   help="simulated seconds of side-by-side prediction (default 5)")
    p.add_argument("--num-envs", type=_positive_int, default=10, help="real environments compared (default 10)")
    p.add_argument("--warmup-seconds", type=float, default=1.0,
                   help="real seconds before the comparison starts; at least the model's history (default 1)")
    p.add_argument("--video-envs", type=_positive_int, default=2,
                   help="environment pairs shown side by side in the video (default 2)")
    p.add_argument("--seed", type=int, default=1, help="seed of the real environments (default 1)")
    p.add_argument("--device", default="cpu", help="torch device for the policy and world model (default cpu)")
    p.add_argument("--no-video", action="store_true", help="skip the video (plots and JSON only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_visualize)


def _add_dataset_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset`: its arguments."""
    p = subparsers.add_parser("dataset", help="record, inspect, merge and convert transition datasets (offline RWM-U)",
                              description="Transition datasets: one HDF5 file per dataset (rwm.data.format) holding "
                                          "per-episode system_state (45), the action taken from each state (12), "
                                          "contacts (8), termination (1), optionally policy observations, commands "
                                          "and rewards, plus metadata (robot, layout version, normaliser, source "
                                          "policy, step 0.02 s).")
    commands = p.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    commands.required = True
    _add_dataset_record_parser(commands)
    _add_dataset_record_mixed_parser(commands)
    _add_dataset_info_parser(commands)
    _add_dataset_merge_parser(commands)
    _add_dataset_import_csv_parser(commands)
    _add_dataset_export_minari_parser(commands)
    _add_dataset_import_minari_parser(commands)


def _add_dataset_record_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset record`: its arguments."""
    p = subparsers.add_parser("record", help="record a policy's transitions in the real simulator",
                              description="Run a run's policy (its mean action, or sampled with --stochastic; from "
                                          "--run [--checkpoint]) or random actions (--policy random) in fresh "
                                          "simulated environments and write the transitions to --out. --steps counts "
                                          "transitions over all environments (rounded up to a multiple of "
                                          "--num-envs). Checkpoints of one run at different iterations give random / "
                                          "medium / expert datasets; `rwm dataset merge` mixes them. The file "
                                          "appears only when the recording is complete: Ctrl-C leaves nothing under "
                                          "--out.")
    p.add_argument("--task", default="Velocity-Flat-Anymal-D-Init-v0", help="task id whose simulator and observation "
                   "settings are used (default Velocity-Flat-Anymal-D-Init-v0)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", default=None, metavar="RUN_DIR", help="run directory (or checkpoint file) of the policy")
    who.add_argument("--policy", choices=("random",), default=None, help="'random': uniform random actions")
    p.add_argument("--checkpoint", default=None, metavar="model_K.pt",
                   help="checkpoint file name inside --run (default: the latest)")
    p.add_argument("--steps", type=_positive_int, required=True, help="transitions to record, over all environments")
    p.add_argument("--num-envs", type=_positive_int, default=64, help="parallel environments (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the environments and the random policy (default 0)")
    p.add_argument("--action-scale", type=_positive_float, default=1.0,
                   help="--policy random: actions uniform in [-scale, scale] (default 1)")
    _add_recording_arguments(p)
    p.set_defaults(func=cmd_dataset_record)


def _add_dataset_record_mixed_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset record-mixed`: its arguments."""
    p = subparsers.add_parser("record-mixed", help="record RWM-U's mixed dataset from one run's checkpoints",
                              description="Record --steps transitions in one file: 10 % random actions, then the "
                                          "run's checkpoints nearest 1/6, 5/12, 2/3 and all of its last iteration "
                                          "(15, 20, 25 and 30 %; iterations 100, 250, 400 and 600 of a 600-iteration "
                                          "run), each in fresh environments with its own seed, merged like `rwm "
                                          "dataset merge`. The file appears only when the recording is complete.")
    p.add_argument("--task", default="Velocity-Flat-Anymal-D-Init-v0", help="task id whose simulator and observation "
                   "settings are used (default Velocity-Flat-Anymal-D-Init-v0)")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory whose checkpoints are recorded")
    p.add_argument("--steps", type=_positive_int, required=True, help="transitions to record in all")
    p.add_argument("--num-envs", type=_positive_int, default=256, help="parallel environments (default 256)")
    p.add_argument("--seed", type=int, default=0, help="part k is recorded with seed SEED + k (default 0)")
    _add_recording_arguments(p)
    p.set_defaults(func=cmd_dataset_record_mixed)


def _add_dataset_info_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset info`: its arguments."""
    p = subparsers.add_parser("info", help="summarise a dataset file",
                              description="Verify the file (every row of every column read, chunk checksums, NaN / "
                                          "inf counts per column; --no-verify skips it), then print transitions, "
                                          "episodes, episode-length statistics, how episodes ended, the termination "
                                          "share, the source policy and per-column mean/std.")
    p.add_argument("file", help="dataset file")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line instead")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="read every row of every column first: chunk checksums, NaN / inf counts per column; "
                        "exits with an error when the file is damaged or holds non-finite values (default on)")
    p.set_defaults(func=cmd_dataset_info)


def _add_dataset_merge_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset merge`: its arguments."""
    p = subparsers.add_parser("merge", help="concatenate datasets into one (e.g. the mixed dataset)",
                              description="Copy the episodes of every input, in order, into --out; optional columns "
                                          "that not every input has are dropped. The metadata lists each input's "
                                          "source.")
    p.add_argument("inputs", nargs="+", metavar="FILE", help="dataset files (two or more)")
    p.add_argument("--out", required=True, help="merged dataset file to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_dataset_merge)


def _add_dataset_import_csv_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset import-csv`: its arguments."""
    p = subparsers.add_parser("import-csv", help="convert the upstream lite CSV files into a dataset",
                              description="Read DIR/state_action_data_0.csv, _1, ... (no header, 66 columns: 45 "
                                          "state, 12 action, 8 contacts, 1 termination; one continuous 50 Hz stream "
                                          "in index order). Upstream's action column is the action that led INTO its "
                                          "row; each record here gets the action taken FROM its state (the next "
                                          "row's). A termination row ends its episode, row 0 included. Missing, "
                                          "empty or malformed files are an error.")
    p.add_argument("directory", help="folder holding the CSV files")
    p.add_argument("--out", required=True, help="dataset file to write")
    p.add_argument("--min-rows", type=_positive_int, default=1,
                   help="refuse files with fewer rows (default 1; upstream expected 10000)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dataset_import_csv)


def _add_dataset_export_minari_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset export-minari`: its arguments."""
    p = subparsers.add_parser("export-minari", help="write a dataset as a local Minari dataset",
                              description="Observations are system_state (45), actions the actions taken from them, "
                                          "rewards (zeros if absent), terminations = falls, truncations = other "
                                          "endings; contacts, termination flags, policy observations and commands go "
                                          "into infos. Written to --out-dir, else $MINARI_DATASETS_PATH, else "
                                          "~/.minari/datasets; no network.")
    p.add_argument("file", help="dataset file")
    p.add_argument("--dataset-id", required=True, help="Minari id: [namespace/]name-v<version>, e.g. anymal-random-v0")
    p.add_argument("--out-dir", default=None, help="Minari datasets directory to write into")
    p.set_defaults(func=cmd_dataset_export_minari)


def _add_dataset_import_minari_parser(subparsers: argparse._SubParsersAction) -> None:
    """`rwm dataset import-minari`: its arguments."""
    p = subparsers.add_parser("import-minari", help="convert a local Minari dataset into a dataset file",
                              description="Read a Minari dataset by id (from --datasets-dir, $MINARI_DATASETS_PATH "
                                          "or ~/.minari/datasets; never downloaded) or by directory; observations "
                                          "must be the 45-dim system_state (or a dict holding it) and actions 12-dim.")
    p.add_argument("source", metavar="NAME_OR_PATH", help="Minari dataset id or directory")
    p.add_argument("--out", required=True, help="dataset file to write")
    p.add_argument("--datasets-dir", default=None, help="Minari datasets directory to look the id up in")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_dataset_import_minari)


def build_parser() -> argparse.ArgumentParser:
    """The `rwm` command line: each command's arguments come from its own `_add_<command>_parser`."""
    parser = _Parser(
        prog="rwm",
        description="Robotic World Model: simulate ANYmal D in MuJoCo, learn its dynamics, train policies in imagination.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_list_parser(sub)
    _add_demo_parser(sub)
    _add_train_parser(sub)
    _add_play_parser(sub)
    _add_export_parser(sub)
    _add_evaluate_parser(sub)
    _add_import_upstream_parser(sub)
    _add_visualize_parser(sub)
    _add_dataset_parser(sub)
    _add_debug_flag(parser)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """--debug on the command line and on every subcommand, so it works before or after the command's name."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the full traceback of a failure (also RWM_DEBUG=1)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug_flag(child)


class _InterruptWatch:
    """Remembers a Ctrl-C (SIGINT) during the command: whatever exception it turns into on its way out
    (an ImportError when it lands inside `import mujoco`), the command then just says it was interrupted."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self) -> "_InterruptWatch":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _check_device(args: argparse.Namespace) -> None:
    """--device cuda where there is no CUDA is refused for what it is, before anything is loaded."""
    device = getattr(args, "device", None)
    if device:
        from rwm.device import resolve_device

        resolve_device(device)


def _report_failure(command: str, error: BaseException, debug: bool, interrupted: bool) -> int:
    """Print one line for `error` on stderr and return the exit code (see rwm.errors)."""
    import traceback

    from rwm.errors import explain, find_in_chain, one_line, write_traceback

    if debug:
        traceback.print_exception(error)
    if interrupted or find_in_chain(error, KeyboardInterrupt) is not None:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    message = explain(error)
    if message is not None:
        print(f"{command}: error: {message}", file=sys.stderr)
        return 2
    summary = one_line(str(error)) or "no message"
    if len(summary) > 200:
        summary = summary[:197] + "..."
    if debug:
        where = "its traceback is printed above"
    else:
        trace = write_traceback(error, command)
        where = (f"the full traceback is in {trace} (or rerun with --debug)" if trace is not None
                 else "rerun with --debug to see the traceback")
    print(f"{command}: unexpected {type(error).__name__} ({summary}); this is a bug in rwm, {where}.",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as one line on stderr and an exit code != 0 (see _report_failure)."""
    with _InterruptWatch() as watch:
        args, command = None, "rwm"
        debug = os.environ.get("RWM_DEBUG", "") not in ("", "0")
        try:
            args = build_parser().parse_args(argv)
            command = " ".join(["rwm", args.command, *([args.dataset_command] if args.command == "dataset" else [])])
            debug = debug or getattr(args, "debug", False)
            _check_device(args)
            code = args.func(args)
        except (Exception, KeyboardInterrupt) as error:
            code = _report_failure(command, error, debug, watch.seen)
    if getattr(args, "distributed", False):
        from rwm.training.distributed import finish_process

        code = finish_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
