"""The headless Service that gives every pod the DNS name `<job>-node-<i>.<job>`."""

from __future__ import annotations

from dsgd_contract.pod import (
    METRICS_PORT,
    METRICS_PORT_NAME,
    RENDEZVOUS_PORT,
    RENDEZVOUS_PORT_NAME,
    job_labels,
    service_name,
)

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.metadata import object_meta


def _port(name: str, number: int) -> dict:
    return {"name": name, "port": number, "targetPort": number, "protocol": "TCP"}


def build_service(job: DistributedSGDJob) -> dict:
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
                _port(RENDEZVOUS_PORT_NAME, RENDEZVOUS_PORT),
                _port(METRICS_PORT_NAME, METRICS_PORT),
            ],
        },
    }
