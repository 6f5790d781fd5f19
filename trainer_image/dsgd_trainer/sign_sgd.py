"""Sign steps: the local optimizer of Lin et al.'s `sign` compressed local SGD.

As epfml `pcode/optim/local_sign_sgd.py` takes its local steps: the direction
d is torch.optim.SGD's (weight decay added to the gradient, then momentum,
Nesterov or heavy-ball, dampening 0), and the step is

    w ← w − lr · sign(d)          (sign(0) = 0: a coordinate with d = 0 stays put)

so every coordinate moves by exactly lr or not at all. The momentum buffer
starts as the first d, as in torch.optim.SGD.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from dsgd_trainer.momentum import with_momentum


class SignSGD(Optimizer):
    """SGD's direction (momentum, Nesterov, weight decay), applied as lr · sign(direction)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"invalid sign-SGD settings: lr={lr}, momentum={momentum}, "
                f"weight_decay={weight_decay}"
            )
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov}
        super().__init__(params, {**defaults, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum, weight_decay = group["momentum"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                direction = (
                    param.grad.add(param, alpha=weight_decay) if weight_decay else param.grad
                )
                direction = with_momentum(self.state[param], direction, momentum, group["nesterov"])
                param.add_(torch.sign(direction), alpha=-group["lr"])
        return loss
