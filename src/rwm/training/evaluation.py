"""Measuring a policy in the real simulator (``rwm play`` and the benchmarks).

Every environment starts a fresh episode at t = 0 (no random episode lengths) and the policy
acts deterministically (its mean) for ``seconds`` of simulated time. The metrics:

``tracking_lin_vel``
    mean over all env-steps of exp(-||v*_xy - v_xy||^2 / 0.25): the commanded planar velocity
    of the step against the base velocity (base frame) reached at its end, i.e. the
    ``track_lin_vel_xy_exp`` reward kernel without weight; 1 is perfect tracking.
``tracking_ang_vel``
    the same kernel on the yaw rate: mean of exp(-(w*_z - w_z)^2 / 0.25).
``lin_vel_error`` / ``ang_vel_error``
    mean over env-steps of ||v*_xy - v_xy|| (m/s) and |w*_z - w_z| (rad/s).
``fall_rate``
    the share of environments whose robot fell (a base-contact termination) at least once
    during the window. With the default 20 s window (one full episode) this is the share of
    episodes that end in a fall.
``falls_per_env_minute``
    all falls (an environment can fall again after its reset) per environment and simulated minute.
``falls_after_start`` / ``falls_after_command_change``
    falls within the first 3 s of an episode, and other falls within 2 s of a change of the
    commanded planar velocity: where policies trained in short imagined episodes fail.
``mean_episode_length_s``
    mean length of the episodes that ended inside the window (falls and time-outs); None if none did.
``by_command``
    where tracking is lost and falls happen: the env-steps split into 3 x 3 cells by the command
    in effect, rows by its planar speed (edges ``planar_speed_edges``, m/s), columns by its
    absolute yaw rate (edges ``yaw_rate_edges``, rad/s); per cell ``tracking_lin_vel`` (None for
    an empty cell), ``step_share`` and ``falls``. The step-weighted mean of the cells'
    tracking is ``tracking_lin_vel``, their falls sum to ``falls``.

Observation noise and pushes follow ``runner.eval`` (both off by default, like Isaac Lab's
Play configurations); the robot is the task's ``sim.robot_variant`` and ``sim.robot``, reported
as ``robot_variant`` and ``robot``. Episodes last at least the window, so a task trained with
short episodes (Finetune and Offline imagine 5.12 s ones) is measured exactly like one trained
with 20 s episodes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from rwm.config import apply_overrides, to_dict
from rwm.tasks.anymal_d_flat import TaskCfg

__all__ = ["evaluate_policy", "eval_config", "format_by_command", "TRACKING_SIGMA_SQ"]

TRACKING_SIGMA_SQ = 0.25  # the reward kernels' width: exp(-error^2 / 0.25)
START_WINDOW_S = 3.0  # a fall this soon after its episode began counts in falls_after_start
COMMAND_CHANGE_WINDOW_S = 2.0  # ... this soon after a new planar command, in falls_after_command_change
COMMAND_SPEED_EDGES = (0.5, 1.0)  # m/s, planar command speeds splitting by_command's rows
COMMAND_YAW_EDGES = (0.25, 0.5)  # rad/s, absolute yaw-rate commands splitting its columns


class _StateRecorder:
    """Forwards everything to the simulator and keeps the state each `step` returned.

    The environment resets finished episodes inside its own `step`, so its state afterwards is
    the reset state; the metrics need the state the step actually reached.
    """

    def __init__(self, simulator: Any):
        self._simulator = simulator
        self.stepped_state = None

    def step(self, actions: torch.Tensor):
        self.stepped_state = self._simulator.step(actions)
        return self.stepped_state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._simulator, name)


def eval_config(cfg: TaskCfg, num_envs: int | None = None, seed: int | None = None, device: str | None = None,
                seconds: float | None = None) -> TaskCfg:
    """The task configuration used for evaluation: `cfg` with ``runner.eval``'s noise, pushes, size and seed,
    and episodes no shorter than the evaluation window of `seconds`."""
    e = cfg.runner.eval
    seconds = float(seconds if seconds is not None else e.seconds)
    return apply_overrides(cfg, [
        f"env.episode_length_s={max(cfg.env.episode_length_s, seconds)}",
        f"num_envs={num_envs if num_envs is not None else e.num_envs}",
        f"seed={seed if seed is not None else e.seed}",
        f"device={device if device is not None else cfg.device}",
        f"env.noise.enabled={str(e.observation_noise).lower()}",
        f"sim.randomization.push={str(e.pushes).lower()}",
        # every policy meets the same command schedule, whatever its task trained with
        "env.commands.random_first_duration=false",
        "env.commands.fast_share=0",
    ])


def _by_command(tracking: torch.Tensor, steps: torch.Tensor, falls: torch.Tensor, num_columns: int) -> dict:
    """`by_command` from per-cell sums (cells,): tracking kernels, env-steps and falls, as rows of `num_columns`."""
    def as_rows(values: list) -> list[list]:
        return [values[i:i + num_columns] for i in range(0, len(values), num_columns)]

    steps_list = steps.tolist()
    total = max(1, sum(steps_list))
    return {"planar_speed_edges": list(COMMAND_SPEED_EDGES), "yaw_rate_edges": list(COMMAND_YAW_EDGES),
            "tracking_lin_vel": as_rows([t / n if n else None for t, n in zip(tracking.tolist(), steps_list)]),
            "step_share": as_rows([n / total for n in steps_list]), "falls": as_rows(falls.tolist())}


def _ranges(edges: list[float], unit: str) -> list[str]:
    """Cell labels of `edges`: '< a unit', 'a-b', ..., '>= z'."""
    middle = [f"{low:g}-{high:g}" for low, high in zip(edges, edges[1:])]
    return [f"< {edges[0]:g} {unit}", *middle, f">= {edges[-1]:g}"]


def format_by_command(by_command: dict) -> str:
    """`by_command` as a small table: tracking (share of env-steps, falls) per command cell."""
    columns = _ranges(by_command["yaw_rate_edges"], "rad/s")
    lines = ["tracking (share of env-steps, falls) by command: rows planar speed, columns |yaw rate|",
             " " * 12 + "".join(f"{label:>20}" for label in columns)]
    for label, tracking, share, falls in zip(_ranges(by_command["planar_speed_edges"], "m/s"),
                                             by_command["tracking_lin_vel"], by_command["step_share"],
                                             by_command["falls"]):
        cells = ["n/a" if t is None else f"{t:.3f} ({s:.0%}, {f})" for t, s, f in zip(tracking, share, falls)]
        lines.append(f"{label:<12}" + "".join(f"{cell:>20}" for cell in cells))
    return "\n".join(lines)


def evaluate_policy(cfg: TaskCfg, policy: Callable[[torch.Tensor], torch.Tensor], *, num_envs: int | None = None,
                    seconds: float | None = None, seed: int | None = None, device: str | None = None,
                    video_path: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run `policy` (obs (N, 48) -> actions (N, 12)) in fresh real environments and return the metrics above.

    `cfg` is the training configuration; the evaluation settings come from ``cfg.runner.eval``
    unless given here. With `video_path`, the first ``runner.eval.video_envs`` environments
    are rendered with the tracking camera for ``runner.eval.video_seconds`` into an MP4.
    """
    from rwm.tasks import make_env

    seconds = float(seconds if seconds is not None else cfg.runner.eval.seconds)
    if not seconds > 0:
        raise ValueError(f"evaluation seconds = {seconds}; expected > 0.")
    ecfg = eval_config(cfg, num_envs, seed, device, seconds)
    env = make_env(ecfg)
    recorder = _StateRecorder(env.sim)
    env.sim = recorder
    n, dev = env.num_envs, env.device
    steps = max(1, round(seconds / env.step_dt))

    video = None
    if video_path is not None:
        from rwm.viz.video import VideoRecorder

        e = cfg.runner.eval
        video = VideoRecorder(recorder._simulator, env_ids=list(range(min(e.video_envs, n))), width=e.video_width,
                              height=e.video_height, camera="track")
        video_stride = max(1, round(1.0 / (e.video_fps * env.step_dt)))
        video_steps = min(steps, round(e.video_seconds / env.step_dt))
        video.capture()

    track_lin = torch.zeros((), dtype=torch.float64, device=dev)
    track_ang = torch.zeros_like(track_lin)
    lin_err = torch.zeros_like(track_lin)
    ang_err = torch.zeros_like(track_lin)
    fell = torch.zeros(n, dtype=torch.bool, device=dev)
    falls = 0
    time_outs = 0
    episode_steps = torch.zeros(n, dtype=torch.long, device=dev)
    finished_lengths: list[int] = []
    start_steps = round(START_WINDOW_S / env.step_dt)
    change_steps = round(COMMAND_CHANGE_WINDOW_S / env.step_dt)
    never = steps + change_steps + 1
    steps_since_change = torch.full((n,), never, dtype=torch.long, device=dev)
    last_planar_command = env.command_manager.command[:, :2].clone()  # (N, 2)
    falls_after_start = torch.zeros((), dtype=torch.long, device=dev)  # summed on the device: no per-step sync
    falls_after_change = torch.zeros_like(falls_after_start)
    speed_edges = torch.tensor(COMMAND_SPEED_EDGES, device=dev)
    yaw_edges = torch.tensor(COMMAND_YAW_EDGES, device=dev)
    num_yaw_cells = len(COMMAND_YAW_EDGES) + 1
    num_cells = (len(COMMAND_SPEED_EDGES) + 1) * num_yaw_cells
    cell_tracking = torch.zeros(num_cells, dtype=torch.float64, device=dev)  # summed kernels per command cell
    cell_steps = torch.zeros(num_cells, dtype=torch.long, device=dev)
    one_step = torch.ones(n, dtype=torch.long, device=dev)  # every environment's step, added to its cell
    cell_falls = torch.zeros(num_cells, dtype=torch.long, device=dev)

    start = time.perf_counter()
    obs = env.get_observations()["policy"]
    with torch.inference_mode():
        for t in tqdm(range(steps), desc="rwm play", unit="step", leave=False, disable=not progress):
            command = env.command_manager.command.clone()  # (N, 3) in effect during this step
            # a new planar command within an episode (a new episode's first one is not a change)
            changed = (command[:, :2] != last_planar_command).any(dim=1) & (episode_steps > 0)
            steps_since_change[changed] = 0
            last_planar_command = command[:, :2]  # `command` is this step's own copy
            actions = policy(obs)
            obs_dict, _, dones, extras = env.step(actions)
            obs = obs_dict["policy"]
            state = recorder.stepped_state
            lin_sq = torch.sum(torch.square(command[:, :2] - state.base_lin_vel[:, :2]), dim=1)
            ang_sq = torch.square(command[:, 2] - state.base_ang_vel[:, 2])
            lin_kernel = torch.exp(-lin_sq / TRACKING_SIGMA_SQ)  # (N,)
            track_lin += lin_kernel.sum()
            track_ang += torch.exp(-ang_sq / TRACKING_SIGMA_SQ).sum()
            lin_err += torch.sqrt(lin_sq).sum()
            ang_err += torch.sqrt(ang_sq).sum()
            episode_steps += 1
            steps_since_change += 1
            fall = dones & ~extras["time_outs"]
            fell |= fall
            cell = (torch.bucketize(command[:, :2].norm(dim=1), speed_edges, right=True) * num_yaw_cells
                    + torch.bucketize(command[:, 2].abs(), yaw_edges, right=True))  # (N,) row-major cell index
            cell_tracking.index_add_(0, cell, lin_kernel.double())
            cell_steps.index_add_(0, cell, one_step)
            cell_falls.index_add_(0, cell, fall.long())
            falls += int(fall.sum())
            early = episode_steps <= start_steps
            falls_after_start += (fall & early).sum()
            falls_after_change += (fall & ~early & (steps_since_change <= change_steps)).sum()
            time_outs += int(extras["time_outs"].sum())
            ended = torch.nonzero(dones).flatten()
            if len(ended):
                finished_lengths.extend(episode_steps[ended].tolist())
                episode_steps[ended] = 0
                steps_since_change[ended] = never
            if video is not None and t < video_steps and (t + 1) % video_stride == 0:
                video.capture()
    elapsed = time.perf_counter() - start

    env_steps = n * steps
    result: dict[str, Any] = {
        "tracking_lin_vel": float(track_lin) / env_steps,
        "tracking_ang_vel": float(track_ang) / env_steps,
        "lin_vel_error": float(lin_err) / env_steps,
        "ang_vel_error": float(ang_err) / env_steps,
        "fall_rate": float(fell.float().mean()),
        "falls": falls,
        "falls_per_env_minute": falls / n / (steps * env.step_dt / 60.0),
        "falls_after_start": int(falls_after_start),
        "falls_after_command_change": int(falls_after_change),
        "time_outs": time_outs,
        "mean_episode_length_s": (sum(finished_lengths) / len(finished_lengths) * env.step_dt
                                  if finished_lengths else None),
        "by_command": _by_command(cell_tracking, cell_steps, cell_falls, num_yaw_cells),
        "num_envs": n,
        "seconds": steps * env.step_dt,
        "env_steps": env_steps,
        "observation_noise": ecfg.env.noise.enabled,
        "pushes": ecfg.sim.randomization.push,
        "robot_variant": ecfg.sim.robot_variant,
        "robot": to_dict(ecfg.sim.robot_params),  # the robot simulated, every change resolved
        "seed": ecfg.seed,
        "eval_wall_clock_s": elapsed,
    }
    if video is not None:
        result["video"] = str(video.write(video_path, fps=cfg.runner.eval.video_fps))
        video.close()
    for key in ("tracking_lin_vel", "tracking_ang_vel", "lin_vel_error", "ang_vel_error"):
        if not math.isfinite(result[key]):
            raise ValueError(f"evaluation produced a non-finite {key}; the policy or simulator diverged.")
    return result
