"""Grafana dashboards and alerts use only metrics the code exports, and are well formed.

The dashboards are built by dsgd_operator.dashboards (grafana-foundation-sdk); the
committed JSON must be what it builds. The PromQL of every panel, template variable
and alert is tokenized and its metric names compared with the live prometheus-client
registries of the trainer and the operator (and, for the GPU panels, with
dcgm-exporter's default counters). Prometheus itself parses and runs them in
test_prometheus_scrape.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._dashboards import (
    Query,
    alert_queries,
    panel_queries,
    panels,
    to_promql,
    variable_queries,
)
from tests._dcgm import DEFAULT_COUNTERS
from tests._exported_metrics import (
    operator_metric_names,
    parameter_server_metric_names,
    trainer_metric_names,
)
from tests._helm_chart import ALL_MONITORS, DASHBOARDS, REPO, dashboards, prometheus_rule_groups
from tests._prometheus import promtool
from tests._promql import PromQLSyntaxError, label_values_query, metric_names, selectors

BOARDS = dashboards()
STANDARD_PREFIXES = ("process_", "python_")
#: The operator's series labelled with a job's namespace and name.
PER_JOB_SERIES = {"dsgd_gang_restarts_total", "dsgd_job_failures_total", "dsgd_job_running"}
#: `up` is Prometheus' own series.
PROMETHEUS_SERIES = {"up"}


def _names(query: Query) -> set[str]:
    expr = query.expr
    if expr.lstrip().startswith("label_values("):
        expr, _label = label_values_query(expr)
    return metric_names(expr)


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return trainer_metric_names() | operator_metric_names() | parameter_server_metric_names()


def test_tokenizer_finds_metrics_and_skips_everything_else() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, scope) (rate(a_bucket{x=~"$v", y!="}"}[5m]))) '
        "/ on (rank) group_left (pod) b_total offset 1h > bool 3 "
        "or sum(c) without (d) and max_over_time(e[$__range:1m]) unless abs(f) == +Inf "
        "or count by (g) (h) # a comment naming no_metric"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "e", "f", "h"}
    (first, *_rest) = selectors(expr)
    assert first.matchers == {"x": ("=~", "$v"), "y": ("!=", "}")}
    assert metric_names('{__name__="up", job="x"}') == {"up"}
    with pytest.raises(PromQLSyntaxError):
        metric_names('{__name__=~"dsgd_.*"}')
    with pytest.raises(PromQLSyntaxError):
        metric_names("rate(x{a=b}[5m])")


def test_there_are_training_operator_and_parameter_server_dashboards_with_queries() -> None:
    assert set(BOARDS) == {"training", "operator", "parameter-servers"}
    for board in BOARDS.values():
        assert len(panel_queries(board)) >= 6, board["uid"]
        assert all(query.expr.strip() for query in panel_queries(board))


def test_every_dashboard_and_alert_metric_is_exported_by_the_code(exported: set[str]) -> None:
    queries = [
        query
        for board in BOARDS.values()
        for query in (*panel_queries(board), *variable_queries(board))
    ] + alert_queries(ALL_MONITORS)
    known = exported | PROMETHEUS_SERIES | DEFAULT_COUNTERS
    unknown = {
        query.origin: sorted(_names(query) - known) for query in queries if _names(query) - known
    }
    assert unknown == {}
    assert all(_names(query) for query in queries), "a query that selects no metric"


def test_the_check_catches_a_metric_the_code_does_not_export(exported: set[str]) -> None:
    query = panel_queries(BOARDS["training"])[0]
    name = selectors(query.expr)[0].name
    assert name in exported
    typo = query.expr.replace(f"{name}{{", f"{name}s{{")
    assert _names(Query("typo", typo)) - exported == {f"{name}s"}


def test_dashboards_show_every_metric_of_their_component() -> None:
    """A metric no panel shows is either dead code or a missing panel."""

    def shown(uid: str) -> set[str]:
        return set().union(*(_names(query) for query in panel_queries(BOARDS[uid])))

    def worth_a_panel(names: set[str]) -> set[str]:
        # A histogram is shown through its buckets; _sum and _count add nothing to see.
        # process_*/python_* are prometheus-client's standard collectors (the operator
        # dashboard shows CPU and memory of them; the rest is there for ad-hoc queries).
        return {
            name
            for name in names
            if not name.endswith(("_sum", "_count")) and not name.startswith(STANDARD_PREFIXES)
        }

    assert worth_a_panel(trainer_metric_names()) - shown("training") == set()
    assert worth_a_panel(operator_metric_names()) - shown("operator") == set()
    assert worth_a_panel(parameter_server_metric_names()) - shown("parameter-servers") == set()


def test_training_panels_filter_by_cluster_namespace_experiment_job_and_rank() -> None:
    """Trainer series by every variable; GPU series by cluster, joined to the trainer pods'
    `up` (no rank: a pod's GPUs serve all its ranks), which brings namespace, experiment
    and job. The job is the DistributedSGDJob (dsgd_job), never Prometheus' `job`."""
    board = BOARDS["training"]
    pods = {"cluster": "$cluster", "namespace": "$namespace",
            "dsgd_experiment": "$experiment", "dsgd_job": "$dsgd_job"}  # fmt: skip
    gpu_panels = 0
    for query in panel_queries(board):
        found = selectors(query.expr)
        for selector in found:
            wanted = {"cluster": "$cluster"}
            if selector.name and selector.name.startswith("dsgd_"):
                wanted = {**pods, "rank": "$rank"}
            elif selector.name == "up":
                wanted = pods
            else:
                assert selector.name in DEFAULT_COUNTERS, query.origin
            got = {label: value for label, (op, value) in selector.matchers.items() if op == "=~"}
            assert got == wanted, query.origin
            assert "job" not in selector.matchers, query.origin
        if any(selector.name in DEFAULT_COUNTERS for selector in found):
            gpu_panels += 1
            assert [s.name for s in found if s.name not in DEFAULT_COUNTERS] == ["up"]
            assert "on (cluster, namespace, pod) group_left (dsgd_job)" in query.expr
    assert gpu_panels >= 4


def test_parameter_server_panels_filter_by_cluster_namespace_experiment_job_and_shard() -> None:
    wanted = {
        "cluster": ("=~", "$cluster"),
        "namespace": ("=~", "$namespace"),
        "dsgd_experiment": ("=~", "$experiment"),
        "dsgd_job": ("=~", "$dsgd_job"),
        "shard": ("=~", "$shard"),
    }
    queries = panel_queries(BOARDS["parameter-servers"])
    for query in queries:
        for selector in selectors(query.expr):
            assert selector.matchers == wanted, query.origin
    # Staleness quantiles and mean come from the histogram, per job and per shard.
    exprs = " ".join(query.expr for query in queries)
    for q in ("0.5", "0.95", "0.99", "1"):
        assert f"histogram_quantile({q}, sum by (namespace, dsgd_job, le)" in exprs, q
    assert "sum by (namespace, dsgd_job, shard, le)" in exprs


def test_operator_panels_filter_by_namespace_and_job() -> None:
    """Operator-wide series by the operator's namespace; per-job series (labelled with the
    job's own namespace) by the jobs' namespace."""
    for query in panel_queries(BOARDS["operator"]):
        for selector in selectors(query.expr):
            namespace = "$job_namespace" if selector.name in PER_JOB_SERIES else "$namespace"
            assert selector.matchers == {
                "cluster": ("=~", "$cluster"),
                "namespace": ("=~", namespace),
                "job": ("=~", "$job"),
            }, query.origin


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_dashboard_variables_datasource_and_layout(uid: str) -> None:
    board: dict[str, Any] = BOARDS[uid]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    job = "job" if uid == "operator" else "dsgd_job"
    assert {"datasource", "cluster", "namespace", job} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, variable in variables.items():
        if name == "datasource":
            continue
        assert variable["multi"] and variable["includeAll"], name
        # "All" also matches a series without the label: one cluster without a `cluster`
        # label, jobs of no experiment. Every trainer series has a dsgd_job.
        assert variable["allValue"] == (".+" if name == "dsgd_job" else ".*"), name
    assert variables["cluster"]["query"].endswith(", cluster)")
    # Every query expands with the variables the dashboard defines (no dangling $names).
    defined = {name: ".*" for name in variables}
    for query in (*panel_queries(board), *variable_queries(board)):
        # ($1 in label_replace is the regex group, no variable.)
        assert not re.search(r"\$(?!1\b)", to_promql(query.expr, defined)), query.origin

    assert board["uid"] == f"dsgd-{uid}" and board["title"].startswith("dsgd / ")
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel["description"], panel["title"]


def test_promtool_check_rules_is_clean(tmp_path: Path) -> None:
    rules_file = tmp_path / "dsgd-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": prometheus_rule_groups()}, sort_keys=False))
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout
    assert "SUCCESS: 4 rules found" in checked.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "x",
                        "rules": [{"alert": "Broken", "expr": "rate(dsgd_steps_total[5m]"}],
                    }
                ]
            }
        )
    )
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_committed_dashboards_are_what_the_sdk_builds(tmp_path: Path) -> None:
    """`python -m dsgd_operator.dashboards --check` passes on the chart, and names a file
    edited by hand, a missing one and a stray one."""

    def check(directory: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dsgd_operator.dashboards", "--check",
             f"--output-dir={directory}"],
            capture_output=True, text=True, timeout=120, env=os.environ, cwd=REPO,
        )  # fmt: skip

    committed = check(DASHBOARDS)
    assert committed.returncode == 0, committed.stderr
    copy = tmp_path / "dashboards"
    shutil.copytree(DASHBOARDS, copy)
    edited = json.loads((copy / "training.json").read_text())
    edited["panels"][1]["title"] = "Epoch (edited by hand)"
    (copy / "training.json").write_text(json.dumps(edited, indent=2))
    (copy / "operator.json").unlink()
    (copy / "stray.json").write_text("{}")
    drifted = check(copy)
    assert drifted.returncode == 1
    assert f"{copy / 'training.json'}: stale" in drifted.stderr
    assert f"{copy / 'operator.json'}: missing" in drifted.stderr
    assert f"{copy / 'stray.json'}: not built" in drifted.stderr
    written = subprocess.run(
        [sys.executable, "-m", "dsgd_operator.dashboards", f"--output-dir={copy}"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert (copy / "training.json").read_text() == (DASHBOARDS / "training.json").read_text()
