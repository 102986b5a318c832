"""Both simulators satisfy `rwm.sim.simulator.Simulator`: at run time (isinstance) and by their attributes'
types and their methods' parameters, read from the protocol's annotations."""

from __future__ import annotations

import inspect
import types
import typing

import pytest
import torch

from rwm.sim.imagination import ImaginationSimulator
from rwm.sim.simulator import Simulator
from tests.conftest import make_quiet_env
from tests.sim.test_imagination import random_windows, tiny_model


def simulators() -> dict[str, object]:
    M = 4
    return {"mujoco": make_quiet_env(num_envs=3).sim,
            "imagination": ImaginationSimulator(tiny_model(M=M), random_windows(M), 3)}


@pytest.fixture(scope="module", params=["mujoco", "imagination"])
def simulator(request):
    return simulators()[request.param]


def _accepts(annotation, value) -> bool:
    """Whether `value` is of the annotated type (classes, and unions of them such as `X | None`)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_accepts(arm, value) for arm in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def test_both_simulators_are_simulators_at_run_time(simulator):
    assert isinstance(simulator, Simulator)


def test_every_attribute_of_the_protocol_has_its_annotated_type(simulator):
    hints = typing.get_type_hints(Simulator)
    assert set(hints) == {"num_envs", "device", "step_dt", "state", "soft_joint_pos_limits", "uncertainty"}
    for name, annotation in hints.items():
        value = getattr(simulator, name)
        assert _accepts(annotation, value), (f"{type(simulator).__name__}.{name} is a {type(value).__name__}; "
                                             f"the protocol says {annotation}")
    assert tuple(simulator.soft_joint_pos_limits.shape) == (2, 12)
    assert simulator.state.joint_pos.shape[0] == simulator.num_envs


def test_methods_take_the_protocol_parameters_and_return_a_state(simulator):
    for name in ("reset", "step"):
        wanted = inspect.signature(getattr(Simulator, name)).parameters
        signature = inspect.signature(getattr(type(simulator), name))
        found = signature.parameters
        assert list(found)[:len(wanted)] == list(wanted), f"{type(simulator).__name__}.{name}{signature}"
        for parameter in wanted.values():
            assert found[parameter.name].default == parameter.default
    returned = typing.get_type_hints(type(simulator).step)["return"]
    assert returned is typing.get_type_hints(Simulator.step)["return"]
    state = simulator.step(torch.zeros(simulator.num_envs, 12))
    assert isinstance(state, type(simulator.state)) and state is simulator.state
    assert simulator.reset(torch.tensor([0])) is simulator.state


def test_an_object_without_the_interface_is_not_a_simulator():
    class HalfASimulator:
        num_envs, step_dt = 1, 0.02

        def step(self, actions):
            return None

    assert not isinstance(HalfASimulator(), Simulator)
