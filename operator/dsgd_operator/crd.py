"""The `DistributedSGDJob` CustomResourceDefinition, generated from the pydantic models.

`build_crd()` assembles it: the structural schema of the spec and status models
(`dsgd_operator.structural_schema`), CEL `x-kubernetes-validations` for the
rules that span fields (the same rules as `dsgd_contract.config_rules.cross_field_errors`
and the models' validators, so `kubectl apply` refuses what `dsgd validate`
refuses), printer columns, and the status subresource.

`python -m dsgd_operator.crd` writes `crds/distributedsgdjobs.dsgd.io.yaml`
(`make crds`); `--check` exits 1 when that file is stale. The file is never
edited by hand.

CEL notes. The API server applies the schema defaults before it runs the
rules, so rules read defaulted fields (`self.training.epochs`) without `has()`;
only fields without a default (`switchEpoch`) need `has()`. Every rule's
message starts with the field path, as the pydantic errors do, and `fieldPath`
points `kubectl` at the same field. Rules only touch bounded values (enums,
numbers, a list of at most 32 milestones), so their estimated cost stays far
below the API server's limits.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from dsgd_contract.config import COMPRESSIBLE_ALGORITHMS, OVERLAP_ALGORITHMS, RESIDUAL_MODELS

from dsgd_operator.api import (
    API_VERSION,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    DistributedSGDJob,
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


def cel_rule(
    rule: str,
    message: str,
    field_path: str | None = None,
    message_expression: str | None = None,
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `message` is the fallback of `messageExpression`."""
    entry = {"rule": rule, "message": message}
    if message_expression is not None:
        entry["messageExpression"] = message_expression
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


# Root rules: the only metadata CEL can see is name (and generateName). Pod
# hostnames `<name>-node-<i>` must stay DNS labels. No fieldPath: metadata has
# no declared properties for one to point at.
ROOT_RULES = [
    cel_rule(
        f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
        f"metadata.name: at most {MAX_NAME_LENGTH} characters, so that pod hostnames "
        "<name>-node-<i> stay within 63",
    ),
    cel_rule(
        f"self.metadata.name.matches('{NAME_PATTERN}')",
        "metadata.name: must be a DNS label: lower-case letters, digits and '-', "
        "starting with a letter and ending with a letter or digit",
    ),
]

# The post-local switch point when switchEpoch is unset: Python's
# round(milestones[0] * epochs), which rounds halves to even, inside [1, epochs - 1].
# CEL has no round(), so the bounds are written out: the product p rounds to
# at least 1 iff p > 0.5, and to at most epochs - 1 iff p < epochs - 0.5, or
# p == epochs - 0.5 and epochs - 1 is even (the half goes down to it).
_FIRST_MILESTONE_SWITCH = "double(self.training.epochs) * self.optimizer.milestones[0]"
_MILESTONE_SWITCH_INSIDE = (
    f"{_FIRST_MILESTONE_SWITCH} > 0.5 && ("
    f"{_FIRST_MILESTONE_SWITCH} < double(self.training.epochs) - 0.5 || "
    f"({_FIRST_MILESTONE_SWITCH} == double(self.training.epochs) - 0.5 && "
    "self.training.epochs % 2 == 1))"
)

SPEC_RULES = [
    cel_rule(
        "self.algorithm.name != 'hierarchical-local-sgd' || self.topology.nodes > 1",
        "spec.topology.nodes: hierarchical-local-sgd needs more than one node "
        "(with one node it is local-sgd)",
        field_path=".topology.nodes",
    ),
    cel_rule(
        "self.algorithm.name != 'hierarchical-local-sgd' || self.topology.processesPerNode > 1",
        "spec.topology.processesPerNode: hierarchical-local-sgd needs more than one process "
        "per node; with one it is only local-sgd with H·H_b steps, use local-sgd",
        field_path=".topology.processesPerNode",
    ),
    cel_rule(
        "self.algorithm.name != 'post-local-sgd' || has(self.algorithm.switchEpoch) "
        "|| size(self.optimizer.milestones) > 0",
        "spec.algorithm.switchEpoch: post-local-sgd needs a switch epoch: set it, "
        "or give optimizer.milestones",
        field_path=".algorithm.switchEpoch",
    ),
    cel_rule(
        "self.algorithm.name != 'post-local-sgd' || (has(self.algorithm.switchEpoch) "
        "? self.algorithm.switchEpoch < self.training.epochs "
        f": size(self.optimizer.milestones) == 0 || ({_MILESTONE_SWITCH_INSIDE}))",
        "spec.algorithm.switchEpoch: the switch point must lie inside training: "
        "between 1 and training.epochs - 1",
        field_path=".algorithm.switchEpoch",
    ),
    cel_rule(
        f"!self.training.zeroInitResidual || self.training.model in {_cel_list(RESIDUAL_MODELS)}",
        "spec.training.zeroInitResidual: zero-γ initialisation applies to the residual models "
        f"({', '.join(RESIDUAL_MODELS)})",
        field_path=".training.zeroInitResidual",
    ),
    cel_rule(
        "!has(self.training.evalEvery) || self.training.evalEvery < 1.0 "
        "|| self.training.evalEvery == double(int(self.training.evalEvery))",
        "spec.training.evalEvery: neither a whole number of steps nor a fraction of an "
        "epoch below 1",
        field_path=".training.evalEvery",
    ),
    cel_rule(
        "!self.optimizer.lars || self.algorithm.compression != 'sign'",
        "spec.optimizer.lars: LARS does not apply with sign compression: its local steps "
        "are sign steps, which ignore a trust ratio",
        field_path=".optimizer.lars",
    ),
    cel_rule(
        "!has(self.optimizer.warmupEpochs) "
        "|| self.optimizer.warmupEpochs <= double(self.training.epochs)",
        "spec.optimizer.warmupEpochs: the warm-up is longer than training.epochs",
        field_path=".optimizer.warmupEpochs",
    ),
]


def _immutable(section: str) -> dict:
    """A transition rule: the section a gang runs with (and checkpointed under) never changes.

    Resuming checkpoints under other settings would mix two experiments in one
    result; the operator refuses the same changes (reconcile.policy).
    """
    return cel_rule(
        "self == oldSelf",
        f"spec.{section}: is immutable; delete the job and create it again to change it",
    )


# algorithm.overlapSteps τ (dsgd_contract.config_rules.overlap_errors).
OVERLAP_RULES = [
    cel_rule(
        f"self.overlapSteps == 0 || self.name in {_cel_list(OVERLAP_ALGORITHMS)}",
        f"spec.algorithm.overlapSteps: overlapped averaging applies to "
        f"{', '.join(OVERLAP_ALGORITHMS)}",
        field_path=".overlapSteps",
    ),
    cel_rule(
        # Reads localSteps only when overlapSteps is set: a CEL rule refuses an integer field
        # written as 1.0 (the server hands it over as a float), pydantic does not.
        "self.overlapSteps == 0 || self.overlapSteps <= self.localSteps",
        "spec.algorithm.overlapSteps: more than localSteps: an averaging must finish before "
        "the next one starts",
        field_path=".overlapSteps",
    ),
    cel_rule(
        "self.overlapSteps == 0 || self.compression == 'none'",
        "spec.algorithm.overlapSteps: overlapped averaging applies to uncompressed syncs",
        field_path=".overlapSteps",
    ),
]

ALGORITHM_RULES = [
    cel_rule(
        f"self.compression == 'none' || self.name in {_cel_list(COMPRESSIBLE_ALGORITHMS)}",
        "spec.algorithm.compression: compression applies only to "
        f"{' and '.join(COMPRESSIBLE_ALGORITHMS)}",
        field_path=".compression",
        message_expression=(
            "'spec.algorithm.compression: ' + self.compression + "
            f"' compression applies only to {' and '.join(COMPRESSIBLE_ALGORITHMS)}, not ' "
            "+ self.name"
        ),
    ),
    cel_rule(
        "!self.outerOptimizer.nesterov || self.outerOptimizer.momentum > 0.0",
        "spec.algorithm.outerOptimizer.nesterov: Nesterov momentum needs momentum > 0",
        field_path=".outerOptimizer.nesterov",
    ),
    cel_rule(
        "(self.outerOptimizer.learningRate == 1.0 && self.outerOptimizer.momentum == 0.0) "
        "|| (self.name != 'mini-batch-sgd' && self.compression == 'none')",
        "spec.algorithm.outerOptimizer: an outer optimizer applies to the uncompressed "
        "global syncs of the local variants",
        field_path=".outerOptimizer",
    ),
    cel_rule(
        "!has(self.switchEpoch) || self.name == 'post-local-sgd'",
        "spec.algorithm.switchEpoch: only post-local-sgd has a switch epoch",
        field_path=".switchEpoch",
    ),
    *OVERLAP_RULES,
    _immutable("algorithm"),
]

TOPOLOGY_RULES = [_immutable("topology")]

TRAINING_RULES = [_immutable("training")]

OPTIMIZER_RULES = [
    _immutable("optimizer"),
    cel_rule(
        "!self.nesterov || self.momentum > 0.0",
        "spec.optimizer.nesterov: Nesterov momentum needs momentum > 0",
        field_path=".nesterov",
    ),
]

# `isSorted()` is Kubernetes' CEL list library; together with "each value
# occurs once" it says strictly increasing.
MILESTONES_RULES = [
    cel_rule(
        "self.isSorted() && self.all(m, self.exists_one(x, x == m))",
        "spec.optimizer.milestones: must be strictly increasing fractions in (0, 1)",
    ),
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
