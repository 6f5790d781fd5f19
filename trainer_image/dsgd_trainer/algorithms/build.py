"""Pick the algorithm a training config asks for."""

from __future__ import annotations

from dsgd_contract.config import TrainingConfig
from torch import nn

from .base import Algorithm
from .context import DistContext
from .downpour import DownpourSGD
from .local_sgd import LocalSGD
from .mini_batch import MiniBatchSGD

#: The local variants are one class; their schedule (sync_schedule.py) follows from the name.
ALGORITHMS: dict[str, type[Algorithm]] = {
    MiniBatchSGD.name: MiniBatchSGD,
    "local-sgd": LocalSGD,
    "post-local-sgd": LocalSGD,
    "hierarchical-local-sgd": LocalSGD,
    DownpourSGD.name: DownpourSGD,
}


#: The algorithms that average within a node, and so need the intra-node process groups.
INTRA_NODE_ALGORITHMS = frozenset({"hierarchical-local-sgd"})


def uses_intra_node_groups(config: TrainingConfig) -> bool:
    """Whether `config`'s algorithm needs make_dist_context(..., intra_node_groups=True)."""
    return config.algorithm.name in INTRA_NODE_ALGORITHMS


def build_algorithm(
    config: TrainingConfig, model: nn.Module, ctx: DistContext, steps_per_epoch: int
) -> Algorithm:
    """The `config.algorithm.name` algorithm over `model` (collective: call on every rank).

    Call after `dist.init_process_group` and `make_dist_context`, with the model
    already on `ctx.device`. Mini-batch SGD wraps the model in DDP here (which
    broadcasts rank 0's parameters and buffers). `config` is a validated
    TrainingConfig, so its compression fits its algorithm
    (dsgd_contract.config.COMPRESSIBLE_ALGORITHMS).
    """
    name = config.algorithm.name
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm.name {name!r}; expected one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name](model, config, ctx, steps_per_epoch)
