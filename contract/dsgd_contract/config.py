"""The training configuration: one torch-free source of truth for both sides.

The operator embeds these models in the `DistributedSGDJob` spec (and generates
the CRD from them); the trainer reads exactly the same JSON back from the
ConfigMap the operator mounts. Keep this module free of torch and kopf imports:
the operator image has no torch and the trainer image has no kopf.

Field names are camelCase on the wire (YAML/JSON) and snake_case in Python.
Every model forbids unknown fields so that a typo in a manifest is an error
naming the field, not a silently ignored setting.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from dsgd_contract.downpour import DOWNPOUR, Adagrad, ServerOptimizerName
from dsgd_contract.outer_optimizer import OuterOptimizer
from dsgd_contract.spec_model import SpecModel, raise_cross_field_errors
from dsgd_contract.topology import MAX_NODES, Topology

# Re-exported: their homes are spec_model and topology.
__all__ = ["MAX_NODES", "SpecModel", "Topology", "raise_cross_field_errors"]

#: A `package.module:function` reference to user code in the trainer image.
PLUGIN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"

#: Upper bounds of the other counts. Every integer of the spec has one, so that
#: no value overflows int64 on the API server or an arithmetic on the way (the
#: CRD gets the same maximum from these models); far beyond any real run.
MAX_EPOCHS = 100_000
MAX_STEPS = 100_000
MAX_COUNT = 2**31 - 1  # batch sizes and sample counts: int32
#: The warm-up of the recipe (Goyal et al.: 5 epochs) when warmupEpochs is unset,
#: capped at half of training so that a default never makes a short run invalid.
DEFAULT_WARMUP_EPOCHS = 5.0
#: Paths are at most PATH_MAX bytes on Linux.
MAX_PATH_LENGTH = 4096

AlgorithmName = Literal[
    "mini-batch-sgd", "local-sgd", "post-local-sgd", "hierarchical-local-sgd", "downpour-sgd"
]
Compression = Literal["none", "sign", "ef-sign"]
BUILTIN_MODELS = ("resnet20", "cnn", "mlp")
#: The built-in models with residual blocks, where training.zeroInitResidual applies.
RESIDUAL_MODELS = ("resnet20",)
BUILTIN_DATASETS = ("synthetic", "digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
#: The algorithms whose global sync may be compressed (sign, ef-sign); the CRD's CEL rule,
#: this model's cross-field check and the trainer all read it from here.
COMPRESSIBLE_ALGORITHMS = ("local-sgd", "post-local-sgd")
#: The algorithms whose global averaging may overlap local steps (algorithm.overlapSteps).
OVERLAP_ALGORITHMS = ("local-sgd", "post-local-sgd", "hierarchical-local-sgd")


def _builtin_or_plugin(what: str, value: str, builtins: tuple[str, ...]) -> str:
    # fullmatch: match's $ would let a trailing newline through (the CRD's pattern does not).
    if value not in builtins and not re.fullmatch(PLUGIN_PATTERN, value):
        raise ValueError(
            f"unknown {what} {value!r}; use one of {', '.join(builtins)} "
            "or a package.module:function plug-in"
        )
    return value


class Algorithm(SpecModel):
    """The distributed SGD algorithm and its communication schedule."""

    name: AlgorithmName = Field(
        "local-sgd",
        description=(
            "mini-batch-sgd (gradient all-reduce every step), local-sgd (average parameters "
            "every localSteps), post-local-sgd (mini-batch before switchEpoch, local after), "
            "hierarchical-local-sgd (intra-node every localSteps, global every "
            "localSteps × blockSteps), downpour-sgd (asynchronous: parameter servers, "
            "Dean et al. 2012)."
        ),
    )
    local_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = Field(
        4, description="H: local optimizer steps between two averagings (local variants)."
    )
    switch_epoch: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | None = Field(
        None,
        description=(
            "post-local-sgd: epoch at which mini-batch SGD switches to local SGD. "
            "Default: the first lr milestone."
        ),
    )
    block_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = Field(
        4,
        description="hierarchical-local-sgd: H_b, intra-node averagings per global averaging.",
    )
    compression: Compression = Field(
        "none",
        description=(
            "Compression of the global model deltas, as Lin et al.'s code runs it: none; sign "
            "(sign steps locally, ranks average signs and scales apart); ef-sign (SGD steps, "
            "error feedback). Only for local-sgd and post-local-sgd."
        ),
    )

    overlap_steps: Annotated[int, Field(ge=0, le=MAX_STEPS)] = Field(
        0,
        description=(
            "τ: the global averaging runs behind this many local steps, then x ← mean(snapshot) "
            "+ (x − snapshot); 0: blocking averaging. At most localSteps; local variants, "
            "uncompressed."
        ),
    )
    outer_optimizer: OuterOptimizer = Field(
        default_factory=OuterOptimizer,
        description=(
            "At each global sync of local-sgd, post-local-sgd and hierarchical-local-sgd "
            "(uncompressed): SGD with momentum on the averaged pseudo-gradient. Presets: "
            "SlowMo {learningRate: 1, momentum: 0.6}; DiLoCo {learningRate: 0.7, "
            "momentum: 0.9, nesterov: true}."
        ),
    )

    fetch_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = Field(
        1,
        description=(
            f"{DOWNPOUR}: n_fetch, steps between two fetches of the parameters from the servers."
        ),
    )
    push_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = Field(
        1,
        description=(
            f"{DOWNPOUR}: n_push, steps between two pushes of the gradients accumulated "
            "since the last push."
        ),
    )
    server_optimizer: ServerOptimizerName = Field(
        "adagrad",
        description=(
            f"{DOWNPOUR}: what the servers apply to a pushed gradient: adagrad "
            "(per-coordinate η/√Σg², Dean et al.) or sgd (w ← w − η·g)."
        ),
    )
    adagrad: Adagrad = Field(
        default_factory=Adagrad, description=f"{DOWNPOUR}: the servers' Adagrad constants."
    )

    @property
    def local_sign_steps(self) -> bool:
        """Whether local steps are sign steps (compression `sign`, Lin et al.'s local_sign_sgd)."""
        return self.compression == "sign"


class Optimizer(SpecModel):
    """SGD with the large-batch recipe: linear scaling, warm-up, step decay, optional LARS."""

    learning_rate: Annotated[float, Field(gt=0, le=100)] = Field(
        0.1, description="Learning rate for a global batch of baseBatchSize samples."
    )
    base_batch_size: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        128, description="The global batch size learningRate was tuned for."
    )
    scaling: Literal["none", "linear"] = Field(
        "linear",
        description="linear: lr × globalBatch / baseBatchSize (Goyal et al. 2017); none: as given.",
    )
    warmup_epochs: Annotated[float, Field(ge=0, le=MAX_EPOCHS)] | None = Field(
        None,
        description=(
            "Epochs over which the lr rises linearly, per iteration, to the scaled lr. "
            f"Default: {DEFAULT_WARMUP_EPOCHS:g} (Goyal et al.), or half of training.epochs "
            "when that is shorter."
        ),
    )
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="Momentum factor.")
    nesterov: bool = Field(True, description="Nesterov momentum (needs momentum > 0).")
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(1e-4, description="L2 weight decay.")
    weight_decay_on_normalization: bool = Field(
        False,
        description=(
            "Apply weightDecay to normalisation parameters (BatchNorm γ and β, …). Off, as "
            "Goyal et al. 2017 §5.1 and Lin et al.'s code."
        ),
    )
    weight_decay_on_biases: bool = Field(
        True,
        description="Apply weightDecay to the biases of other layers (the authors' code does).",
    )
    schedule: Literal["step", "poly"] = Field(
        "step",
        description=(
            "After the warm-up: step (× gamma at each milestone, Goyal et al.) or poly "
            "(peak × (1 − progress)^polyPower to 0 at the end, You et al.'s LARS schedule)."
        ),
    )
    poly_power: Annotated[float, Field(gt=0, le=10)] = Field(
        2.0, description="The power of the poly schedule (You et al.: 2)."
    )
    lars: bool = Field(
        False,
        description=(
            "Layer-wise adaptive rate scaling (You et al. 2017). Pair it with a large scaled "
            "learningRate, a warm-up and schedule: poly, as You et al.; with the small lr of "
            "plain SGD the trust ratio makes layer steps tiny."
        ),
    )
    lars_trust: Annotated[float, Field(gt=0, le=1)] = Field(
        0.001, description="LARS trust coefficient η in η‖w‖ / (‖∇w‖ + weightDecay‖w‖)."
    )
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.75],
        max_length=32,
        description="Fractions of training at which the lr is multiplied by gamma.",
    )
    gamma: Annotated[float, Field(gt=0, le=1)] = Field(
        0.1, description="Multiplicative lr decay at each milestone."
    )

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(milestones)):
            raise ValueError(f"must be strictly increasing fractions in (0, 1), got {milestones}")
        return milestones

    @model_validator(mode="after")
    def _check(self) -> Optimizer:
        if self.nesterov and self.momentum == 0:
            raise_cross_field_errors(
                "Optimizer", [(("nesterov",), "Nesterov momentum needs momentum > 0")]
            )
        return self


class Dataset(SpecModel):
    """Where the training data comes from."""

    name: str = Field(
        "fashion-mnist",
        description=(
            "synthetic | digits | mnist | fashion-mnist | cifar10 | cifar100, or a "
            "package.module:function plug-in returning (train, test) datasets."
        ),
        json_schema_extra={"pattern": f"^({'|'.join(BUILTIN_DATASETS)})$|{PLUGIN_PATTERN}"},
    )
    path: str | None = Field(
        None,
        max_length=MAX_PATH_LENGTH,
        description=(
            "Directory holding the files (IDX for MNIST-like sets, python pickle batches "
            "for CIFAR). Default: the usual system locations."
        ),
    )
    train_samples: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None, description="Use only this many training samples (all when unset)."
    )
    test_samples: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None, description="Use only this many test samples (all when unset)."
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return _builtin_or_plugin("dataset", name, BUILTIN_DATASETS)


class Training(SpecModel):
    """Model, data, schedule length, checkpoints and outputs."""

    model: str = Field(
        "resnet20",
        description="resnet20 | cnn | mlp, or a package.module:function plug-in returning a model.",
        json_schema_extra={"pattern": f"^({'|'.join(BUILTIN_MODELS)})$|{PLUGIN_PATTERN}"},
    )
    dataset: Dataset = Field(default_factory=Dataset, description="The dataset.")
    batch_size_per_process: Annotated[int, Field(ge=1, le=65_536)] = Field(
        128, description="B_loc: the mini-batch of each rank."
    )
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = Field(
        300, description="Passes over the training set (all ranks together)."
    )
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(
        0, description="Seed shared by all ranks: initial model, data order."
    )
    zero_init_residual: bool = Field(
        False,
        description=(
            "Start the last BatchNorm of each residual block at γ = 0, so each block starts "
            "as the identity (Goyal et al. 2017 §5.1). Built-in resnet20 only."
        ),
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: autocast the forward pass to bfloat16 (GPUs)."
    )
    eval_every: Annotated[float, Field(gt=0, le=1_000_000_000)] | None = Field(
        None,
        description=(
            "Evaluate every this many steps (a whole number ≥ 1) or this fraction of an epoch "
            "(a number below 1), and at the end. Default: at the end of every epoch."
        ),
    )
    checkpoint_every: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = Field(
        1, description="Checkpoint every this many epochs (0: never); runs resume from the latest."
    )
    checkpoint_dir: str = Field(
        "/checkpoints",
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="Where checkpoints go; mount a PersistentVolumeClaim here to survive restarts.",
    )
    output_dir: str | None = Field(
        None,
        max_length=MAX_PATH_LENGTH,
        description="Where metrics.jsonl and summary.json go. Default: checkpointDir.",
    )

    @field_validator("model")
    @classmethod
    def _known(cls, model: str) -> str:
        return _builtin_or_plugin("model", model, BUILTIN_MODELS)

    @property
    def resolved_output_dir(self) -> str:
        return self.output_dir or self.checkpoint_dir


class TrainingConfig(SpecModel):
    """What the trainer reads: the spec sections that decide the training run.

    This is the JSON in the job's ConfigMap. Cross-field rules that span
    sections live here so that `dsgd validate`, the operator and the trainer
    refuse the same configurations.
    """

    topology: Topology = Field(default_factory=Topology, description="Ranks and devices.")
    algorithm: Algorithm = Field(default_factory=Algorithm, description="The algorithm.")
    optimizer: Optimizer = Field(default_factory=Optimizer, description="The optimizer recipe.")
    training: Training = Field(default_factory=Training, description="Model, data and schedule.")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        # The rules read these models: their module imports this one, hence here.
        from dsgd_contract.config_rules import cross_field_errors

        raise_cross_field_errors("TrainingConfig", cross_field_errors(self))
        return self

    @property
    def switch_epoch(self) -> int | None:
        """The post-local switch epoch, defaulted to the first lr milestone (rounded to an epoch).

        For display and validation; the trainer switches at `post_local_switch_step`.
        """
        return resolve_switch_epoch(self.algorithm, self.optimizer, self.training)

    @property
    def warmup_epochs(self) -> float:
        """The warm-up length in epochs: as set, or the default rule (resolve_warmup_epochs)."""
        return resolve_warmup_epochs(self.optimizer, self.training)


def resolve_warmup_epochs(optimizer: Optimizer, training: Training) -> float:
    """warmupEpochs as set, else DEFAULT_WARMUP_EPOCHS capped at half of training.epochs."""
    if optimizer.warmup_epochs is not None:
        return optimizer.warmup_epochs
    return min(DEFAULT_WARMUP_EPOCHS, training.epochs / 2)


def resolve_switch_epoch(
    algorithm: Algorithm, optimizer: Optimizer, training: Training
) -> int | None:
    """The epoch at which post-local SGD turns local: explicit, or the first milestone."""
    if algorithm.name != "post-local-sgd":
        return None
    if algorithm.switch_epoch is not None:
        return algorithm.switch_epoch
    if not optimizer.milestones:
        return None
    return round(optimizer.milestones[0] * training.epochs)
