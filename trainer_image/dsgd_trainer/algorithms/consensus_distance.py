"""The consensus distance ‖x_k − x̄‖ / ‖x̄‖ of one global averaging (the gauge
dsgd_consensus_distance and the records' `consensus_distance`).

x_k is this rank's model just before the averaging and x̄ the consensus it
produced, over the trainable parameters. It is measured where the averaging has
both at hand, with multi-tensor ops on the tensors themselves (no flat copy of
the model), and its ratio is taken only when it is read (at a metrics update or
an evaluation): the few small ops of the ratio cost more at every averaging than
the norms themselves (each ~10-50 µs on a CPU right after an optimizer step, a
kernel launch on a GPU; benchmarks/overhead.py). Nothing waits for the device.
"""

from __future__ import annotations

import torch


class ConsensusDistance:
    """Per-tensor norms of one averaging, added pair by pair (`add_`); `value()` the ratio."""

    def __init__(self) -> None:
        self._gaps: list[torch.Tensor] = []  # ‖x_k,i − x̄_i‖ per tensor i
        self._sizes: list[torch.Tensor] = []  # ‖x̄_i‖
        self._value: torch.Tensor | None = None

    @torch.no_grad()
    def add_(self, own: list[torch.Tensor], consensus: list[torch.Tensor]) -> ConsensusDistance:
        """Add the tensor pairs (own_i, consensus_i); `own` is overwritten with own − consensus
        (pass copies where the caller still needs them).

        The norms are taken in the tensors' own precision (float32: torch's reductions sum
        pairwise, relative error ~1e-7 at a million elements, far below what a distance
        metric shows); half-precision tensors are upcast first (copies), so that neither the
        difference nor a norm loses digits or overflows.
        """
        if any(t.element_size() < 4 for t in own):
            own, consensus = [t.float() for t in own], [t.float() for t in consensus]
        torch._foreach_sub_(own, consensus)
        self._gaps.extend(torch._foreach_norm(own))
        self._sizes.extend(torch._foreach_norm(consensus))
        self._value = None
        return self

    def value(self) -> torch.Tensor:
        """‖x_k − x̄‖ / ‖x̄‖ as a 0-d float64 tensor on the device (0 when x̄ is 0), from the
        per-tensor norms: ‖v‖ = √Σ‖v_i‖²."""
        if self._value is None:
            if not self._gaps:
                return torch.zeros((), dtype=torch.float64)
            norms = torch.stack(self._gaps + self._sizes).view(2, -1)
            gap, size = torch.linalg.vector_norm(norms, dim=1, dtype=torch.float64).unbind()
            self._value = torch.where(size > 0, gap / size, 0.0)
        return self._value
