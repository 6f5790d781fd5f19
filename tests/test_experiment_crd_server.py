"""The SGDExperiment CRD on the real kube-apiserver: it installs, serves the short name and
printer columns, stores templates as written, and refuses what the models refuse.

The oracle is the session cluster's API server (tests/_cluster.py) with crds/
applied; creates are server-side dry runs with strict field validation, as
`dsgd validate --server` sends them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from dsgd_operator.api_requests import call
from dsgd_operator.experiments import crd as experiment_crd
from dsgd_operator.experiments.manifest import parse_experiment
from dsgd_operator.manifest import ManifestError
from kubernetes import client

from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow

EXPERIMENTS = "/apis/dsgd.io/v1alpha1/namespaces/default/sgdexperiments"
DRY_RUN = [("dryRun", "All"), ("fieldValidation", "Strict")]
EXAMPLE = EXAMPLES / "experiments" / "digits-local-vs-minibatch.yaml"


@pytest.fixture(scope="module")
def api(kube_api: client.ApiClient, crd_installed: None) -> client.ApiClient:
    return kube_api


def dry_run_create(api: client.ApiClient, manifest: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    code, data = call(api, "POST", EXPERIMENTS, body=manifest, query=DRY_RUN, timeout=30)
    return code, json.loads(data or b"{}")


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_crd_is_established_with_short_name_and_printer_columns(api, kubectl) -> None:
    name = experiment_crd.CRD_NAME
    stored = json.loads(kubectl("get", "crd", name, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert stored["spec"]["names"]["shortNames"] == ["sgdexp"]
    columns = [c["name"] for c in stored["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Trials", "Done", "Best", "Phase", "Age"]
    listed = kubectl("get", "sgdexp", "-A")  # the short name resolves through discovery
    assert listed.returncode == 0


def test_the_example_is_accepted_and_its_template_stored_as_written(api) -> None:
    manifest = example()
    parse_experiment(manifest)  # the models accept it too
    code, stored = dry_run_create(api, manifest)
    assert code == 201, stored
    # The template is not defaulted by the server: trials are defaulted when they are made.
    assert stored["spec"]["template"] == manifest["spec"]["template"]
    assert stored["spec"]["axes"] == manifest["spec"]["axes"]
    # The server's defaults for the experiment's own fields are the model's.
    model = parse_experiment(manifest).spec
    assert stored["spec"]["maxFailedTrials"] == model.max_failed_trials == 0
    assert stored["spec"]["suspend"] is model.suspend is False


def test_a_partial_spec_axis_is_accepted_and_stored_as_written(api) -> None:
    """benchmarks/: an axis without a field (merge: true), a Downpour cell among others."""
    path = EXAMPLES.parent / "benchmarks" / "experiments" / "time-to-accuracy.yaml"
    manifest = yaml.safe_load(path.read_text())
    parse_experiment(manifest)
    code, stored = dry_run_create(api, manifest)
    assert code == 201, stored
    assert stored["spec"]["axes"] == manifest["spec"]["axes"]  # no field, merge or name added


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda spec: spec["template"]["training"].update(epochz=3), "spec.template"),
        (lambda spec: spec.update(seeds=[1, 1]), "spec.seeds"),
        (lambda spec: spec.update(parallelism=0), "spec.parallelism"),
        (lambda spec: spec["axes"][0].update(field="runPolicy.suspend"), "spec.axes[0].field"),
        (lambda spec: spec["template"]["topology"].update(nodes="2"), "spec.template"),
        (lambda spec: spec["axes"][0].pop("field"), "spec.axes[0].field"),
    ],
    ids=[
        "template-typo",
        "repeated-seed",
        "parallelism",
        "axis-field",
        "template-type",
        "no-field-no-merge",
    ],
)
def test_server_and_models_refuse_the_same_mistakes(api, change, path) -> None:
    manifest = copy.deepcopy(example())
    change(manifest["spec"])
    with pytest.raises(ManifestError) as caught:
        parse_experiment(manifest)
    assert any(p.startswith(path) for p in caught.value.problems), caught.value.problems
    code, status = dry_run_create(api, manifest)
    assert code in (400, 422), status
