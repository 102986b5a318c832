"""Visualize: the real robot and the world model's imagined one, side by side, under the same actions.

A comparison of dynamics, not of policies: the policy acts only on the REAL robot's
observations, and the very same actions are fed to the world model. Both start from the same
real history:

1. N real environments (MuJoCo; observation noise and pushes off, commands resampled every 2 s,
   the Visualize task's conditions) run the policy for a warm-up, recorded into a ReplayBuffer.
   The warm-up lasts at least the model's history M; an environment whose robot fell during it
   needs M - 1 records in its new episode (the warm-up goes on for a while to give it them).
2. The world model starts from exactly those records: per environment its last M - 1 records
   and its current state, the state the next record will hold (`ImaginationSimulator`
   alignment: the context is warmed up on the first M - 1 steps, and the first imagined step
   feeds the current state with the action the policy takes in it). From there it never sees a
   real state again (open-loop prediction, the ensemble mean as in upstream's Visualize task).
3. Both advance T seconds. A real episode that ends (a fall) ends that environment's comparison
   at the fallen state; its imagined robot freezes.

Unlike upstream's Visualize environment (docs/architecture.md#visualize, docs/upstream.md #30),
the history is the real one instead of zeros, the context is fresh for every start, and the imagined robot is posed
kinematically instead of being written into the physics.

Outputs, in the run directory: `plots/visualize_<ckpt>_trajectories.png` (truth vs prediction
over history + horizon), `plots/visualize_<ckpt>_error.png` (relative L1 error against the
prediction step), `eval/visualize_<ckpt>.json` (errors over the horizon, falls, base drift) and,
unless disabled, `videos/visualize_<ckpt>.mp4`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rwm.config import apply_overrides
from rwm.io import save_json
from rwm.sim.state import ACTION_DIM, CONTACT_DIM, STATE_DIM, TERMINATION_DIM
from rwm.tasks.anymal_d_flat import TaskCfg
from rwm.world_model.evaluation import ERROR_GROUPS, relative_l1

VISUALIZE_TASK = "Velocity-Flat-Anymal-D-Visualize-v0"
GHOST_OFFSET_M = 1.4  # the imagined robot starts this far to the right of the real one in the video
# (window key, observation group, width) of the system vectors a world model predicts
SYSTEM_STREAMS = (("state", "system_state", STATE_DIM), ("contact", "system_contact", CONTACT_DIM),
                  ("termination", "system_termination", TERMINATION_DIM))


def system_states_reached(obs: dict[str, torch.Tensor], extras: dict) -> dict[str, torch.Tensor]:
    """{observation group: (N, d)} system vectors each environment's last step reached: for an
    episode that just ended, its final state rather than the reset that replaced it."""
    reached = {group: obs[group].clone() for _, group, _ in SYSTEM_STREAMS}
    if "terminal" in extras:
        ids = extras["terminal"]["ids"]
        for _, group, _ in SYSTEM_STREAMS:
            reached[group][ids] = extras["terminal"][group]
    return reached


# ----------------------------------------------------------------------------- configuration
def comparison_cfg(run_cfg: TaskCfg, num_envs: int, seed: int, device: str, episode_length_s: float):
    """The run's robot and task under the Visualize task's conditions (noise, pushes, command timing).

    The simulator and task sections come from the run (what the policy was trained on); the
    Visualize task contributes only what it changes. Episodes are made long enough that no
    time-out cuts a comparison short.
    """
    from rwm.tasks import make_task_cfg

    vis = make_task_cfg(VISUALIZE_TASK)
    cfg = dataclasses.replace(vis, env=copy.deepcopy(run_cfg.env), sim=copy.deepcopy(run_cfg.sim))
    low, high = vis.env.commands.resampling_time_s
    return apply_overrides(cfg, [
        f"num_envs={num_envs}", f"seed={seed}", f"device={device}",
        f"env.noise.enabled={str(vis.env.noise.enabled).lower()}",
        f"sim.randomization.push={str(vis.sim.randomization.push).lower()}",
        f"env.commands.resampling_time_s=[{low}, {high}]",
        f"env.episode_length_s={max(run_cfg.env.episode_length_s, episode_length_s)}",
    ])


# ----------------------------------------------------------------------------- starting windows
def start_windows(buffer, current: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """Per environment: its last `length` - 1 buffer records, then its current state (action zero).

    Returns raw "state" (N, L, 45), "action" (N, L, 12), "contact" (N, L, 8), "termination"
    (N, L, 1). The current state's action is a placeholder: the imagination simulator never
    uses a window's last action (the policy is about to choose it). The records are the current
    episode's only where the episode is at least `length` - 1 steps old; the caller checks that.
    """
    n, k = buffer.num_envs, length - 1
    device = buffer.device
    phys = (buffer.write_pos[:, None] - k + torch.arange(k, device=device)) % buffer.capacity  # (N, k)
    rows = torch.arange(n, device=device)[:, None].expand_as(phys)
    window = {}
    for key, group, _ in SYSTEM_STREAMS:
        window[key] = torch.cat([buffer.data[key][rows, phys], current[group].to(device).float().unsqueeze(1)], 1)
    window["action"] = torch.cat([buffer.data["action"][rows, phys], torch.zeros(n, 1, ACTION_DIM, device=device)], 1)
    return window


# ----------------------------------------------------------------------------- the comparison
@torch.inference_mode()
def compare(cfg: TaskCfg, policy, model, *, seconds: float, warmup_seconds: float, video_envs: int = 0,
            video_fps: int = 25, video_size: tuple[int, int] = (480, 360), progress: bool = False) -> dict[str, Any]:
    """Run the real simulator and the world model side by side; see the module docstring.

    `cfg`: a `comparison_cfg`; `policy`: obs (N, 48) -> actions (N, 12); `model`: a SystemDynamics
    (its context is used and reset). With `video_envs` > 0 the first environments are filmed.
    Returns raw trajectories (N, M + H, d) of truth and prediction, the masks saying which
    steps were compared, falls, world positions and the recorder (or None).
    """
    from rwm.sim.imagination import ImaginationCfg, ImaginationSimulator
    from rwm.sim.state import to_system_vectors
    from rwm.tasks import make_env
    from rwm.world_model import ReplayBuffer
    from rwm.world_model.recorder import TransitionRecorder

    env = make_env(cfg)
    sim = env.sim
    n, dt, device = env.num_envs, env.step_dt, env.device
    M = int(model.cfg.history_horizon)
    horizon = max(1, round(seconds / dt))
    warmup = max(M - 1, round(warmup_seconds / dt))
    max_warmup = 3 * warmup + M  # give robots that fell during the warm-up a new history, within reason

    # 1. warm-up in the real simulator, recorded
    buffer = ReplayBuffer(n, max_warmup + 1, device=device)
    recorder = TransitionRecorder(buffer)
    obs = env.get_observations()
    recorder.start(obs)
    episode_steps = torch.zeros(n, dtype=torch.long, device=device)  # steps since each robot's last reset
    warmup_steps, warmup_falls = 0, 0
    while warmup_steps < max_warmup and (warmup_steps < warmup or bool((episode_steps < warmup).any())):
        actions = policy(obs["policy"])
        obs, _, dones, extras = env.step(actions)
        recorder.record(actions, obs, extras)
        episode_steps = torch.where(dones, torch.zeros_like(episode_steps), episode_steps + 1)
        warmup_falls += int((dones & ~extras["time_outs"]).sum())
        warmup_steps += 1
    has_history = (episode_steps >= M - 1).cpu().numpy()  # (N,) environments that can be compared

    # 2. the world model, started from exactly those real windows
    window = start_windows(buffer, obs, M)
    model.eval()
    imagination = ImaginationSimulator(model, lambda count, generator: window, n,
                                       ImaginationCfg(member_per_episode=False), device=device, step_dt=dt)

    L = M + horizon
    true = {key: torch.zeros(n, L, dim, device=device) for key, _, dim in SYSTEM_STREAMS}  # raw
    pred = {key: torch.zeros(n, L, dim, device=device) for key, _, dim in SYSTEM_STREAMS}
    for key, series in true.items():
        series[:, :M] = window[key]
        pred[key][:, :M] = window[key]
    actions_taken = torch.zeros(n, L, ACTION_DIM, device=device)  # action[t] taken from state t
    actions_taken[:, :M - 1] = window["action"][:, :M - 1]
    compared = np.zeros((n, horizon), dtype=bool)  # (N, H) step h of env e is a valid comparison
    alive = has_history.copy()  # (N,) comparison still running
    fall_step = np.full(n, -1)  # (N,) horizon step at whose end the real robot fell
    real_pos = np.zeros((n, horizon + 1, 3))  # world base positions (valid while alive)
    real_pos[:, 0] = sim.base_pos_w
    heading0 = env.state.heading.cpu().numpy().astype(np.float64)  # (N,)

    from rwm.viz.side_by_side import GhostPose, pose_qpos, twin_offset

    offset = twin_offset(heading0, GHOST_OFFSET_M)  # (N, 3) beside the real robot, as the camera sees it
    ghost = GhostPose(dt, real_pos[:, 0] + offset, heading0, window["state"][:, -1].cpu().numpy())
    ghost_pos = np.zeros((n, horizon + 1, 3))
    ghost_pos[:, 0] = ghost.pos

    video = None
    if video_envs > 0:
        from rwm.viz.side_by_side import SideBySideRecorder

        ids = list(range(min(video_envs, n)))
        video = SideBySideRecorder(sim, ids, width=video_size[0], height=video_size[1])
        stride = max(1, round(1.0 / (video_fps * dt)))

        def film() -> None:
            qpos = pose_qpos(sim.model, ghost.pos[ids], ghost.quat[ids], ghost.joint_pos[ids])
            video.capture(qpos, offset[ids], heading0[ids], ended=~alive[ids])

        film()

    # 3. both advance under the real policy's actions
    start = time.perf_counter()
    for h in tqdm(range(horizon), desc="rwm visualize", unit="step", leave=False, disable=not progress):
        actions = policy(obs["policy"])
        obs, _, dones, extras = env.step(actions)
        imagined = imagination.step(actions)
        t = M + h  # trajectory index of the state this step reached
        actions_taken[:, t - 1] = actions
        reached = system_states_reached(obs, extras)
        for (key, group, _), value in zip(SYSTEM_STREAMS, to_system_vectors(imagined)):
            true[key][:, t] = reached[group]
            pred[key][:, t] = value
        compared[:, h] = alive
        done = dones.cpu().numpy()
        fall_step[alive & done & ~extras["time_outs"].cpu().numpy()] = h
        ghost.advance(pred["state"][:, t].cpu().numpy(), active=alive)
        ghost_pos[:, h + 1] = ghost.pos
        alive = alive & ~done
        real_pos[:, h + 1] = sim.base_pos_w
        if video is not None and (h + 1) % stride == 0:
            film()
    elapsed = time.perf_counter() - start

    return {"true": true, "pred": pred, "action": actions_taken, "compared": compared, "has_history": has_history,
            "fall_step": fall_step, "alive_at_end": alive, "real_pos": real_pos, "ghost_pos": ghost_pos,
            "offset": offset, "history": M, "horizon": horizon, "dt": dt, "warmup_steps": warmup_steps,
            "warmup_falls": warmup_falls, "video": video, "wall_clock_s": elapsed}


# ----------------------------------------------------------------------------- metrics and outputs
def comparison_metrics(result: dict[str, Any], model) -> dict[str, Any]:
    """Relative L1 error (normalised space, docs/architecture.md#world-model-evaluation) over the compared
    steps: overall, per group, per prediction step and per environment; contact accuracy; falls and base drift."""
    M, dt = result["history"], result["dt"]
    mask = torch.as_tensor(result["compared"], device=result["true"]["state"].device)  # (N, H)
    z_true = model.state_normalizer(result["true"]["state"])[:, M:]  # (N, H, 45)
    z_pred = model.state_normalizer(result["pred"]["state"])[:, M:]
    count = int(mask.sum())
    if count == 0:
        raise ValueError("no environment could be compared: every real robot fell before it had "
                         f"{M - 1} steps of history; try a later checkpoint.")

    def masked_mean(values: torch.Tensor) -> float:  # (N, H) -> mean over the compared steps
        return float(values[mask].mean())

    error = relative_l1(z_pred, z_true)  # (N, H)
    steps = mask.sum(0)  # (H,) environments compared at each step
    last = int(torch.nonzero(steps).max()) + 1
    per_step = ((error * mask).sum(0)[:last] / steps[:last]).tolist()
    per_env = [float(error[e][mask[e]].mean()) if bool(mask[e].any()) else None for e in range(len(mask))]
    contact_hit = ((result["pred"]["contact"][:, M:] > 0.5) == (result["true"]["contact"][:, M:] > 0.5)).float()
    survivors = np.flatnonzero(result["alive_at_end"])
    drift = result["ghost_pos"][survivors, -1] - result["offset"][survivors] - result["real_pos"][survivors, -1]
    return {
        "relative_l1": masked_mean(error),
        "relative_l1_groups": {name: masked_mean(relative_l1(z_pred[..., sl], z_true[..., sl]))
                               for name, sl in ERROR_GROUPS.items()},
        "relative_l1_per_step": per_step,  # index i = prediction step i + 1
        "relative_l1_per_env": per_env,
        "contact_accuracy": masked_mean(contact_hit.mean(-1)),
        "compared_env_steps": count,
        "num_compared_envs": int(result["has_history"].sum()),
        "falls": [{"env": int(e), "step": int(s) + 1, "time_s": round((int(s) + 1) * dt, 4)}
                  for e, s in enumerate(result["fall_step"]) if s >= 0],
        "final_base_xy_drift_m": (float(np.linalg.norm(drift[:, :2], axis=-1).mean()) if len(survivors) else None),
    }


def plot_rollout(result: dict[str, Any], model) -> dict[str, Any]:
    """The comparison as an `autoregressive_rollout`-style dict (normalised) for `plot_trajectories`.

    After a robot's comparison ended, truth and prediction hold their last compared values, so
    the plot shows a flat line instead of the next episode.
    """
    M = result["history"]
    compared = result["compared"]
    true = {key: value.clone() for key, value in result["true"].items()}
    pred = {key: value.clone() for key, value in result["pred"].items()}
    action = result["action"].clone()
    for e in range(compared.shape[0]):
        steps = np.flatnonzero(compared[e])
        end = M + (int(steps[-1]) + 1 if len(steps) else 0)  # first index after the last compared state
        for series in (*true.values(), *pred.values()):
            series[e, end:] = series[e, end - 1]
        action[e, end - 1:] = 0.0
    return {"true_state": model.state_normalizer(true["state"]), "pred_state": model.state_normalizer(pred["state"]),
            "action": model.action_normalizer(action), "true_contact": true["contact"],
            "pred_contact": pred["contact"], "true_termination": true["termination"],
            "pred_termination": pred["termination"], "history": M, "noise_std": 0.0}


def visualize_run(checkpoint: str | Path, *, seconds: float = 5.0, num_envs: int = 10, warmup_seconds: float = 1.0,
                  seed: int = 1, device: str = "cpu", video: bool = True, video_envs: int = 2,
                  progress: bool = False) -> dict[str, Any]:
    """Compare a Pretrain/Finetune checkpoint's world model with the real simulator; write plots, JSON, video.

    Returns the report written to `<run>/eval/visualize_<checkpoint>.json` (with the output paths).
    """
    from rwm.training.export import policy_from_checkpoint
    from rwm.training.world_model_learning import load_world_model
    from rwm.viz.plots import model_denormalizer, plot_error_vs_step, plot_trajectories

    checkpoint = Path(checkpoint)
    for name, value in (("seconds", seconds), ("warmup_seconds", warmup_seconds)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} = {value}; expected a finite number >= 0.")
    policy, run_cfg, payload = policy_from_checkpoint(checkpoint, device=device)
    if "system_dynamics_state_dict" not in payload:
        raise ValueError(f"'{checkpoint}' is a checkpoint of a {run_cfg.mode} run without a world model; "
                         "`rwm visualize` needs a Pretrain or Finetune run.")
    model = load_world_model(payload, device)
    longest_warmup_s = 4 * max(warmup_seconds, model.cfg.history_horizon * run_cfg.sim.step_dt)  # see `compare`
    cfg = comparison_cfg(run_cfg, num_envs, seed, device, episode_length_s=longest_warmup_s + seconds + 1.0)
    e = run_cfg.runner.eval
    result = compare(cfg, policy.act_inference, model, seconds=seconds, warmup_seconds=warmup_seconds,
                     video_envs=video_envs if video else 0, video_fps=e.video_fps,
                     video_size=(e.video_width, e.video_height), progress=progress)
    metrics = comparison_metrics(result, model)

    run_dir, stem = checkpoint.parent, f"visualize_{checkpoint.stem}"
    plots = run_dir / "plots"
    rollout = plot_rollout(result, model)
    order = sorted(np.flatnonzero(result["has_history"]), key=lambda i: result["fall_step"][i] >= 0)  # survivors first
    shown = [int(i) for i in order[:4]]
    trajectories = plot_trajectories({k: v[shown] if isinstance(v, torch.Tensor) else v for k, v in rollout.items()},
                                     plots / f"{stem}_trajectories.png", num_windows=len(shown),
                                     denormalize=model_denormalizer(model))
    error_plot = plot_error_vs_step({"by_noise": {0.0: metrics}, "num_windows": metrics["num_compared_envs"],
                                     "history": result["history"]}, plots / f"{stem}_error.png")
    video_path = None
    if result["video"] is not None:
        video_path = result["video"].write(run_dir / "videos" / f"{stem}.mp4", fps=e.video_fps)
        result["video"].close()
    report = {
        "checkpoint": str(checkpoint), "iteration": payload.get("iter"), "task": run_cfg.task_id,
        "visualize_task": VISUALIZE_TASK, "num_envs": num_envs, "seed": seed, "history": result["history"],
        "warmup_steps": result["warmup_steps"], "warmup_falls": result["warmup_falls"],
        "horizon_steps": result["horizon"], "seconds": result["horizon"] * result["dt"], "ensemble": "mean",
        **metrics,
        "plots": {"trajectories": str(trajectories), "error": str(error_plot)},
        "video": None if video_path is None else str(video_path),
        "wall_clock_s": round(result["wall_clock_s"], 3),
    }
    report["json"] = str(save_json(run_dir / "eval" / f"{stem}.json", report))
    return report
