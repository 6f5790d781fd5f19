"""The chart's monitors consumed for real: the Prometheus Operator configures Prometheus,
which scrapes a running job's pod and the dsgd operator, and the dashboards' queries answer.

On the session's control plane: monitoring (dsgd_cluster.monitoring: the Prometheus
Operator and Prometheus, both built from their Go modules), the chart installed with the
real helm with its PodMonitor, ServiceMonitor and PrometheusRule on, and an SGDExperiment
whose one trial runs on the node agent. Nothing here writes a scrape configuration: the
oracles are the configuration the Prometheus Operator generated, Prometheus' targets and
rules APIs, and the dashboards' own queries.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from dsgd_cluster import pod_network
from dsgd_cluster.control_plane import ClusterError, ClusterInfo
from dsgd_cluster.daemons import running_pid
from dsgd_cluster.monitoring import COMPONENTS, MonitoringInfo, down_monitoring, up_monitoring
from kubernetes import client

from tests._cluster import Kubectl, create_namespace
from tests._dashboards import panel_queries, to_promql
from tests._helm_chart import ALL_MONITORS, dashboards, prometheus_rule_groups
from tests._helm_release import Helm, Release, operator_pods
from tests._polling import wait_until
from tests._prometheus import PrometheusApi
from tests._scrape_stack import JOB_MANIFEST

pytestmark = pytest.mark.slow

EXPERIMENT, SEED = "scrape-study", 7
TRIAL = f"{EXPERIMENT}-c0-s{SEED}"
INTERVAL = "2s"
#: Each monitor on, scraped every INTERVAL (the chart's defaults are 15 s and 30 s).
MONITOR_VALUES = [
    f"--set=monitoring.{monitor}.{key}={value}"
    for monitor in ("podMonitor", "serviceMonitor")
    for key, value in (("enabled", "true"), ("interval", INTERVAL), ("scrapeTimeout", INTERVAL))
] + ["--set=monitoring.prometheusRule.enabled=true"]
#: Torch's start on a loaded 2-core machine, a first epoch, then a few scrapes.
DATA_TIMEOUT = 240
#: Training panels without data here, and why.
NO_DATA_HERE = {
    title: "no dcgm-exporter (no GPU) on this machine"
    for title in ("GPU utilization", "GPU memory used", "GPU power", "GPU temperature")
}


@dataclass
class Scraped:
    prometheus: PrometheusApi
    monitoring: MonitoringInfo
    release_namespace: str
    job_namespace: str
    operator_pod: str
    #: The operator's pod IP: a ServiceMonitor finds it only in the routable pod network.
    operator_ip: str

    def needs_service_endpoints(self) -> None:
        if ipaddress.ip_address(self.operator_ip) in pod_network.LOOPBACK:
            pytest.skip("loopback pod IPs (no root or iproute2): Services have no endpoints")


def _experiment() -> dict[str, Any]:
    spec = copy.deepcopy(JOB_MANIFEST["spec"])
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "SGDExperiment",
        "metadata": {"name": EXPERIMENT},
        "spec": {"template": spec, "seeds": [SEED]},
    }


def _training_variables(job_namespace: str) -> dict[str, str]:
    every = {"datasource": "prometheus", "cluster": ".*", "experiment": ".*", "rank": ".*"}
    return {**every, "namespace": job_namespace, "dsgd_job": TRIAL}


def _training_queries() -> list[Any]:
    return [
        q
        for q in panel_queries(dashboards()["training"])
        if q.origin.split(" / ")[1] not in NO_DATA_HERE
    ]


@pytest.fixture(scope="module")
def scraped(
    cluster: ClusterInfo, kube_api: client.ApiClient, kubectl: Kubectl, crd_installed: None
) -> Iterator[Scraped]:
    monitoring = up_monitoring(
        cluster, scrape_interval=INTERVAL, scrape_timeout=INTERVAL, tie_to_caller=True
    )
    core = client.CoreV1Api(kube_api)
    release = Release(Helm(cluster), core, "dsgd", create_namespace(kube_api, "dsgd"))
    job_namespace = create_namespace(kube_api, "job")
    try:
        release.install(*MONITOR_VALUES)
        kubectl("apply", "-n", job_namespace, "-f", "-", input=yaml.safe_dump(_experiment()))
        (operator_pod,) = operator_pods(core, release.namespace)
        scraped = Scraped(
            PrometheusApi(monitoring.prometheus_url),
            monitoring,
            release.namespace,
            job_namespace,
            operator_pod.metadata.name,
            operator_pod.status.pod_ip,
        )
        queries = [
            to_promql(q.expr, _training_variables(job_namespace)) for q in _training_queries()
        ]

        def every_panel_has_data() -> bool:
            return all(scraped.prometheus.query(query) for query in queries)

        # No failure here: the test that asks for data names the panels without it.
        with contextlib.suppress(AssertionError):
            wait_until(every_panel_has_data, DATA_TIMEOUT, "data for every panel", poll=2.0)
        yield scraped
    finally:
        kubectl("delete", "-n", job_namespace, f"sgdexperiment/{EXPERIMENT}", check=False)
        release.uninstall()
        core.delete_namespace(release.namespace)
        core.delete_namespace(job_namespace)
        down_monitoring(cluster.root)


def test_a_refused_prometheus_is_reported_and_nothing_is_left_running(
    cluster: ClusterInfo,
) -> None:
    """The Prometheus Operator's own refusal (a timeout above the interval) reaches the
    caller in one line, and no monitoring daemon is left behind."""
    down_monitoring(cluster.root)
    with pytest.raises(ClusterError) as refused:
        up_monitoring(cluster, scrape_interval="2s", scrape_timeout="10s", tie_to_caller=True)
    assert 'scrapeTimeout "10s" greater than scrapeInterval "2s"' in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not [name for name in COMPONENTS if running_pid(cluster.root, name)]


def test_the_operator_generates_a_scrape_job_per_monitor(scraped: Scraped) -> None:
    config = yaml.safe_load((scraped.monitoring.directory / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ns = scraped.release_namespace
    assert {f"podMonitor/{ns}/dsgd-trainers/0", f"serviceMonitor/{ns}/dsgd-operator/0"} <= set(jobs)
    # Discovered through the API server, with the intervals the chart's values set.
    pod_job = jobs[f"podMonitor/{ns}/dsgd-trainers/0"]
    assert [d["role"] for d in pod_job["kubernetes_sd_configs"]] == ["pod"]
    assert (pod_job["scrape_interval"], pod_job["scrape_timeout"]) == (INTERVAL, INTERVAL)


def _scraped_target(scraped: Scraped, pool: str) -> dict[str, str]:
    """The labels of the one target of scrape pool `<pool>/<release namespace>/...`, once up."""
    kind, name = pool.split("/")

    def up() -> dict[str, str] | None:
        active = scraped.prometheus.api("targets", state="active")["activeTargets"]
        ours = [
            t for t in active if t["scrapePool"] == f"{kind}/{scraped.release_namespace}/{name}/0"
        ]
        return ours[0]["labels"] if len(ours) == 1 and ours[0]["health"] == "up" else None

    return wait_until(up, 60, f"the {pool} target up")


def test_prometheus_scrapes_the_trials_pod_as_the_podmonitor_says(scraped: Scraped) -> None:
    trainer = _scraped_target(scraped, "podMonitor/dsgd-trainers")
    # The PodMonitor's relabelings, run by Prometheus on what discovery found on the pod.
    assert trainer["namespace"] == scraped.job_namespace
    assert (trainer["pod"], trainer["container"]) == (f"{TRIAL}-node-0", "trainer")
    assert (trainer["dsgd_job"], trainer["node_rank"], trainer["attempt"]) == (TRIAL, "0", "0")
    trial = (trainer["dsgd_experiment"], trainer["dsgd_cell"], trainer["dsgd_seed"])
    assert trial == (EXPERIMENT, "c0", str(SEED))


def test_prometheus_scrapes_the_operator_through_its_service(scraped: Scraped) -> None:
    scraped.needs_service_endpoints()
    operator = _scraped_target(scraped, "serviceMonitor/dsgd-operator")
    assert (operator["namespace"], operator["service"]) == (scraped.release_namespace, "dsgd")
    assert operator["pod"] == scraped.operator_pod


def test_every_training_panel_returns_data_for_the_trial(scraped: Scraped) -> None:
    variables = _training_variables(scraped.job_namespace)
    empty = [
        q.origin
        for q in _training_queries()
        if not scraped.prometheus.query(to_promql(q.expr, variables))
    ]
    assert empty == []
    (loss,) = (q for q in _training_queries() if "/ Training loss /" in q.origin)
    series = scraped.prometheus.query(to_promql(loss.expr, variables))
    assert sorted(s["metric"]["rank"] for s in series) == ["0", "1"]


def test_every_operator_panel_returns_data(scraped: Scraped) -> None:
    scraped.needs_service_endpoints()
    variables = {
        "datasource": "prometheus", "cluster": ".*", "namespace": scraped.release_namespace,
        "job": "dsgd", "job_namespace": scraped.job_namespace,
    }  # fmt: skip
    queries = panel_queries(dashboards()["operator"])

    def empty() -> list[str]:
        return [
            q.origin for q in queries if not scraped.prometheus.query(to_promql(q.expr, variables))
        ]

    with contextlib.suppress(AssertionError):  # timed out: the assertion names the panels
        wait_until(lambda: not empty(), 30, "data for every operator panel", poll=2.0)
    assert empty() == []


def test_prometheus_evaluates_the_charts_rules_from_the_operators_rule_files(
    scraped: Scraped,
) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = scraped.prometheus.api("rules", type="alert")["groups"]
        ours = [g for g in groups if scraped.release_namespace in g["file"]]
        rules = [rule for group in ours for rule in group["rules"]]
        done = rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
        return rules if done else None

    rules = wait_until(evaluated, 30, "the chart's rules evaluated")
    expected = [r["alert"] for g in prometheus_rule_groups(ALL_MONITORS) for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(expected)
    assert {r["health"] for r in rules} == {"ok"}
    # The trial is scraped and the operator up: neither absence alert fires.
    firing = {r["name"] for r in rules if r["state"] != "inactive"}
    assert not firing & {"DSGDTrainerMetricsMissing", "DSGDOperatorDown"}, firing
