"""Empirical (running) normalisation of feature vectors.

The policy's observations and, later, the world model's inputs and targets live on very
different scales (joint angles in radians, joint velocities in tens of rad/s, contact flags
in {0, 1}). A network trained on raw features spends its first updates learning those
scales. This module keeps the first two moments of the features and maps them to roughly
zero mean and unit variance.

Two uses are supported by the same class:

* **running statistics** (PPO observations): call :meth:`update` with each new batch while
  in training mode; the statistics follow the data, optionally only for the first
  ``until`` samples so that the mapping the policy sees eventually stops moving;
* **fixed statistics** (world model): call :meth:`set_statistics` once with statistics
  computed from a data set; the module is then frozen and :meth:`update` is a no-op.

All statistics are buffers, so they are saved in ``state_dict`` and follow ``.to(device)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class EmpiricalNormalization(nn.Module):
    """Normalise ``(..., dim)`` tensors with a running (or fixed) mean and standard deviation.

    ``forward(x) = (x - mean) / (std + eps)`` and ``inverse(z) = z * (std + eps) + mean``.

    Statistics are only changed by :meth:`update` (and only in training mode, and only while
    not frozen and fewer than ``until`` samples were seen) or by :meth:`set_statistics`.
    Calling the module never changes them, so evaluating a policy cannot move its inputs.

    Buffers:
        mean: (dim,) running mean.
        var: (dim,) running population variance (``unbiased=False``).
        count: () number of samples (rows) folded into ``mean``/``var`` so far.
        frozen: () bool; when true, :meth:`update` does nothing.
    """

    def __init__(self, dim: int, eps: float = 1e-8, until: int | None = None):
        """
        Args:
            dim: Size of the last axis of the tensors to normalise.
            eps: Added to the standard deviation in :meth:`forward` to avoid a division by
                zero for constant features. Note that with a tiny ``eps`` a feature that was
                constant while the statistics were gathered is mapped to huge values when it
                later changes; give it a non-zero std with :meth:`set_statistics` if needed.
            until: Stop updating once this many samples have been seen (the batch that
                crosses the limit is still used in full). ``None`` never stops.
        """
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"EmpiricalNormalization got dim={dim!r}, expected a positive integer.")
        if not (isinstance(eps, (int, float)) and eps >= 0.0):
            raise ValueError(f"EmpiricalNormalization got eps={eps!r}, expected a non-negative number.")
        if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until <= 0):
            raise ValueError(f"EmpiricalNormalization got until={until!r}, expected None or a positive integer.")
        self.dim = dim
        self.eps = float(eps)
        self.until = until
        # Start as the identity mapping (mean 0, var 1) so the module is usable before any data.
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    @property
    def std(self) -> torch.Tensor:
        """(dim,) standard deviation, ``sqrt(var)``."""
        return torch.sqrt(self.var)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (..., dim) to normalised features of the same shape."""
        return (x - self.mean) / (self.std + self.eps)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`forward`: map normalised features (..., dim) back to the raw scale."""
        return z * (self.std + self.eps) + self.mean

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``x`` of shape (..., dim) into the running statistics.

        Uses the parallel (Chan et al.) combination of two sets' mean and variance, so the
        result equals the statistics over all rows seen so far, whatever the batch sizes.
        Does nothing in eval mode, when frozen, or once ``until`` samples were seen.

        The buffers are modified in place: this keeps them ordinary tensors even when the
        update runs under ``torch.inference_mode()`` (as during a rollout), so they can still
        be used in a later backward pass.
        """
        if not self.training or bool(self.frozen):
            return
        if self.until is not None and int(self.count) >= self.until:
            return
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"EmpiricalNormalization.update got a tensor with last dimension {x.shape[-1]}, expected {self.dim}."
            )
        x = x.reshape(-1, self.dim).to(self.mean.dtype)
        n_batch = x.shape[0]
        if n_batch == 0:
            return
        n_old = int(self.count)
        n_total = n_old + n_batch
        batch_mean = x.mean(dim=0)
        batch_var = x.var(dim=0, unbiased=False)
        delta = batch_mean - self.mean
        rate = n_batch / n_total
        # mean_new = mean + (n_b / n) * delta
        # var_new  = (n_a var_a + n_b var_b + delta^2 n_a n_b / n) / n
        new_var = (1.0 - rate) * self.var + rate * batch_var + delta.square() * (1.0 - rate) * rate
        self.mean.add_(rate * delta)
        self.var.copy_(new_var)
        self.count.add_(n_batch)

    @torch.no_grad()
    def set_statistics(
        self,
        mean: torch.Tensor | Sequence[float] | float,
        std: torch.Tensor | Sequence[float] | float,
        freeze: bool = True,
    ) -> None:
        """Set the statistics directly (e.g. computed from a data set) and, by default, freeze them.

        Args:
            mean: Broadcastable to (dim,).
            std: Broadcastable to (dim,), non-negative and finite.
            freeze: If true, later calls to :meth:`update` leave the statistics unchanged.
        """
        mean_t = torch.as_tensor(mean, dtype=self.mean.dtype, device=self.mean.device)
        std_t = torch.as_tensor(std, dtype=self.var.dtype, device=self.var.device)
        try:
            mean_t = torch.broadcast_to(mean_t, (self.dim,))
            std_t = torch.broadcast_to(std_t, (self.dim,))
        except RuntimeError as err:
            raise ValueError(
                f"EmpiricalNormalization.set_statistics got mean/std of shapes {tuple(mean_t.shape)} and "
                f"{tuple(std_t.shape)}, expected shapes broadcastable to ({self.dim},)."
            ) from err
        if not torch.isfinite(mean_t).all():
            raise ValueError("EmpiricalNormalization.set_statistics got a non-finite mean, expected finite values.")
        if not (torch.isfinite(std_t).all() and (std_t >= 0).all()):
            raise ValueError("EmpiricalNormalization.set_statistics got a negative or non-finite std, expected finite values >= 0.")
        self.mean.copy_(mean_t)
        self.var.copy_(std_t.square())
        self.frozen.fill_(bool(freeze))

    def freeze(self) -> None:
        """Stop :meth:`update` from changing the statistics."""
        self.frozen.fill_(True)

    def unfreeze(self) -> None:
        """Let :meth:`update` change the statistics again."""
        self.frozen.fill_(False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, until={self.until}"
