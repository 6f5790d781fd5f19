"""Chart options a platform team sets, rendered offline by the real helm CLI: user roles,
mirrored and digest-pinned images, the templated CRD, kubeVersion, name overrides, and
the upgrade story NOTES.txt tells.

tests/test_helm_cluster_installs.py installs the same options on the real control plane.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests._helm_chart import (
    CHART,
    REPO,
    HelmError,
    helm,
    is_user_role,
    objects,
    objects_of_kind,
    rbac_grants,
    render,
    render_notes,
)
from tests.test_helm import KUBE_VERSIONS, _only


def test_templated_crds_are_the_generated_crds_kept_on_uninstall() -> None:
    """crds.enabled (GitOps): each of dsgd's crds/ files itself as a release object, with
    Helm's keep policy unless crds.keep is off; off by default (Helm's crds/ directory
    installs them)."""
    generated = {
        crd["metadata"]["name"]: crd
        for crd in (
            yaml.safe_load((CHART / "crds" / name).read_text())
            for name in ("distributedsgdjobs.dsgd.io.yaml", "sgdexperiments.dsgd.io.yaml")
        )
    }
    assert objects_of_kind("CustomResourceDefinition", {}) == []
    templated = objects_of_kind("CustomResourceDefinition", {"crds": {"enabled": True}})
    assert sorted(crd["metadata"]["name"] for crd in templated) == sorted(generated)
    for crd in templated:
        assert crd["spec"] == generated[crd["metadata"]["name"]]["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        kubernetes_validate.validate(crd, KUBE_VERSIONS[0], strict=True)
    for unkept in objects_of_kind(
        "CustomResourceDefinition", {"crds": {"enabled": True, "keep": False}}
    ):
        assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})


def test_chart_needs_the_kubernetes_release_of_the_crds_validation_rules() -> None:
    """The CRD's CEL rules use fieldPath/reason (1.28+): helm refuses older clusters."""
    uses_reason = "reason:" in (CHART / "crds" / "distributedsgdjobs.dsgd.io.yaml").read_text()
    assert uses_reason
    with pytest.raises(HelmError, match="kubeVersion"):
        helm("template", "dsgd", "--kube-version=1.27.9", values={})
    helm("template", "dsgd", "--kube-version=1.28.0", values={})


DIGEST = "sha256:" + "9f86d081884c7d65" * 4


def _images(values: dict[str, Any]) -> dict[str, Any]:
    """operator and helm-test images, the --trainer-image argument, and both pods' pull secrets."""
    pod = _only("Deployment", values)["spec"]["template"]["spec"]
    test_pod = _only("Pod", values)["spec"]
    args = pod["containers"][0]["args"]
    (trainer,) = [a.removeprefix("--trainer-image=") for a in args if "--trainer-image=" in a]
    return {
        "operator": pod["containers"][0]["image"],
        "trainer": trainer,
        "test": test_pod["containers"][0]["image"],
        "secrets": [pod.get("imagePullSecrets"), test_pod.get("imagePullSecrets")],
        "test_pod": test_pod,
    }


def test_images_pinned_by_digest_render_as_digest_references() -> None:
    """cert-manager's convention: a digest replaces the tag (one image, whatever tags move)."""
    values = {
        "image": {"digest": DIGEST},
        "trainerImage": {"tag": "0.1.0@" + DIGEST},  # the tag@digest form, as some pin it
        "helmTest": {"image": {"digest": DIGEST, "tag": ""}},
    }
    images = _images(values)
    assert images["operator"] == f"ghcr.io/dsgd-io/dsgd-operator@{DIGEST}"
    assert images["trainer"] == f"ghcr.io/dsgd-io/dsgd-trainer:0.1.0@{DIGEST}"
    assert images["test"] == f"docker.io/library/python@{DIGEST}"
    for obj in objects(values):
        if obj["kind"] in ("Deployment", "Pod"):
            kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)


def test_global_image_registry_mirrors_every_image_with_pull_secrets() -> None:
    """An air-gapped install: one value moves the operator, trainer and helm test images."""
    mirror = "harbor.internal:5000/proxy"
    values = {
        "global": {"imageRegistry": mirror, "imagePullSecrets": [{"name": "mirror-cred"}]},
        "imagePullSecrets": [{"name": "regcred"}],
        "helmTest": {"tolerations": [{"operator": "Exists"}], "nodeSelector": {"pool": "cpu"}},
    }
    images = _images(values)
    assert images["operator"] == f"{mirror}/dsgd-io/dsgd-operator:0.1.0"
    assert images["trainer"] == f"{mirror}/dsgd-io/dsgd-trainer:0.1.0"
    assert images["test"] == f"{mirror}/library/python:3.12-slim"
    both = [{"name": "mirror-cred"}, {"name": "regcred"}]
    assert images["secrets"] == [both, both]
    assert images["test_pod"]["tolerations"] == [{"operator": "Exists"}]
    assert images["test_pod"]["nodeSelector"] == {"pool": "cpu"}
    # Without the global registry each image keeps its own; an empty one means none at all.
    images = _images({"image": {"registry": "", "repository": "dsgd-operator"}})
    assert images["operator"] == "dsgd-operator:0.1.0"
    assert images["secrets"] == [None, None]


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}], ids=["cluster", "ns"])
def test_user_roles_aggregate_into_the_built_in_edit_and_view(values: dict[str, Any]) -> None:
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    roles = {
        obj["metadata"]["name"].removeprefix("dsgd-"): obj
        for obj in objects_of_kind("ClusterRole", values)
        if is_user_role(obj)
    }
    assert roles.keys() == {"view", "edit"}
    into = {
        name: {k.removeprefix(aggregate) for k, v in role["metadata"]["labels"].items()
               if k.startswith(aggregate) and v == "true"}
        for name, role in roles.items()
    }  # fmt: skip
    assert into == {"view": {"view", "edit", "admin"}, "edit": {"edit", "admin"}}
    view, edit = rbac_grants(roles["view"]["rules"]), rbac_grants(roles["edit"]["rules"])
    assert {verb for _, _, verb in view} == {"get", "list", "watch"}
    assert ("dsgd.io", "distributedsgdjobs", "create") in edit
    # Status is the operator's: no user role writes it.
    reads = {"get", "list", "watch"}
    assert not [g for g in view | edit if g[1].endswith("/status") and g[2] not in reads]
    off = objects_of_kind("ClusterRole", values | {"rbac": {"aggregateClusterRoles": False}})
    assert not [obj for obj in off if is_user_role(obj)]


def test_name_overrides_rename_every_object_and_label() -> None:
    """fullnameOverride names every object; nameOverride the chart part of names and the
    app.kubernetes.io/name label, which the Deployment's selector and the monitors follow."""
    renamed = objects({"fullnameOverride": "ml-ops", "monitoring": {
        "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}})  # fmt: skip
    names = {obj["metadata"]["name"] for obj in renamed}
    assert names and all(name.startswith("ml-ops") for name in names), names
    (rule,) = [obj for obj in renamed if obj["kind"] == "PrometheusRule"]
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any('job="ml-ops"' in expr for expr in exprs)  # the Service's name is the scrape job
    (deployment,) = objects_of_kind("Deployment", {"nameOverride": "sgd-ops"})
    assert deployment["metadata"]["name"] == "dsgd-sgd-ops"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/name"] == "sgd-ops"
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    with pytest.raises(HelmError, match="fullnameOverride"):
        render({"fullnameOverride": "ML_Ops"})


def test_notes_tell_the_user_what_to_do_next() -> None:
    notes = render_notes(
        {"watchNamespaces": ["team-a"], "monitoring": {"podMonitor": {"enabled": True}}}
    )
    assert "helm test dsgd" in notes and "team-a" in notes
    assert "monitoring.labels.release" in notes  # the kube-prometheus-stack hint
    # The one upgrade story: the new CRD applied BEFORE helm upgrade, values reset to the
    # new chart's defaults and then the release's own reapplied.
    apply, upgrade = notes.index("kubectl apply --server-side"), notes.index("helm upgrade dsgd")
    assert apply < upgrade and "BEFORE" in notes
    assert "--reset-then-reuse-values" in notes and "--reuse-values" not in notes.replace(
        "--reset-then-reuse-values", ""
    )
    gitops = render_notes({"crds": {"enabled": True}})
    assert "--skip-crds" in gitops and "kubectl apply --server-side" not in gitops
    example = notes.split("-f examples/")[1].split()[0]
    assert (REPO / "examples" / example).is_file()
