"""Render the dsgd Helm chart with the real Helm engine (helm-python-sdk, no helm binary).

Shared by the chart, dashboard and Prometheus tests: they all look at what
`helm install` would send to the cluster, not at the template sources.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "dsgd"
DASHBOARDS = CHART / "dashboards"
RELEASE = "dsgd"
RELEASE_NAMESPACE = "dsgd-system"

#: Every option of values.yaml switched on (namespaced mode included).
ALL_OPTIONS: dict[str, Any] = {
    "image": {"tag": "0.1.0-test", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "trainerImage": {"repository": "registry.example.com/dsgd-trainer", "tag": "custom"},
    "watchNamespaces": ["team-a", "team-b"],
    "operator": {
        "livenessPort": 8081,
        "metricsPort": 9301,
        "pendingTimeoutSeconds": 300,
        "restartBackoffSeconds": 5,
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
    },
    "podAnnotations": {"example.com/owner": "ml-platform"},
    "podLabels": {"team": "ml"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "serviceAccount": {"create": True, "name": "dsgd-operator", "annotations": {"a": "b"}},
    "monitoring": {
        "labels": {"release": "kube-prometheus-stack"},
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"extra": "sm"}},
        "podMonitor": {
            "enabled": True,
            "interval": "10s",
            "labels": {"extra": "pm"},
            "relabelings": [
                {
                    "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                    "targetLabel": "node",
                    "action": "replace",
                }
            ],
        },
        "prometheusRule": {
            "enabled": True,
            "labels": {"extra": "rules"},
            "stalledMinutes": 20,
            "restartsThreshold": 3,
            "restartsWindow": "2h",
            "alertLabels": {"team": "ml"},
        },
    },
    "dashboards": {
        "enabled": True,
        "namespace": "monitoring",
        "annotations": {"grafana_folder": "dsgd"},
    },
}


def chart_values_with(**overrides: Any) -> dict[str, Any]:
    """A deep copy of ALL_OPTIONS with top-level keys replaced."""
    values = copy.deepcopy(ALL_OPTIONS)
    values.update(overrides)
    return values


def render(values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Template path → the objects it renders (empty documents dropped; NOTES.txt left out).

    Raises helm_python.HelmValuesError when the values fail values.schema.json and
    HelmRenderError when a template fails.
    """
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(
            values or {}, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True
        )
    rendered: dict[str, list[dict[str, Any]]] = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        rendered[path] = [doc for doc in yaml.safe_load_all(text) if doc]
    return rendered


def render_notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(
            values or {}, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True
        )
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders, in template order."""
    return [obj for docs in render(values).values() for obj in docs]


def objects_of_kind(kind: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [obj for obj in objects(values) if obj["kind"] == kind]


def prometheus_rule_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The alert groups of the rendered PrometheusRule (prometheusRule enabled)."""
    enabled = copy.deepcopy(values or {})
    enabled.setdefault("monitoring", {}).setdefault("prometheusRule", {})["enabled"] = True
    (rule,) = objects_of_kind("PrometheusRule", enabled)
    return rule["spec"]["groups"]


def dashboards() -> dict[str, dict[str, Any]]:
    """Dashboard file stem → Grafana dashboard model."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
