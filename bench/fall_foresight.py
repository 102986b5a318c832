"""Fall foresight: does a run's world model see the real robot's falls coming?

A Finetune (or Pretrain) checkpoint's policy drives real robots under `rwm play`'s conditions
(20 s, commands resampled at 10 s, no observation noise or pushes, evaluation seed 1); every
state and action is kept. For each real fall and each look-ahead K, the checkpoint's world model
starts from the real history that ends K control steps before the base touched down and is fed
the K actions the policy really took (open loop, ensemble mean, as `rwm visualize`). The fall is
foreseen when imagination ends the episode within those K steps (predicted base contact, or a
tilt beyond `imagination.fall_tilt`). False alarms: the same on stretches of K steps, four per
fall, drawn from episodes that do not fall within them.

A model that foresees falls but a policy that still falls in reality means the policy seldom
meets those states in imagination; a model that does not foresee them lets the policy exploit it.

Prints one JSON object as the last line: per look-ahead, the falls foreseen, the false alarms
and their rates, and `real_falls_tilted`, the real falls whose fallen state tilts beyond
`imagination.fall_tilt` (the others, a base that touches down nearly level, imagination can see
only through the model's termination head). `--quick` evaluates 128 robots for 10 s (seconds).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from rwm.sim.imagination import ImaginationCfg, ImaginationSimulator, tilted_beyond  # noqa: E402
from rwm.sim.state import ACTION_DIM  # noqa: E402
from rwm.tasks import make_env  # noqa: E402
from rwm.training.checkpoint import find_checkpoint  # noqa: E402
from rwm.training.evaluation import eval_config  # noqa: E402
from rwm.training.export import policy_from_checkpoint  # noqa: E402
from rwm.training.visualize import SYSTEM_STREAMS as STREAMS  # noqa: E402
from rwm.training.visualize import system_states_reached  # noqa: E402
from rwm.training.world_model_learning import load_world_model_file  # noqa: E402


@torch.inference_mode()
def record_real(policy, cfg, num_envs: int, seconds: float, seed: int):
    """Real rollout. Returns trajectories {stream: (N, T + 1, d)} and action (N, T + 1, 12), where
    index t + 1 holds the state step t reached (an episode's final state where it ended), the
    (N, T + 1) index at which each state's episode began, the falls as (env, index of the
    fallen state) and the control period in seconds."""
    env = make_env(eval_config(cfg, num_envs, seed, "cpu", seconds))
    steps = round(seconds / env.step_dt)
    obs = env.get_observations()
    traj = {key: torch.zeros(num_envs, steps + 1, dim) for key, _, dim in STREAMS}
    traj["action"] = torch.zeros(num_envs, steps + 1, ACTION_DIM)
    for key, group, _ in STREAMS:
        traj[key][:, 0] = obs[group].float()
    episode_begin = torch.zeros(num_envs, steps + 1, dtype=torch.long)
    begin = torch.zeros(num_envs, dtype=torch.long)
    falls = []
    for t in range(steps):
        actions = policy(obs["policy"])
        traj["action"][:, t] = actions
        obs, _, dones, extras = env.step(actions)
        reached = system_states_reached(obs, extras)
        for key, group, _ in STREAMS:
            traj[key][:, t + 1] = reached[group].float()
        episode_begin[:, t + 1] = begin
        fell = dones & ~extras["time_outs"].bool()
        falls += [(int(e), t + 1) for e in torch.nonzero(fell).flatten()]
        # the reset state of an ended episode is not kept: its successor begins the next one
        begin = torch.where(dones, torch.full_like(begin, t + 2), begin)
    return traj, episode_begin, falls, env.step_dt


@torch.inference_mode()
def imagined_falls(model, traj, cases: list[tuple[int, int]], steps: int, fall_tilt: float,
                   step_dt: float) -> torch.Tensor:
    """(len(cases),) bool: starting from the real history ending at state index s (env e) and fed
    the real actions s .. s + steps - 1, imagination ends the episode within `steps` steps."""
    M = int(model.cfg.history_horizon)
    envs = torch.tensor([e for e, _ in cases])
    starts = torch.tensor([s for _, s in cases])
    rows = starts[:, None] - M + 1 + torch.arange(M)[None]  # (n, M) history indices
    window = {key: traj[key][envs[:, None], rows] for key in ("state", "action", "contact", "termination")}
    imagination = ImaginationSimulator(model, lambda n, generator: window, len(cases),
                                       ImaginationCfg(member_per_episode=False, fall_tilt=fall_tilt),
                                       step_dt=step_dt)
    ended = torch.zeros(len(cases), dtype=torch.bool)
    for k in range(steps):
        ended |= imagination.step(traj["action"][envs, starts + k]).base_contact  # head or tilt
    return ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True,
                        help="a run (or checkpoint) holding a policy and a world model, e.g. a Finetune run")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file inside the run (default: the latest)")
    parser.add_argument("--num-envs", type=int, default=None, help="real robots (default 512; quick 128)")
    parser.add_argument("--seconds", type=float, default=None, help="real seconds (default 20; quick 10)")
    parser.add_argument("--lookahead", type=float, nargs="+", default=[0.2, 0.5, 1.0],
                        help="seconds of look-ahead to test (default 0.2 0.5 1.0)")
    parser.add_argument("--result-name", default="fall_foresight",
                        help="bench/results/<name>.json of a full run (default fall_foresight)")
    parser.add_argument("--quick", action="store_true", help="128 robots for 10 s")
    args = parser.parse_args()
    num_envs = args.num_envs or (128 if args.quick else 512)
    seconds = args.seconds or (10.0 if args.quick else 20.0)

    checkpoint = find_checkpoint(args.run if args.checkpoint is None else args.run / args.checkpoint)
    policy, cfg, _ = policy_from_checkpoint(checkpoint)
    model = load_world_model_file(checkpoint)
    model.eval()
    fall_tilt = cfg.imagination.fall_tilt if cfg.imagination is not None else ImaginationCfg().fall_tilt
    traj, episode_begin, falls, step_dt = record_real(policy.act_inference, cfg, num_envs, seconds, seed=1)
    M = int(model.cfg.history_horizon)
    last = traj["state"].shape[1] - 1
    fall_at = {}
    for e, t in falls:
        fall_at.setdefault(e, []).append(t)
    rng = random.Random(0)
    per_lookahead = {}
    for lookahead in args.lookahead:
        K = max(1, round(lookahead / step_dt))
        # the history must lie inside the fallen episode
        cases = [(e, t - K) for e, t in falls if t - K - M + 1 >= int(episode_begin[e, t - K])]
        controls = []
        for _ in range(100 * max(1, len(cases))):
            if len(controls) >= 4 * len(cases):
                break
            e, s = rng.randrange(num_envs), rng.randrange(M, last - K + 1)
            begin = int(episode_begin[e, s])
            if s - M + 1 < begin or int(episode_begin[e, s + K]) != begin:
                continue
            if any(s < t <= s + K for t in fall_at.get(e, [])):
                continue
            controls.append((e, s))
        foreseen = int(imagined_falls(model, traj, cases, K, fall_tilt, step_dt).sum()) if cases else 0
        alarms = int(imagined_falls(model, traj, controls, K, fall_tilt, step_dt).sum()) if controls else 0
        per_lookahead[f"{lookahead:g}"] = {
            "steps": K, "falls": len(cases), "foreseen": foreseen,
            "foreseen_rate": foreseen / len(cases) if cases else None,
            "control_stretches": len(controls), "false_alarms": alarms,
            "false_alarm_rate": alarms / len(controls) if controls else None}
        print(f"[fall_foresight] {lookahead:g} s ahead: {foreseen}/{len(cases)} falls foreseen, "
              f"{alarms}/{len(controls)} false alarms", flush=True)
    fallen_states = traj["state"][[e for e, _ in falls], [t for _, t in falls]]  # (falls, 45)
    tilted = int(tilted_beyond(fallen_states, fall_tilt).sum())
    emit(args.result_name, {"checkpoint": str(checkpoint), "num_envs": num_envs, "seconds": seconds,
                            "real_falls": len(falls), "real_falls_tilted": tilted, "fall_tilt": fall_tilt,
                            "lookahead_s": per_lookahead}, args.quick)


if __name__ == "__main__":
    main()
