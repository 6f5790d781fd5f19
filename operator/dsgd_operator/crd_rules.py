"""The CEL `x-kubernetes-validations` of the DistributedSGDJob CRD (dsgd_operator.crd).

The same rules as `dsgd_contract.config_rules.cross_field_errors` and the models'
validators, so `kubectl apply` refuses what `dsgd validate` refuses (a test on the
real API server checks both on the same manifests).

CEL notes. The API server applies the schema defaults before it runs the
rules, so rules read defaulted fields (`self.training.epochs`) without `has()`;
only fields without a default (`switchEpoch`) need `has()`. Every rule's
message starts with the field path, as the pydantic errors do, and `fieldPath`
points `kubectl` at the same field. Rules only touch bounded values (enums,
numbers, a list of at most 32 milestones), so their estimated cost stays far
below the API server's limits.
"""

from __future__ import annotations

from dsgd_contract.config import COMPRESSIBLE_ALGORITHMS, OVERLAP_ALGORITHMS, RESIDUAL_MODELS
from dsgd_contract.downpour import DOWNPOUR

from dsgd_operator.api import MAX_NAME_LENGTH, NAME_PATTERN


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
        f"self.algorithm.name == '{DOWNPOUR}' || self.topology.parameterServers == 0",
        f"spec.topology.parameterServers: parameter servers belong to {DOWNPOUR}",
        field_path=".topology.parameterServers",
        message_expression=(
            f"'spec.topology.parameterServers: parameter servers belong to {DOWNPOUR}, not ' "
            "+ self.algorithm.name + '; set it to 0'"
        ),
    ),
    cel_rule(
        f"self.algorithm.name != '{DOWNPOUR}' || self.topology.parameterServers > 0",
        f"spec.topology.parameterServers: {DOWNPOUR} needs at least one parameter server",
        field_path=".topology.parameterServers",
    ),
    cel_rule(
        f"self.algorithm.name != '{DOWNPOUR}' || self.optimizer.momentum == 0.0",
        f"spec.optimizer.momentum: {DOWNPOUR}'s replicas take plain SGD steps between "
        "fetches (Dean et al.): set optimizer.momentum to 0 and nesterov to false",
        field_path=".optimizer.momentum",
    ),
    cel_rule(
        f"self.algorithm.name != '{DOWNPOUR}' || !self.optimizer.lars",
        f"spec.optimizer.lars: {DOWNPOUR}'s replicas take plain SGD steps, not LARS",
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
        # Short-circuited: localSteps is read only when τ is set (see Algorithm.overlap_steps).
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
        f"|| (!(self.name in ['mini-batch-sgd', '{DOWNPOUR}']) && self.compression == 'none')",
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
