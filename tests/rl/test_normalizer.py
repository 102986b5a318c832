"""EmpiricalNormalization: running statistics, fixed statistics, inverse, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rwm.rl import EmpiricalNormalization


def _batches(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.array([0.1, 1.0, 10.0, 100.0])
    offset = np.array([-3.0, 0.0, 5.0, 50.0])
    # Uneven batch sizes, including a single row, to exercise the parallel combination.
    return [offset + scale * rng.standard_normal((n, 4)) for n in (7, 1, 64, 30, 3)]


def test_running_statistics_match_numpy():
    norm = EmpiricalNormalization(4)
    batches = _batches()
    for b in batches:
        norm.update(torch.tensor(b, dtype=torch.float32))
    data = np.concatenate(batches)  # float64 reference
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), data.std(axis=0), rtol=1e-5, atol=1e-6)
    assert int(norm.count) == data.shape[0]

    x = torch.tensor(data, dtype=torch.float32)
    z = norm(x)
    expected = (data - data.mean(axis=0)) / (data.std(axis=0) + 1e-8)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_update_accepts_leading_batch_dims():
    data = torch.tensor(np.concatenate(_batches())[:100], dtype=torch.float32)  # (100, 4)
    flat, nested = EmpiricalNormalization(4), EmpiricalNormalization(4)
    flat.update(data)
    nested.update(data.reshape(5, 20, 4))
    torch.testing.assert_close(nested.mean, flat.mean)
    torch.testing.assert_close(nested.var, flat.var)
    assert nested(data.reshape(5, 20, 4)).shape == (5, 20, 4)


def test_calling_the_module_or_eval_mode_does_not_update():
    norm = EmpiricalNormalization(4)
    x = torch.tensor(_batches()[2], dtype=torch.float32)
    norm(x)  # forward never updates
    assert int(norm.count) == 0 and torch.all(norm.mean == 0) and torch.all(norm.var == 1)
    norm.eval()
    norm.update(x)
    assert int(norm.count) == 0 and torch.all(norm.mean == 0)
    norm.train()
    norm.update(x)
    assert int(norm.count) == x.shape[0]


def test_fixed_statistics_stay_fixed():
    norm = EmpiricalNormalization(4)
    mean = torch.tensor([1.0, -2.0, 3.0, 0.0])
    std = torch.tensor([0.5, 2.0, 1.0, 4.0])
    norm.set_statistics(mean, std)
    assert bool(norm.frozen)
    for b in _batches():
        norm.update(torch.tensor(b, dtype=torch.float32))
    torch.testing.assert_close(norm.mean, mean)
    torch.testing.assert_close(norm.std, std)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(norm(x), (x - mean) / (std + 1e-8))

    norm.unfreeze()
    norm.update(torch.tensor(_batches()[2], dtype=torch.float32))
    assert not torch.equal(norm.mean, mean)


def test_inverse_undoes_forward():
    norm = EmpiricalNormalization(4)
    for b in _batches():
        norm.update(torch.tensor(b, dtype=torch.float32))
    x = torch.tensor(np.concatenate(_batches(seed=1)), dtype=torch.float32)
    torch.testing.assert_close(norm.inverse(norm(x)), x, rtol=1e-5, atol=1e-4)
    z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(norm(norm.inverse(z)), z, rtol=1e-5, atol=1e-5)


def test_until_stops_updating():
    norm = EmpiricalNormalization(4, until=8)
    b0, b1, b2 = (torch.tensor(b, dtype=torch.float32) for b in _batches()[:3])  # 7, 1, 64 rows
    norm.update(b0)
    norm.update(b1)  # reaches 8 samples
    mean_after_8 = norm.mean.clone()
    norm.update(b2)
    torch.testing.assert_close(norm.mean, mean_after_8)
    assert int(norm.count) == 8


def test_state_dict_round_trip():
    norm = EmpiricalNormalization(4)
    for b in _batches():
        norm.update(torch.tensor(b, dtype=torch.float32))
    norm.freeze()
    state = norm.state_dict()
    assert {"mean", "var", "count", "frozen"} <= set(state)
    other = EmpiricalNormalization(4)
    other.load_state_dict(state)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(other(x), norm(x))
    assert bool(other.frozen)


def test_update_under_inference_mode_keeps_buffers_usable_for_backward():
    norm = EmpiricalNormalization(4)
    with torch.inference_mode():
        norm.update(torch.tensor(_batches()[2], dtype=torch.float32))
    assert not norm.mean.is_inference() and not norm.var.is_inference()
    x = torch.randn(3, 4, requires_grad=True)
    norm(x).sum().backward()
    torch.testing.assert_close(x.grad, (1.0 / (norm.std + 1e-8)).expand(3, 4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dim": 0}, "dim"),
        ({"dim": -3}, "dim"),
        ({"dim": 4, "eps": -1.0}, "eps"),
        ({"dim": 4, "until": 0}, "until"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmpiricalNormalization(**kwargs)


def test_bad_statistics_or_shapes_raise_value_error():
    norm = EmpiricalNormalization(4)
    with pytest.raises(ValueError, match="std"):
        norm.set_statistics(torch.zeros(4), torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="broadcastable"):
        norm.set_statistics(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="last dimension"):
        norm.update(torch.zeros(2, 5))
