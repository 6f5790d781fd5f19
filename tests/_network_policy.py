"""Kubernetes NetworkPolicy semantics (networking.k8s.io/v1, ingress), for rendered policies.

The node agent of the test cluster runs pods as local processes and cannot enforce
NetworkPolicies, so the chart's policies are judged by this transcription of the API's
documented rules instead: a pod selected by no ingress policy accepts everything; a pod
selected by any accepts what one rule of one of them allows; a rule allows a peer when
its `from` is empty or one peer matches (podSelector alone: the policy's namespace;
namespaceSelector alone: every pod there; both: ANDed), and the port when `ports` is empty
or one entry matches (a named port is the destination container's port of that name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    """A pod as a policy sees it: its labels, its namespace's labels, its named ports."""

    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}  # set by the API server


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """metav1.LabelSelector: every matchLabels pair and every matchExpressions entry."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator == "In" and (not present or labels[key] not in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
    return True


def _peer_matches(peer: dict[str, Any], source: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # pod traffic only here
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = selects(namespaces, source.namespace_labels)
    return in_namespace and (pods is None or selects(pods, source.labels))


def _port_matches(ports: list[dict[str, Any]] | None, target: Pod, port: int) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != "TCP":
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        number = target.ports.get(wanted) if isinstance(wanted, str) else wanted
        if number is not None and (number == port or number <= port <= entry.get("endPort", 0)):
            return True
    return False


def ingress_allowed(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    """Whether `source` may open a TCP connection to `target`:`port` under `policies`."""
    isolating = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == target.namespace
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
        and selects(policy["spec"]["podSelector"], target.labels)
    ]
    if not isolating:
        return True
    return any(
        (not rule.get("from") or any(
            _peer_matches(peer, source, policy["metadata"]["namespace"]) for peer in rule["from"]
        )) and _port_matches(rule.get("ports"), target, port)
        for policy in isolating
        for rule in policy["spec"].get("ingress") or []
    )  # fmt: skip


def default_deny(namespace: str) -> dict[str, Any]:
    """The namespace-wide default-deny ingress policy platform teams install."""
    return {
        "metadata": {"name": "default-deny", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
