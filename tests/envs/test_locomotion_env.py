"""LocomotionEnv API, commands, and its promised errors on bad input."""

from __future__ import annotations

import pytest
import torch

from rwm.config import ConfigError, apply_overrides, from_dict
from rwm.envs.locomotion_env import LocomotionEnvCfg
from rwm.envs.mdp.commands import CommandCfg
from rwm.tasks import make_env, make_task_cfg, task_ids
from rwm.tasks.anymal_d_flat import TaskCfg
from tests.conftest import make_quiet_env


def test_rsl_rl_api(quiet_env):
    env = quiet_env
    assert env.num_actions == 12 and env.max_episode_length == 1000
    obs = env.get_observations()
    assert set(obs) == {"policy", "system_state", "system_action", "system_contact", "system_termination"}
    assert obs["policy"].shape == (env.num_envs, 48)
    obs, rewards, dones, extras = env.step(torch.zeros(env.num_envs, 12))
    assert rewards.shape == (env.num_envs,) and dones.dtype == torch.bool
    assert extras["time_outs"].shape == (env.num_envs,)
    env.randomize_episode_lengths()
    assert env.episode_length_buf.max() < env.max_episode_length and env.episode_length_buf.float().std() > 0


def test_clipped_actions_are_what_the_simulator_rewards_observations_and_recordings_see():
    from rwm.envs.mdp.observations import POLICY_SLICES
    from rwm.world_model import ReplayBuffer
    from rwm.world_model.recorder import TransitionRecorder

    env = make_quiet_env(num_envs=4, clip_actions=0.5)
    applied = []
    step = env.sim.step
    env.sim.step = lambda actions: applied.append(actions.clone()) or step(actions)
    buffer = ReplayBuffer(4, 8)
    recorder = TransitionRecorder(buffer)
    recorder.start(env.get_observations())
    actions = torch.linspace(-2.0, 2.0, 48).reshape(4, 12)
    obs, _, _, extras = env.step(actions)
    recorder.record(actions, obs, extras)
    clipped = actions.clamp(-0.5, 0.5)
    assert torch.equal(applied[0], clipped) and torch.equal(extras["actions"], clipped)
    assert torch.equal(obs["policy"][:, POLICY_SLICES["last_action"]], clipped)
    assert torch.equal(buffer.sample(4, 1, torch.Generator().manual_seed(0))["action"].abs().max(), torch.tensor(0.5))
    env.sim.step = step
    unclipped = make_quiet_env(num_envs=4)
    assert torch.equal(unclipped.step(actions)[3]["actions"], actions)
    with pytest.raises(ConfigError, match=r"env.clip_actions = 0.0"):
        LocomotionEnvCfg(clip_actions=0.0)


def test_heading_control_turns_towards_the_target_and_standing_envs_get_zero():
    env = make_quiet_env(num_envs=64, commands=CommandCfg(standing_fraction=0.5))
    command = env.command_manager
    standing = command.is_standing
    assert 0 < standing.sum() < 64
    assert torch.all(command.command[standing] == 0)
    moving = ~standing
    expected = torch.clamp(0.5 * command.heading_target[moving], -1.0, 1.0)  # heading is 0 after reset
    torch.testing.assert_close(command.command[moving, 2], expected)


def test_commands_stay_in_range_and_resample_on_time():
    env = make_quiet_env(num_envs=32, commands=CommandCfg(resampling_time_s=(0.1, 0.1), heading_control=False,
                                                          standing_fraction=0.0))
    first = env.command_manager.command.clone()
    for _ in range(5):  # 0.1 s = 5 control steps
        env.step(torch.zeros(32, 12))
    assert not torch.equal(first, env.command_manager.command)
    assert env.command_manager.command.abs().max() <= 1.0


def test_a_random_first_duration_changes_commands_within_short_episodes():
    # 1 s commands, 0.5 s of stepping: with the whole first duration nothing changes; with a random
    # share of it, about half the environments get a new command, and the next ones last 1 s again
    for random_first, expect_changes in ((False, False), (True, True)):
        env = make_quiet_env(num_envs=64, commands=CommandCfg(resampling_time_s=(1.0, 1.0), heading_control=False,
                                                              standing_fraction=0.0,
                                                              random_first_duration=random_first))
        left = env.command_manager.time_left.clone()
        first = env.command_manager.command.clone()
        for _ in range(25):  # 0.5 s
            env.step(torch.zeros(64, 12))
        changed = (env.command_manager.command != first).any(-1)
        if expect_changes:
            assert 0.0 < left.min() and left.max() <= 1.0 and left.std() > 0.1
            assert 16 <= int(changed.sum()) <= 48
            assert torch.all(env.command_manager.time_left[changed] > 0.5)  # resampled with the full 1 s
        else:
            assert torch.all(left == 1.0) and not changed.any()


def test_fast_commands_fill_the_fast_part_of_the_box_in_their_share():
    from rwm.envs.mdp.commands import VelocityCommand

    n = 20000

    def planar(**fast):
        cfg = CommandCfg(heading_control=False, standing_fraction=0.0, **fast)
        command = VelocityCommand(cfg, n, torch.device("cpu"), torch.Generator().manual_seed(0))
        command.resample(torch.arange(n))
        return command.command[:, :2]

    speed = planar(fast_share=1.0, fast_speed=1.1).norm(dim=1)
    assert speed.min() >= 1.1 and speed.max() <= 2 ** 0.5
    assert planar(fast_share=1.0, fast_speed=1.27).norm(dim=1).min() >= 1.27  # 2 % of the box: found too
    # uniform over the box outside radius 1.1 (area 0.447 of the box's 4): the part beyond 1.2
    # (area 0.196) holds 0.196 / 0.447 of the draws
    assert abs(float((speed > 1.2).float().mean()) - 0.196 / 0.447) < 0.03
    mixed = planar(fast_share=0.25, fast_speed=1.1).norm(dim=1)
    uniform = planar().norm(dim=1)
    assert abs(float((uniform > 1.1).float().mean()) - 0.447 / 4) < 0.01
    assert abs(float((mixed > 1.1).float().mean()) - (0.75 * 0.447 / 4 + 0.25)) < 0.015
    with pytest.raises(ConfigError, match=r"commands.fast_speed = 1.3; expected a speed in \[0, 1.27\]"):
        CommandCfg(fast_speed=1.3)
    with pytest.raises(ConfigError, match="commands.fast_share = -0.1"):
        CommandCfg(fast_share=-0.1)


@pytest.mark.parametrize("actions, message", [
    (torch.zeros(8, 11), "shape"),
    (torch.zeros(7, 12), "shape"),
    (torch.zeros(8, 12, dtype=torch.long), "dtype"),
    (torch.full((8, 12), float("nan")), "NaN"),
    (torch.full((8, 12), float("inf")), "NaN or infinite"),
    ([[0.0] * 12] * 8, "torch.Tensor"),
])
def test_bad_actions_raise_value_error(quiet_env, actions, message):
    with pytest.raises(ValueError, match=message):
        quiet_env.step(actions)


def test_unknown_config_keys_and_out_of_range_values_raise_value_error():
    with pytest.raises(ValueError, match="comands"):
        from_dict(TaskCfg, {"env": {"comands": {}}})
    with pytest.raises(ValueError, match="standing_fraction"):
        apply_overrides(TaskCfg(), ["env.commands.standing_fraction=2.0"])
    with pytest.raises(ValueError, match="num_envs"):
        apply_overrides(TaskCfg(), ["num_envs=0"])
    with pytest.raises(ValueError, match="unknown term"):
        LocomotionEnvCfg(reward_weights={"track_lin_vel": 1.0})
    with pytest.raises(ConfigError, match="episode_length_s"):
        LocomotionEnvCfg(episode_length_s=-1.0)
    with pytest.raises(ValueError, match="device"):
        TaskCfg(device="tpu")


def test_task_registry_and_factory():
    assert "Velocity-Flat-Anymal-D-Init-v0" in task_ids()
    cfg = make_task_cfg("Velocity-Flat-Anymal-D-Finetune-v0")
    assert cfg.env.reward_weights["flat_orientation_l2"] == -5.0  # the flat-terrain weights
    assert make_task_cfg("Velocity-Flat-Anymal-D-Init-v0").env.reward_weights["flat_orientation_l2"] == 0.0
    with pytest.raises(ValueError, match="did you mean 'Velocity-Flat-Anymal-D-Init-v0'"):
        make_task_cfg("Velocity-Flat-Anymal-D-Init-v1")
    cfg.num_envs = 4
    env = make_env(cfg)
    assert env.num_envs == 4 and env.get_observations()["policy"].shape == (4, 48)
