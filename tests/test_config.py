"""Tests for rwm.config: strict typed dataclass configs, overrides, YAML I/O and hashing."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Union

import pytest
import yaml

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:  # the package may not be pip-installed in the test environment
    sys.path.insert(0, str(SRC))

from rwm.config import (  # noqa: E402
    ConfigError,
    apply_overrides,
    check,
    config_hash,
    from_dict,
    load_yaml,
    save_yaml,
    to_dict,
)


# --------------------------------------------------------------------------- example configs
@dataclass
class CommandCfg:
    resampling_time_s: tuple[float, float] = (10.0, 10.0)
    lin_vel_x: tuple[float, float] = (-1.0, 1.0)
    standing_fraction: float = 0.02
    heading_control: bool = True

    def __post_init__(self) -> None:
        check(0.0 <= self.standing_fraction <= 1.0,
              f"standing_fraction must be in [0, 1], got {self.standing_fraction}")


@dataclass
class EnvCfg:
    num_envs: int = 64
    episode_length_s: float = 20.0
    commands: CommandCfg = field(default_factory=CommandCfg)
    device: str = "cpu"
    obs_noise: bool = True
    activation: Literal["elu", "relu"] = "elu"
    resume: str | None = None
    hidden_dims: list[int] = field(default_factory=lambda: [128, 128])
    reward_weights: dict[str, float] = field(default_factory=lambda: {"track_lin_vel": 1.0})
    history: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        check(self.num_envs >= 1, f"num_envs must be >= 1, got {self.num_envs}")


@dataclass
class PolicyCfg:
    hidden_dims: list[int] = field(default_factory=lambda: [256, 128])
    init_std: Optional[float] = None  # 3.10-style spelling, stringified by the __future__ import
    clip: Tuple[float, float] = (-1.0, 1.0)


@dataclass
class RunnerCfg:
    policy: PolicyCfg = field(default_factory=PolicyCfg)
    learning_rate: float = 1e-3
    run_name: str = "default"
    log_every: Optional[int] = 10


@dataclass
class TrainCfg:
    env: EnvCfg = field(default_factory=EnvCfg)
    runner: RunnerCfg = field(default_factory=RunnerCfg)
    seed: int = 0


def errmsg(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------- round trips
def test_to_dict_is_plain_and_yaml_safe():
    d = to_dict(TrainCfg())
    assert d["env"]["commands"]["lin_vel_x"] == [-1.0, 1.0]  # tuple -> list
    assert isinstance(d["env"]["history"], list)
    assert d["runner"]["policy"]["init_std"] is None
    assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_round_trip_through_dict():
    cfg = TrainCfg(env=EnvCfg(num_envs=8, resume="ckpt.pt", reward_weights={"a": 0.5}), seed=3)
    back = from_dict(TrainCfg, to_dict(cfg))
    assert back == cfg
    assert isinstance(back.env.commands.lin_vel_x, tuple)


def test_round_trip_through_yaml_file(tmp_path):
    cfg = TrainCfg(runner=RunnerCfg(learning_rate=3e-10, policy=PolicyCfg(init_std=0.5)))
    path = tmp_path / "sub" / "cfg.yaml"
    save_yaml(cfg, path)
    assert load_yaml(TrainCfg, path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["cfg.yaml"]  # no temp files left


def test_missing_keys_take_defaults():
    cfg = from_dict(TrainCfg, {"env": {"num_envs": 4}})
    assert cfg.env.num_envs == 4
    assert cfg.env.commands == CommandCfg() and cfg.runner == RunnerCfg()


# --------------------------------------------------------------------------- strictness
def test_unknown_key_names_key_and_suggestion():
    with pytest.raises(ConfigError) as e:
        from_dict(TrainCfg, {"env": {"comands": {}}})
    msg = errmsg(e)
    assert "'env.comands'" in msg and "did you mean 'env.commands'?" in msg
    assert "valid keys under 'env'" in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'sed'; did you mean 'seed'\?"):
        from_dict(TrainCfg, {"sed": 1})


@pytest.mark.parametrize("value", [5, 5.0, 1e3])
def test_int_accepts_int_and_integral_float(value):
    got = from_dict(EnvCfg, {"num_envs": value}).num_envs
    assert got == int(value) and type(got) is int


@pytest.mark.parametrize("bad", [2.5, True, "abc", "3", None])
def test_int_rejects(bad):
    with pytest.raises(ConfigError, match=r"config key 'num_envs' expects an int, got"):
        from_dict(EnvCfg, {"num_envs": bad})


def test_float_accepts_int_and_coerces():
    cfg = from_dict(EnvCfg, {"episode_length_s": 7})
    assert cfg.episode_length_s == 7.0 and type(cfg.episode_length_s) is float


@pytest.mark.parametrize("bad", [True, "1.0", None, [1.0]])
def test_float_rejects(bad):
    with pytest.raises(ConfigError, match=r"'episode_length_s' expects a float"):
        from_dict(EnvCfg, {"episode_length_s": bad})


@pytest.mark.parametrize("bad", [1, 0, "true", "yes", None])
def test_bool_only_real_bools(bad):
    with pytest.raises(ConfigError, match=r"'obs_noise' expects a bool"):
        from_dict(EnvCfg, {"obs_noise": bad})
    assert from_dict(EnvCfg, {"obs_noise": False}).obs_noise is False


@pytest.mark.parametrize("bad", [3, 1.5, True, ["cpu"]])
def test_str_rejects_non_strings(bad):
    with pytest.raises(ConfigError, match=r"'device' expects a str"):
        from_dict(EnvCfg, {"device": bad})


def test_optional_accepts_none_and_value_rejects_other():
    assert from_dict(EnvCfg, {"resume": None}).resume is None
    assert from_dict(EnvCfg, {"resume": "a.pt"}).resume == "a.pt"
    with pytest.raises(ConfigError, match=r"'resume' expects a str or null, got 3"):
        from_dict(EnvCfg, {"resume": 3})
    # typing.Optional spelling, one level deeper
    assert from_dict(RunnerCfg, {"log_every": None}).log_every is None
    with pytest.raises(ConfigError, match=r"'policy.init_std' expects a float or null, got 'x'"):
        from_dict(RunnerCfg, {"policy": {"init_std": "x"}})


def test_literal_accepts_option_rejects_other():
    assert from_dict(EnvCfg, {"activation": "relu"}).activation == "relu"
    with pytest.raises(ConfigError) as e:
        from_dict(EnvCfg, {"activation": "tanh"})
    assert errmsg(e) == "config key 'activation' expects one of 'elu', 'relu', got 'tanh'"


def test_fixed_tuple_length_and_items():
    cfg = from_dict(CommandCfg, {"lin_vel_x": [0, 2]})
    assert cfg.lin_vel_x == (0.0, 2.0) and all(type(v) is float for v in cfg.lin_vel_x)
    with pytest.raises(ConfigError, match=r"'lin_vel_x' expects a tuple\[float, float\] with exactly 2 items"):
        from_dict(CommandCfg, {"lin_vel_x": [1.0]})
    with pytest.raises(ConfigError, match=r"'commands.lin_vel_x\[1\]' expects a float, got 'x'"):
        from_dict(EnvCfg, {"commands": {"lin_vel_x": [1.0, "x"]}})
    with pytest.raises(ConfigError, match=r"'lin_vel_x' expects a tuple"):
        from_dict(CommandCfg, {"lin_vel_x": 1.0})


def test_variadic_tuple():
    assert from_dict(EnvCfg, {"history": [1, 2, 3, 4.0]}).history == (1, 2, 3, 4)
    assert from_dict(EnvCfg, {"history": []}).history == ()
    with pytest.raises(ConfigError, match=r"'history\[2\]' expects an int, got 0.5"):
        from_dict(EnvCfg, {"history": [1, 2, 0.5]})


def test_list_item_error_carries_full_dotted_key():
    with pytest.raises(ConfigError) as e:
        from_dict(TrainCfg, {"runner": {"policy": {"hidden_dims": [64, "big"]}}})
    assert errmsg(e) == "config key 'runner.policy.hidden_dims[1]' expects an int, got 'big'"
    with pytest.raises(ConfigError, match=r"'env.hidden_dims' expects a list\[int\], got 128"):
        from_dict(TrainCfg, {"env": {"hidden_dims": 128}})


def test_dict_str_float():
    cfg = from_dict(EnvCfg, {"reward_weights": {"a": 1, "b": -0.5}})
    assert cfg.reward_weights == {"a": 1.0, "b": -0.5} and type(cfg.reward_weights["a"]) is float
    with pytest.raises(ConfigError, match=r"'env.reward_weights.a' expects a float, got 'high'"):
        from_dict(TrainCfg, {"env": {"reward_weights": {"a": "high"}}})
    with pytest.raises(ConfigError, match=r"'reward_weights' expects a dict\[str, float\]"):
        from_dict(EnvCfg, {"reward_weights": [1.0]})


def test_nested_dataclass_needs_mapping():
    with pytest.raises(ConfigError, match=r"'env.commands' expects a mapping of CommandCfg fields, got 3"):
        from_dict(TrainCfg, {"env": {"commands": 3}})


def test_post_init_check_fires_on_load_with_section_named():
    with pytest.raises(ConfigError, match=r"standing_fraction must be in \[0, 1\], got 2.0 "
                                          r"\(in config section 'env.commands'\)"):
        from_dict(TrainCfg, {"env": {"commands": {"standing_fraction": 2}}})


def test_check_helper():
    check(True, "never raised")
    with pytest.raises(ConfigError, match="^boom$"):
        check(False, "boom")
    assert issubclass(ConfigError, ValueError)


def test_required_field_without_default():
    @dataclass
    class Req:
        n: int

    with pytest.raises(ConfigError, match=r"config key 'n' is required but missing"):
        from_dict(Req, {})
    assert from_dict(Req, {"n": 2}) == Req(2)


# --------------------------------------------------------------------------- overrides
def test_override_values_are_parsed_as_yaml():
    cfg = apply_overrides(TrainCfg(), [
        "env.num_envs=3", "runner.learning_rate=1e-3", "env.obs_noise=false",
        "env.hidden_dims=[1,2]", "env.resume=null", "env.device=cuda",
        "env.commands.lin_vel_x=[0, 0.5]", "runner.policy.init_std=2",
    ])
    assert cfg.env.num_envs == 3 and cfg.runner.learning_rate == 1e-3
    assert type(cfg.runner.learning_rate) is float
    assert cfg.env.obs_noise is False and cfg.env.hidden_dims == [1, 2]
    assert cfg.env.resume is None and cfg.env.device == "cuda"
    assert cfg.env.commands.lin_vel_x == (0.0, 0.5) and cfg.runner.policy.init_std == 2.0


def test_override_returns_new_and_leaves_original_untouched():
    original = TrainCfg()
    snapshot = to_dict(original)
    new = apply_overrides(original, ["env.num_envs=2", "env.hidden_dims=[5]",
                                     "env.reward_weights.track_lin_vel=9"])
    assert new is not original and new.env.num_envs == 2
    assert to_dict(original) == snapshot
    assert original.env.reward_weights == {"track_lin_vel": 1.0}


def test_override_type_error_is_clear():
    with pytest.raises(ConfigError) as e:
        apply_overrides(TrainCfg(), ["env.num_envs=abc"])
    assert errmsg(e) == "config key 'env.num_envs' expects an int, got 'abc'"


def test_override_triggers_post_init_check():
    with pytest.raises(ConfigError, match=r"num_envs must be >= 1, got 0"):
        apply_overrides(TrainCfg(), ["env.num_envs=0"])
    with pytest.raises(ConfigError, match=r"num_envs must be >= 1, got -1"):
        apply_overrides(EnvCfg(), ["num_envs=-1"])


@pytest.mark.parametrize("bad", ["env.num_envs", "=3", "env..num_envs=3", ".seed=1", ""])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match=r"is malformed; expected KEY=VALUE"):
        apply_overrides(TrainCfg(), [bad])


def test_override_list_must_not_be_a_string():
    with pytest.raises(TypeError):
        apply_overrides(TrainCfg(), "seed=1")


def test_override_cannot_replace_section_with_scalar():
    with pytest.raises(ConfigError, match=r"cannot replace the config section 'env.commands' with a scalar"):
        apply_overrides(TrainCfg(), ["env.commands=3"])


def test_override_section_with_mapping_merges():
    cfg = apply_overrides(TrainCfg(), ["env.commands={standing_fraction: 0.5}"])
    assert cfg.env.commands.standing_fraction == 0.5
    assert cfg.env.commands.lin_vel_x == CommandCfg().lin_vel_x


def test_override_dict_entry():
    cfg = apply_overrides(TrainCfg(), ["env.reward_weights.track_lin_vel=2.0",
                                       "env.reward_weights.new_term=-1"])
    assert cfg.env.reward_weights == {"track_lin_vel": 2.0, "new_term": -1.0}
    with pytest.raises(ConfigError, match=r"'env.reward_weights.x' expects a float, got 'big'"):
        apply_overrides(TrainCfg(), ["env.reward_weights.x=big"])


def test_override_unknown_key_and_scalar_path():
    with pytest.raises(ConfigError, match=r"unknown config key 'env.num_env'; did you mean 'env.num_envs'\?"):
        apply_overrides(TrainCfg(), ["env.num_env=3"])
    msg = r"'env.num_envs.x' is invalid because 'env.num_envs' holds an int, not a section"
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(TrainCfg(), ["env.num_envs.x=3"])


def test_override_str_field_keeps_numeric_text():
    cfg = apply_overrides(TrainCfg(), ["runner.run_name=2024", "env.resume=007"])
    assert cfg.runner.run_name == "2024" and cfg.env.resume == "007"


def test_override_invalid_yaml_value():
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        apply_overrides(TrainCfg(), ["env.hidden_dims=[1,2"])


# --------------------------------------------------------------------------- YAML files
def test_load_yaml_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"config file '.*nope.yaml' does not exist"):
        load_yaml(TrainCfg, missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: {num_envs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad.yaml' is not valid YAML \(.*line"):
        load_yaml(TrainCfg, bad)
    for name, text in [("list.yaml", "- 1\n- 2\n"), ("empty.yaml", "")]:
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ConfigError, match=rf"config file '.*{name}' must hold a mapping"):
            load_yaml(TrainCfg, p)


def test_load_yaml_type_error_mentions_file_and_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("env:\n  num_envs: many\n")
    with pytest.raises(ConfigError, match=r"'env.num_envs' expects an int, got 'many' \(in config file '.*c.yaml'\)"):
        load_yaml(TrainCfg, p)


def test_load_yaml_reads_exponent_floats(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("runner:\n  learning_rate: 3e-4\n")  # plain PyYAML would read the string '3e-4'
    assert load_yaml(TrainCfg, p).runner.learning_rate == pytest.approx(3e-4)


def test_save_yaml_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    save_yaml(TrainCfg(seed=1), path)
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_yaml(TrainCfg(seed=2), path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


# --------------------------------------------------------------------------- hashing
def test_config_hash_changes_with_values_and_ignores_dict_order():
    h = config_hash(TrainCfg())
    assert len(h) == 64 and int(h, 16) >= 0
    assert config_hash(TrainCfg()) == h
    assert config_hash(apply_overrides(TrainCfg(), ["env.num_envs=65"])) != h
    assert config_hash(apply_overrides(TrainCfg(), ["runner.learning_rate=0.0010001"])) != h
    a = EnvCfg(reward_weights={"x": 1.0, "y": 2.0})
    b = EnvCfg(reward_weights={"y": 2.0, "x": 1.0})
    assert config_hash(a) == config_hash(b)
    assert config_hash(EnvCfg(episode_length_s=20)) == config_hash(EnvCfg(episode_length_s=20.0))


def test_config_hash_stable_across_processes():
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(SRC)!r})
        from dataclasses import dataclass, field
        from rwm.config import config_hash
        @dataclass
        class C:
            a: int = 3
            b: tuple[float, float] = (0.5, 1.0)
            w: dict[str, float] = field(default_factory=lambda: {{"z": 1.0, "a": 2.0}})
            s: str = "cpu"
        print(config_hash(C()))
    """)
    outs = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout.strip())
    assert len(outs) == 1
    # pinned: the canonical form is part of the contract between ranks and runs
    assert outs.pop() == _expected_small_hash()


def _expected_small_hash() -> str:
    import hashlib
    import json

    canonical = {"a": 3, "b": [0.5, 1.0], "s": "cpu", "w": {"a": 2.0, "z": 1.0}}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- annotation styles
def test_runtime_typing_annotations_py310_style():
    """Real (non-string) typing objects: Optional, Tuple, List, Dict, Union, Literal."""
    Legacy = dataclasses.make_dataclass("Legacy", [
        ("n", Optional[int], None),
        ("pair", Tuple[float, float], (0.0, 1.0)),
        ("dims", List[int], field(default_factory=lambda: [1])),
        ("weights", Dict[str, float], field(default_factory=dict)),
        ("mode", Literal["a", "b"], "a"),
        ("either", Union[int, str], 0),
        ("sub", Optional[CommandCfg], None),
        ("level", Literal[1, 2], 1),
    ])
    cfg = from_dict(Legacy, {"n": 2.0, "pair": [1, 2], "dims": [3], "weights": {"k": 1},
                             "mode": "b", "either": "x", "sub": {"standing_fraction": 0.1}})
    assert (cfg.n, cfg.pair, cfg.dims, cfg.weights, cfg.mode, cfg.either) == \
        (2, (1.0, 2.0), [3], {"k": 1.0}, "b", "x")
    assert cfg.sub == CommandCfg(standing_fraction=0.1)
    assert from_dict(Legacy, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"'pair' expects a tuple\[float, float\] with exactly 2"):
        from_dict(Legacy, {"pair": [1, 2, 3]})
    with pytest.raises(ConfigError, match=r"'either' expects an int or a str, got 1.5"):
        from_dict(Legacy, {"either": 1.5})
    with pytest.raises(ConfigError, match=r"'level' expects one of 1, 2, got True"):
        from_dict(Legacy, {"level": True})  # True == 1 in Python, but it is not a level
    assert from_dict(Legacy, {"level": 2}).level == 2
    with pytest.raises(ConfigError, match=r"unknown config key 'sub.standing'; did you mean"):
        from_dict(Legacy, {"sub": {"standing": 0.1}})
    assert apply_overrides(Legacy(), ["sub.standing_fraction=0.3"]).sub.standing_fraction == 0.3


# --------------------------------------------------------------------------- the task configuration
def test_every_task_setting_says_what_it_is():
    """Every field of TaskCfg and of each section it holds has a comment on its line or just above it
    (a section header such as ``# --- losses ---`` does not count)."""
    import inspect
    import typing

    from rwm.tasks.anymal_d_flat import TaskCfg

    seen, undescribed = set(), []

    def visit(cls) -> None:
        if cls in seen:
            return
        seen.add(cls)
        lines, _ = inspect.getsourcelines(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{f.name}:"))
            above = lines[index - 1].strip()
            if "#" not in lines[index] and not (above.startswith("#") and not above.startswith("# ---")):
                undescribed.append(f"{cls.__name__}.{f.name}")
            for arg in (hints[f.name], *typing.get_args(hints[f.name])):
                if dataclasses.is_dataclass(arg):
                    visit(arg)

    visit(TaskCfg)
    assert len(seen) >= 15 and not undescribed, f"settings without a comment saying what they are: {undescribed}"
