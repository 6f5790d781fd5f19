"""A Downpour job's objects (pure builders) and its gang policy (pure planner).

The parameter servers are gang members nodes … nodes + S − 1: rendered as
`<job>-ps-<i>` pods beside the nodes, counted by the PodGroup and the
PodDisruptionBudget, and a failure of any member restarts the whole gang.
"""

from __future__ import annotations

from datetime import timedelta

import kubernetes_validate
import pytest
from dsgd_contract.pod import PARAMETER_SERVER, PS_ADDR_ENV, PS_INDEX_ENV, PS_PORT_ENV
from dsgd_operator import api
from dsgd_operator.builders import (
    build_children,
    build_pod_disruption_budget,
    build_pod_group,
    build_pods,
)
from dsgd_operator.local_run import plan_local_processes
from dsgd_operator.manifest import ManifestError, parse_job
from dsgd_operator.reconcile.plan import Snapshot
from dsgd_operator.reconcile.policy import plan
from dsgd_operator.reconcile.status import PodState

from tests._build_jobs import K8S_VERSION
from tests.test_operator_policy import OPTIONS, T0, new_status


def downpour_job(**template) -> api.DistributedSGDJob:
    return parse_job(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "dp", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {
                "topology": {"nodes": 2, "processesPerNode": 2, "parameterServers": 3},
                "algorithm": {"name": "downpour-sgd", "fetchSteps": 2, "pushSteps": 2},
                "optimizer": {"momentum": 0, "nesterov": False},
                "training": {"model": "mlp", "dataset": {"name": "digits"}},
                "scheduling": {"schedulerName": "volcano"},
                "template": template,
            },
        }
    )


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


def test_servers_are_rendered_after_the_nodes_as_valid_cpu_pods() -> None:
    job = downpour_job(
        parameterServerResources={"requests": {"cpu": "3"}, "limits": {"memory": "1Gi"}},
        resources={"requests": {"cpu": "4"}},
    )
    pods = build_pods(job, attempt=2)
    assert [p["metadata"]["name"] for p in pods] == [
        "dp-node-0",
        "dp-node-1",
        "dp-ps-0",
        "dp-ps-1",
        "dp-ps-2",
    ]
    for member, pod in enumerate(pods):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        labels = pod["metadata"]["labels"]
        assert labels["dsgd.io/node-rank"] == str(member)
        assert labels["dsgd.io/attempt"] == "2"
        assert pod["spec"]["subdomain"] == "dp"
        assert pod["spec"]["hostname"] == pod["metadata"]["name"]
        # Same secure defaults as every trainer pod.
        assert pod["spec"]["securityContext"] == pods[0]["spec"]["securityContext"]
        assert (
            pod["spec"]["containers"][0]["securityContext"]
            == (pods[0]["spec"]["containers"][0]["securityContext"])
        )
        # Every member finds the RPC store on server 0.
        assert env_of(pod)[PS_ADDR_ENV] == "dp-ps-0.dp"
        assert env_of(pod)[PS_PORT_ENV] == "29600"
    for index, server in enumerate(pods[2:]):
        assert server["metadata"]["labels"]["dsgd.io/role"] == PARAMETER_SERVER
        container = server["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", "dsgd_trainer.parameter_server"]
        assert env_of(server)[PS_INDEX_ENV] == str(index)
        assert container["resources"]["requests"]["cpu"] == "3"
        assert container["resources"]["limits"]["memory"] == "1Gi"
        # The checkpoint volume is mounted where the workers have it: shards live there too.
        assert container["volumeMounts"] == pods[0]["spec"]["containers"][0]["volumeMounts"]
    assert pods[0]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "4"


def test_gpu_jobs_keep_their_servers_on_cpu() -> None:
    job = parse_job(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "dp", "namespace": "ml"},
            "spec": {
                "topology": {"nodes": 1, "gpu": True, "parameterServers": 1},
                "algorithm": {"name": "downpour-sgd"},
                "optimizer": {"momentum": 0, "nesterov": False},
            },
        }
    )
    node, server = build_pods(job)
    assert "nvidia.com/gpu" in node["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in str(server["spec"])
    with pytest.raises(ManifestError, match=r"parameterServerResources\.limits\.nvidia\.com/gpu"):
        parse_job(
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "metadata": {"name": "dp"},
                "spec": {
                    "topology": {"nodes": 1, "gpu": True, "parameterServers": 1},
                    "algorithm": {"name": "downpour-sgd"},
                    "optimizer": {"momentum": 0, "nesterov": False},
                    "template": {"parameterServerResources": {"limits": {"nvidia.com/gpu": 1}}},
                },
            }
        )


def test_gang_objects_count_every_member() -> None:
    job = downpour_job(
        parameterServerResources={"requests": {"cpu": "1"}},
        resources={"requests": {"cpu": "4"}},
    )
    group = build_pod_group(job)
    assert group["spec"]["minMember"] == 5
    assert group["spec"]["minResources"]["cpu"] == "11"  # 2 nodes × 4 + 3 servers × 1
    assert build_pod_disruption_budget(job)["spec"]["minAvailable"] == 5
    assert len([c for c in build_children(job) if c["kind"] == "Pod"]) == 5


def member(rank: int, phase: str, attempt: int = 0, **fields) -> PodState:
    name = f"dp-node-{rank}" if rank < 2 else f"dp-ps-{rank - 2}"
    return PodState(name=name, rank=rank, attempt=attempt, phase=phase, **fields)


def step(status, pods=(), now=T0):
    return plan(
        Snapshot(
            job=downpour_job(), problems=(), status=status, pods=tuple(pods), now=now, generation=1
        ),
        OPTIONS,
    )


def test_the_gang_is_every_member_and_a_server_failure_restarts_all_of_it() -> None:
    created = step(new_status())
    assert created.create_ranks == (0, 1, 2, 3, 4)
    running = step(created.status, [member(r, "Running") for r in range(5)]).status
    assert running.phase == "Running"
    # Servers and nodes alike: one failed member restarts the whole gang.
    failed = step(running, [*(member(r, "Running") for r in range(4)), member(4, "Failed")])
    assert failed.status.phase == "Restarting" and failed.status.restarts == 1
    assert set(failed.delete_pods) == {"dp-node-0", "dp-node-1", "dp-ps-0", "dp-ps-1", "dp-ps-2"}
    recreated = step(failed.status, [], now=T0 + timedelta(seconds=10))
    assert recreated.create_ranks == (0, 1, 2, 3, 4)
    # A missing server is a failure too.
    gone = step(running, [member(r, "Running") for r in range(4)])
    assert gone.status.phase == "Restarting"
    restarting = next(c for c in gone.status.conditions if c.type == "Restarting")
    assert "dp-ps-2" in restarting.message
    # Success only when the servers have finished too.
    workers_done = [member(r, "Succeeded") for r in range(2)]
    assert (
        step(running, [*workers_done, *(member(r, "Running") for r in (2, 3, 4))]).status.phase
        == "Running"
    )
    done = step(running, [member(r, "Succeeded") for r in range(5)])
    assert done.status.phase == "Succeeded"


def test_dsgd_run_plans_the_servers_as_local_processes(tmp_path) -> None:
    job = downpour_job()
    processes = plan_local_processes(
        job,
        tmp_path,
        tmp_path / "config.json",
        tmp_path / "metrics",
        master_port=1234,
        metrics_ports=[9001, 9002, 9003, 9004, 9005],
        parameter_server_port=4321,
    )
    assert [p.node_rank for p in processes] == [0, 1, 2, 3, 4]
    for process in processes:
        assert process.env[PS_ADDR_ENV] == "127.0.0.1"
        assert process.env[PS_PORT_ENV] == "4321"
    assert processes[3].argv[1:] == ["-m", "dsgd_trainer.parameter_server"]
    assert processes[3].env[PS_INDEX_ENV] == "1"
    assert processes[4].metrics_port == 9005
