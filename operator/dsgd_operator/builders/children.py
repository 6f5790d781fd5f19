"""Everything one job becomes, in the order to create it."""

from __future__ import annotations

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.build_settings import DEFAULT_SETTINGS, BuildSettings
from dsgd_operator.builders.config_map import build_config_map
from dsgd_operator.builders.disruption_budget import build_pod_disruption_budget
from dsgd_operator.builders.pod import build_pods
from dsgd_operator.builders.pod_group import build_pod_group
from dsgd_operator.builders.service import build_service


def build_children(
    job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS, attempt: int = 0
) -> list[dict]:
    """Service, ConfigMap, PodDisruptionBudget, PodGroup (with a gang scheduler), then the pods.

    Pods come last: their DNS name needs the Service, their config volume the
    ConfigMap, and a gang scheduler must see the PodGroup before its members.
    """
    pod_group = build_pod_group(job, settings)
    return [
        build_service(job),
        build_config_map(job),
        build_pod_disruption_budget(job),
        *([pod_group] if pod_group else []),
        *build_pods(job, settings, attempt),
    ]
