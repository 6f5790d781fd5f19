"""The queries of the chart's Grafana dashboards and alerts, and how to run them on Prometheus.

Grafana expands its variables before a query reaches Prometheus; the tests do
the same with `to_promql`, so that what they send is what Grafana would send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests._helm_chart import dashboards, prometheus_rule_groups


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from (for messages)."""

    origin: str
    expr: str


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel of a dashboard, those inside collapsed rows included (rows themselves not)."""
    found = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries(board: dict[str, Any]) -> list[Query]:
    return [
        Query(f"{board['uid']} / {panel['title']} / {target['refId']}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def variable_queries(board: dict[str, Any]) -> list[Query]:
    """The `label_values(...)` queries of the dashboard's query variables."""
    return [
        Query(f"{board['uid']} / ${variable['name']}", variable["query"])
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    ]


def alert_queries(values: dict[str, Any] | None = None) -> list[Query]:
    return [
        Query(f"alert {rule['alert']}", rule["expr"])
        for group in prometheus_rule_groups(values)
        for rule in group["rules"]
    ]


def all_dashboard_queries() -> list[Query]:
    return [
        query
        for board in dashboards().values()
        for query in (*panel_queries(board), *variable_queries(board))
    ]


#: What Grafana puts for its built-in interval variables, given a short test range.
BUILTIN_VARIABLES = {"__rate_interval": "20s", "__interval": "5s", "__range": "5m"}
#: `$1` (a regex group in label_replace's replacement) is no variable; Grafana leaves it too.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(?!\d+\b)(\w+)|\[\[(\w+)\]\]")


def to_promql(expr: str, variables: dict[str, str]) -> str:
    """Expand Grafana variables: `variables` (name → regex value) plus the built-in intervals.

    An unknown variable raises KeyError: the dashboard uses one it does not define.
    """
    values = {**BUILTIN_VARIABLES, **variables}

    def expand(match: re.Match[str]) -> str:
        return values[next(group for group in match.groups() if group)]

    return _VARIABLE.sub(expand, expr)
