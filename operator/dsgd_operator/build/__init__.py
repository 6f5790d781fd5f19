"""Pure builders: a DistributedSGDJob in, the Kubernetes objects it becomes out.

Plain dicts in wire form (camelCase), no API calls: `dsgd render` prints
them, `dsgd run` executes the pods locally, the operator creates them. The
pods follow the pod contract (see DESIGN.md and dsgd_operator.pod_layout).
"""

from dsgd_operator.build.children import build_children
from dsgd_operator.build.config_map import build_config_map, config_json
from dsgd_operator.build.disruption_budget import build_pod_disruption_budget
from dsgd_operator.build.labels import (
    ATTEMPT_LABEL,
    JOB_NAME_LABEL,
    NODE_RANK_LABEL,
    job_labels,
    pod_labels,
)
from dsgd_operator.build.names import (
    config_map_name,
    master_address,
    pod_group_name,
    pod_name,
    service_name,
)
from dsgd_operator.build.pod import ARGS, COMMAND, CONTAINER_NAME, build_pod, build_pods
from dsgd_operator.build.pod_group import GANG_SCHEDULERS, build_pod_group
from dsgd_operator.build.service import build_service
from dsgd_operator.build.settings import DEFAULT_SETTINGS, BuildSettings

__all__ = [
    "ARGS",
    "ATTEMPT_LABEL",
    "COMMAND",
    "CONTAINER_NAME",
    "DEFAULT_SETTINGS",
    "GANG_SCHEDULERS",
    "JOB_NAME_LABEL",
    "NODE_RANK_LABEL",
    "BuildSettings",
    "build_children",
    "build_config_map",
    "build_pod",
    "build_pod_disruption_budget",
    "build_pod_group",
    "build_pods",
    "build_service",
    "config_json",
    "config_map_name",
    "job_labels",
    "master_address",
    "pod_group_name",
    "pod_labels",
    "pod_name",
    "service_name",
]
