"""One world-model update per runner iteration: K mini-batches, one Adam step each
(docs/architecture.md#world-model-training)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from rwm.world_model.config import WorldModelCfg
from rwm.world_model.losses import LOSS_NAMES, world_model_loss
from rwm.world_model.model import SystemDynamics


class WorldModelTrainer:
    """Adam on the trainable parameters of a :class:`SystemDynamics`.

    ``update(batch_sampler)`` draws ``cfg.num_mini_batches`` mini-batches from
    ``batch_sampler() -> {"state", "action", "contact", "termination"[, "extension"]}`` (raw
    windows of shape (B, M+N, d)) and, for each: reset the model, compute the loss, clear the
    gradients, back-propagate, clip the global gradient norm, step. A non-finite loss or gradient
    stops the update *before* the optimizer step, so the parameters stay the last good ones.
    """

    def __init__(self, model: SystemDynamics, cfg: WorldModelCfg | None = None,
                 generator: torch.Generator | None = None):
        self.model = model
        self.cfg = cfg if cfg is not None else model.cfg
        self.generator = generator  # for the bootstrap rows and the reparameterisation noise
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("WorldModelTrainer got a model without trainable parameters.")
        self.optimizer = torch.optim.Adam(self.params, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay)
        self.num_updates = 0
        # Multi-process training sets this to average the gradients across ranks (see reduce_gradients).
        self.gradient_reducer: Callable[[list[torch.Tensor]], None] | None = None

    def update(self, batch_sampler: Callable[[], dict[str, torch.Tensor]]) -> dict[str, float]:
        """Run one update; return the mean of each loss term, the total and the gradient norm."""
        self.model.train()
        sums = dict.fromkeys((*LOSS_NAMES, "total", "grad_norm"), 0.0)
        num = self.cfg.num_mini_batches
        for k in range(num):
            batch = batch_sampler()
            self.model.reset()
            total, terms = world_model_loss(self.model, batch, self.cfg, self.generator)
            values = {name: float(value.detach()) for name, value in terms.items()}
            values["total"] = float(total.detach())
            for name, value in values.items():
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"world-model {name} loss is {value} in mini-batch {k} of update {self.num_updates}; "
                        "the parameters were left unchanged."
                    )
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.reduce_gradients()
            grad_norm = float(nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
            if not math.isfinite(grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"world-model gradient norm is {grad_norm} in mini-batch {k} of update {self.num_updates} "
                    "(total loss finite); the parameters were left unchanged."
                )
            self.optimizer.step()
            for name, value in values.items():
                sums[name] += value
            sums["grad_norm"] += grad_norm
        self.model.reset()  # leave no context sized for a training batch behind
        self.num_updates += 1
        return {name: value / num for name, value in sums.items()}

    def reduce_gradients(self) -> None:
        """Called after ``backward()`` and before gradient clipping, like :meth:`rwm.rl.PPO.reduce_gradients`:
        hands the trainable parameters to ``gradient_reducer`` (multi-process training averages their
        gradients across ranks there, see :mod:`rwm.training.distributed`). Nothing happens without one."""
        if self.gradient_reducer is not None:
            self.gradient_reducer(self.params)

    def state_dict(self) -> dict:
        """The optimizer state (checkpoint key ``system_dynamics_optimizer_state_dict``)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        # A deep copy: torch.optim would otherwise share the given moment tensors with their source.
        self.optimizer.load_state_dict(copy.deepcopy(state_dict))


__all__ = ["WorldModelTrainer"]
