"""A Downpour SGD job through the operator on the real control plane.

The operator (`dsgd operator`, tests/_operator_process.py) renders 2 worker pods and
the parameter-server pod `<job>-ps-0`; the scheduler binds them and the node agent
runs each as a real process (torchrun and the trainer; `python -m
dsgd_trainer.parameter_server`), wired through the gang's rendezvous and RPC store
ports. Oracles: the API server's objects, the processes' own files on the node
agent's disk (the workers' summary.json, the server's parameter-server-0.json),
and the server's count of the pushes it applied against the workers' count of
those they sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dsgd_contract.pod import PARAMETER_SERVER, ROLE_LABEL, WORKER

from tests._operator_process import operator as operator
from tests._sgdjobs import Jobs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WORKERS = 2
BATCH = 32
#: 4 steps per epoch per worker: seconds of training, a push every step.
TRAIN_SAMPLES = WORKERS * BATCH * 4


def downpour_spec() -> dict[str, Any]:
    """1 parameter server × 2 one-rank worker nodes, an mlp on synthetic data, 2 epochs."""
    return {
        "topology": {"nodes": WORKERS, "parameterServers": 1},
        "algorithm": {
            "name": "downpour-sgd",
            "fetchSteps": 2,
            "pushSteps": 1,
            "serverOptimizer": "adagrad",
        },
        "optimizer": {
            "learningRate": 0.02,
            "scaling": "none",
            "momentum": 0,
            "nesterov": False,
            "weightDecay": 0,
            "warmupEpochs": 0,
            "milestones": [],
        },
        "training": {
            "model": "mlp",
            "dataset": {"name": "synthetic", "trainSamples": TRAIN_SAMPLES, "testSamples": 64},
            "batchSizePerProcess": BATCH,
            "epochs": 2,
            "checkpointEvery": 0,
        },
        "runPolicy": {"backoffLimit": 0},
    }


def _pod_file(cluster: Any, namespace: str, pod: str, name: str) -> dict[str, Any]:
    """A JSON file the pod's process wrote, from its directory on the node agent's disk."""
    (path,) = (cluster.root / "pods" / namespace).glob(f"{pod}-*/**/{name}")
    return json.loads(Path(path).read_text())


def test_downpour_job_runs_its_parameter_server_pod_to_success_with_results(
    cluster, kube_api, namespace, operator
):
    jobs = Jobs(kube_api, namespace)
    jobs.create("dp", downpour_spec())
    status = jobs.wait_phase("dp", "Succeeded", 180)
    assert status["restarts"] == 0

    # Every gang member, the parameter server included, ran on the node agent and exited 0.
    pods = {pod.metadata.name: pod for pod in jobs.pods("dp")}
    assert set(pods) == {"dp-node-0", "dp-node-1", "dp-ps-0"}
    assert pods["dp-ps-0"].metadata.labels[ROLE_LABEL] == PARAMETER_SERVER
    assert pods["dp-node-1"].metadata.labels[ROLE_LABEL] == WORKER
    for name, pod in pods.items():
        assert pod.status.phase == "Succeeded", name
        (container,) = pod.status.container_statuses
        terminated = container.state.terminated
        assert terminated.exit_code == 0, name
        assert terminated.container_id.startswith("dsgd://"), "a process of the node agent"

    # status.results (rank 0's termination message) against the trainer's summary.json.
    results = status["results"]
    summary = _pod_file(cluster, namespace, "dp-node-0", "summary.json")
    assert summary["algorithm"] == "downpour-sgd"
    assert results["finalTestAccuracy"] == pytest.approx(summary["final_test_accuracy"])
    assert results["steps"] == summary["steps"] and results["samples"] == summary["samples"]
    by_scope = results["communicatedBytesByScope"]
    assert by_scope == summary["communicated_bytes_by_scope"]
    assert by_scope["push"] > 0 and by_scope["fetch"] > 0 and by_scope["global"] == 0
    assert sum(by_scope.values()) == results["communicatedBytes"]

    # The server's own account: every push of both workers applied once, each the whole
    # model's float32 gradient (one server holds every number).
    server = _pod_file(cluster, namespace, "dp-ps-0", "parameter-server-0.json")
    rounds = results["syncRounds"]
    assert rounds["push"] == summary["steps"]  # pushSteps 1
    assert server["version"] == server["applied_by_this_process"] == WORKERS * rounds["push"]
    assert by_scope["push"] == rounds["push"] * 4 * server["numel"]
    assert server["fetches"] >= WORKERS * rounds["fetch"]
