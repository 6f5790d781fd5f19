"""The chart's alerts run through `promtool test rules` (Prometheus' own rule engine).

The input series are what the code exports: the operator's per-job series are
produced by calling its metrics module and reading its registry back through the
Prometheus text format, so a renamed metric or label fails here; the scrape labels
(`job`, `instance`, the trainers' `dsgd_job` from the PodMonitor) are added as the
chart's monitors give them. Runbook links must land on a section of
docs/operations.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests._helm_chart import ALL_MONITORS, REPO, prometheus_rule_groups
from tests._prometheus import promtool

OPERATOR_TARGET = {"job": "dsgd", "instance": "10.0.0.5:9300", "service": "dsgd"}
TEAM, JOB = "team-a", "resnet-sweep"
TRAINERS = "dsgd-system/dsgd-trainers"  # a PodMonitor's job label: <namespace>/<name>


def _operator_series(namespace: str, name: str) -> dict[str, dict[str, str]]:
    """Series name → labels, for one job, as the operator's /metrics shows them after it saw
    the job fail (prometheus-client's text format, parsed back)."""
    from dsgd_operator.reconcile import metrics

    metrics.job_seen(namespace, name)
    metrics.job_phase(namespace, name, "Running")
    metrics.gang_restarted(namespace, name)
    metrics.job_failed(namespace, name, "BackoffLimitExceeded")
    exposition = generate_latest(metrics.REGISTRY).decode()
    found: dict[str, dict[str, str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.labels.get("dsgd_job") == name and (
                sample.labels.get("reason") in (None, "BackoffLimitExceeded")
            ):
                found[sample.name] = dict(sample.labels)
    metrics.job_forgotten(namespace, name)
    return found


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def _rule_groups() -> list[dict[str, Any]]:
    """The chart's rules with only the `summary` annotation: promtool compares annotations
    exactly, and the summary is the one that has to name the job."""
    groups = prometheus_rule_groups(ALL_MONITORS)
    for group in groups:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    return groups


def _promtool_test(tmp_path: Path, tests: list[dict[str, Any]]) -> str:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule_groups()}, sort_keys=False))
    spec = tmp_path / "test.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        )
    )
    result = promtool("test", "rules", str(spec))
    assert result.returncode == 0, result.stdout
    return result.stdout


def _alert(
    name: str, at: str, *expected: dict[str, str], summary: str | None = None
) -> dict[str, Any]:
    alerts: list[dict[str, Any]] = [{"exp_labels": labels} for labels in expected]
    for alert in alerts if summary else []:
        alert["exp_annotations"] = {"summary": summary}
    return {"eval_time": at, "alertname": name, "exp_alerts": alerts}


@pytest.fixture(scope="module")
def operator_series() -> dict[str, dict[str, str]]:
    series = _operator_series(TEAM, JOB)
    assert {"dsgd_gang_restarts_total", "dsgd_job_failures_total", "dsgd_job_running"} <= set(
        series
    ), series
    return series


def test_job_alerts_name_the_job_and_its_namespace(
    tmp_path: Path, operator_series: dict[str, dict[str, str]]
) -> None:
    failures = {**operator_series["dsgd_job_failures_total"], **OPERATOR_TARGET}
    restarts = {**operator_series["dsgd_gang_restarts_total"], **OPERATOR_TARGET}
    # Another job in another namespace fails too: each alert names only its own job.
    other_failures = {**failures, "namespace": "team-b", "dsgd_job": "other"}
    job = {"namespace": TEAM, "dsgd_job": JOB}
    failed = {**job, "reason": "BackoffLimitExceeded", "severity": "warning"}
    out = _promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [
                    _series("dsgd_job_failures_total", failures, "0x5 1x20"),
                    _series("dsgd_job_failures_total", other_failures, "0x30"),
                    _series("dsgd_gang_restarts_total", restarts, "0x3 1 2 2x20"),
                ],
                "alert_rule_test": [
                    _alert("DSGDJobFailed", "3m"),
                    _alert(
                        "DSGDJobFailed",
                        "8m",
                        failed,
                        summary=f"Job {TEAM}/{JOB} failed (BackoffLimitExceeded).",
                    ),
                    _alert("DSGDJobFailed", "25m"),  # 10 minutes later: resolved
                    _alert("DSGDJobRestartingRepeatedly", "3m"),
                    _alert(
                        "DSGDJobRestartingRepeatedly",
                        "10m",
                        {**job, "severity": "warning"},
                        summary=f"Job {TEAM}/{JOB} restarted its gang 2 times in 1h.",
                    ),
                ],
            }
        ],
    )
    assert "SUCCESS" in out


def test_absence_alerts_fire_when_a_trainer_target_or_the_operator_disappears(
    tmp_path: Path, operator_series: dict[str, dict[str, str]]
) -> None:
    running = {**operator_series["dsgd_job_running"], **OPERATOR_TARGET}
    trainer_up = {"job": TRAINERS, "namespace": TEAM, "dsgd_job": JOB, "pod": f"{JOB}-node-0"}
    healthy = {**trainer_up, "dsgd_job": "healthy", "pod": "healthy-node-0"}
    healthy_running = {**running, "dsgd_job": "healthy"}
    operator_up = {"namespace": "dsgd-system", **OPERATOR_TARGET}
    missing = {"namespace": TEAM, "dsgd_job": JOB, "severity": "warning"}
    missing_says = f"Prometheus cannot scrape the trainers of running job {TEAM}/{JOB}."
    down_says = "The dsgd operator in dsgd-system has not been scraped for 10 minutes."
    out = _promtool_test(
        tmp_path,
        [
            {   # The trainer target of a Running job disappears after 5 minutes ("_": no
                # sample, as when the pod is gone from service discovery); another job's stays.
                "interval": "1m",
                "input_series": [
                    _series("dsgd_job_running", running, "1x40"),
                    _series("up", trainer_up, "1x5 _x35"),
                    _series("dsgd_job_running", healthy_running, "1x40"),
                    _series("up", healthy, "1x40"),
                    _series("up", operator_up, "1x40"),
                ],
                "alert_rule_test": [
                    _alert("DSGDTrainerMetricsMissing", "4m"),
                    _alert("DSGDTrainerMetricsMissing", "25m", missing, summary=missing_says),
                    _alert("DSGDOperatorDown", "25m"),
                ],
            },
            {   # A target still listed but failing its scrapes fires the same alert.
                "interval": "1m",
                "input_series": [
                    _series("dsgd_job_running", running, "1x40"),
                    _series("up", trainer_up, "1x5 0x35"),
                ],
                "alert_rule_test": [
                    _alert("DSGDTrainerMetricsMissing", "25m", missing, summary=missing_says)
                ],
            },
            {   # The operator's target vanishes (its pod, Service or monitor gone).
                "interval": "1m",
                "input_series": [_series("up", {**operator_up}, "1x5 _x35")],
                "alert_rule_test": [
                    _alert("DSGDOperatorDown", "10m"),
                    _alert("DSGDOperatorDown", "25m", {"severity": "critical"}, summary=down_says),
                ],
            },
            {   # ... or stays listed but down; reconcile errors that last fire too.
                "interval": "1m",
                "input_series": [
                    _series("up", operator_up, "1x5 0x35"),
                    _series("dsgd_reconcile_errors_total", operator_up, "0+1x40"),
                ],
                "alert_rule_test": [
                    _alert("DSGDOperatorDown", "25m", {"severity": "critical"}, summary=down_says),
                    _alert(
                        "DSGDOperatorReconcileErrors", "30m",
                        {"namespace": "dsgd-system", "job": "dsgd", "severity": "warning"},
                        summary="The dsgd operator in dsgd-system keeps failing reconcile passes.",
                    ),
                ],
            },
        ],
    )  # fmt: skip
    assert "SUCCESS" in out


def _github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces → -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", docs, re.MULTILINE)}
    rules = [rule for group in prometheus_rule_groups(ALL_MONITORS) for rule in group["rules"]]
    assert len(rules) == 7
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == "https://github.com/dsgd-io/dsgd/blob/main/docs/operations.md", url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in operations.md"
