"""SGD momentum as torch.optim.SGD applies it (dampening 0), for our own optimizers."""

from __future__ import annotations

from typing import Any

import torch


def with_momentum(
    state: dict[str, Any], update: torch.Tensor, momentum: float, nesterov: bool
) -> torch.Tensor:
    """The step direction after momentum: buf ← momentum·buf + update (buf = update at the
    first step), then update + momentum·buf with Nesterov, else buf. `state` is the
    parameter's optimizer state (it keeps `momentum_buffer`); no momentum: `update`."""
    if not momentum:
        return update
    buffer = state.get("momentum_buffer")
    if buffer is None:
        buffer = state["momentum_buffer"] = update.clone()
    else:
        buffer.mul_(momentum).add_(update)
    return update.add(buffer, alpha=momentum) if nesterov else buffer
