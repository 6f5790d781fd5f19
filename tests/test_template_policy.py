"""The installation's template policy: what spec.template and spec.image may carry.

Each case the issue-14 probe found accepted (nfs, iscsi, gitRepo and flexVolume
volumes, an AppArmor `unconfined` annotation, a serviceAccountName, a projected
token, a toleration of every taint, system-node-critical, any image) is refused
by the default policy with the field named, and accepted again where the
policy allows it. The same policy reaches the operator from the Helm values
(DSGD_TEMPLATE_POLICY) and `dsgd validate --policy values.yaml`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from dsgd_operator import cli
from dsgd_operator.manifest import parse_job
from dsgd_operator.reconcile.options import OperatorOptions
from dsgd_operator.reconcile.reconciler import parse_body
from dsgd_operator.template_policy import DEFAULT_POLICY, TemplatePolicy, policy_problems

from tests._crd_cases import job, pydantic_errors
from tests._helm_chart import objects_of_kind
from tests.conftest import REPO

VOLUMES = {
    "nfs": {"nfs": {"server": "10.0.0.1", "path": "/export"}},
    "iscsi": {"iscsi": {"targetPortal": "10.0.0.1:3260", "iqn": "iqn.x", "lun": 0}},
    "gitRepo": {"gitRepo": {"repository": "https://example.com/r.git"}},
    "flexVolume": {"flexVolume": {"driver": "example.com/driver"}},
}


def refusals(spec: dict[str, Any], policy: TemplatePolicy = DEFAULT_POLICY) -> tuple[str, ...]:
    return policy_problems(parse_job(job(spec)), policy)


@pytest.mark.parametrize("kind", VOLUMES)
def test_volume_types_outside_the_restricted_set_are_refused(kind: str) -> None:
    spec = {"template": {"volumes": [{"name": "v", **VOLUMES[kind]}]}}
    (line,) = refusals(spec)
    assert line.startswith(f"spec.template.volumes[0].{kind}: {kind} volumes are not allowed")
    assert "templatePolicy.allowedVolumeTypes" in line
    allowing = TemplatePolicy(allowed_volume_types=(*DEFAULT_POLICY.allowed_volume_types, kind))
    assert refusals(spec, allowing) == ()


def test_restricted_volume_types_pass() -> None:
    volumes = [
        {"name": "a", "persistentVolumeClaim": {"claimName": "c"}},
        {"name": "b", "configMap": {"name": "m"}},
        {"name": "c", "secret": {"secretName": "s"}},
        {"name": "d", "csi": {"driver": "x"}},
    ]
    assert refusals({"template": {"volumes": volumes}}) == ()


def test_an_apparmor_unconfined_annotation_is_refused_whatever_the_policy() -> None:
    annotation = "container.apparmor.security.beta.kubernetes.io/trainer"
    problems = pydantic_errors(job({"template": {"annotations": {annotation: "unconfined"}}}))
    assert problems == (
        f"spec.template.annotations.{annotation}: security-profile annotations are refused: "
        "dsgd runs every pod with seccomp RuntimeDefault and no privileges, and the template "
        "cannot change that",
    )


def test_a_service_account_needs_the_policy_to_name_it() -> None:
    spec = {"template": {"serviceAccountName": "builder"}}
    assert refusals(spec) == (
        "spec.template.serviceAccountName: 'builder' is not allowed by this installation "
        "(templatePolicy.allowedServiceAccounts: [])",
    )
    assert refusals(spec, TemplatePolicy(allowed_service_accounts=("builder",))) == ()
    assert refusals(spec, TemplatePolicy(allowed_service_accounts=("*",))) == ()


def test_a_projected_token_around_automount_false_is_refused() -> None:
    token = {"serviceAccountToken": {"path": "token", "audience": "api"}}
    spec = {"template": {"volumes": [{"name": "t", "projected": {"sources": [token]}}]}}
    (line,) = refusals(spec)
    assert line.startswith("spec.template.volumes[0].projected.sources[0]: a serviceAccountToken")
    assert refusals(spec, TemplatePolicy(allow_service_account_tokens=True)) == ()


def test_secret_references_follow_the_policy() -> None:
    ref = {"secretKeyRef": {"name": "s", "key": "k"}}
    spec = {"template": {"env": [{"name": "TOKEN", "valueFrom": ref}]}}
    assert refusals(spec) == ()
    (line,) = refusals(spec, TemplatePolicy(allow_secret_references=False))
    assert line.startswith("spec.template.env[0].valueFrom.secretKeyRef: reading Secrets")


@pytest.mark.parametrize(
    ("toleration", "host_level"),
    [
        ({"operator": "Exists"}, True),
        ({"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}, True),
        ({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}, True),
        ({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}, True),
        (
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            False,
        ),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, False),
        ({"key": "team", "operator": "Equal", "value": "ml"}, False),
    ],
)
def test_host_level_tolerations_need_the_policy(toleration: dict, host_level: bool) -> None:
    spec = {"template": {"tolerations": [toleration]}}
    problems = refusals(spec)
    assert bool(problems) == host_level, problems
    if host_level:
        assert problems[0].startswith("spec.template.tolerations[0]: ")
        assert refusals(spec, TemplatePolicy(allow_host_level_tolerations=True)) == ()


def test_system_priority_classes_must_be_listed_by_name() -> None:
    spec = {"scheduling": {"priorityClassName": "system-node-critical"}}
    (line,) = refusals(spec)
    assert line.startswith("spec.scheduling.priorityClassName: 'system-node-critical' is not")
    assert refusals({"scheduling": {"priorityClassName": "research-low"}}) == ()
    listed = TemplatePolicy(allowed_priority_classes=("*", "system-node-critical"))
    assert refusals(spec, listed) == ()
    only = TemplatePolicy(allowed_priority_classes=("research-low",))
    assert refusals({"scheduling": {"priorityClassName": "research-high"}}, only)


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example.com/ml/trainer:1", True),
        ("registry.example.com/ml:1", True),
        ("registry.example.com/ml@sha256:" + "a" * 64, True),
        ("registry.example.com/ml-evil/trainer:1", False),
        ("docker.io/library/busybox", False),
        ("busybox", False),
    ],
)
def test_images_must_come_from_an_allowed_prefix(image: str, allowed: bool) -> None:
    policy = TemplatePolicy(allowed_image_prefixes=("registry.example.com/ml",))
    problems = refusals({"image": image}, policy)
    assert bool(problems) != allowed, problems
    assert refusals({"image": image}) == ()  # the default allows any image


def test_the_operator_refuses_what_its_policy_does_not_allow() -> None:
    body = job({"template": {"serviceAccountName": "builder"}})
    refused_job, problems = parse_body(body)
    assert refused_job is None
    assert problems[0].startswith("spec.template.serviceAccountName: 'builder' is not allowed")
    allowed_job, none = parse_body(body, TemplatePolicy(allowed_service_accounts=("*",)))
    assert allowed_job is not None and none == ()


VALUES = {
    "templatePolicy": {
        "allowedVolumeTypes": ["persistentVolumeClaim", "emptyDir"],
        "allowedServiceAccounts": ["trainer"],
        "allowServiceAccountTokens": False,
        "allowSecretReferences": False,
        "allowHostLevelTolerations": False,
        "allowedPriorityClasses": ["research"],
        "allowedImagePrefixes": ["registry.example.com/ml"],
    }
}


def test_helm_values_reach_the_operator_as_the_same_policy() -> None:
    (deployment,) = objects_of_kind("Deployment", VALUES)
    env = {
        var["name"]: var["value"]
        for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in var
    }
    options = OperatorOptions.from_env(env)
    assert options.template_policy == TemplatePolicy.from_document(VALUES)
    assert options.template_policy.allowed_service_accounts == ("trainer",)
    (default,) = objects_of_kind("Deployment", {})
    default_env = {
        v["name"]: v.get("value")
        for v in default["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert OperatorOptions.from_env(default_env).template_policy == DEFAULT_POLICY


def test_a_typo_in_the_policy_stops_the_operator_with_one_line() -> None:
    with pytest.raises(ValueError) as refused:
        OperatorOptions.from_env({"DSGD_TEMPLATE_POLICY": '{"allowedImagePrefix": []}'})
    assert str(refused.value) == (
        "DSGD_TEMPLATE_POLICY: template policy: allowedImagePrefix: Extra inputs are not permitted"
    )


def validate(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["validate", *args])
    return code, out.getvalue(), err.getvalue()


def test_dsgd_validate_with_the_helm_values_refuses_the_same(tmp_path: Path) -> None:
    values = yaml.safe_load((REPO / "helm" / "dsgd" / "values.yaml").read_text())
    values["templatePolicy"].update(VALUES["templatePolicy"])
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    manifest = job({"image": "busybox", "template": {"serviceAccountName": "root-ish"}})
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(manifest))
    code, out, err = validate("--policy", str(values_file), str(job_file))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{job_file}: {line}"
        for line in policy_problems(parse_job(manifest), TemplatePolicy.from_document(values))
    ]
    assert len(err.splitlines()) == 2
    assert validate(str(job_file))[0] == 0  # no policy given: the spec alone is valid
    broken = tmp_path / "broken.yaml"
    broken.write_text("templatePolicy:\n  allowedVolumeType: [nfs]\n")
    code, _, err = validate("--policy", str(broken), str(job_file))
    assert code == 1 and err.startswith(f"{broken}: template policy: allowedVolumeType: Extra")
