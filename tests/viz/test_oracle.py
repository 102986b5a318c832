"""Oracle checks: fed the real trajectory, the imagined robot is the real robot (offset sideways);
and the comparison's imagined trajectory is exactly the world model's open-loop prediction from the real start."""

from __future__ import annotations

import numpy as np
import torch

from rwm.sim.mujoco import MujocoSimCfg, MujocoSimulator, RandomizationCfg
from rwm.sim.state import to_system_vectors
from rwm.viz.side_by_side import GhostPose, pose_qpos


def _walk(steps: int = 100):
    """A real robot moving its legs (no resets): states (T, 45), qpos (T, 19), headings (T,)."""
    sim = MujocoSimulator(MujocoSimCfg(randomization=RandomizationCfg.none(), num_threads=1), 1, seed=0)
    g = torch.Generator().manual_seed(0)
    phase = torch.rand(1, 12, generator=g) * 6.28
    states, qpos, heading = [], [], []
    for k in range(steps):
        action = 0.6 * torch.sin(2 * torch.pi * 1.5 * k * sim.step_dt + phase)
        state = sim.step(action)
        states.append(to_system_vectors(state)[0][0].numpy())
        qpos.append(sim.qpos[0].copy())
        heading.append(float(state.heading[0]))
    assert not bool(state.base_contact.any())
    return sim, np.stack(states), np.stack(qpos), np.array(heading)


def test_the_real_trajectory_poses_the_imagined_robot_exactly_like_the_real_one():
    sim, states, qpos, heading = _walk()
    settle = 30  # start after the drop from the spawn height
    states, qpos, heading = states[settle:], qpos[settle:], heading[settle:]
    offset = np.array([[0.0, 1.0, 0.0]])
    ghost = GhostPose(sim.step_dt, qpos[:1, :3] + offset, heading[:1], states[:1])
    moved = np.linalg.norm(qpos[-1, :2] - qpos[0, :2])
    assert moved > 0.05, "the test trajectory should move the base"
    for t in range(len(states)):
        if t:
            ghost.advance(states[t:t + 1])
        posed = pose_qpos(sim.model, ghost.pos, ghost.quat, ghost.joint_pos)[0]
        joints = sim.joint_qpos_ids
        np.testing.assert_allclose(posed[joints], qpos[t, joints], atol=1e-5)  # float32 states
        # the base follows the real one up to the integration error of 50 Hz samples
        np.testing.assert_allclose(posed[:3] - offset[0], qpos[t, :3], atol=0.01)
        alignment = abs(float(np.dot(posed[3:7], qpos[t, 3:7])))  # |cos(angle / 2)| between orientations
        assert alignment > np.cos(0.01 / 2), (t, alignment)


def test_the_comparison_is_the_open_loop_prediction_from_the_real_start(pretrain_run):
    from rwm.tasks import make_env
    from rwm.training.checkpoint import find_checkpoint
    from rwm.training.export import policy_from_checkpoint
    from rwm.training.visualize import compare, comparison_cfg
    from rwm.training.world_model_learning import load_world_model
    from rwm.world_model.evaluation import autoregressive_rollout

    policy, run_cfg, payload = policy_from_checkpoint(find_checkpoint(pretrain_run))
    model = load_world_model(payload)
    M = model.cfg.history_horizon
    cfg = comparison_cfg(run_cfg, num_envs=3, seed=5, device="cpu", episode_length_s=30.0)
    result = compare(cfg, policy.act_inference, model, seconds=0.4, warmup_seconds=0.2)
    W, H = result["warmup_steps"], result["horizon"]
    assert W >= M - 1 and H == 20 and result["true"]["state"].shape == (3, M + H, 45)

    # truth: the same real environments replayed, states M - 1 steps before the start onwards
    env = make_env(cfg)
    obs = env.get_observations()
    real, actions, resets = [obs["system_state"]], [], torch.zeros(3, dtype=torch.bool)
    with torch.inference_mode():
        for _ in range(W + H):
            actions.append(policy.act_inference(obs["policy"]))
            obs, _, dones, _ = env.step(actions[-1])
            real.append(obs["system_state"])
            resets |= dones
    real, actions = torch.stack(real, 1), torch.stack(actions, 1)  # (3, W + H + 1, 45), (3, W + H, 12)
    keep = ~resets
    assert keep.any()
    first = W - (M - 1)
    torch.testing.assert_close(result["true"]["state"][keep], real[keep, first:first + M + H])
    torch.testing.assert_close(result["action"][keep, :-1], actions[keep, first:first + M + H - 1])
    assert result["compared"][keep.numpy()].all()

    # prediction: the model fed the real history, then only its own predictions and the real actions
    batch = {key: result["true"][key] for key in ("state", "contact", "termination")} | {"action": result["action"]}
    rollout = autoregressive_rollout(model, batch, history=M)
    z_pred = model.state_normalizer(result["pred"]["state"])
    torch.testing.assert_close(z_pred[:, M:], rollout["pred_state"][:, M:], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(z_pred[:, M:], rollout["true_state"][:, M:], atol=1e-2)  # it is a prediction


def test_a_real_fall_ends_that_comparison_at_the_fallen_state(pretrain_run):
    from rwm.training.checkpoint import find_checkpoint
    from rwm.training.export import policy_from_checkpoint
    from rwm.training.visualize import compare, comparison_cfg, comparison_metrics
    from rwm.training.world_model_learning import load_world_model

    policy, run_cfg, payload = policy_from_checkpoint(find_checkpoint(pretrain_run))
    model = load_world_model(payload)
    M = model.cfg.history_horizon
    calls = []
    collapse = torch.tensor([0.0] * 4 + [-3.0, 3.0, -3.0, 3.0] + [3.0, -3.0, 3.0, -3.0])  # fold every leg

    def policy_folding_env_0(obs):  # the policy, except that robot 0 folds its legs once the comparison starts
        actions = policy.act_inference(obs)
        if len(calls) >= 10:  # the warm-up: 0.2 s = 10 steps
            actions[0] = collapse
        calls.append(1)
        return actions

    cfg = comparison_cfg(run_cfg, num_envs=2, seed=5, device="cpu", episode_length_s=30.0)
    result = compare(cfg, policy_folding_env_0, model, seconds=1.2, warmup_seconds=0.2)
    assert result["warmup_steps"] == 10
    fall = int(result["fall_step"][0])
    assert 5 < fall < result["horizon"] - 1 and result["fall_step"][1] == -1
    assert result["compared"][0, :fall + 1].all() and not result["compared"][0, fall + 1:].any()
    assert result["compared"][1].all() and not result["alive_at_end"][0]
    assert result["true"]["termination"][0, M + fall] == 1.0  # the fallen state itself, not the reset one
    assert result["true"]["termination"][0, M:M + fall].sum() == 0
    metrics = comparison_metrics(result, model)
    assert metrics["falls"] == [{"env": 0, "step": fall + 1, "time_s": round((fall + 1) * result["dt"], 4)}]
    assert metrics["compared_env_steps"] == result["horizon"] + fall + 1
