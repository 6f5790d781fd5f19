"""Names of a job's objects, and the DNS name of its rendezvous host."""

from __future__ import annotations


def service_name(job_name: str) -> str:
    """The headless Service that gives the pods their DNS names."""
    return job_name


def config_map_name(job_name: str) -> str:
    return f"{job_name}-config"


def pod_name(job_name: str, node_rank: int) -> str:
    """Also the pod's hostname: `<job>-node-<i>`."""
    return f"{job_name}-node-{node_rank}"


def pod_group_name(job_name: str) -> str:
    return job_name


def master_address(job_name: str) -> str:
    """Node 0's DNS name within the namespace (hostname.subdomain): torchrun's store host."""
    return f"{pod_name(job_name, 0)}.{service_name(job_name)}"
