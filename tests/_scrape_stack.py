"""The scrape test's stack: a local training run, simulated exporters and a real Prometheus.

The trainer pod of the pod contract runs as local processes (the same plan as
`dsgd run`: real torchrun, gloo, 2 ranks in one "pod", synthetic data). The
scrape config is what the chart's PodMonitor becomes: its relabelings, run by
Prometheus on the Kubernetes meta labels such a pod has. The healthy run is a trial
of an SGDExperiment (its job carries the trial labels, which the pod builder copies
onto the pod). A simulator process serves the operator's real registry with activity,
a diverged trainer rank (in another `cluster`, outside any experiment), two
dcgm-exporters (tests._dcgm) whose GPUs the trainer pods hold, and the parameter
server of a downpour-sgd job (PS_JOB), scraped as its `<job>-ps-0` pod. Prometheus also loads
the rendered PrometheusRule's groups as its rule file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsgd_contract.experiment import CELL_LABEL, EXPERIMENT_LABEL, SEED_LABEL, TRIAL_LABELS

from tests._dashboards import Query, panel_queries, to_promql
from tests._helm_chart import (
    ALL_MONITORS,
    REPO,
    dashboards,
    objects_of_kind,
    prometheus_rule_groups,
)
from tests._metrics_simulator import DCGM_NODES
from tests._polling import wait_until
from tests._prometheus import PrometheusQueryError, PrometheusServer, relabel_configs
from tests.conftest import pick_free_port

NAMESPACE = "dsgd-test"
JOB = "scrape-test"
SICK_JOB = "diverged"
#: The healthy run is trial (cell c1, seed 7) of this SGDExperiment.
EXPERIMENT, CELL, SEED = "lr-study", "c1", "7"
#: The downpour-sgd job whose parameter server (pod PS_JOB-ps-0) the simulator serves.
PS_JOB = "downpour-scrape"
#: The sick job's target carries this `cluster` label (as from a multi-cluster setup); the
#: healthy run's has none.
SICK_CLUSTER = "east"
JOB_MANIFEST = {
    "apiVersion": "dsgd.io/v1alpha1",
    "kind": "DistributedSGDJob",
    "metadata": {
        "name": JOB,
        "namespace": NAMESPACE,
        "labels": {EXPERIMENT_LABEL: EXPERIMENT, CELL_LABEL: CELL, SEED_LABEL: SEED},
    },
    "spec": {
        "topology": {"nodes": 1, "processesPerNode": 2},
        "algorithm": {"name": "local-sgd", "localSteps": 2},
        "optimizer": {"learningRate": 0.05, "baseBatchSize": 32, "warmupEpochs": 0},
        "training": {
            "model": "mlp",
            "dataset": {"name": "synthetic", "trainSamples": 256, "testSamples": 64},
            "batchSizePerProcess": 16,
            # Far more than the test needs: it stops the run once Prometheus has its data.
            "epochs": 10000,
            "checkpointEvery": 0,
        },
    },
}
#: Every training query must have data within this many seconds of the run's start.
DATA_TIMEOUT = 90
#: Also the scrape timeout: generous, as a busy 2-core machine may answer slowly, and one
#: failed scrape marks the target's series stale (instant queries find nothing for a moment).
SCRAPE_INTERVAL = "2s"
#: How long a query that should have data may be retried (a stale moment, see above).
RETRY_SECONDS = 15


@dataclass
class Stack:
    prometheus: PrometheusServer
    trainer_url: str
    operator_url: str
    rule_groups: list[dict[str, Any]]
    #: The trainer pod the builder made (its labels: what Kubernetes discovery would see).
    pod: dict[str, Any]


def _pod_meta_labels(pod: dict[str, Any]) -> dict[str, str]:
    """The labels Prometheus' Kubernetes discovery (and the Prometheus Operator) give a pod."""
    labels = {
        "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in key): value
        for key, value in pod["metadata"]["labels"].items()
    }
    labels.update(namespace=NAMESPACE, pod=pod["metadata"]["name"], container="trainer")
    return labels


def parameter_server_pod() -> dict[str, Any]:
    """Pod `PS_JOB-ps-0` of a 1-server downpour-sgd job, as the builder makes it."""
    from dsgd_contract.pod import PARAMETER_SERVER, ROLE_LABEL
    from dsgd_operator.api import DistributedSGDJob
    from dsgd_operator.builders import BuildSettings, build_pods

    spec = JOB_MANIFEST["spec"]
    manifest = {
        **JOB_MANIFEST,
        "metadata": {"name": PS_JOB, "namespace": NAMESPACE},
        "spec": {
            **spec,
            "topology": {"nodes": 1, "parameterServers": 1},
            "algorithm": {"name": "downpour-sgd"},
            "optimizer": {**spec["optimizer"], "momentum": 0, "nesterov": False},
        },
    }
    pods = build_pods(DistributedSGDJob.model_validate(manifest), BuildSettings())
    (server,) = (p for p in pods if p["metadata"]["labels"][ROLE_LABEL] == PARAMETER_SERVER)
    return server


def trainer_pod() -> dict[str, Any]:
    from dsgd_operator.api import DistributedSGDJob
    from dsgd_operator.builders import BuildSettings, build_pods

    (pod,) = build_pods(DistributedSGDJob.model_validate(JOB_MANIFEST), BuildSettings())
    return pod


def _dcgm_scrape_configs(ports: list[int]) -> list[dict]:
    """dcgm-exporter as the two usual ServiceMonitors scrape it: with honorLabels (the
    workload's namespace/pod kept) and without (renamed exported_namespace/exported_pod,
    the exporter pod's own namespace/pod as target labels), the latter in SICK_CLUSTER."""
    honored, renamed = ports
    return [
        {
            "job_name": "dcgm-exporter-honor-labels",
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{honored}"]}],
        },
        {
            "job_name": "dcgm-exporter",
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{renamed}"],
                    "labels": {
                        "namespace": "gpu-operator",
                        "pod": "nvidia-dcgm-exporter-b",
                        "cluster": SICK_CLUSTER,
                    },
                }
            ],
        },
    ]


def _scrape_configs(
    trainer_port: int, sick_port: int, operator_port: int, dcgm_ports: list[int], ps_port: int
) -> list[dict]:
    pod = trainer_pod()
    labels = {k: v for k, v in pod["metadata"]["labels"].items() if k not in TRIAL_LABELS}
    sick_pod = {
        "metadata": {
            "name": f"{SICK_JOB}-node-0",
            "labels": {**labels, "dsgd.io/job-name": SICK_JOB},
        }
    }
    (pod_monitor,) = objects_of_kind(
        "PodMonitor", {"monitoring": {"podMonitor": {"enabled": True}}}
    )
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    (service_monitor,) = objects_of_kind(
        "ServiceMonitor", {"monitoring": {"serviceMonitor": {"enabled": True}}}
    )
    (service_endpoint,) = service_monitor["spec"]["endpoints"]
    return [
        {
            "job_name": "podMonitor/dsgd-system/dsgd-trainers/0",
            "metrics_path": endpoint["path"],
            "static_configs": [
                {"targets": [f"127.0.0.1:{trainer_port}"], "labels": _pod_meta_labels(pod)},
                {
                    "targets": [f"127.0.0.1:{sick_port}"],
                    "labels": {**_pod_meta_labels(sick_pod), "cluster": SICK_CLUSTER},
                },
                {
                    "targets": [f"127.0.0.1:{ps_port}"],
                    "labels": _pod_meta_labels(parameter_server_pod()),
                },
            ],
            "relabel_configs": relabel_configs(endpoint["relabelings"]),
        },
        {
            "job_name": "dsgd",
            # As the chart's ServiceMonitor: per-job series keep the job's namespace.
            "honor_labels": service_endpoint["honorLabels"],
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{operator_port}"],
                    "labels": {"namespace": "dsgd-system", "service": "dsgd", "pod": "dsgd-0"},
                }
            ],
        },
        *_dcgm_scrape_configs(dcgm_ports),
    ]


def _start_trainer(workdir: Path, metrics_port: int) -> list[subprocess.Popen[bytes]]:
    from dsgd_operator.api import DistributedSGDJob
    from dsgd_operator.local_run import plan_local_processes, prepare_run_directory

    job = DistributedSGDJob.model_validate(JOB_MANIFEST)
    out_dir = workdir / "run"
    config_path = prepare_run_directory(job, out_dir)
    planned = plan_local_processes(
        job, out_dir, config_path, workdir / "multiproc", pick_free_port(), [metrics_port]
    )
    processes = []
    for proc in planned:
        Path(proc.env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        log = (workdir / f"node-{proc.node_rank}.log").open("wb")
        processes.append(
            subprocess.Popen(
                proc.argv,
                env=proc.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # torchrun and its workers: one group to kill
            )
        )
    return processes


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL what is left after 10 s, and reap the leader."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
            break
    # The group may outlive its leader (workers of torchrun): make sure it is gone.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """Trainer, simulator and Prometheus up, with training data (or DATA_TIMEOUT passed)."""
    trainer_port, sick_port, operator_port, ps_port = (pick_free_port() for _ in range(4))
    dcgm_ports = [pick_free_port() for _ in DCGM_NODES]
    rule_groups = prometheus_rule_groups(ALL_MONITORS)
    processes: list[subprocess.Popen[bytes]] = []
    prometheus = None
    try:
        processes += _start_trainer(workdir, trainer_port)
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests._metrics_simulator",
                    f"--operator-port={operator_port}",
                    f"--sick-trainer-port={sick_port}",
                    f"--dcgm-ports={','.join(map(str, dcgm_ports))}",
                    f"--parameter-server-port={ps_port}",
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(workdir / "simulator.log").open("wb"),
                start_new_session=True,
            )
        )
        prometheus = PrometheusServer(
            workdir / "prometheus",
            pick_free_port(),
            _scrape_configs(trainer_port, sick_port, operator_port, dcgm_ports, ps_port),
            rule_groups,
            scrape_interval=SCRAPE_INTERVAL,
        )
        stack = Stack(
            prometheus,
            f"http://127.0.0.1:{trainer_port}/metrics",
            f"http://127.0.0.1:{operator_port}/metrics",
            rule_groups,
            trainer_pod(),
        )
        _wait_for_training_data(stack, processes, workdir)
        yield stack
    finally:
        if prometheus is not None:
            prometheus.stop()
        for process in processes:
            stop_group(process)


def training_variables(**chosen: str) -> dict[str, str]:
    """The training dashboard's variables: the healthy run's namespace and job, all else
    "All", unless `chosen`."""
    every = {"cluster": ".*", "experiment": ".*", "rank": ".*"}
    run = {"datasource": "prometheus", "namespace": NAMESPACE, "dsgd_job": JOB}
    return {**every, **run, **chosen}


def _wait_for_training_data(
    stack: Stack, processes: list[subprocess.Popen[bytes]], workdir: Path
) -> None:
    """Wait until every training panel has data, or DATA_TIMEOUT passed.

    It does not fail on a timeout or a refused query: the tests below then name
    the panels without data or the query Prometheus refused. It fails at once
    when a process of the stack died.
    """
    queries = [to_promql(q.expr, training_variables()) for q in training_panel_queries()]

    def has_data(query: str) -> bool:
        try:
            return bool(stack.prometheus.query(query))
        except PrometheusQueryError:
            return True  # test_every_dashboard_query_and_alert_is_accepted reports it

    def all_have_data() -> bool:
        for process in processes:
            if process.poll() is not None:
                logs = "\n".join(p.read_text()[-3000:] for p in workdir.glob("*.log"))
                raise RuntimeError(f"a process exited with {process.returncode}:\n{logs}")
        return all(has_data(query) for query in queries)

    with contextlib.suppress(AssertionError):  # timed out: the checks below say which
        wait_until(all_have_data, DATA_TIMEOUT, "data for every training panel", poll=1.0)


def training_panel_queries() -> list[Query]:
    return panel_queries(dashboards()["training"])


def series_labels(result: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [sample["metric"] for sample in result]


def eventually(stack: Stack, expr: str) -> list[dict[str, Any]]:
    """The query's result once it has data, or [] after RETRY_SECONDS."""
    try:
        return wait_until(lambda: stack.prometheus.query(expr), RETRY_SECONDS, expr, poll=0.5)
    except AssertionError:  # timed out
        return []
