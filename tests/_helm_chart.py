"""Render the dsgd Helm chart with the real helm CLI (`helm template`, offline).

Shared by the chart, dashboard and Prometheus tests: they all look at what
`helm install` would send to the cluster, not at the template sources.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

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
    "gpuPods": {
        "runtimeClassName": "nvidia",
        "rdmaResources": {"rdma/rdma_shared_device_a": 1},
        "ncclEnv": {"NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "mlx5_0,mlx5_1"},
    },
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


class HelmError(Exception):
    """`helm template` refused the values (schema) or a template failed; the message is helm's."""


#: Capabilities.KubeVersion for offline rendering (the cluster tier's Kubernetes release).
KUBE_VERSION = "1.37.2"


def helm_binary() -> Path:
    """The real helm CLI (helm.sh/helm v3, built by cluster/build.sh and cached per machine)."""
    from dsgd_cluster.control_plane import build_binaries

    return build_binaries() / "helm"


def helm(*args: str, values: dict[str, Any] | None = None, chart: Path = CHART) -> str:
    """Run `helm <args> <chart> -f <values>`; its stdout, or HelmError with its stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        values_file = Path(tmp) / "values.json"
        values_file.write_text(json.dumps(values))
        result = subprocess.run(
            [
                str(helm_binary()),
                *args,
                str(chart),
                *([f"--values={values_file}"] if values is not None else []),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if result.returncode != 0:
        raise HelmError(result.stderr.strip() or result.stdout.strip())
    return result.stdout


def _template(values: dict[str, Any] | None, chart: Path = CHART) -> str:
    return helm(
        "template", RELEASE, f"--namespace={RELEASE_NAMESPACE}", f"--kube-version={KUBE_VERSION}",
        values=values or {}, chart=chart,
    )  # fmt: skip


def render(values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Template path → the objects `helm template` renders (empty documents dropped).

    Raises HelmError when the values fail values.schema.json or a template fails.
    """
    rendered: dict[str, list[dict[str, Any]]] = {}
    for document in _template(values).split("\n---\n"):
        sources = [line for line in document.splitlines() if line.startswith("# Source: ")]
        source = sources[0].removeprefix("# Source: ") if sources else None
        obj = yaml.safe_load(document)
        if source and obj:
            path = source.split("/", 1)[1]  # without the chart's name
            rendered.setdefault(path, []).append(obj)
    return rendered


def render_notes(values: dict[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install` prints it (`helm template` leaves notes out: the chart is
    copied with a template that renders them into a ConfigMap)."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / CHART.name
        shutil.copytree(CHART, chart)
        shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes.txt")
        (chart / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
            'data: {notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}}\n'
        )
        rendered = _template(values, chart)
    (notes,) = [
        obj["data"]["notes"]
        for obj in yaml.safe_load_all(rendered)
        if obj and obj["metadata"]["name"] == "notes"
    ]
    return notes


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
