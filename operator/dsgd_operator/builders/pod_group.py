"""Gang scheduling: the PodGroup of a job, and what its pods need to join it.

Without a gang scheduler, a cluster short of GPUs can start some pods of a job
and leave the rest pending: the started ones hold their GPUs and wait forever
at the rendezvous. A PodGroup with minMember = nodes makes it all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from dsgd_contract.pod import pod_group_name

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.build_settings import DEFAULT_SETTINGS, BuildSettings
from dsgd_operator.builders.metadata import object_meta
from dsgd_operator.builders.resources import format_quantity, pod_requests


@dataclass(frozen=True)
class GangScheduler:
    """A gang scheduler dsgd knows: its PodGroup API and how a pod names its group."""

    pod_scheduler_name: str
    pod_group_api_version: str
    pod_label: str | None = None
    pod_annotation: str | None = None
    spec_fields: tuple[str, ...] = ()


VOLCANO = GangScheduler(
    pod_scheduler_name="volcano",
    pod_group_api_version="scheduling.volcano.sh/v1beta1",
    pod_annotation="scheduling.k8s.io/group-name",
    spec_fields=("queue", "priorityClassName"),
)
# The coscheduling plugin of kubernetes-sigs/scheduler-plugins, installed as a
# second scheduler by its Helm chart under this name.
SCHEDULER_PLUGINS = GangScheduler(
    pod_scheduler_name="scheduler-plugins-scheduler",
    pod_group_api_version="scheduling.x-k8s.io/v1alpha1",
    pod_label="scheduling.x-k8s.io/pod-group",
)

#: spec.scheduling.schedulerName values that get a PodGroup.
GANG_SCHEDULERS = {"volcano": VOLCANO, "scheduler-plugins": SCHEDULER_PLUGINS}


def gang_scheduler(job: DistributedSGDJob) -> GangScheduler | None:
    return GANG_SCHEDULERS.get(job.spec.scheduling.scheduler_name or "")


def pod_scheduler_name(job: DistributedSGDJob) -> str | None:
    """The pods' schedulerName: the gang scheduler's own name, or the spec's as given."""
    gang = gang_scheduler(job)
    return gang.pod_scheduler_name if gang else job.spec.scheduling.scheduler_name


def gang_pod_labels(job: DistributedSGDJob) -> dict[str, str]:
    gang = gang_scheduler(job)
    return {gang.pod_label: pod_group_name(job.name)} if gang and gang.pod_label else {}


def gang_pod_annotations(job: DistributedSGDJob) -> dict[str, str]:
    gang = gang_scheduler(job)
    return {gang.pod_annotation: pod_group_name(job.name)} if gang and gang.pod_annotation else {}


def build_pod_group(
    job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS
) -> dict | None:
    """The PodGroup `<job>` (minMember = every member: nodes + parameter servers), or None
    without a gang scheduler.

    minResources is the whole gang's request, so that Volcano enqueues the job
    only when all of it fits.
    """
    gang = gang_scheduler(job)
    if gang is None:
        return None
    scheduling = job.spec.scheduling
    topology = job.spec.topology
    spec: dict = {"minMember": topology.gang_members}
    optional = {"queue": scheduling.queue, "priorityClassName": scheduling.priority_class_name}
    spec.update({key: optional[key] for key in gang.spec_fields if optional[key]})
    totals: dict[str, Decimal] = {}
    for count, requests in (
        (topology.nodes, pod_requests(job, settings)),
        (topology.parameter_servers, pod_requests(job, settings, server=True)),
    ):
        for name, amount in requests.items():
            totals[name] = totals.get(name, Decimal(0)) + amount * count
    if totals:
        spec["minResources"] = {name: format_quantity(amount) for name, amount in totals.items()}
    return {
        "apiVersion": gang.pod_group_api_version,
        "kind": "PodGroup",
        "metadata": object_meta(job, pod_group_name(job.name)),
        "spec": spec,
    }
