"""A real Prometheus scrapes a local 2-rank training run, and runs our dashboards and alerts.

The stack (tests/_scrape_stack.py): a real training run, a trial of an SGDExperiment,
whose pod is scraped as the chart's PodMonitor says; simulated operator, diverged
trainer (in another `cluster`) and dcgm-exporter targets; the rendered PrometheusRule
as Prometheus' rule file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests._dashboards import (
    alert_queries,
    all_dashboard_queries,
    panel_queries,
    to_promql,
    variable_queries,
)
from tests._helm_chart import ALL_MONITORS, dashboards
from tests._metrics_simulator import OPERATOR_JOB, STALENESS_CYCLE
from tests._polling import wait_until
from tests._prometheus import PrometheusQueryError, promtool
from tests._promql import label_values_query
from tests._scrape_stack import (
    CELL,
    EXPERIMENT,
    JOB,
    NAMESPACE,
    PS_JOB,
    RETRY_SECONDS,
    SEED,
    SICK_CLUSTER,
    SICK_JOB,
    Stack,
    eventually,
    fetch,
    running_stack,
    series_labels,
    training_panel_queries,
    training_variables,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("prometheus-scrape")) as running:
        yield running


def test_prometheus_scrapes_every_target(stack: Stack) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = stack.prometheus.api("targets")["activeTargets"]
        return targets if {t["health"] for t in targets} == {"up"} else None

    targets = wait_until(all_up, RETRY_SECONDS, "every target to be up")
    # trainer, diverged trainer, parameter server, operator, two dcgm-exporters
    assert len(targets) == 6
    trainer = next(t for t in targets if t["labels"].get("dsgd_job") == JOB)
    # The PodMonitor's relabelings turned the pod's labels into these.
    assert trainer["labels"]["node_rank"] == "0" and trainer["labels"]["attempt"] == "0"
    assert trainer["labels"]["namespace"] == NAMESPACE
    # The job's trial labels, copied onto its pod by the builder, relabelled like dsgd_job.
    trial = ("dsgd_experiment", "dsgd_cell", "dsgd_seed")
    assert tuple(trainer["labels"][label] for label in trial) == (EXPERIMENT, CELL, SEED)


def test_every_dashboard_query_and_alert_is_accepted(stack: Stack) -> None:
    refused = {}
    for query in [*all_dashboard_queries(), *alert_queries(ALL_MONITORS)]:
        expr = query.expr
        if expr.lstrip().startswith("label_values("):
            expr, _label = label_values_query(expr)
        board_variables = {
            "datasource": "prometheus", "cluster": ".*", "namespace": ".*", "job": ".*",
            "experiment": ".*", "dsgd_job": ".+", "rank": ".*", "job_namespace": ".*",
            "shard": ".*",
        }  # fmt: skip
        try:
            stack.prometheus.query(to_promql(expr, board_variables))
        except PrometheusQueryError as error:
            refused[query.origin] = str(error)
    assert refused == {}


def test_every_training_panel_returns_data_for_the_run(stack: Stack) -> None:
    empty = [
        query.origin
        for query in training_panel_queries()
        if not eventually(stack, to_promql(query.expr, training_variables()))
    ]
    assert empty == []
    # Per-rank panels show both ranks of the job, and only this job.
    (loss_query,) = (q for q in training_panel_queries() if "/ Training loss /" in q.origin)
    loss = eventually(stack, to_promql(loss_query.expr, training_variables()))
    assert sorted(s["rank"] for s in series_labels(loss)) == ["0", "1"]
    assert {s["dsgd_job"] for s in series_labels(loss)} == {JOB}


def test_training_variables_list_the_job_and_its_ranks(stack: Stack) -> None:
    values = {}
    for query in variable_queries(dashboards()["training"]):
        selector, label = label_values_query(query.expr)
        result = eventually(stack, to_promql(selector, training_variables()))
        values[label] = {sample["metric"].get(label) for sample in result}
    assert NAMESPACE in values["namespace"]
    assert values["dsgd_job"] == {JOB, SICK_JOB}  # both run in NAMESPACE
    assert values["rank"] == {"0", "1"}
    # Series without the label count for "All" but list no value.
    assert values["cluster"] - {None} == {SICK_CLUSTER}
    assert values["dsgd_experiment"] - {None} == {EXPERIMENT}


def test_every_operator_panel_returns_data(stack: Stack) -> None:
    variables = {
        "datasource": "prometheus", "cluster": ".*", "namespace": "dsgd-system", "job": "dsgd",
        "job_namespace": OPERATOR_JOB[0],
    }  # fmt: skip
    board = dashboards()["operator"]

    def all_have_data() -> bool:
        return all(
            stack.prometheus.query(to_promql(q.expr, variables)) for q in panel_queries(board)
        )

    wait_until(all_have_data, 30, "data for every operator panel", poll=1.0)
    phases = eventually(stack, 'sum by (phase) (dsgd_jobs{namespace="dsgd-system"})')
    by_phase = {s["metric"]["phase"]: float(s["value"][1]) for s in phases}
    assert by_phase["Running"] == 2 and by_phase["Failed"] == 0


def test_every_parameter_server_panel_returns_data_for_the_servers(stack: Stack) -> None:
    """The scraped server pod's series reach every panel, by job and shard; the staleness
    figures are those of the pushes the server applied (the simulator's cycle)."""
    variables = {
        "datasource": "prometheus", "cluster": ".*", "namespace": NAMESPACE,
        "experiment": ".*", "dsgd_job": PS_JOB, "shard": ".*",
    }  # fmt: skip
    queries = panel_queries(dashboards()["parameter-servers"])
    shown = {q.origin: eventually(stack, to_promql(q.expr, variables)) for q in queries}
    assert [origin for origin, result in shown.items() if not result] == []
    for origin, result in shown.items():
        assert {s.get("dsgd_job") for s in series_labels(result)} == {PS_JOB}, origin
        assert {s.get("shard") for s in series_labels(result)} <= {"0", None}, origin

    def value(title: str, ref: str) -> float:
        (sample,) = shown[f"dsgd-parameter-servers / {title} / {ref}"]
        return float(sample["value"][1])

    title = "Staleness of applied pushes"
    mean = sum(STALENESS_CYCLE) / len(STALENESS_CYCLE)
    assert value(title, "E") == pytest.approx(mean)  # rate(_sum) / rate(_count)
    # p50 within the buckets around the median, the max line the bound of max's bucket (8).
    assert 2 <= value(title, "A") <= 4
    assert value(title, "D") == pytest.approx(max(STALENESS_CYCLE))
    # The simulated server serves one fetch per push: the same rate, whatever the window (up
    # to a scrape landing between a push and its fetch).
    pushes = value("Pushes applied per second by shard", "A")
    fetches = value("Fetches served per second by shard", "A")
    assert pushes > 0 and fetches == pytest.approx(pushes, rel=0.05)
    # Another job's servers: nothing (no series of PS_JOB leaks into it).
    other = {**variables, "dsgd_job": JOB}
    assert all(not stack.prometheus.query(to_promql(q.expr, other)) for q in queries)


def _panel(title: str) -> str:
    (query,) = (q.expr for q in training_panel_queries() if f"/ {title} /" in q.origin)
    return query


def _labels(stack: Stack, title: str, labels: tuple[str, ...], **chosen: str) -> set[tuple]:
    """The label values of each series the panel shows with these variables."""
    result = eventually(stack, to_promql(_panel(title), training_variables(**chosen)))
    return {tuple(series.get(label) for label in labels) for series in series_labels(result)}


def test_gpu_panels_show_the_gpus_of_the_selected_trainer_pods(stack: Stack) -> None:
    """dcgm-exporter's series joined to the trainer pods: both scrape conventions (honorLabels
    or exported_*), no GPU of a pod that is no trainer, none idle, and each filter applies."""
    gpu = ("dsgd_job", "pod", "gpu")
    ours = {(JOB, f"{JOB}-node-0", "0"), (JOB, f"{JOB}-node-0", "1")}
    sick = {(SICK_JOB, f"{SICK_JOB}-node-0", "0")}
    every_job = {"namespace": ".*", "dsgd_job": ".+"}
    for title in ("GPU utilization", "GPU memory used", "GPU power", "GPU temperature"):
        assert _labels(stack, title, gpu, **every_job) == ours | sick, title
    assert _labels(stack, "GPU utilization", gpu) == ours  # the run's job only
    assert _labels(stack, "GPU utilization", gpu, **every_job, cluster=SICK_CLUSTER) == sick
    assert _labels(stack, "GPU utilization", gpu, **every_job, experiment=EXPERIMENT) == ours
    result = eventually(stack, to_promql(_panel("GPU utilization"), training_variables()))
    assert {float(sample["value"][1]) for sample in result} == {87.0}  # the GPUs' own value


def test_the_cluster_variable_filters_every_training_panel(stack: Stack) -> None:
    every_job = {"namespace": ".*", "dsgd_job": ".+"}
    job = ("dsgd_job",)
    assert _labels(stack, "Training loss", job, **every_job) == {(JOB,), (SICK_JOB,)}
    assert _labels(stack, "Training loss", job, **every_job, cluster=SICK_CLUSTER) == {(SICK_JOB,)}
    elsewhere = training_variables(**every_job, cluster="west")
    shown = [q.origin for q in training_panel_queries() if stack.prometheus.query(
        to_promql(q.expr, elsewhere))]  # fmt: skip
    assert shown == []


def test_trial_panels_compare_the_trials_of_the_experiment(stack: Stack) -> None:
    trial = ("dsgd_experiment", "dsgd_cell", "dsgd_seed")
    every_job = {"namespace": ".*", "dsgd_job": ".+"}
    for title in ("Test accuracy by trial", "Training loss by trial"):
        # Jobs of no experiment (the diverged one) are no trials, even with "All".
        assert _labels(stack, title, trial, **every_job) == {(EXPERIMENT, CELL, SEED)}, title
        assert _labels(stack, title, trial, **every_job, experiment=EXPERIMENT) == {
            (EXPERIMENT, CELL, SEED)
        }
    other = training_variables(**every_job, experiment="another-study")
    assert stack.prometheus.query(to_promql(_panel("Test accuracy by trial"), other)) == []


def _alert_expr(stack: Stack, name: str) -> str:
    return next(
        rule["expr"]
        for group in stack.rule_groups
        for rule in group["rules"]
        if rule["alert"] == name
    )


def test_alerts_fire_on_the_sick_job_and_not_on_the_healthy_run(stack: Stack) -> None:
    for alert in ("DSGDLossNaN", "DSGDTrainingStalled"):
        result = eventually(stack, _alert_expr(stack, alert))
        assert {s["dsgd_job"] for s in series_labels(result)} == {SICK_JOB}, alert
    for alert in ("DSGDJobFailed", "DSGDJobRestartingRepeatedly"):
        result = wait_until(
            lambda alert=alert: stack.prometheus.query(_alert_expr(stack, alert)),
            30,
            f"{alert} to fire on the simulated operator",
        )
        assert result, alert
    failed = eventually(stack, _alert_expr(stack, "DSGDJobFailed"))
    # The operator's per-job labels survive the scrape (honorLabels): the alert names the job.
    assert [(s["namespace"], s["dsgd_job"], s["reason"]) for s in series_labels(failed)] == [
        (*OPERATOR_JOB, "BackoffLimitExceeded")
    ]
    # The simulated operator reports a Running job no trainer target serves: the absence
    # alert names it, and not the healthy run (which has no dsgd_job_running series).
    missing = eventually(stack, _alert_expr(stack, "DSGDTrainerMetricsMissing"))
    assert [(s["namespace"], s["dsgd_job"]) for s in series_labels(missing)] == [OPERATOR_JOB]
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
    exposition = fetch(stack.trainer_url if which == "trainer" else stack.operator_url)
    assert "dsgd_" in exposition
    checked = promtool("check", "metrics", stdin=exposition)
    assert checked.returncode == 0 and checked.stdout.strip() == "", checked.stdout
