"""The `DistributedSGDJob` CustomResourceDefinition, generated from the pydantic models.

`build_crd()` assembles it: the structural schema of the spec and status models
(`dsgd_operator.structural_schema`), CEL `x-kubernetes-validations` for the
rules that span fields (the same rules as `dsgd_contract.config_rules.cross_field_errors`
and the models' validators, so `kubectl apply` refuses what `dsgd validate`
refuses), printer columns, and the status subresource.

`python -m dsgd_operator.crd` writes `crds/distributedsgdjobs.dsgd.io.yaml`
(`make crds`); `--check` exits 1 when that file is stale. The file is never
edited by hand.

The CEL rules themselves are dsgd_operator.crd_rules.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from dsgd_operator.api import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    DistributedSGDJob,
)
from dsgd_operator.crd_rules import (
    ALGORITHM_RULES,
    MILESTONES_RULES,
    OPTIMIZER_RULES,
    ROOT_RULES,
    SPEC_RULES,
    TOPOLOGY_RULES,
    TRAINING_RULES,
)
from dsgd_operator.structural_schema import strip_defaults, structural_schema

CRD_NAME = f"{PLURAL}.{GROUP}"
REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / f"{CRD_NAME}.yaml"
# `kubectl get all` lists jobs too (as it lists Jobs and Pods), `kubectl get dsgd` all kinds.
CATEGORIES = ["all", "dsgd"]
#: The models the job's CRD is generated from (named in the generated file's header).
MODELS = "dsgd_operator.api and dsgd_contract.config"

PRINTER_COLUMNS = [
    {"name": "Algorithm", "type": "string", "jsonPath": ".spec.algorithm.name"},
    {"name": "Nodes", "type": "integer", "jsonPath": ".spec.topology.nodes"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Epoch", "type": "number", "jsonPath": ".status.progress.epoch"},
    {"name": "Test-Acc", "type": "number", "jsonPath": ".status.progress.testAccuracy"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # `kubectl get -o wide` only (priority 1): what a GPU cluster's operator looks for.
    {"name": "GPU", "type": "boolean", "jsonPath": ".spec.topology.gpu", "priority": 1},
    {
        "name": "Procs/Node",
        "type": "integer",
        "jsonPath": ".spec.topology.processesPerNode",
        "description": "Ranks per pod; GPUs per pod when GPU is true.",
        "priority": 1,
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Failed")].reason',
        "description": "Why the job failed.",
        "priority": 1,
    },
]


def openapi_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the CRD: generated structure plus the CEL rules."""
    job = structural_schema(DistributedSGDJob)
    spec = job["properties"]["spec"]
    # A copy: status.appliedSpec shares its section schemas with the spec, which get
    # CEL rules below (and YAML would write shared objects as anchors).
    status = copy.deepcopy(strip_defaults(job["properties"]["status"]))
    # kopf may write status.kopf (kopf's own progress lives in dsgd.io/ annotations),
    # and a status written by an older operator may hold fields this one no longer knows.
    status["x-kubernetes-preserve-unknown-fields"] = True
    # One condition per type, merged by type under server-side apply (metav1.Condition's
    # own markers: +listType=map, +listMapKey=type).
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]

    spec["x-kubernetes-validations"] = SPEC_RULES
    sections = spec["properties"]
    sections["topology"]["x-kubernetes-validations"] = TOPOLOGY_RULES
    sections["algorithm"]["x-kubernetes-validations"] = ALGORITHM_RULES
    sections["optimizer"]["x-kubernetes-validations"] = OPTIMIZER_RULES
    sections["training"]["x-kubernetes-validations"] = TRAINING_RULES
    sections["optimizer"]["properties"]["milestones"]["x-kubernetes-validations"] = MILESTONES_RULES

    return {
        "type": "object",
        "description": job["description"],
        "properties": {
            # The API server owns these three; the standard CRD form is plain types.
            "apiVersion": {
                "type": "string",
                "description": f"{API_VERSION}: the versioned schema of this object.",
            },
            "kind": {"type": "string", "description": f"{KIND}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": ROOT_RULES,
    }


def custom_resource_definition(
    names: dict[str, Any], schema: dict[str, Any], printer_columns: list[dict[str, Any]]
) -> dict[str, Any]:
    """A namespaced dsgd.io CRD with one served, stored version and a status subresource.

    `names` holds kind, plural, singular and shortNames; every dsgd kind joins CATEGORIES.
    """
    kind, plural = names["kind"], names["plural"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": names["singular"],
                "shortNames": list(names["shortNames"]),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns,
                }
            ],
        },
    }


def crd_yaml(crd: dict[str, Any], module: str, models: str) -> str:
    """`crd` as the committed YAML text (deterministic), headed by how it is generated."""
    header = (
        f"# Generated by `python -m {module}` (make crds) from the pydantic models in\n"
        f"# {models}. Do not edit: change the models and regenerate.\n"
    )
    return header + yaml.safe_dump(
        crd, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object (a plain dict, ready for YAML or the API)."""
    names = {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": SHORT_NAMES}
    return custom_resource_definition(names, openapi_schema(), PRINTER_COLUMNS)


def render_crd() -> str:
    """The CRD as the YAML text committed in `crds/` (deterministic)."""
    return crd_yaml(build_crd(), "dsgd_operator.crd", MODELS)


def main(argv: list[str] | None = None) -> int:
    """`python -m dsgd_operator.crd [--output FILE] [--check]`."""
    parser = argparse.ArgumentParser(
        prog="python -m dsgd_operator.crd",
        description="Generate the DistributedSGDJob CRD from the pydantic models.",
    )
    parser.add_argument("--output", type=Path, default=CRD_FILE, help=f"default: {CRD_FILE}")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the file differs from the models"
    )
    args = parser.parse_args(argv)
    text = render_crd()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            state = "missing" if current is None else "stale (the models changed)"
            print(
                f"{args.output} is {state}: regenerate it with `make crds` "
                "(python -m dsgd_operator.crd)",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
