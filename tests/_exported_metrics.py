"""The metric names the code really exports, read from live prometheus-client registries.

Names are the sample names Prometheus stores: `<name>_total` for counters,
`_bucket`/`_sum`/`_count` for histograms. `_created` samples are left out:
the trainer's multiprocess mode never exports them, so no query may rely on them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def sample_names(registry: CollectorRegistry) -> set[str]:
    return {
        family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]
    }


def trainer_metric_names() -> set[str]:
    """Every series name a trainer rank exports (its metric objects, in a fresh registry)."""
    from dsgd_trainer.metrics import TrainerMetrics

    registry = CollectorRegistry()
    TrainerMetrics(rank=0, registry=registry)
    return sample_names(registry)


def operator_metric_names() -> set[str]:
    from dsgd_operator.reconcile.metrics import REGISTRY

    return sample_names(REGISTRY)


def parameter_server_metric_names() -> set[str]:
    """Every series name a downpour-sgd parameter server exports (shard 0's, fresh registry)."""
    from dsgd_trainer.parameter_server.metrics import ParameterServerMetrics

    registry = CollectorRegistry()
    ParameterServerMetrics(0, registry)
    return sample_names(registry)
