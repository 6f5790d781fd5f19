"""The same generated mutants through the models and through the real API server with our CRD.

Oracle: the session cluster's kube-apiserver (tests/_cluster.py), server-side
dry-run creates with strict field validation, as tests/test_crd_server.py
sends them. Every mutant of tests/_spec_mutants.py gets a verdict from
`parse_job` and one from the server; a disagreement is a mutant one side
accepts and the other refuses, or one both accept but default differently.
The only ones allowed are PYDANTIC_ONLY: rules on values the CRD stores
without looking into (the pod template's Kubernetes objects, the pod's
filesystem layout), which the operator would otherwise meet only as refused
pods (tests/test_server_validation.py checks those against the server too).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from dsgd_operator.manifest import ManifestError, parse_job
from kubernetes import client

from tests._crd_cases import without_nulls
from tests._spec_mutants import spec_mutants
from tests.conftest import EXAMPLES
from tests.test_crd_server import refused_paths, server_create

pytestmark = pytest.mark.slow

MUTANTS = 1_500
SEED = 14

#: Field paths where the models refuse what the CRD's schema cannot see, and why.
PYDANTIC_ONLY = {
    "spec.template.": "Kubernetes' own rules for pod labels, env, volumes, resources, tolerations "
    "and dsgd's reserved names (dsgd_operator.kube_rules, pod_layout); the CRD keeps these "
    "objects as given",
    "spec.training.checkpointDir": "an absolute path outside the pod's reserved mounts "
    "(dsgd_operator.pod_layout)",
    "spec.training.outputDir": "an absolute path outside the pod's reserved mounts",
}


def verdicts(api: client.ApiClient, manifest: dict[str, Any]) -> tuple[Any, Any]:
    """(pydantic's verdict, the server's): the stored spec's wire form, or the refused paths."""
    try:
        ours: Any = without_nulls(parse_job(manifest).spec.to_wire())
    except ManifestError as error:
        ours = {line.split(": ", 1)[0] for line in error.problems}
    code, body = server_create(api, manifest)
    theirs: Any = body.get("spec", {}) if code < 300 else refused_paths(code, body)
    return ours, theirs


def has_whole_float(value: Any) -> bool:
    """Whether `value` holds a whole number written as a float (2.0) anywhere."""
    if isinstance(value, dict):
        return any(has_whole_float(item) for item in value.values())
    if isinstance(value, list):
        return any(has_whole_float(item) for item in value)
    return isinstance(value, float) and value.is_integer()


#: The one way the server refuses what the models accept, a Kubernetes behaviour: a whole
#: number sent as a float (1.0, as this Python client sends it) in an integer field that a
#: CEL rule reads is stored as a float, and CEL then fails the rule ("invalid data,
#: expected int, got float64"). The models read it as the integer, as the server's schema
#: validation does; kubectl and YAML manifests send 1 and never meet it.
SERVER_ONLY_WHOLE_FLOAT = "only the server refuses"


def disagreement(ours: Any, theirs: Any) -> str | None:
    """What is wrong, or None when both agree (or disagree only on a PYDANTIC_ONLY rule)."""
    if isinstance(ours, set) and isinstance(theirs, set):
        return None  # both refuse (the field paths may differ for a broken section)
    if isinstance(ours, set):
        unexplained = {p for p in ours if not p.startswith(tuple(PYDANTIC_ONLY))}
        return f"only pydantic refuses, at {sorted(unexplained)}" if unexplained else None
    if isinstance(theirs, set):
        return f"only the server refuses, at {sorted(theirs)}"
    return None if ours == theirs else "both accept, with other defaults"


def test_models_and_api_server_agree_on_generated_mutants(
    kube_api: client.ApiClient, crd_installed: None
) -> None:
    examples = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            document["metadata"]["namespace"] = "default"
            examples.append(document)
    generated = spec_mutants(examples, MUTANTS, SEED)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda m: verdicts(kube_api, m), generated))
    refused = sum(isinstance(ours, set) for ours, _ in results)
    problems = [
        f"{problem}: ours {o if isinstance(o, set) else 'accepted'}, server "
        f"{t if isinstance(t, set) else 'accepted'}; spec {m['spec']}"
        for m, (o, t) in zip(generated, results, strict=True)
        if (problem := disagreement(o, t))
        and not (problem.startswith(SERVER_ONLY_WHOLE_FLOAT) and has_whole_float(m["spec"]))
    ]
    explained = sum(isinstance(o, set) and not isinstance(t, set) for o, t in results) - sum(
        p.count("only pydantic refuses") for p in problems
    )
    print(
        f"spec mutants: {MUTANTS}, refused by pydantic {refused}, accepted "
        f"{MUTANTS - refused}, disagreements {len(problems)}, pydantic-only rules {explained}"
    )
    assert problems == [], f"{len(problems)} disagreements:\n" + "\n".join(problems[:8])
