"""Downpour SGD's settings (Dean et al. 2012) that are not plain fields of `algorithm`.

The algorithm's semantics are written out in dsgd_trainer.algorithms.downpour;
the parameter servers in dsgd_trainer.parameter_server.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from dsgd_contract.spec_model import SpecModel

DOWNPOUR = "downpour-sgd"
#: What a parameter server applies to the gradients pushed to it.
ServerOptimizerName = Literal["adagrad", "sgd"]
#: The most parameter-server pods a job may ask for (shards of one model).
MAX_PARAMETER_SERVERS = 64
#: Adagrad's ε when adagrad.epsilon is unset: torch.optim.Adagrad's default.
DEFAULT_ADAGRAD_EPSILON = 1e-10


class Adagrad(SpecModel):
    """The servers' Adagrad (Duchi et al. 2011, as Dean et al. use it), per coordinate i.

    G_i ← G_i + g_i²;  w_i ← w_i − η · g_i / (√G_i + epsilon), with G_i starting at
    initialAccumulator: torch.optim.Adagrad's rule (lr_decay 0, weight_decay 0), η the
    learning rate of the pushing worker's schedule.
    """

    # Unset rather than 1e-10 in the schema's default: Helm writes 1e-10 back as `1e-10`,
    # which YAML 1.1 readers (PyYAML) take for a string.
    epsilon: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None,
        description=(
            "Added to √G_i, so that a coordinate with G_i = 0 gets a finite step. Default: "
            f"{DEFAULT_ADAGRAD_EPSILON:g} (torch.optim.Adagrad's)."
        ),
    )
    initial_accumulator: Annotated[float, Field(ge=0, le=1_000_000)] = Field(
        0.0, description="G_i before the first gradient (torch.optim.Adagrad's default: 0)."
    )

    @property
    def resolved_epsilon(self) -> float:
        """epsilon as set, else DEFAULT_ADAGRAD_EPSILON."""
        return DEFAULT_ADAGRAD_EPSILON if self.epsilon is None else self.epsilon
