"""Container resources: the user's, the installation's defaults for what the user left out,
and the GPUs the topology asks for."""

from __future__ import annotations

import copy
import math
from decimal import Decimal

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.build_settings import DEFAULT_SETTINGS, BuildSettings
from dsgd_operator.builders.pod_defaults import scaled
from dsgd_operator.pod_layout import GPU_RESOURCE, parse_quantity

#: Binary suffixes for summed quantities, largest first; only from Mi up, so
#: that CPU counts stay plain numbers.
_BINARY_SUFFIXES = (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20))


def container_resources(
    job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS
) -> dict | None:
    """template.resources, the installation's per-rank defaults × processesPerNode for every
    resource the template does not name (as a request or a limit), and
    `nvidia.com/gpu: processesPerNode` in limits and requests.

    The user's amounts are kept as given: a resource the template names is left
    to it entirely (a default request could exceed its limit). A GPU count that
    contradicts the topology never gets here: the spec refuses it
    (dsgd_operator.pod_layout).
    """
    topology = job.spec.topology
    resources = _with_defaults(
        job.spec.template.resources, settings, processes=topology.processes_per_node
    )
    if topology.gpu:
        # Extended resources cannot be overcommitted: requests must equal limits.
        for section in ("limits", "requests"):
            resources.setdefault(section, {})[GPU_RESOURCE] = str(topology.processes_per_node)
    return resources or None


def parameter_server_resources(
    job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS
) -> dict | None:
    """A parameter server's resources: template.parameterServerResources, and the
    installation's per-rank defaults (one process) for every resource it does not name.
    Never a GPU: servers are CPU pods."""
    given = job.spec.template.parameter_server_resources
    return _with_defaults(given, settings, processes=1) or None


def _with_defaults(given: dict | None, settings: BuildSettings, *, processes: int) -> dict:
    """A copy of `given` plus the installation's per-process defaults × `processes` for
    every resource `given` names in neither requests nor limits."""
    resources = copy.deepcopy(given or {})
    named = {
        name
        for section in ("requests", "limits")
        if isinstance(resources.get(section), dict)
        for name in resources[section]
    }
    defaults = settings.pod_defaults
    for section, amounts in (
        ("requests", defaults.requests_per_process),
        ("limits", defaults.limits_per_process),
    ):
        for name, amount in amounts.items():
            if name not in named:
                total = scaled(amount, processes)
                resources.setdefault(section, {})[name] = format_quantity(total)
    return resources


def pod_requests(
    job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS, *, server: bool = False
) -> dict[str, Decimal]:
    """What one pod (a parameter server's with `server`) asks the scheduler for: requests,
    defaulting to limits as Kubernetes does."""
    build = parameter_server_resources if server else container_resources
    resources = build(job, settings) or {}
    amounts = {**resources.get("limits", {}), **resources.get("requests", {})}
    return {name: parse_quantity(amount) for name, amount in amounts.items()}


def cpu_threads_per_process(job: DistributedSGDJob) -> int | None:
    """OMP threads per rank for a CPU job: its share of the pod's CPU request.

    None when the user gave no CPU amount: we then know nothing better than
    torchrun's own default.
    """
    if job.spec.topology.gpu or not job.spec.template.resources:
        return None
    cpus = (job.spec.template.resources.get("requests") or {}).get("cpu") or (
        job.spec.template.resources.get("limits") or {}
    ).get("cpu")
    if cpus is None:
        return None
    return max(1, math.floor(parse_quantity(cpus) / job.spec.topology.processes_per_node))


def format_quantity(value: Decimal) -> str:
    """A quantity in the short form a person would write: 4, 1500m, 32Gi."""
    if value != value.to_integral_value():
        return f"{math.ceil(value * 1000)}m"
    whole = int(value)
    for suffix, factor in _BINARY_SUFFIXES:
        if whole >= factor and whole % factor == 0:
            return f"{whole // factor}{suffix}"
    return str(whole)
