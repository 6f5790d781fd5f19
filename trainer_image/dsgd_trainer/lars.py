"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017), as a torch optimizer.

Each parameter tensor ("layer") in a LARS group gets its own step size: the
global lr times the trust ratio

    trust × ‖w‖ / (‖∇w‖ + weight_decay × ‖w‖)

(1 when ‖w‖ or ‖∇w‖ is zero, e.g. a freshly zero-initialised layer). With very
large batches the ratio ‖∇w‖/‖w‖ differs by orders of magnitude between layers,
so one global lr is too large for some and too small for others; the trust
ratio evens that out.

The update is torch.optim.SGD's with the gradient (weight decay included)
scaled by the trust ratio first, as in NVIDIA's and timm's LARS:

    d = trust_ratio × (∇w + weight_decay × w)
    buf = momentum × buf + d;  w -= lr × (d + momentum × buf if nesterov else buf)

Groups with `lars=False` (biases and normalisation parameters, see
`dsgd_trainer.optim`) skip the scaling: plain SGD at the global lr.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from dsgd_trainer.momentum import with_momentum


class LARS(Optimizer):
    """SGD with momentum, Nesterov, weight decay and per-layer LARS trust ratios.

    Param-group options: `lr`, `momentum`, `nesterov`, `weight_decay`, `trust`
    (the trust coefficient η) and `lars` (False: no trust ratio for this group).
    After each step, `state[p]["trust_ratio"]` holds the ratio used for `p`
    (a 0-d tensor; 1 in groups without LARS), for inspection and tests.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        trust: float = 0.001,
        lars: bool = True,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust <= 0:
            raise ValueError(
                f"invalid LARS settings: lr={lr}, momentum={momentum}, "
                f"weight_decay={weight_decay}, trust={trust}"
            )
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "trust": trust,
            "lars": lars,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if group["lars"]:
                    ratio = trust_ratio(param, grad, group["trust"], weight_decay)
                else:
                    ratio = torch.ones((), dtype=param.dtype, device=param.device)
                state["trust_ratio"] = ratio
                update = grad.add(param, alpha=weight_decay) if weight_decay else grad.clone()
                update.mul_(ratio)
                update = with_momentum(state, update, momentum, group["nesterov"])
                param.add_(update, alpha=-lr)
        return loss


def trust_ratio(
    param: torch.Tensor, grad: torch.Tensor, trust: float, weight_decay: float
) -> torch.Tensor:
    """trust × ‖w‖ / (‖∇w‖ + weight_decay × ‖w‖), or 1 where a norm is zero (0-d tensor).

    Computed on the device without `.item()`, so that a step never waits for the GPU.
    """
    weight_norm = torch.linalg.vector_norm(param)
    grad_norm = torch.linalg.vector_norm(grad)
    ratio = trust * weight_norm / (grad_norm + weight_decay * weight_norm)
    usable = (weight_norm > 0) & (grad_norm > 0)
    return torch.where(usable, ratio, torch.ones_like(ratio))
