"""The chart's NetworkPolicies, judged by NetworkPolicy semantics (tests/_network_policy.py).

The pods are the real ones: trainer pods from the operator's builders, the operator and
`helm test` pods from the rendered chart; every namespace also has a default-deny
ingress policy, the case the policies exist for. The test cluster's node agent cannot
enforce NetworkPolicies, so nothing here is a packet test.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from dsgd_contract.pod import METRICS_PORT, RENDEZVOUS_PORT

from tests._helm_chart import RELEASE_NAMESPACE, HelmError, objects, render
from tests._network_policy import Pod, default_deny, ingress_allowed
from tests.conftest import EXAMPLES

TEAM = "team-a"
VALUES = {"networkPolicy": {"enabled": True}, "watchNamespaces": [TEAM, "team-b"]}


def _chart_pod(rendered: list[dict[str, Any]], kind: str) -> Pod:
    (obj,) = [o for o in rendered if o["kind"] == kind]
    spec = obj["spec"]["template"] if kind == "Deployment" else obj
    ports = {
        p["name"]: p["containerPort"]
        for c in spec["spec"]["containers"]
        for p in c.get("ports", [])
    }
    return Pod(obj["metadata"]["namespace"], spec["metadata"]["labels"], ports)


def _trainer_pods() -> list[Pod]:
    from dsgd_operator.api import DistributedSGDJob
    from dsgd_operator.builders import BuildSettings, build_pods

    manifest = yaml.safe_load((EXAMPLES / "digits-hierarchical.yaml").read_text())
    manifest["metadata"]["namespace"] = TEAM
    pods = build_pods(DistributedSGDJob.model_validate(manifest), BuildSettings())
    return [
        Pod(TEAM, pod["metadata"]["labels"],
            {p["name"]: p["containerPort"] for c in pod["spec"]["containers"]
             for p in c.get("ports", [])})
        for pod in pods
    ]  # fmt: skip


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    rendered = objects(VALUES)
    chart_policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    namespaces = {TEAM, "team-b", RELEASE_NAMESPACE, "monitoring", "elsewhere"}
    prometheus_labels = {"app.kubernetes.io/name": "prometheus"}
    node0, node1 = _trainer_pods()
    return {
        "chart": chart_policies,
        "policies": chart_policies + [default_deny(ns) for ns in namespaces],
        "deny_only": [default_deny(ns) for ns in namespaces],
        "operator": _chart_pod(rendered, "Deployment"),
        "helm_test": _chart_pod(rendered, "Pod"),
        "prometheus": Pod("monitoring", prometheus_labels),
        "fake_prometheus": Pod("elsewhere", prometheus_labels),
        "intruder": Pod(TEAM, {"app": "notebook"}),
        "node0": node0,
        "node1": node1,
    }


def test_one_trainers_policy_per_job_namespace_and_one_for_the_operator(world: dict) -> None:
    where = sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in world["chart"])
    assert where == [("dsgd-system", "dsgd-operator"), ("team-a", "dsgd-trainers"),
                     ("team-b", "dsgd-trainers")]  # fmt: skip


def test_trainers_accept_exactly_the_operator_and_prometheus_on_metrics_and_their_gang(
    world: dict,
) -> None:
    policies, node0, node1 = world["policies"], world["node0"], world["node1"]
    assert node0.ports["metrics"] == METRICS_PORT

    def allowed(source: str, port: int, target: Pod = node0) -> bool:
        return ingress_allowed(policies, world[source], target, port)

    assert allowed("operator", METRICS_PORT) and allowed("prometheus", METRICS_PORT)
    assert not allowed("operator", RENDEZVOUS_PORT) and not allowed("prometheus", RENDEZVOUS_PORT)
    # The gang itself: rendezvous and collectives on any port, both ways.
    assert allowed("node1", RENDEZVOUS_PORT) and allowed("node0", 41234, target=node1)
    # Nobody else: other pods of the namespace, a pod named like Prometheus elsewhere.
    assert not allowed("intruder", METRICS_PORT) and not allowed("fake_prometheus", METRICS_PORT)
    # Without the chart's policies the default-deny blocks the metrics (the symptom).
    assert not ingress_allowed(world["deny_only"], world["operator"], node0, METRICS_PORT)


def test_operator_accepts_prometheus_on_metrics_and_helm_test_on_health(world: dict) -> None:
    operator = world["operator"]
    metrics, health = operator.ports["metrics"], operator.ports["health"]
    policies = world["policies"]
    assert ingress_allowed(policies, world["prometheus"], operator, metrics)
    assert not ingress_allowed(policies, world["prometheus"], operator, health)
    assert ingress_allowed(policies, world["helm_test"], operator, health)
    for stranger in ("intruder", "fake_prometheus", "node0"):
        assert not ingress_allowed(policies, world[stranger], operator, metrics), stranger


def test_policies_are_off_by_default_and_need_namespaces_in_cluster_wide_mode() -> None:
    assert not [o for o in objects({}) if o["kind"] == "NetworkPolicy"]
    with pytest.raises(HelmError, match=r"networkPolicy\.jobNamespaces"):
        render({"networkPolicy": {"enabled": True}})
    custom = {"networkPolicy": {"enabled": True, "jobNamespaces": ["ml"], "prometheus": {
        "namespaceSelector": {"matchLabels": {"team": "obs"}}, "podSelector": {}}}}  # fmt: skip
    trainers = [o for o in objects(custom) if o["metadata"]["name"] == "dsgd-trainers"]
    assert [t["metadata"]["namespace"] for t in trainers] == ["ml"]
