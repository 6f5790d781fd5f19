"""`dsgd validate --server`, and what it proves about `dsgd validate` on generated manifests.

Oracle: the session cluster's kube-apiserver (tests/_cluster.py), asked for
server-side dry runs of every object `dsgd render` prints plus the job. The
mutant test is the strong one: whatever `dsgd validate` accepts, the server
must accept too, or the operator would create pods that the server refuses
and the job would never start. PodGroups are not dry-run there: no gang
scheduler (and so no PodGroup API) is installed on the test cluster; the
CLI test checks the one line that says so.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from dsgd_operator.builders import build_children
from dsgd_operator.manifest import ManifestError, parse_job
from dsgd_operator.server_validation import dry_run_create, job_objects
from kubernetes import client
from pydantic.alias_generators import to_snake

from tests._cluster import RESTRICTED, create_namespace
from tests._mutants import mutants
from tests._polling import wait_until
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow

MUTANTS = 1200
SEED = 9
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
#: The valid PriorityClass names of tests/_mutants.py's pool.
PRIORITY_CLASSES = ("default-scheduler", "high", "a.b")


def validate_server(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsgd_operator.cli", "validate", "--server", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": kubeconfig},
    )


@pytest.fixture(scope="module")
def example_namespaces(kube_api: client.ApiClient, crd_installed: None) -> None:
    """The namespaces the examples name, as a cluster admin would have made them."""
    core = client.CoreV1Api(kube_api)
    existing = {ns.metadata.name for ns in core.list_namespace().items}
    for path in EXAMPLE_FILES:
        for document in yaml.safe_load_all(path.read_text()):
            namespace = document["metadata"].get("namespace")
            if namespace and namespace not in existing:
                core.create_namespace({"metadata": {"name": namespace, "labels": RESTRICTED}})
                existing.add(namespace)
                wait_until(
                    lambda ns=namespace: _default_service_account_admitted(core, ns),
                    30,
                    f"the default ServiceAccount of {namespace}",
                )


def _default_service_account_admitted(core: client.CoreV1Api, namespace: str) -> bool:
    """Whether the ServiceAccount admission plugin admits pods (as in create_namespace)."""
    probe = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    try:
        core.create_namespaced_pod(namespace, probe, dry_run="All")
    except client.ApiException as error:
        return "serviceaccount" not in (error.body or "")
    return True


# --- the command ------------------------------------------------------------------------------


def test_every_example_passes_except_the_missing_podgroup_api(cluster, example_namespaces):
    result = validate_server(str(cluster.kubeconfig), *map(str, EXAMPLE_FILES))
    gang = EXAMPLES / "cifar10-post-local-sgd-gpu.yaml"
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    # The one refusal: volcano's PodGroup, whose CRD this cluster does not have.
    assert result.stderr.splitlines() == [
        f"{gang}: PodGroup/cifar10-post-local-sgd: the scheduler's CRD is missing: this cluster "
        "serves no PodGroup in scheduling.volcano.sh/v1beta1; install the gang scheduler "
        "(spec.scheduling.schedulerName) with its CRDs"
    ]
    accepted = [line.split(":")[0] for line in result.stdout.splitlines()]
    assert accepted == [str(p) for p in EXAMPLE_FILES if p != gang]


def test_a_refused_object_is_one_line_naming_file_kind_name_and_field(
    cluster, namespace, tmp_path: Path
) -> None:
    """A pod the restricted namespace refuses (403) and a job the CRD refuses (422)."""
    bad = tmp_path / "bad.yaml"
    document = yaml.safe_load((EXAMPLES / "fashion-mnist-local-sgd.yaml").read_text())
    document["metadata"].pop("namespace", None)
    # Valid for dsgd, but Pod Security's restricted level allows no NFS volume.
    document["spec"]["template"] = {
        "volumes": [{"name": "nfs", "nfs": {"server": "s", "path": "/"}}]
    }
    bad.write_text(yaml.safe_dump(document))
    result = validate_server(str(cluster.kubeconfig), "--namespace", namespace, str(bad))
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    pods = document["spec"]["topology"]["nodes"]
    assert len(lines) == pods, lines
    for rank, line in enumerate(lines):
        assert line.startswith(f"{bad}: Pod/{document['metadata']['name']}-node-{rank}: "), line
        assert "violates PodSecurity" in line and "nfs" in line


def test_no_context_or_an_unreachable_server_is_one_line(cluster, tmp_path: Path) -> None:
    example = str(EXAMPLES / "mini-batch-lars.yaml")
    missing = validate_server(str(tmp_path / "no-such-kubeconfig"), example)
    assert missing.returncode == 1
    assert missing.stderr.startswith("dsgd validate --server: no Kubernetes context")
    assert len(missing.stderr.splitlines()) == 1
    text = Path(cluster.kubeconfig).read_text()
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(text.replace(cluster.server, "https://127.0.0.1:9"))
    started = time.monotonic()
    result = validate_server(str(unreachable), example)
    assert result.returncode == 1
    assert result.stderr.startswith("dsgd validate --server: cannot reach the API server at")
    assert len(result.stderr.splitlines()) == 1
    assert time.monotonic() - started < 60


# --- generated mutants ------------------------------------------------------------------------


def check_mutant(api: client.ApiClient, manifest: dict[str, Any], namespace: str) -> list[str]:
    """Problems with one mutant: a crash anywhere, or objects the server refuses
    although `dsgd validate` accepted the manifest."""
    try:
        job = parse_job(manifest)
    except ManifestError:
        return []
    except Exception:  # a traceback where the user should get one line
        return [f"parse_job crashed: {traceback.format_exc()}"]
    try:
        build_children(job)
        objects = job_objects(job, manifest, namespace)
    except Exception:
        return [f"render crashed: {traceback.format_exc()}"]
    problems = []
    for obj in objects:
        if obj["kind"] == "PodGroup":
            continue  # no gang scheduler's API on this cluster
        refusal = dry_run_create(api, obj, namespace)
        if refusal is not None:
            problems.append(str(refusal))
    return problems


def test_every_mutant_that_validate_accepts_is_accepted_by_the_server(
    kube_api: client.ApiClient, crd_installed: None
) -> None:
    namespace = create_namespace(kube_api, "mutants")
    # What the mutants name and an admin would have made; admission refuses pods without them.
    client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, {"metadata": {"name": "sa.name"}}
    )
    scheduling = client.SchedulingV1Api(kube_api)
    existing = {pc.metadata.name for pc in scheduling.list_priority_class().items}
    made = [name for name in PRIORITY_CLASSES if name not in existing]
    for name in made:
        scheduling.create_priority_class({"metadata": {"name": name}, "value": 1000})
    examples = []
    for path in EXAMPLE_FILES:
        for document in yaml.safe_load_all(path.read_text()):
            document = copy.deepcopy(document)
            document["metadata"]["namespace"] = namespace
            examples.append(document)
    generated = mutants(examples, MUTANTS, SEED)
    accepted = sum(1 for m in generated if not isinstance(_parsed(m), ManifestError))
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda m: check_mutant(kube_api, m, namespace), generated))
    finally:
        client.CoreV1Api(kube_api).delete_namespace(namespace)
        for name in made:
            scheduling.delete_priority_class(name)
    failures = [
        f"{yaml.safe_dump(m.get('spec', {}).get('template', {}) or m['metadata'])} -> {p}"
        for m, p in zip(generated, results, strict=True)
        if p
    ]
    # Both verdicts occur often enough for the comparison to mean something.
    assert 150 < accepted < MUTANTS * 0.9, accepted  # 243 of 1,200 with seed 9
    assert failures == [], f"{len(failures)} of {accepted} accepted mutants:\n" + "\n".join(
        failures[:10]
    )


def _parsed(manifest: dict[str, Any]) -> object:
    try:
        return parse_job(manifest)
    except ManifestError as error:
        return error
    except Exception as error:  # reported by check_mutant with its traceback
        return error


# Mutants the server refused although `dsgd validate` had accepted them (issue 9): now
# refused by `dsgd validate` at the field path, and still by the server (the oracle says
# the refusal is right).
REGRESSIONS: dict[str, tuple[dict[str, Any], str]] = {
    "label key with a space": ({"template": {"labels": {"app name": "x"}}}, "spec.template.labels"),
    "env name with =": (
        {"template": {"env": [{"name": "A=B", "value": "1"}]}},
        "spec.template.env",
    ),
    "volume with two sources": (
        {"template": {"volumes": [{"name": "v", "emptyDir": {}, "configMap": {"name": "c"}}]}},
        "spec.template.volumes[0]",
    ),
    "request above the limit": (
        {"template": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
        "spec.template.resources.requests.cpu",
    ),
    "extended resource without limit": (
        {"template": {"resources": {"requests": {"example.com/foo": "1"}}}},
        "spec.template.resources.limits.example.com/foo",
    ),
    "node count as a string": ({"topology": {"nodes": "2"}}, "spec.topology.nodes"),
    "scheduler name with a space": (
        {"scheduling": {"schedulerName": "my scheduler"}},
        "spec.scheduling.schedulerName",
    ),
    "image with a trailing newline": ({"image": "busybox\n"}, "spec.image"),
    "Exists toleration with a value": (
        {"template": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
        "spec.template.tolerations[0].value",
    ),
    "name with a trailing newline": ({}, "metadata.name"),
    "downward API field the server does not serve": (
        {
            "template": {
                "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.nope"}}}]
            }
        },
        "spec.template.env[0].valueFrom.fieldRef.fieldPath",
    ),
    "all labels into an env variable (only volumes take them)": (
        {
            "template": {
                "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}]
            }
        },
        "spec.template.env[0].valueFrom.fieldRef.fieldPath",
    ),
    "pod IP into a downwardAPI volume (only env takes it)": (
        {
            "template": {
                "volumes": [
                    {
                        "name": "info",
                        "downwardAPI": {
                            "items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]
                        },
                    }
                ]
            }
        },
        "spec.template.volumes[0].downwardAPI.items[0].fieldRef.fieldPath",
    ),
}


@pytest.mark.parametrize(("change", "path"), REGRESSIONS.values(), ids=REGRESSIONS.keys())
def test_validate_now_refuses_what_the_server_refuses(
    kube_api: client.ApiClient, namespace: str, change: dict[str, Any], path: str
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "fashion-mnist-local-sgd.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"].update(change)
    if path == "metadata.name":
        manifest["metadata"]["name"] += "\n"
    with pytest.raises(ManifestError) as refused:
        parse_job(manifest)
    assert any(problem.startswith(path) for problem in refused.value.problems), refused.value
    # The server refuses the job, or one of the objects it would have become (built from
    # the unchanged example with the change set without validation).
    if dry_run_create(kube_api, manifest, namespace):
        return
    job = parse_job(yaml.safe_load((EXAMPLES / "fashion-mnist-local-sgd.yaml").read_text()))
    job.metadata.namespace = namespace
    job.metadata.name = manifest["metadata"]["name"]
    for section, value in change.items():
        if isinstance(value, dict):
            for key, item in value.items():
                setattr(getattr(job.spec, to_snake(section)), to_snake(key), item)
        else:
            setattr(job.spec, to_snake(section), value)
    refusals = [r for obj in build_children(job) if (r := dry_run_create(kube_api, obj, namespace))]
    assert refusals, path
