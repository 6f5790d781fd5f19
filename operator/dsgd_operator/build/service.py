"""The headless Service that gives every pod the DNS name `<job>-node-<i>.<job>`."""

from __future__ import annotations

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.build.labels import job_labels
from dsgd_operator.build.metadata import object_meta
from dsgd_operator.build.names import service_name
from dsgd_operator.build.settings import DEFAULT_SETTINGS, BuildSettings

RENDEZVOUS_PORT_NAME = "rendezvous"
METRICS_PORT_NAME = "metrics"


def build_service(job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS) -> dict:
    """The job's headless Service.

    publishNotReadyAddresses: node 0 must resolve while the gang is still
    starting, before any pod is Ready, or torchrun's rendezvous never begins.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(job, service_name(job.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": job_labels(job.name),
            "ports": [
                {
                    "name": RENDEZVOUS_PORT_NAME,
                    "port": settings.master_port,
                    "targetPort": settings.master_port,
                    "protocol": "TCP",
                },
                {
                    "name": METRICS_PORT_NAME,
                    "port": settings.metrics_port,
                    "targetPort": settings.metrics_port,
                    "protocol": "TCP",
                },
            ],
        },
    }
