"""Pure builders: a DistributedSGDJob in, the Kubernetes objects it becomes out.

Plain dicts in wire form (camelCase), no API calls: `dsgd render` prints
them, `dsgd run` executes the pods locally, the operator creates them. The
pods follow the pod contract (dsgd_contract.pod; docs/design.md), and their
volumes the layout of dsgd_operator.pod_layout.
"""

from dsgd_operator.builders.build_settings import DEFAULT_SETTINGS, BuildSettings
from dsgd_operator.builders.children import build_children
from dsgd_operator.builders.config_map import build_config_map, config_json
from dsgd_operator.builders.disruption_budget import build_pod_disruption_budget
from dsgd_operator.builders.gpu_pods import GpuPodSettings
from dsgd_operator.builders.parameter_server_pod import build_parameter_server_pod
from dsgd_operator.builders.pod import build_member_pod, build_pod, build_pods
from dsgd_operator.builders.pod_group import GANG_SCHEDULERS, build_pod_group
from dsgd_operator.builders.service import build_service

__all__ = [
    "DEFAULT_SETTINGS",
    "GANG_SCHEDULERS",
    "BuildSettings",
    "GpuPodSettings",
    "build_children",
    "build_config_map",
    "build_member_pod",
    "build_parameter_server_pod",
    "build_pod",
    "build_pod_disruption_budget",
    "build_pod_group",
    "build_pods",
    "build_service",
    "config_json",
]
