"""A real Prometheus scrapes a local 2-rank training run, and runs our dashboards and alerts.

The trainer pod of the pod contract runs as local processes (the same plan as
`dsgd run`: real torchrun, gloo, 2 ranks in one "pod", synthetic data). The
scrape config is what the chart's PodMonitor becomes: its relabelings, run by
Prometheus on the Kubernetes meta labels such a pod has. A simulator process
serves the operator's real registry with activity, and a diverged trainer rank.
Prometheus also loads the rendered PrometheusRule's groups as its rule file.
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

import pytest

from tests._dashboards import (
    Query,
    alert_queries,
    all_dashboard_queries,
    panel_queries,
    to_promql,
    variable_queries,
)
from tests._helm_chart import (
    ALL_MONITORS,
    REPO,
    dashboards,
    objects_of_kind,
    prometheus_rule_groups,
)
from tests._metrics_simulator import OPERATOR_JOB
from tests._polling import wait_until
from tests._prometheus import (
    PrometheusQueryError,
    PrometheusServer,
    promtool,
    relabel_configs,
)
from tests._promql import label_values_query
from tests.conftest import pick_free_port

pytestmark = pytest.mark.slow

NAMESPACE = "dsgd-test"
JOB = "scrape-test"
SICK_JOB = "diverged"
JOB_MANIFEST = {
    "apiVersion": "dsgd.io/v1alpha1",
    "kind": "DistributedSGDJob",
    "metadata": {"name": JOB, "namespace": NAMESPACE},
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


def _pod_meta_labels(pod: dict[str, Any]) -> dict[str, str]:
    """The labels Prometheus' Kubernetes discovery (and the Prometheus Operator) give a pod."""
    labels = {
        "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in key): value
        for key, value in pod["metadata"]["labels"].items()
    }
    labels.update(namespace=NAMESPACE, pod=pod["metadata"]["name"], container="trainer")
    return labels


def _scrape_configs(trainer_port: int, sick_port: int, operator_port: int) -> list[dict]:
    from dsgd_operator.api import DistributedSGDJob
    from dsgd_operator.builders import BuildSettings, build_pods

    (pod,) = build_pods(DistributedSGDJob.model_validate(JOB_MANIFEST), BuildSettings())
    sick_pod = {
        "metadata": {
            "name": f"{SICK_JOB}-node-0",
            "labels": {**pod["metadata"]["labels"], "dsgd.io/job-name": SICK_JOB},
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
                {"targets": [f"127.0.0.1:{sick_port}"], "labels": _pod_meta_labels(sick_pod)},
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


def _stop_group(process: subprocess.Popen[bytes]) -> None:
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


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus-scrape")
    trainer_port, sick_port, operator_port = (pick_free_port() for _ in range(3))
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
            _scrape_configs(trainer_port, sick_port, operator_port),
            rule_groups,
            scrape_interval=SCRAPE_INTERVAL,
        )
        stack = Stack(
            prometheus,
            f"http://127.0.0.1:{trainer_port}/metrics",
            f"http://127.0.0.1:{operator_port}/metrics",
            rule_groups,
        )
        _wait_for_training_data(stack, processes, workdir)
        yield stack
    finally:
        if prometheus is not None:
            prometheus.stop()
        for process in processes:
            _stop_group(process)


def _training_variables() -> dict[str, str]:
    return {"datasource": "prometheus", "namespace": NAMESPACE, "job": JOB, "rank": ".*"}


def _wait_for_training_data(
    stack: Stack, processes: list[subprocess.Popen[bytes]], workdir: Path
) -> None:
    """Wait until every training panel has data, or DATA_TIMEOUT passed.

    It does not fail on a timeout or a refused query: the tests below then name
    the panels without data or the query Prometheus refused. It fails at once
    when a process of the stack died.
    """
    queries = [to_promql(q.expr, _training_variables()) for q in _training_panel_queries()]

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


def _training_panel_queries() -> list[Query]:
    return panel_queries(dashboards()["training"])


def _series_labels(result: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [sample["metric"] for sample in result]


def _eventually(stack: Stack, expr: str) -> list[dict[str, Any]]:
    """The query's result once it has data, or [] after RETRY_SECONDS."""
    try:
        return wait_until(lambda: stack.prometheus.query(expr), RETRY_SECONDS, expr, poll=0.5)
    except AssertionError:  # timed out
        return []


def test_prometheus_scrapes_every_target(stack: Stack) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = stack.prometheus.api("targets")["activeTargets"]
        return targets if {t["health"] for t in targets} == {"up"} else None

    targets = wait_until(all_up, RETRY_SECONDS, "every target to be up")
    assert len(targets) == 3
    trainer = next(t for t in targets if t["labels"].get("dsgd_job") == JOB)
    # The PodMonitor's relabelings turned the pod's labels into these.
    assert trainer["labels"]["node_rank"] == "0" and trainer["labels"]["attempt"] == "0"
    assert trainer["labels"]["namespace"] == NAMESPACE


def test_every_dashboard_query_and_alert_is_accepted(stack: Stack) -> None:
    refused = {}
    for query in [*all_dashboard_queries(), *alert_queries(ALL_MONITORS)]:
        expr = query.expr
        if expr.lstrip().startswith("label_values("):
            expr, _label = label_values_query(expr)
        board_variables = {
            "datasource": "prometheus", "namespace": ".*", "job": ".*", "rank": ".*",
            "job_namespace": ".*",
        }  # fmt: skip
        try:
            stack.prometheus.query(to_promql(expr, board_variables))
        except PrometheusQueryError as error:
            refused[query.origin] = str(error)
    assert refused == {}


def test_every_training_panel_returns_data_for_the_run(stack: Stack) -> None:
    empty = [
        query.origin
        for query in _training_panel_queries()
        if not _eventually(stack, to_promql(query.expr, _training_variables()))
    ]
    assert empty == []
    # Per-rank panels show both ranks of the job, and only this job.
    (loss_query,) = (q for q in _training_panel_queries() if "/ Training loss /" in q.origin)
    loss = _eventually(stack, to_promql(loss_query.expr, _training_variables()))
    assert sorted(s["rank"] for s in _series_labels(loss)) == ["0", "1"]
    assert {s["dsgd_job"] for s in _series_labels(loss)} == {JOB}


def test_training_variables_list_the_job_and_its_ranks(stack: Stack) -> None:
    values = {}
    for query in variable_queries(dashboards()["training"]):
        selector, label = label_values_query(query.expr)
        result = _eventually(stack, to_promql(selector, _training_variables()))
        values[label] = {sample["metric"].get(label) for sample in result}
    assert NAMESPACE in values["namespace"]
    assert values["dsgd_job"] == {JOB, SICK_JOB}  # both run in NAMESPACE
    assert values["rank"] == {"0", "1"}


def test_every_operator_panel_returns_data(stack: Stack) -> None:
    variables = {
        "datasource": "prometheus", "namespace": "dsgd-system", "job": "dsgd",
        "job_namespace": OPERATOR_JOB[0],
    }  # fmt: skip
    board = dashboards()["operator"]

    def all_have_data() -> bool:
        return all(
            stack.prometheus.query(to_promql(q.expr, variables)) for q in panel_queries(board)
        )

    wait_until(all_have_data, 30, "data for every operator panel", poll=1.0)
    phases = _eventually(stack, 'sum by (phase) (dsgd_jobs{namespace="dsgd-system"})')
    by_phase = {s["metric"]["phase"]: float(s["value"][1]) for s in phases}
    assert by_phase["Running"] == 2 and by_phase["Failed"] == 0


def _alert_expr(stack: Stack, name: str) -> str:
    return next(
        rule["expr"]
        for group in stack.rule_groups
        for rule in group["rules"]
        if rule["alert"] == name
    )


def test_alerts_fire_on_the_sick_job_and_not_on_the_healthy_run(stack: Stack) -> None:
    for alert in ("DSGDLossNaN", "DSGDTrainingStalled"):
        result = _eventually(stack, _alert_expr(stack, alert))
        assert {s["dsgd_job"] for s in _series_labels(result)} == {SICK_JOB}, alert
    for alert in ("DSGDJobFailed", "DSGDJobRestartingRepeatedly"):
        result = wait_until(
            lambda alert=alert: stack.prometheus.query(_alert_expr(stack, alert)),
            30,
            f"{alert} to fire on the simulated operator",
        )
        assert result, alert
    failed = _eventually(stack, _alert_expr(stack, "DSGDJobFailed"))
    # The operator's per-job labels survive the scrape (honorLabels): the alert names the job.
    assert [(s["namespace"], s["dsgd_job"], s["reason"]) for s in _series_labels(failed)] == [
        (*OPERATOR_JOB, "BackoffLimitExceeded")
    ]
    # The simulated operator reports a Running job no trainer target serves: the absence
    # alert names it, and not the healthy run (which has no dsgd_job_running series).
    missing = _eventually(stack, _alert_expr(stack, "DSGDTrainerMetricsMissing"))
    assert [(s["namespace"], s["dsgd_job"]) for s in _series_labels(missing)] == [OPERATOR_JOB]
    # The operator is up: its absence alert stays quiet.
    assert stack.prometheus.query(_alert_expr(stack, "DSGDOperatorDown")) == []


def test_prometheus_loads_and_evaluates_the_alert_rules(stack: Stack) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = stack.prometheus.api("rules", type="alert")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else None

    rules = wait_until(evaluated, 20, "the alert rules to be evaluated")
    assert {rule["name"] for rule in rules} == {
        "DSGDJobFailed",
        "DSGDJobRestartingRepeatedly",
        "DSGDTrainingStalled",
        "DSGDLossNaN",
        "DSGDTrainerMetricsMissing",
        "DSGDOperatorDown",
        "DSGDOperatorReconcileErrors",
    }
    assert {rule["health"] for rule in rules} == {"ok"}, rules
    nan_alerts = wait_until(
        lambda: [
            a
            for a in stack.prometheus.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "DSGDLossNaN" and a["state"] == "firing"
        ],
        20,
        "DSGDLossNaN to fire",
    )
    assert {a["labels"]["dsgd_job"] for a in nan_alerts} == {SICK_JOB}
    assert nan_alerts[0]["labels"]["severity"] == "critical"


@pytest.mark.parametrize("which", ["trainer", "operator"])
def test_promtool_check_metrics_is_clean(stack: Stack, which: str) -> None:
    exposition = _fetch(stack.trainer_url if which == "trainer" else stack.operator_url)
    assert "dsgd_" in exposition
    checked = promtool("check", "metrics", stdin=exposition)
    assert checked.returncode == 0 and checked.stdout.strip() == "", checked.stdout
