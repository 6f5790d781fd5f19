"""The chart's monitors, created on the real API server against the Prometheus Operator's CRDs.

The CRDs are the Prometheus Operator's own, as generated in its module at the pinned
release (cluster/monitoring.sh), not a copy kept here. The API server
validates each rendered PodMonitor, ServiceMonitor and PrometheusRule against their
schemas with strict field validation: a misspelt or misplaced field is refused, where
a plain create would prune it silently and the monitor would scrape without it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests._cluster import Kubectl
from tests._helm_chart import ALL_MONITORS, ALL_OPTIONS, objects

pytestmark = pytest.mark.usefixtures("monitoring_crds_installed")

MONITOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
#: Every monitor on, with defaults; and every option of values.yaml.
VALUE_SETS = {
    "monitors": {
        "monitoring": {
            **ALL_MONITORS["monitoring"],
            "prometheusRule": {"enabled": True},
            "podMonitor": {"enabled": True, "perRankSeries": False},
        }
    },
    "all-options": ALL_OPTIONS,
}


def _monitors(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in objects(values) if o["apiVersion"].startswith("monitoring.coreos.com/")]


def _create(kubectl: Kubectl, obj: dict[str, Any], namespace: str, dry_run: bool = False):
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    return kubectl(
        "create", "--validate=strict", "-o=json", *(["--dry-run=server"] if dry_run else []),
        "-f", "-", input=json.dumps(obj), check=False,
    )  # fmt: skip


def _contains(stored: Any, sent: Any) -> bool:
    """Everything sent is stored as sent (the server may add defaults, never drop a field)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            key in stored and _contains(stored[key], value) for key, value in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(sent)
            and all(_contains(a, b) for a, b in zip(stored, sent, strict=True))
        )
    return stored == sent


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_api_server_stores_the_charts_monitors_as_rendered(
    kubectl: Kubectl, namespace: str, values: dict[str, Any]
) -> None:
    monitors = _monitors(values)
    assert {obj["kind"] for obj in monitors} == MONITOR_KINDS
    for obj in monitors:
        created = _create(kubectl, obj, namespace)
        assert created.returncode == 0, f"{obj['kind']}: {created.stderr}"
        stored = json.loads(created.stdout)
        assert _contains(stored["spec"], obj["spec"]), obj["kind"]


@pytest.mark.parametrize(
    ("kind", "spoil", "refusal"),
    [
        # A misplaced field: `relabelling` is no field of a pod metrics endpoint.
        (
            "PodMonitor",
            lambda spec: spec["podMetricsEndpoints"][0].update(relabelling=[]),
            'unknown field "spec.podMetricsEndpoints[0].relabelling"',
        ),
        # Not a Prometheus duration.
        (
            "ServiceMonitor",
            lambda spec: spec["endpoints"][0].update(interval="1 minute"),
            "spec.endpoints[0].interval",
        ),
        # An alert needs its expression.
        (
            "PrometheusRule",
            lambda spec: spec["groups"][0]["rules"][0].pop("expr"),
            "spec.groups[0].rules[0].expr",
        ),
    ],
    ids=["misplaced-field", "bad-duration", "missing-expr"],
)
def test_the_crds_refuse_a_spoiled_monitor(
    kubectl: Kubectl, namespace: str, kind: str, spoil: Any, refusal: str
) -> None:
    """The oracle bites: each spoiled copy is refused, naming the field."""
    (obj,) = (o for o in _monitors(VALUE_SETS["monitors"]) if o["kind"] == kind)
    assert _create(kubectl, obj, namespace, dry_run=True).returncode == 0
    spoiled = copy.deepcopy(obj)
    spoil(spoiled["spec"])
    refused = _create(kubectl, spoiled, namespace, dry_run=True)
    assert refused.returncode != 0
    assert refusal in refused.stderr, refused.stderr
