"""SGDExperiments end to end on the real control plane: API server, scheduler, garbage
collector and the node agent running every trial's pods as real trainer processes.

The operator runs as `dsgd operator` (tests/_operator_process.py). Oracles: a watch
of the trial jobs kept by the test (never more than `parallelism` unfinished), the
children's own statuses (the experiment's results recomputed here with numpy), the
trainers' summary.json files on the node agent's disk, kubectl's printer columns,
Events, and the garbage collector.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dsgd_contract.experiment import CELL_LABEL, EXPERIMENT_LABEL, SEED_LABEL
from dsgd_operator import api
from kubernetes import client, watch

from tests._operator_process import operator as operator
from tests._polling import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXPERIMENTS = "sgdexperiments"
TERMINAL = ("Succeeded", "Failed")


def experiment(name: str, **spec: Any) -> dict[str, Any]:
    """2 learning rates × 2 seeds of a one-node, one-process digits MLP: 4 tiny trials."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": "SGDExperiment",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "topology": {"nodes": 1},
                "algorithm": {"name": "mini-batch-sgd"},
                "optimizer": {"warmupEpochs": 0},
                "training": {
                    "model": "mlp",
                    "dataset": {"name": "digits"},
                    "batchSizePerProcess": 64,
                    "epochs": 2,
                },
                "runPolicy": {"backoffLimit": 0},
            },
            "axes": [{"field": "optimizer.learningRate", "values": [0.05, 0.2]}],
            "seeds": [0, 1],
            "parallelism": 2,
            "targetAccuracy": 0.5,
            **spec,
        },
    }


class TrialWatch:
    """The experiment's trial jobs as a watch sees them, and the most ever unfinished."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace, self.selector = namespace, f"{EXPERIMENT_LABEL}={name}"
        self.phases: dict[str, str | None] = {}
        self.most_unfinished = 0
        self._stop = threading.Event()
        listing = self.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, label_selector=self.selector
        )
        assert not listing["items"]
        self._version = listing["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                api.GROUP, api.VERSION, self.namespace, api.PLURAL,
                label_selector=self.selector, resource_version=self._version, timeout_seconds=5,
            )  # fmt: skip
            for event in stream:
                job = event["object"]
                self._version = job["metadata"]["resourceVersion"]
                name = job["metadata"]["name"]
                if event["type"] == "DELETED":
                    self.phases.pop(name, None)
                else:
                    self.phases[name] = (job.get("status") or {}).get("phase")
                unfinished = sum(p not in TERMINAL for p in self.phases.values())
                self.most_unfinished = max(self.most_unfinished, unfinished)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Experiments:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, EXPERIMENTS, body
        )

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, EXPERIMENTS, name, patch
        )

    def status(self, name: str) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, EXPERIMENTS, name
        )
        return body.get("status") or {}

    def trials(self, name: str) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL,
            label_selector=f"{EXPERIMENT_LABEL}={name}",
        )["items"]  # fmt: skip

    def pods(self, name: str) -> list[client.V1Pod]:
        selector = f"{EXPERIMENT_LABEL}={name}"
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def events(self, name: str) -> list[client.CoreV1Event]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [e for e in events if e.involved_object.kind == "SGDExperiment"]


def _summary_on_disk(cluster: Any, namespace: str, job: str) -> dict[str, Any]:
    """summary.json as the trial's trainer wrote it into its pod's directory."""
    (path,) = (cluster.root / "pods" / namespace).glob(f"{job}-node-0-*/**/summary.json")
    return json.loads(path.read_text())


def test_experiment_runs_two_trials_at_a_time_to_results_and_goes_with_its_trials(
    cluster, kube_api, kubectl, namespace, operator, tmp_path: Path
):
    experiments = Experiments(kube_api, namespace)
    trials = TrialWatch(kube_api, namespace, "lr")
    try:
        created = experiments.create(experiment("lr", suspend=True))
        wait_until(lambda: experiments.status("lr").get("phase") == "Suspended", 60, "Suspended")
        assert not experiments.trials("lr") and not trials.phases, "suspended: nothing starts"
        experiments.patch("lr", {"spec": {"suspend": False}})
        kubectl(
            "wait", f"--namespace={namespace}", "--for=condition=Succeeded", "--timeout=420s",
            "sgdexperiment/lr", timeout=440,
        )  # fmt: skip
    finally:
        trials.close()
    assert trials.most_unfinished == 2, "parallelism 2: reached, never exceeded"
    status = experiments.status("lr")
    assert status["phase"] == "Succeeded"
    assert status["trials"] == {"total": 4, "running": 0, "succeeded": 4, "failed": 0}

    children = experiments.trials("lr")
    assert sorted(c["metadata"]["name"] for c in children) == [
        f"lr-c{c}-s{s}" for c in range(2) for s in range(2)
    ]
    uid = created["metadata"]["uid"]
    for child in children:
        meta = child["metadata"]
        (owner,) = meta["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("SGDExperiment", uid, True)
        cell, seed = meta["name"].split("-")[1:]
        assert meta["labels"][CELL_LABEL] == cell and meta["labels"][SEED_LABEL] == seed[1:]
        assert child["spec"]["training"]["seed"] == int(seed[1:])
        # The job's results (from the pod's termination message) are the trainer's summary.
        results = child["status"]["results"]
        summary = _summary_on_disk(cluster, namespace, meta["name"])
        assert results["finalTestAccuracy"] == pytest.approx(summary["final_test_accuracy"])
        assert results["finalTrainAccuracy"] == pytest.approx(summary["final_train_accuracy"])
        assert results["samples"] == summary["samples"] and results["curve"]
    # The trial labels reach the pods (dashboards select trainer series by them).
    pods = experiments.pods("lr")
    assert len(pods) == 4, "one pod per trial, kept after success (cleanPodPolicy Running)"
    for pod in pods:
        job = pod.metadata.labels[f"{api.GROUP}/job-name"]
        child = next(c for c in children if c["metadata"]["name"] == job)
        for label in (EXPERIMENT_LABEL, CELL_LABEL, SEED_LABEL):
            assert pod.metadata.labels[label] == child["metadata"]["labels"][label]

    # status.results, recomputed from the children's own statuses.
    by_cell = {cell["cell"]: cell for cell in status["results"]}
    for cell_id in ("c0", "c1"):
        mine = [
            c["status"]["results"]
            for c in children
            if c["metadata"]["labels"][CELL_LABEL] == cell_id
        ]
        gaps = [r["finalTrainAccuracy"] - r["finalTestAccuracy"] for r in mine]
        for key in (
            "finalTestAccuracy",
            "finalTrainAccuracy",
            "generalizationGap",
            "wallSeconds",
            "communicatedBytes",
            "samples",
        ):
            raw = gaps if key == "generalizationGap" else [r[key] for r in mine]
            values = np.array(raw, dtype=float)
            figure = by_cell[cell_id][key]
            assert figure["seeds"] == 2, (cell_id, key, by_cell[cell_id])
            assert figure["mean"] == pytest.approx(values.mean())
            assert figure["std"] == pytest.approx(values.std(ddof=1), abs=1e-9)
        curves = [r["curve"] for r in mine]
        reached = [
            p for c in curves if (p := next((x for x in c if x["testAccuracy"] >= 0.5), None))
        ]
        assert by_cell[cell_id]["timeToTarget"]["seeds"] == len(reached)
        if reached:
            assert by_cell[cell_id]["timeToTarget"]["mean"] == pytest.approx(
                np.mean([p["wallSeconds"] for p in reached])
            )
    best = max(status["results"], key=lambda c: c["finalTestAccuracy"]["mean"])
    assert status["best"]["cell"] == best["cell"]

    # kubectl's printer columns show the real values.
    row = kubectl("get", f"--namespace={namespace}", "sgdexp", "lr", "--no-headers").stdout.split()
    assert row[1:3] == ["4", "4"] and row[4] == "Succeeded", row
    assert float(row[3]) == pytest.approx(status["best"]["testAccuracy"]), row
    reasons = [e.reason for e in experiments.events("lr")]
    assert "TrialsCreated" in reasons and "Succeeded" in reasons, reasons

    # `dsgd report sgdexperiment/lr`: the same numbers, from the cluster.
    out = tmp_path / "report"
    subprocess.run(
        ["dsgd", "report", "sgdexperiment/lr", "-n", namespace, "--out", str(out)],
        check=True, capture_output=True, timeout=120,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )  # fmt: skip
    report = (out / "report.md").read_text()
    for cell in status["results"]:
        accuracy = cell["finalTestAccuracy"]
        shown = f"{100 * accuracy['mean']:,.2f} ± {100 * accuracy['std']:,.2f}%"
        assert shown in report, (shown, report)

    # Deleting the experiment deletes its trials and their pods (the garbage collector).
    kubectl("delete", f"--namespace={namespace}", "sgdexperiment/lr", "--timeout=60s")
    wait_until(
        lambda: not experiments.trials("lr") and not experiments.pods("lr"),
        120,
        "the garbage collector to delete the trials and their pods",
    )


def test_an_invalid_trial_refuses_the_experiment_with_a_condition_and_an_event(
    kube_api, namespace, operator
):
    experiments = Experiments(kube_api, namespace)
    bad = experiment("bad", axes=[{"field": "topology.nodes", "values": [1, 0]}])
    experiments.create(bad)  # the API server cannot see inside axis values; the models can

    def invalid() -> dict[str, Any] | None:
        conditions = experiments.status("bad").get("conditions") or []
        return next((c for c in conditions if c["type"] == "Invalid"), None)

    condition = wait_until(invalid, 60, "condition Invalid")
    assert condition["status"] == "True" and condition["reason"] == "InvalidSpec"
    # The trial (cell and axis values) and the field.
    assert condition["message"] == (
        "spec.axes: cell c1 (topology.nodes=0), seed(s) 0, 1: "
        "topology.nodes: Input should be greater than or equal to 1"
    ), condition
    events = wait_until(
        lambda: [e for e in experiments.events("bad") if e.reason == "InvalidSpec"], 30, "an Event"
    )
    assert events[0].type == "Warning" and "cell c1" in events[0].message
    assert not experiments.trials("bad"), "a refused experiment starts no trial"
