"""algorithm.outerOptimizer: the optimizer a global sync of the local variants applies.

The trainer's side is dsgd_trainer.algorithms.outer; the CEL rules that keep it to the
uncompressed global syncs of the local variants are dsgd_operator.crd_rules'.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from dsgd_contract.spec_model import SpecModel, raise_cross_field_errors


class OuterOptimizer(SpecModel):
    """SGD with momentum on the averaged pseudo-gradient at each global sync (SlowMo, DiLoCo).

    Δ = x_sync − mean_k(x_k); buf ← momentum·buf + Δ; x_sync ← x_sync −
    learningRate·(Δ + momentum·buf if nesterov else buf). learningRate 1 with
    momentum 0 is plain averaging (and runs as exactly that).
    """

    learning_rate: Annotated[float, Field(gt=0, le=10)] = Field(
        1.0, description="Outer learning rate (1 with momentum 0: plain averaging)."
    )
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="Outer momentum on the pseudo-gradients of successive global syncs."
    )
    nesterov: bool = Field(False, description="Nesterov outer momentum (needs momentum > 0).")

    @property
    def is_plain_averaging(self) -> bool:
        return self.learning_rate == 1.0 and self.momentum == 0.0

    @model_validator(mode="after")
    def _check(self) -> OuterOptimizer:
        if self.nesterov and self.momentum == 0:
            raise_cross_field_errors(
                "OuterOptimizer", [(("nesterov",), "Nesterov momentum needs momentum > 0")]
            )
        return self
