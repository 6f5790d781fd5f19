"""The Helm chart, linted and rendered offline by the real helm CLI (`helm lint`, `helm template`).

tests/test_helm_cluster.py installs it onto the real control plane.

Every rendered object of a built-in kind is schema-checked (kubernetes-validate
--strict; the Prometheus Operator's kinds are created against its own CRDs on the
real API server in test_monitoring_crds.py), the
chart's CRD is the generated one, its RBAC is exactly what the operator uses,
and its values are guarded by values.schema.json.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests._helm_chart import (
    ALL_OPTIONS,
    CHART,
    KUBE_VERSION,
    RELEASE_NAMESPACE,
    REPO,
    HelmError,
    chart_values_with,
    helm,
    objects,
    objects_of_kind,
    operator_roles,
    rbac_grants,
    render,
)

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]
VALUE_SETS = {"defaults": {}, "all-options": ALL_OPTIONS}


def _required_grants(namespaced: bool = False) -> set[tuple[str, str, str]]:
    from dsgd_operator.reconcile.permissions import required_permissions

    return {
        (group, resource, verb)
        for group, resource, verbs in required_permissions(namespaced)
        for verb in verbs
    }


def _only(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    (obj,) = objects_of_kind(kind, values)
    return obj


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_lints_without_warnings(values: dict[str, Any]) -> None:
    report = helm(
        "lint", "--strict", f"--namespace={RELEASE_NAMESPACE}", f"--kube-version={KUBE_VERSION}",
        values=values or {},
    )  # fmt: skip
    assert "0 chart(s) failed" in report and "[WARNING]" not in report, report


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_validates(values: dict[str, Any]) -> None:
    rendered = objects(values)
    kinds = {obj["kind"] for obj in rendered}
    for obj in rendered:
        # CRD kinds: the API server checks these against their CRDs (test_monitoring_crds,
        # test_helm_cluster).
        if obj["apiVersion"].startswith(("monitoring.coreos.com/", "kopf.dev/")):
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    base = {"Deployment", "ServiceAccount", "Service", "Pod"}
    base |= {"Role", "RoleBinding"} if values else {"ClusterRole", "ClusterRoleBinding"}
    assert base <= kinds
    if values:
        monitors = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
        assert monitors | {"Role", "RoleBinding", "ConfigMap"} <= kinds


def test_chart_crd_is_the_generated_crd() -> None:
    from dsgd_operator.crd import render_crd

    chart_crd = CHART / "crds" / "distributedsgdjobs.dsgd.io.yaml"
    peerings = CHART / "crds" / "kopf.dev-peerings.yaml"
    experiments = CHART / "crds" / "sgdexperiments.dsgd.io.yaml"  # tests/test_experiment_grid.py
    assert sorted((CHART / "crds").iterdir()) == [chart_crd, peerings, experiments]
    generated = render_crd()
    assert chart_crd.read_text() == generated, (
        "helm/dsgd/crds is stale: python -m dsgd_operator.crd "
        "--output helm/dsgd/crds/distributedsgdjobs.dsgd.io.yaml"
    )
    assert (REPO / "crds" / chart_crd.name).read_text() == generated
    shown = helm("show", "crds")  # what `helm install` applies first
    for name in (
        "distributedsgdjobs.dsgd.io",
        "sgdexperiments.dsgd.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings",
    ):
        assert f"name: {name}" in shown


def test_chart_version_is_the_package_version() -> None:
    from dsgd_operator.api import DEFAULT_IMAGE

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == version
    deployment = _only("Deployment", {})
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f"dsgd-operator:{version}")
    assert f"--trainer-image={DEFAULT_IMAGE}" in container["args"]


@pytest.mark.parametrize(
    ("bad_values", "named"),
    [
        ("watchNamespaces: team-a\n", "watchNamespaces"),
        ("watchNamespaces: [Team_A]\n", "watchNamespaces"),
        ("operator:\n  livenessPort: http\n", "livenessPort"),
        ("operator:\n  metricsPort: 70000\n", "metricsPort"),
        ("monitoring:\n  prometheusRule:\n    stalledMinutes: 0\n", "stalledMinutes"),
        ("monitoring:\n  prometheusRule:\n    restartsWindow: 1 hour\n", "restartsWindow"),
        ("monitoring:\n  labels:\n    release: 3\n", "release"),
        ("monitoring:\n  serviceMonitor:\n    enable: true\n", "enable"),
        ("dashbords:\n  enabled: true\n", "dashbords"),
        ("image:\n  pullPolicy: Sometimes\n", "pullPolicy"),
        ("image:\n  digest: sha256:abc\n", "digest"),
        ("image:\n  digest: 0123abcd\n", "digest"),
        ("image:\n  repository: Dsgd/Operator\n", "repository"),
        ("image:\n  tag: 'v1:2'\n", "tag"),
        ("global:\n  imageRegistry: https://mirror.example.com\n", "imageRegistry"),
        ("trainerImage:\n  registry: 'mirror example'\n", "registry"),
        ("helmTest:\n  image:\n    tag: ''\n", "helmTest/image"),
        ("helmTest:\n  image: python:3.12\n", "helmTest/image"),
    ],
)
def test_values_schema_rejects_a_bad_values_file(
    tmp_path: Path, bad_values: str, named: str
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(bad_values)
    values = yaml.safe_load(values_file.read_text())
    with pytest.raises(HelmError, match=named):
        render(values)


def test_values_schema_accepts_the_documented_examples() -> None:
    for values in ({}, ALL_OPTIONS, {"monitoring": {"labels": {"release": "kps"}}}):
        render(values)


def test_cluster_wide_rbac_grants_exactly_what_the_operator_uses() -> None:
    assert objects_of_kind("Role", {}) == [] and objects_of_kind("RoleBinding", {}) == []
    (role,) = operator_roles("ClusterRole", {})
    assert rbac_grants(role["rules"]) == _required_grants()
    binding = _only("ClusterRoleBinding", {})
    account = _only("ServiceAccount", {})
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "dsgd-system"}
    ]


def test_namespaced_rbac_uses_roles_in_the_watched_namespaces_only() -> None:
    values = {"watchNamespaces": ["team-a", "team-b"]}
    roles = objects_of_kind("Role", values)
    bindings = objects_of_kind("RoleBinding", values)
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE
    # Nothing cluster-wide for the operator: no list/watch of namespaces or CRDs in
    # namespaced mode (the users' aggregated roles grant nothing until someone is bound).
    assert operator_roles("ClusterRole", values) == []
    assert objects_of_kind("ClusterRoleBinding", values) == []
    for role in roles:
        assert rbac_grants(role["rules"]) == _required_grants(namespaced=True)
    deployment = _only("Deployment", values)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_rbac_has_no_wildcards_and_can_be_turned_off() -> None:
    for values in ({}, {"watchNamespaces": ["a"]}):
        for kind in ("ClusterRole", "Role"):
            for role in objects_of_kind(kind, values):
                for rule in role["rules"]:
                    assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    off = {obj["kind"] for obj in objects({"rbac": {"create": False}})}
    assert not off & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_operator_deployment_runs_the_cli_with_the_values(values: dict[str, Any]) -> None:
    from dsgd_operator.cli import build_parser

    merged = {**yaml.safe_load((CHART / "values.yaml").read_text()), **values}
    deployment = _only("Deployment", values)
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["dsgd", "operator"]
    parsed = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert parsed.peering == "dsgd"
    field_env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert field_env == {"POD_IP": "status.podIP", "POD_ID": "metadata.name"}
    assert parsed.liveness_port == merged["operator"]["livenessPort"]
    assert parsed.metrics_port == merged["operator"]["metricsPort"]
    assert (parsed.namespace or []) == merged["watchNamespaces"]
    trainer = merged["trainerImage"]
    registry = trainer.get("registry", "ghcr.io")
    expected = f"{registry}/{trainer['repository']}:{trainer['tag'] or '0.1.0'}"
    assert parsed.trainer_image == expected

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "health": merged["operator"]["livenessPort"],
        "metrics": merged["operator"]["metricsPort"],
    }
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_operator_environment_becomes_its_options() -> None:
    from dsgd_operator.reconcile.options import OperatorOptions

    deployment = _only("Deployment", ALL_OPTIONS)
    env = {
        var["name"]: var["value"]
        for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in var
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        options = OperatorOptions.from_env()
    assert options.pending_timeout_seconds == ALL_OPTIONS["operator"]["pendingTimeoutSeconds"]
    assert options.restart_backoff_seconds == ALL_OPTIONS["operator"]["restartBackoffSeconds"]
    gpu_pods = options.build_settings.gpu_pods
    assert gpu_pods.runtime_class_name == "nvidia"
    assert gpu_pods.rdma_resources == (("rdma/rdma_shared_device_a", "1"),)
    assert dict(gpu_pods.nccl_env) == {"NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "mlx5_0,mlx5_1"}


def test_metrics_port_zero_turns_operator_metrics_off() -> None:
    values = {"operator": {"metricsPort": 0}}
    service = _only("Service", values)
    assert [p["name"] for p in service["spec"]["ports"]] == ["health"]
    values["monitoring"] = {"serviceMonitor": {"enabled": True}}
    with pytest.raises(HelmError, match="metricsPort"):
        render(values)


def test_helm_test_hook_calls_the_operator_healthz_through_the_service() -> None:
    values = {"operator": {"livenessPort": 8181}}
    service = _only("Service", values)
    hook = next(
        obj
        for obj in objects_of_kind("Pod", values)
        if obj["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    )
    health = next(p for p in service["spec"]["ports"] if p["name"] == "health")
    assert health["port"] == 8181 and health["targetPort"] == "health"
    url = f"http://{service['metadata']['name']}.{RELEASE_NAMESPACE}.svc:8181/healthz"
    (container,) = hook["spec"]["containers"]
    assert container["command"][:2] == ["python", "-c"] and "urlopen" in container["command"][2]
    assert container["command"][-1] == url
    assert hook["spec"]["restartPolicy"] == "Never"
    deployment = _only("Deployment", values)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_service_monitor_selects_the_operator_service() -> None:
    monitor = _only("ServiceMonitor", ALL_OPTIONS)
    service = _only("Service", ALL_OPTIONS)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["extra"] == "sm"


def test_pod_monitor_selects_trainer_pods_and_their_metrics_port() -> None:
    from dsgd_contract import metrics
    from dsgd_operator.builders import BuildSettings, build_pods
    from dsgd_operator.experiments.grid import Cell, Trial
    from dsgd_operator.manifest import load_jobs

    monitor = _only("PodMonitor", ALL_OPTIONS)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    cluster_wide = _only(
        "PodMonitor", chart_values_with(watchNamespaces=[], networkPolicy={"enabled": False})
    )
    assert cluster_wide["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]

    (job,) = load_jobs(REPO / "examples" / "fashion-mnist-local-sgd.yaml")
    # A trial of an SGDExperiment: the labels its experiment gives the job reach the pods.
    job.metadata.labels.update(Trial(Cell(1, {}), 2, job.spec).labels("study"))
    for pod in build_pods(job, BuildSettings()):
        labels = pod["metadata"]["labels"]
        assert expression == {"key": "dsgd.io/job-name", "operator": "Exists"}
        assert expression["key"] in labels
        port_names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in port_names
        # Each relabeling reads a pod label that the builder really sets.
        for relabeling in endpoint["relabelings"]:
            for source in relabeling["sourceLabels"]:
                if source.startswith("__meta_kubernetes_pod_label_"):
                    sanitized = {
                        "__meta_kubernetes_pod_label_"
                        + "".join(ch if ch.isalnum() else "_" for ch in key)
                        for key in labels
                    }
                    assert source in sanitized
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert {"dsgd_job", "node_rank", "attempt", "node"} <= targets
    trial_series_labels = {
        metrics.EXPERIMENT_SERIES_LABEL, metrics.CELL_SERIES_LABEL, metrics.SEED_SERIES_LABEL
    }  # fmt: skip
    assert trial_series_labels <= targets


def test_prometheus_rule_carries_the_values() -> None:
    rule = _only("PrometheusRule", ALL_OPTIONS)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "DSGDJobFailed",
        "DSGDJobRestartingRepeatedly",
        "DSGDTrainingStalled",
        "DSGDLossNaN",
        "DSGDTrainerMetricsMissing",
        "DSGDOperatorDown",
        "DSGDOperatorReconcileErrors",
    }
    assert alerts["DSGDTrainingStalled"]["for"] == "20m"
    assert 'namespace="dsgd-system", job="dsgd"' in alerts["DSGDOperatorDown"]["expr"]
    assert "[2h]" in alerts["DSGDJobRestartingRepeatedly"]["expr"]
    assert alerts["DSGDJobRestartingRepeatedly"]["expr"].rstrip().endswith(">= 3")
    for alert in alerts.values():
        assert alert["labels"]["team"] == "ml" and alert["labels"]["severity"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_dashboards_ship_as_grafana_sidecar_config_maps() -> None:
    import json

    maps = objects_of_kind("ConfigMap", ALL_OPTIONS)
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(maps) == len(files) >= 2
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "dsgd"}
        ((key, text),) = config_map["data"].items()
        source = CHART / "dashboards" / key.removeprefix("dsgd-")
        assert json.loads(text) == json.loads(source.read_text())
    assert objects_of_kind("ConfigMap", {}) == []


def test_monitoring_is_off_by_default() -> None:
    kinds = {obj["kind"] for obj in objects({})}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
