"""Manifests on which the models and the API server with our CRD must agree.

`ACCEPTED` specs are valid; each `REFUSED` spec breaks one rule, with the
field paths where both must report it; `NAMES` are job names and whether they
are valid. Shared by tests/test_crd_server.py and the generator's tests.
"""

from __future__ import annotations

from typing import Any

from dsgd_operator.api import MAX_NAME_LENGTH
from dsgd_operator.manifest import ManifestError, parse_job


def job(spec: dict[str, Any] | None = None, name: str = "job") -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name, "namespace": "default"},
    }
    if spec is not None:
        manifest["spec"] = spec
    return manifest


def pydantic_errors(manifest: dict[str, Any]) -> tuple[str, ...]:
    try:
        parse_job(manifest)
    except ManifestError as error:
        return error.problems
    return ()


def without_nulls(value: Any) -> Any:
    """The wire form as the API server stores it: unset (None) fields are absent."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


HIERARCHICAL = {"name": "hierarchical-local-sgd"}
POST_LOCAL = {"name": "post-local-sgd"}
SHORT = {"warmupEpochs": 0}  # no warm-up: these cases are about the switch point
DOWNPOUR = {"name": "downpour-sgd"}
PLAIN_SGD = {"momentum": 0, "nesterov": False}

ACCEPTED: dict[str, dict[str, Any]] = {
    "all defaults": {},
    "mini-batch": {"algorithm": {"name": "mini-batch-sgd"}, "topology": {"nodes": 4}},
    "hierarchical 2x2": {
        "algorithm": HIERARCHICAL,
        "topology": {"nodes": 2, "processesPerNode": 2},
    },
    "local sign": {"algorithm": {"name": "local-sgd", "compression": "sign"}},
    "evaluation every 50 steps": {"training": {"evalEvery": 50}},
    "evaluation every quarter epoch": {"training": {"evalEvery": 0.25}},
    "DiLoCo outer optimizer": {
        "algorithm": {
            "name": "local-sgd",
            "outerOptimizer": {"learningRate": 0.7, "momentum": 0.9, "nesterov": True},
        }
    },
    "overlapped local SGD, tau = H": {
        "algorithm": {"name": "local-sgd", "localSteps": 8, "overlapSteps": 8}
    },
    "overlapped hierarchical DiLoCo": {
        "algorithm": {
            **HIERARCHICAL,
            "overlapSteps": 1,
            "outerOptimizer": {"learningRate": 0.7, "momentum": 0.9, "nesterov": True},
        },
        "topology": {"nodes": 2, "processesPerNode": 2},
    },
    "poly LARS with zero-γ init": {
        "optimizer": {"lars": True, "schedule": "poly", "weightDecayOnBiases": False},
        "training": {"zeroInitResidual": True},
    },
    "post-local ef-sign": {"algorithm": {**POST_LOCAL, "compression": "ef-sign"}},
    "post-local switch": {"algorithm": {**POST_LOCAL, "switchEpoch": 299}},
    "post-local no milestones but switch": {
        "algorithm": {**POST_LOCAL, "switchEpoch": 10},
        "optimizer": {"milestones": []},
    },
    "post-local 1.5 rounds to 2 of 3": {
        "algorithm": POST_LOCAL,
        "optimizer": {**SHORT, "milestones": [0.5]},
        "training": {"epochs": 3},
    },
    "post-local 4.5 rounds to even 4 of 5": {
        "algorithm": POST_LOCAL,
        "optimizer": {**SHORT, "milestones": [0.9]},
        "training": {"epochs": 5},
    },
    "post-local 0.6 rounds to 1": {
        "algorithm": POST_LOCAL,
        "optimizer": {**SHORT, "milestones": [0.3]},
        "training": {"epochs": 2},
    },
    "no nesterov without momentum": {"optimizer": {"momentum": 0, "nesterov": False}},
    "downpour with two servers": {
        "algorithm": {
            **DOWNPOUR,
            "fetchSteps": 3,
            "pushSteps": 2,
            "serverOptimizer": "adagrad",
            "adagrad": {"epsilon": 1e-8, "initialAccumulator": 0.1},
        },
        "topology": {"nodes": 4, "parameterServers": 2},
        "optimizer": PLAIN_SGD,
        "template": {"parameterServerResources": {"requests": {"cpu": "2"}}},
    },
    "warm-up as long as training": {"optimizer": {"warmupEpochs": 10}, "training": {"epochs": 10}},
    # The default warm-up (5 epochs) is capped at half of training: no default refuses a spec.
    "one epoch with the default warm-up": {"training": {"epochs": 1}},
    "three epochs with the default warm-up": {"training": {"epochs": 3}},
    "no milestones": {"optimizer": {"milestones": []}},
    "plug-ins": {
        "training": {"model": "lab.models:build", "dataset": {"name": "lab.data:load"}},
    },
    "explicit nulls are unset": {
        "algorithm": {"switchEpoch": None},
        "training": {"outputDir": None},
        "image": None,
    },
    "pod overrides": {
        "image": "registry.example/trainer:1",
        "template": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "ckpt"}}],
            "resources": {"limits": {"cpu": "4"}},
            "nodeSelector": {"gpu": "a100"},
        },
        "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "All"},
        "scheduling": {"schedulerName": "volcano", "queue": "research"},
    },
}

# Each case breaks one rule; the expected paths are where both must report it.
REFUSED: dict[str, tuple[dict[str, Any], set[str]]] = {
    "hierarchical on one node": (
        {"algorithm": HIERARCHICAL, "topology": {"nodes": 1, "processesPerNode": 2}},
        {"spec.topology.nodes"},
    ),
    "hierarchical with one process per node": (
        {"algorithm": HIERARCHICAL, "topology": {"nodes": 2}},
        {"spec.topology.processesPerNode"},
    ),
    "hierarchical on the default topology": (
        {"algorithm": HIERARCHICAL},
        {"spec.topology.nodes", "spec.topology.processesPerNode"},
    ),
    "compressed mini-batch": (
        {"algorithm": {"name": "mini-batch-sgd", "compression": "sign"}},
        {"spec.algorithm.compression"},
    ),
    "compressed hierarchical": (
        {
            "algorithm": {**HIERARCHICAL, "compression": "ef-sign"},
            "topology": {"nodes": 2, "processesPerNode": 2},
        },
        {"spec.algorithm.compression"},
    ),
    "zero-γ init without residual blocks": (
        {"training": {"model": "mlp", "zeroInitResidual": True}},
        {"spec.training.zeroInitResidual"},
    ),
    "outer optimizer on mini-batch SGD": (
        {"algorithm": {"name": "mini-batch-sgd", "outerOptimizer": {"momentum": 0.9}}},
        {"spec.algorithm.outerOptimizer"},
    ),
    "outer optimizer with compression": (
        {
            "algorithm": {
                "name": "local-sgd",
                "compression": "ef-sign",
                "outerOptimizer": {"learningRate": 0.7},
            }
        },
        {"spec.algorithm.outerOptimizer"},
    ),
    "overlap on mini-batch SGD": (
        {"algorithm": {"name": "mini-batch-sgd", "overlapSteps": 1}},
        {"spec.algorithm.overlapSteps"},
    ),
    "overlap longer than localSteps": (
        {"algorithm": {"name": "post-local-sgd", "localSteps": 2, "overlapSteps": 3}},
        {"spec.algorithm.overlapSteps"},
    ),
    "overlap with sign compression": (
        {"algorithm": {"name": "local-sgd", "compression": "ef-sign", "overlapSteps": 2}},
        {"spec.algorithm.overlapSteps"},
    ),
    "outer Nesterov without momentum": (
        {"algorithm": {"name": "local-sgd", "outerOptimizer": {"nesterov": True}}},
        {"spec.algorithm.outerOptimizer.nesterov"},
    ),
    "evalEvery 2.5": ({"training": {"evalEvery": 2.5}}, {"spec.training.evalEvery"}),
    "downpour without servers": (
        {"algorithm": DOWNPOUR, "optimizer": PLAIN_SGD},
        {"spec.topology.parameterServers"},
    ),
    "servers without downpour": (
        {"algorithm": {"name": "mini-batch-sgd"}, "topology": {"parameterServers": 1}},
        {"spec.topology.parameterServers"},
    ),
    "downpour with momentum": (
        {"algorithm": DOWNPOUR, "topology": {"parameterServers": 1}},
        {"spec.optimizer.momentum"},
    ),
    "downpour with LARS": (
        {
            "algorithm": DOWNPOUR,
            "topology": {"parameterServers": 1},
            "optimizer": {**PLAIN_SGD, "lars": True},
        },
        {"spec.optimizer.lars"},
    ),
    "downpour with an outer optimizer": (
        {
            "algorithm": {**DOWNPOUR, "outerOptimizer": {"momentum": 0.5}},
            "topology": {"parameterServers": 1},
            "optimizer": PLAIN_SGD,
        },
        {"spec.algorithm.outerOptimizer"},
    ),
    "LARS with sign steps": (
        {"algorithm": {"name": "local-sgd", "compression": "sign"}, "optimizer": {"lars": True}},
        {"spec.optimizer.lars"},
    ),
    "switch epoch without post-local": (
        {"algorithm": {"name": "local-sgd", "switchEpoch": 3}},
        {"spec.algorithm.switchEpoch"},
    ),
    "switch epoch at the end": (
        {"algorithm": {**POST_LOCAL, "switchEpoch": 300}},
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local without any switch point": (
        {"algorithm": POST_LOCAL, "optimizer": {"milestones": []}},
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local 1.5 rounds to even 2 of 2": (
        {
            "algorithm": POST_LOCAL,
            "optimizer": {**SHORT, "milestones": [0.75]},
            "training": {"epochs": 2},
        },
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local 3.5 rounds to 4 of 4": (
        {
            "algorithm": POST_LOCAL,
            "optimizer": {**SHORT, "milestones": [0.875]},
            "training": {"epochs": 4},
        },
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local 0.5 rounds to even 0": (
        {
            "algorithm": POST_LOCAL,
            "optimizer": {**SHORT, "milestones": [0.25]},
            "training": {"epochs": 2},
        },
        {"spec.algorithm.switchEpoch"},
    ),
    "warm-up longer than training": (
        {"optimizer": {"warmupEpochs": 10.5}, "training": {"epochs": 10}},
        {"spec.optimizer.warmupEpochs"},
    ),
    "nesterov without momentum": (
        {"optimizer": {"momentum": 0}},
        {"spec.optimizer.nesterov"},
    ),
    "decreasing milestones": (
        {"optimizer": {"milestones": [0.75, 0.5]}},
        {"spec.optimizer.milestones"},
    ),
    "repeated milestone": (
        {"optimizer": {"milestones": [0.5, 0.5]}},
        {"spec.optimizer.milestones"},
    ),
    "milestone at the end": (
        {"optimizer": {"milestones": [0.5, 1.0]}},
        {"spec.optimizer.milestones[1]"},
    ),
    "too many milestones": (
        {"optimizer": {"milestones": [i / 100 for i in range(1, 34)]}},
        {"spec.optimizer.milestones"},
    ),
    "no nodes": ({"topology": {"nodes": 0}}, {"spec.topology.nodes"}),
    "too many nodes": ({"topology": {"nodes": 513}}, {"spec.topology.nodes"}),
    "momentum of one": ({"optimizer": {"momentum": 1.0}}, {"spec.optimizer.momentum"}),
    "zero learning rate": ({"optimizer": {"learningRate": 0}}, {"spec.optimizer.learningRate"}),
    "unknown algorithm": ({"algorithm": {"name": "downpour"}}, {"spec.algorithm.name"}),
    "unknown dataset": (
        {"training": {"dataset": {"name": "imagenet"}}},
        {"spec.training.dataset.name"},
    ),
    "unknown model": ({"training": {"model": "resnet50"}}, {"spec.training.model"}),
    "empty checkpoint dir": ({"training": {"checkpointDir": ""}}, {"spec.training.checkpointDir"}),
    "unknown clean pod policy": (
        {"runPolicy": {"cleanPodPolicy": "Sometimes"}},
        {"spec.runPolicy.cleanPodPolicy"},
    ),
    "typo in a field name": ({"topology": {"gpus": True}}, {"spec.topology.gpus"}),
    "wrong type": ({"topology": {"nodes": "two"}}, {"spec.topology.nodes"}),
}

NAMES = {
    "j": True,
    "job-1": True,
    "a" * MAX_NAME_LENGTH: True,
    "a" * (MAX_NAME_LENGTH + 1): False,
    "Job": False,
    "1job": False,
    "job-": False,
    "my.job": False,
}
