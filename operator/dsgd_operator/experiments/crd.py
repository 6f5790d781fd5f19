"""The `SGDExperiment` CustomResourceDefinition, generated from the pydantic models.

The structure comes from `dsgd_operator.experiments.api` through the same
structural-schema translation as the job's CRD. `spec.template` gets the job
spec's schema without defaults and without the job's cross-field CEL rules: a
template is checked per trial, with the axes' values in place (by the models,
`dsgd validate` and the operator), and the API server must store it as written.
Axis values are any JSON (a number, a whole algorithm block, or a partial spec).

`python -m dsgd_operator.experiments.crd` writes `crds/sgdexperiments.dsgd.io.yaml`
and the chart's copy (`make crds`); `--check` exits 1 when either is stale.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

from dsgd_contract.experiment import MAX_TRIALS

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.crd import (
    MODELS,
    REPO_ROOT,
    crd_yaml,
    custom_resource_definition,
)
from dsgd_operator.crd_rules import cel_rule
from dsgd_operator.experiments.api import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    SGDExperiment,
)
from dsgd_operator.structural_schema import strip_defaults, structural_schema

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILES = (
    REPO_ROOT / "crds" / f"{CRD_NAME}.yaml",
    REPO_ROOT / "helm" / "dsgd" / "crds" / f"{CRD_NAME}.yaml",
)

PRINTER_COLUMNS = [
    {"name": "Trials", "type": "integer", "jsonPath": ".status.trials.total"},
    {"name": "Done", "type": "integer", "jsonPath": ".status.trials.succeeded"},
    {"name": "Best", "type": "number", "jsonPath": ".status.best.testAccuracy"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# What CEL can check cheaply on the server; the full grid (zip references, every
# trial's validity, the trial count) is checked by the models.
SPEC_RULES = [
    cel_rule(
        "self.seeds.all(s, self.seeds.exists_one(x, x == s))",
        "spec.seeds: each seed once",
        field_path=".seeds",
    ),
    cel_rule(
        "!has(self.axes) || self.axes.all(a, has(a.field) || "
        "(has(a.merge) && a.merge && has(a.name)))",
        "spec.axes: an axis without a field needs merge: true and a name",
        field_path=".axes",
    ),
    cel_rule(
        f"size(self.seeds) <= {MAX_TRIALS}",
        f"spec.seeds: at most {MAX_TRIALS} trials in all",
        field_path=".seeds",
    ),
]


def openapi_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the experiment CRD."""
    experiment = structural_schema(SGDExperiment)
    spec = experiment["properties"]["spec"]
    template = strip_defaults(structural_schema(DistributedSGDJob)["properties"]["spec"])
    template["description"] = spec["properties"]["template"]["description"]
    spec["properties"]["template"] = template
    # Axes are stored as written (merge: false is not added): the trials are what is defaulted.
    axes = spec["properties"]["axes"]
    axes["items"] = strip_defaults(axes["items"])
    spec["x-kubernetes-validations"] = SPEC_RULES
    status = copy.deepcopy(strip_defaults(experiment["properties"]["status"]))
    status["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "type": "object",
        "description": experiment["description"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"{GROUP}/{VERSION}."},
            "kind": {"type": "string", "description": f"{KIND}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object (a plain dict, ready for YAML or the API)."""
    names = {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": SHORT_NAMES}
    return custom_resource_definition(names, openapi_schema(), PRINTER_COLUMNS)


def render_crd() -> str:
    """The CRD as the YAML text committed in `crds/` and the chart (deterministic)."""
    return crd_yaml(
        build_crd(), "dsgd_operator.experiments.crd", f"dsgd_operator.experiments.api, {MODELS}"
    )


def stale_files(text: str) -> list[Path]:
    """The committed CRD files that differ from `text` (or are missing)."""
    return [p for p in CRD_FILES if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    """`python -m dsgd_operator.experiments.crd [--check]`."""
    parser = argparse.ArgumentParser(
        prog="python -m dsgd_operator.experiments.crd",
        description="Generate the SGDExperiment CRD (crds/ and the chart) from the models.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args(argv)
    text = render_crd()
    if args.check:
        stale = stale_files(text)
        for path in stale:
            print(f"{path} is stale or missing: regenerate it with `make crds`", file=sys.stderr)
        return 1 if stale else 0
    for path in CRD_FILES:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
