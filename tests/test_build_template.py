"""The pure builders: the template's overrides, merged into every pod or refused by field."""

from __future__ import annotations

import kubernetes_validate
import pytest
from dsgd_operator.builders import (
    build_pod,
    build_pods,
)
from dsgd_operator.manifest import parse_job

from tests._build_jobs import (
    CONTRACT_ENV_NAMES,
    FULL_TEMPLATE,
    K8S_VERSION,
    container,
    env_of,
    full_job,
    manifest,
    problems_of,
)

# --- template overrides ------------------------------------------------------------------


def test_template_overrides_are_merged_into_every_pod() -> None:
    job = full_job()
    for pod in build_pods(job):
        meta, spec = pod["metadata"], pod["spec"]
        assert meta["labels"]["team"] == "vision"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "sweeps"
        assert meta["labels"]["dsgd.io/job-name"] == "full-job"
        assert meta["annotations"]["example.com/owner"] == "alice"
        assert spec["nodeSelector"] == FULL_TEMPLATE["nodeSelector"]
        assert spec["tolerations"] == FULL_TEMPLATE["tolerations"]
        assert spec["affinity"] == FULL_TEMPLATE["affinity"]
        assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert spec["serviceAccountName"] == "trainer"
        for volume in FULL_TEMPLATE["volumes"]:
            assert volume in spec["volumes"]
        for mount in FULL_TEMPLATE["volumeMounts"]:
            assert mount in container(pod)["volumeMounts"]
        trainer_env = container(pod)["env"]
        assert trainer_env[-2:] == FULL_TEMPLATE["env"]
        assert container(pod)["resources"] == FULL_TEMPLATE["resources"]
        assert spec["priorityClassName"] == "low"


def test_user_env_comes_after_the_contract_env() -> None:
    names = [name for name, _ in env_of(build_pod(full_job(), 2))]
    assert names.index("GLOO_SOCKET_IFNAME") > max(names.index(n) for n in CONTRACT_ENV_NAMES)


REFUSED_TEMPLATES = [
    ({"env": [{"name": "PET_NNODES", "value": "4"}]}, "spec.template.env[0].name", "set by dsgd"),
    (
        {"env": [{"name": "A", "value": "1"}, {"name": "DSGD_CONFIG", "value": "/x"}]},
        "spec.template.env[1].name",
        "DSGD_CONFIG",
    ),
    (
        {"env": [{"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/x"}]},
        "spec.template.env[0].name",
        "PROMETHEUS_MULTIPROC_DIR",
    ),
    ({"env": [{"value": "1"}]}, "spec.template.env[0].name", "needs a name"),
    (
        {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "spec.template.env[1].name",
        "more than once",
    ),
    ({"volumes": [{"name": "dsgd-tmp", "emptyDir": {}}]}, "spec.template.volumes[0].name", "dsgd"),
    (
        {"volumes": [{"name": "host", "hostPath": {"path": "/var/run"}}]},
        "spec.template.volumes[0].hostPath",
        "isolation",
    ),
    (
        {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "/etc/dsgd"}],
        },
        "spec.template.volumeMounts[0].mountPath",
        "/etc/dsgd",
    ),
    (
        {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "/tmp/"}],
        },
        "spec.template.volumeMounts[0].mountPath",
        "dsgd's",
    ),
    (
        {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "/dev/shm/nccl"}],
        },
        "spec.template.volumeMounts[0].mountPath",
        "dsgd's",
    ),
    (
        {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "w", "mountPath": "/w"}],
        },
        "spec.template.volumeMounts[0].name",
        "'w' is not a volume of template.volumes",
    ),
    ({"env": [{"name": {"nested": 1}}]}, "spec.template.env[0].name", "needs a name"),
    ({"volumes": [{"name": ["v"], "emptyDir": {}}]}, "spec.template.volumes[0].name", "needs"),
    (
        {"volumeMounts": [{"name": {"v": 1}, "mountPath": "/v"}]},
        "spec.template.volumeMounts[0].name",
        "needs a volume name",
    ),
    (
        {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "relative"}],
        },
        "spec.template.volumeMounts[0].mountPath",
        "absolute",
    ),
    ({"labels": {"dsgd.io/node-rank": "9"}}, "spec.template.labels.dsgd.io/node-rank", "dsgd"),
    ({"resources": {"limits": {"cpu": "lots"}}}, "spec.template.resources.limits.cpu", "quantity"),
    ({"resources": {"limit": {"cpu": "1"}}}, "spec.template.resources.limit", "unknown field"),
    # The security context is not part of the template at all.
    ({"securityContext": {"runAsUser": 0}}, "spec.template.securityContext", "unknown field"),
    ({"privileged": True}, "spec.template.privileged", "unknown field"),
    ({"hostNetwork": True}, "spec.template.hostNetwork", "unknown field"),
]


@pytest.mark.parametrize(("template", "path", "words"), REFUSED_TEMPLATES)
def test_refused_template_names_the_field(template: dict, path: str, words: str) -> None:
    problems = problems_of(manifest("bad", template=template))
    assert any(p.startswith(f"{path}:") and words in p for p in problems), problems


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        (
            {
                "topology": {"processesPerNode": 2, "gpu": True},
                "template": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
            },
            "spec.template.resources.limits.nvidia.com/gpu",
            "contradicts topology.processesPerNode (2)",
        ),
        (
            {"template": {"resources": {"requests": {"nvidia.com/gpu": 1}}}},
            "spec.template.resources.requests.nvidia.com/gpu",
            "topology.gpu is false",
        ),
        ({"training": {"checkpointDir": "ckpt"}}, "spec.training.checkpointDir", "absolute"),
        ({"training": {"outputDir": "/etc/dsgd/out"}}, "spec.training.outputDir", "/etc/dsgd"),
    ],
)
def test_pod_layout_conflicts_name_the_field(spec: dict, path: str, words: str) -> None:
    problems = problems_of(manifest("bad", **spec))
    assert any(p.startswith(f"{path}:") and words in p for p in problems), problems


def test_every_template_problem_is_reported_at_once() -> None:
    template = {
        "env": [{"name": "PET_NODE_RANK", "value": "0"}],
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "volumeMounts": [{"name": "h", "mountPath": "/dev/shm"}],
    }
    problems = problems_of(manifest("bad", template=template))
    assert {p.split(":")[0] for p in problems} == {
        "spec.template.env[0].name",
        "spec.template.volumes[0].hostPath",
        "spec.template.volumeMounts[0].mountPath",
    }


def test_a_matching_gpu_count_and_nested_tmp_mounts_are_accepted() -> None:
    job = parse_job(
        manifest(
            "ok",
            topology={"processesPerNode": 2, "gpu": True},
            template={
                "resources": {"limits": {"nvidia.com/gpu": "2"}},
                "volumes": [{"name": "scratch", "emptyDir": {}}],
                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp/scratch"}],
                "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
            },
        )
    )
    kubernetes_validate.validate(build_pod(job, 0), K8S_VERSION, strict=True)
