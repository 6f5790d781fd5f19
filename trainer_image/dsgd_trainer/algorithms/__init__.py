"""Distributed SGD algorithms behind one interface (see base.Algorithm).

mini-batch-sgd (DDP gradient averaging), local-sgd, post-local-sgd and
hierarchical-local-sgd, with sign / ef-sign compression for the first two local
variants, and downpour-sgd (asynchronous replicas and parameter servers:
downpour.py, dsgd_trainer.parameter_server). The three local variants are one
class (local_sgd.LocalSGD) composed of a sync schedule (sync_schedule.py:
when, at which scope) and synchronisers (model_sync.py: how). The semantics
follow docs/algorithms.md; each module's docstring states the choices made
where the contract leaves one open.
"""

from .base import Algorithm
from .build import ALGORITHMS, build_algorithm, uses_intra_node_groups
from .context import DistContext, make_dist_context
from .counters import SyncCounters

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "DistContext",
    "SyncCounters",
    "build_algorithm",
    "make_dist_context",
    "uses_intra_node_groups",
]
