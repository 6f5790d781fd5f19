"""The CRD on the real kube-apiserver: it installs, and it is exactly as strict as the models.

The oracle is the API server of the session cluster (tests/_cluster.py) with
crds/ applied: its OpenAPI checks, defaulting, CEL rules and strict field
validation. Creates are server-side dry runs (`dryRun=All`,
`fieldValidation=Strict`, as `dsgd validate --server` sends them); the
transition rules are tried by updating a job that really exists. Every
manifest of tests/_crd_cases.py and examples/ gets the same verdict, at the
same field paths, from the server as from `dsgd_operator.manifest.parse_job`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from dsgd_operator import crd
from dsgd_operator.api_requests import call
from dsgd_operator.manifest import parse_job
from dsgd_operator.server_validation import field_paths
from kubernetes import client

from tests._cluster import create_namespace
from tests._crd_cases import (
    ACCEPTED,
    NAMES,
    REFUSED,
    job,
    pydantic_errors,
    without_nulls,
)
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow

JOBS = "/apis/dsgd.io/v1alpha1/namespaces/{namespace}/distributedsgdjobs"
DRY_RUN = [("dryRun", "All"), ("fieldValidation", "Strict")]


def request(
    api: client.ApiClient, method: str, path: str, body: Any = None, query: list | None = None
) -> tuple[int, dict[str, Any]]:
    """One raw API call: (HTTP status, decoded JSON body: the object or a metav1.Status)."""
    code, data = call(api, method, path, body=body, query=query, timeout=30)
    return code, json.loads(data or b"{}")


def server_create(api: client.ApiClient, manifest: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    namespace = manifest["metadata"].get("namespace", "default")
    return request(api, "POST", JOBS.format(namespace=namespace), manifest, DRY_RUN)


def refused_paths(code: int, status: dict[str, Any]) -> set[str]:
    """The field paths of a refusal (empty when the server accepted the object)."""
    if code < 300:
        return set()
    paths = set(field_paths(status, status.get("message", "")))
    assert paths, f"the server refused ({code}) without naming a field: {status}"
    return paths


def error_paths(lines: tuple[str, ...]) -> set[str]:
    """The field paths of pydantic's `path: message` lines."""
    return {line.split(": ", 1)[0] for line in lines}


@pytest.fixture(scope="module")
def api(kube_api: client.ApiClient, crd_installed: None) -> client.ApiClient:
    return kube_api


# --- the CRD itself -------------------------------------------------------------------------


def renamed_crd(group: str) -> dict[str, Any]:
    """Our CRD in another API group, so that a dry-run create validates all of it anew."""
    copied = copy.deepcopy(crd.build_crd())
    copied["metadata"]["name"] = f"{copied['spec']['names']['plural']}.{group}"
    copied["spec"]["group"] = group
    return copied


def test_the_server_compiles_every_rule_and_refuses_a_broken_one(api, kubectl) -> None:
    """Accepting the CRD means: structural, every CEL rule compiles within the cost budget,
    every default validates. A broken rule shows that this is checked."""
    established = kubectl("get", "crd", crd.build_crd()["metadata"]["name"], "-o", "json")
    conditions = {
        c["type"]: c["status"] for c in json.loads(established.stdout)["status"]["conditions"]
    }
    assert conditions["Established"] == "True"
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    code, status = request(api, "POST", path, renamed_crd("dsgd-test.io"), DRY_RUN)
    assert code == 201, status
    broken = renamed_crd("dsgd-test.io")
    spec_schema = broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"][0]["rule"] = "self.topology.nodes >"
    code, status = request(api, "POST", path, broken, DRY_RUN)
    assert code == 422, status
    assert "compilation failed" in status["message"]
    assert "self.topology.nodes >" in status["message"]


# --- agreement on create --------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_accepted_by_both(api, path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        manifest = {**document, "metadata": {**document["metadata"], "namespace": "default"}}
        assert pydantic_errors(manifest) == ()
        code, stored = server_create(api, manifest)
        assert code == 201, stored
        assert stored["spec"] == without_nulls(parse_job(manifest).spec.to_wire())


@pytest.mark.parametrize("spec", [None, *ACCEPTED.values()], ids=["no spec", *ACCEPTED])
def test_server_and_models_accept_the_same_specs(api, spec: dict[str, Any] | None) -> None:
    manifest = job(spec)
    assert pydantic_errors(manifest) == ()
    code, stored = server_create(api, manifest)
    assert code == 201, stored
    # The server's defaults give exactly what the model hands the trainer.
    assert stored["spec"] == without_nulls(parse_job(manifest).spec.to_wire())


@pytest.mark.parametrize(("spec", "paths"), REFUSED.values(), ids=REFUSED.keys())
def test_server_and_models_refuse_the_same_specs(api, spec: dict[str, Any], paths: set[str]):
    manifest = job(spec)
    from_models = pydantic_errors(manifest)
    assert error_paths(from_models) == paths, from_models
    code, status = server_create(api, manifest)
    assert code in (400, 422), status
    assert refused_paths(code, status) == paths, status["message"]


@pytest.mark.parametrize(("name", "valid"), NAMES.items(), ids=[n[:20] for n in NAMES])
def test_server_and_models_agree_on_job_names(api, name: str, valid: bool) -> None:
    manifest = job({}, name=name)
    expected = set() if valid else {"metadata.name"}
    assert error_paths(pydantic_errors(manifest)) == expected
    assert refused_paths(*server_create(api, manifest)) == expected


# None: the server's message is pydantic's, word for word (a static message, or the
# messageExpression rendered by the server). A fragment: the rule's message is static
# (its messageExpression cost more than the server allows), pydantic's names the values;
# both must say this.
MESSAGES: dict[str, str | None] = {
    "hierarchical on the default topology": None,
    "switch epoch without post-local": None,
    "post-local without any switch point": None,
    "nesterov without momentum": None,
    "compressed mini-batch": None,  # rendered from a messageExpression
    "compressed hierarchical": None,  # rendered from a messageExpression
    "switch epoch at the end": "must lie inside training: between 1 and training.epochs - 1",
    "post-local 3.5 rounds to 4 of 4": "between 1 and training.epochs - 1",
    "warm-up longer than training": "longer than training.epochs",
    "downpour without servers": None,
    "servers without downpour": None,  # rendered from a messageExpression
    "downpour with momentum": None,
    "downpour with LARS": None,
}


@pytest.mark.parametrize(("case", "fragment"), MESSAGES.items(), ids=MESSAGES.keys())
def test_server_messages_say_what_pydantic_says(api, case: str, fragment: str | None) -> None:
    manifest = job(REFUSED[case][0])
    code, status = server_create(api, manifest)
    assert code == 422, status
    # A CEL refusal's cause reads "Invalid value: <the rule's message>".
    from_server = sorted(
        cause["message"].removeprefix("Invalid value: ") for cause in status["details"]["causes"]
    )
    from_models = sorted(pydantic_errors(manifest))
    if fragment is None:
        assert from_server == from_models
    else:
        assert len(from_server) == len(from_models) == 1, from_server
        assert from_server[0].split(": ")[0] == from_models[0].split(": ")[0]
        assert fragment in from_server[0] and fragment in from_models[0]


# --- transition rules -------------------------------------------------------------------------

RUNNING = {"algorithm": {"name": "local-sgd"}, "topology": {"nodes": 2}}


@pytest.fixture(scope="module")
def running_job(api) -> Iterator[str]:
    """The URL of a job that really exists with spec RUNNING; deleted with its namespace."""
    namespace = create_namespace(api, "crd")
    manifest = {**job(RUNNING), "metadata": {"name": "running", "namespace": namespace}}
    code, stored = request(api, "POST", JOBS.format(namespace=namespace), manifest)
    assert code == 201, stored
    yield f"{JOBS.format(namespace=namespace)}/running"
    client.CoreV1Api(api).delete_namespace(namespace)


@pytest.mark.parametrize(
    ("update", "paths"),
    [
        ({"topology": {"nodes": 3}}, {"spec.topology"}),
        ({"topology": {"nodes": 2, "gpu": True}}, {"spec.topology"}),
        ({"topology": {"nodes": 2}, "algorithm": {"localSteps": 8}}, {"spec.algorithm"}),
        ({"topology": {"nodes": 2}, "algorithm": {"name": "mini-batch-sgd"}}, {"spec.algorithm"}),
        # Spelling out a default changes nothing; other sections may change.
        ({"topology": {"nodes": 2, "processesPerNode": 1}, "algorithm": {}}, set()),
        ({"topology": {"nodes": 2}, "runPolicy": {"suspend": True}}, set()),
        # The trainer's settings: its checkpoints were made under them.
        ({"topology": {"nodes": 2}, "training": {"epochs": 400}}, {"spec.training"}),
        ({"topology": {"nodes": 2}, "optimizer": {"learningRate": 0.5}}, {"spec.optimizer"}),
        ({"topology": {"nodes": 2}, "template": {"nodeSelector": {"a": "b"}}}, set()),
    ],
)
def test_the_trainers_sections_are_immutable(
    api, running_job: str, update: dict[str, Any], paths: set[str]
) -> None:
    code, current = request(api, "GET", running_job)
    assert code == 200, current
    current["spec"] = update
    code, status = request(api, "PUT", running_job, current, DRY_RUN)
    assert refused_paths(code, status) == paths, status
    if paths:
        causes = status["details"]["causes"]
        assert all("immutable" in cause["message"] for cause in causes), causes
    # A create (no old object) never runs transition rules.
    code, status = server_create(api, job(update))
    assert code == 201, status
