"""Generated mutants of the example manifests: odd but plausible values a user might write.

`mutants(examples, count, seed)` returns `count` manifests, each an example
with one to three of its spec or template values replaced by a value drawn
from the pools below: values the API server accepts next to ones it refuses
(label keys with spaces, env names with '=', volumes with two sources,
requests above limits, names with a trailing newline, …). Deterministic for
a seed. Only values change; the shape of the manifest stays plausible.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

Manifest = dict[str, Any]

ODD_TEXT = ["ok", "", " ", "with space", "trailing\n", "UPPER", "dot.ted", "x" * 64, "ü", "a=b"]
NAMES = ["job", "j", "job-2", "Job", "job\n", "job-", "1job", "my.job", "a" * 54, "a" * 55, "jöb"]
KEYS = [
    "app",
    "app name",
    "example.com/team",
    "Example.com/team",
    "a/b/c",
    "-bad",
    "k" * 63,
    "k" * 64,
    "under_score",
    "dsgd.io/x",
    "trailing\n",
    "",
]
VALUES = ["v", "", "with space", "v" * 63, "v" * 64, "-v", "a.b_c-d", "line\nbreak"]
ENV_NAMES = ["FOO", "MY_VAR", "MY=VAR", "1ABC", "with space", "a.b", "", "ÜML", "PET_X", "X\n"]
QUANTITIES = ["1", "500m", "2Gi", "0", "-1", "1.5", "abc", 3, "10Ki", "1e3"]
RESOURCE_NAMES = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "example.com/foo",
    "gpu",
    "hugepages-2Mi",
    "Bad Name/x",
]
VOLUME_SOURCES = [
    {"emptyDir": {}},
    {"persistentVolumeClaim": {"claimName": "data"}},
    {"configMap": {"name": "cm"}},
    {"secret": {"secretName": "s"}},
    {"emptyDir": {}, "configMap": {"name": "cm"}},
    {},
    {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
    {"downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}},
]
#: Downward-API fields: served ones, one only volumes serve, unknown ones, bad keys.
FIELD_PATHS = [
    "metadata.name",
    "status.podIP",
    "spec.nodeName",
    "metadata.labels['app']",
    "metadata.labels",
    "metadata.nope",
    "metadata.annotations['a b']",
]
VOLUME_NAMES = ["data", "Data", "data_1", "d" * 63, "d" * 64, "dsgd-x", "", "data\n"]
MOUNT_PATHS = ["/data", "data", "/etc/dsgd", "/mnt/x", "/tmp/sub", "/"]
SUB_PATHS = [None, "sub", "../up", "/abs", "a/../b"]
TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "k", "operator": "Exists", "value": "v"},
    {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"},
    {"key": "k", "operator": "Sometimes"},
    {"key": "bad key", "operator": "Exists"},
    {"operator": "Exists"},
    {"key": "k", "effect": "Never"},
    {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30},
    {"key": "k", "effect": "NoExecute", "tolerationSeconds": 30},
]


def _spec(m: Manifest) -> Manifest:
    return m.setdefault("spec", {})


def _template(m: Manifest) -> Manifest:
    return _spec(m).setdefault("template", {})


def _section(m: Manifest, name: str) -> Manifest:
    return _spec(m).setdefault(name, {})


def mutate_name(m: Manifest, r: random.Random) -> None:
    m["metadata"]["name"] = r.choice(NAMES)


def mutate_topology(m: Manifest, r: random.Random) -> None:
    topology = _section(m, "topology")
    topology[r.choice(["nodes", "processesPerNode"])] = r.choice([0, 1, 2, 3, "2"])


def mutate_training(m: Manifest, r: random.Random) -> None:
    training = _section(m, "training")
    key = r.choice(["epochs", "checkpointDir", "outputDir", "seed"])
    pools = {
        "epochs": [1, 2, 10, 0],
        "checkpointDir": ["/checkpoints", "relative", "/etc/dsgd/x", "/tmp/ck", "/ck\n"],
        "outputDir": ["/out", "/dev/shm/o", "out"],
        "seed": [0, -1, 7],
    }
    training[key] = r.choice(pools[key])


def mutate_scheduling(m: Manifest, r: random.Random) -> None:
    scheduling = _section(m, "scheduling")
    key = r.choice(["schedulerName", "priorityClassName", "queue"])
    scheduling[key] = r.choice(["default-scheduler", "high", "My Scheduler", "a.b", "x\n", ""])


def mutate_image(m: Manifest, r: random.Random) -> None:
    _spec(m)["image"] = r.choice(["busybox", "reg.io/a/b:1", " busybox", "busybox\n", ""])


def mutate_labels(m: Manifest, r: random.Random) -> None:
    field = r.choice(["labels", "annotations", "nodeSelector"])
    _template(m).setdefault(field, {})[r.choice(KEYS)] = r.choice(VALUES)


def mutate_env(m: Manifest, r: random.Random) -> None:
    var: dict[str, Any] = {"name": r.choice(ENV_NAMES)}
    choice = r.random()
    if choice < 0.6:
        var["value"] = r.choice(ODD_TEXT)
    elif choice < 0.8:
        var["valueFrom"] = {"fieldRef": {"fieldPath": r.choice(FIELD_PATHS)}}
    else:
        var["value"] = "v"
        var["valueFrom"] = {"fieldRef": {"fieldPath": "metadata.name"}}
    _template(m).setdefault("env", []).append(var)


def mutate_volume(m: Manifest, r: random.Random) -> None:
    name = r.choice(VOLUME_NAMES)
    template = _template(m)
    template.setdefault("volumes", []).append({"name": name, **r.choice(VOLUME_SOURCES)})
    if r.random() < 0.7:
        mount: dict[str, Any] = {"name": name, "mountPath": r.choice(MOUNT_PATHS)}
        sub_path = r.choice(SUB_PATHS)
        if sub_path is not None:
            mount["subPath"] = sub_path
        template.setdefault("volumeMounts", []).append(mount)


def mutate_resources(m: Manifest, r: random.Random) -> None:
    resources = _template(m).setdefault("resources", {})
    resources.setdefault(r.choice(["requests", "limits"]), {})[r.choice(RESOURCE_NAMES)] = r.choice(
        QUANTITIES
    )


def mutate_tolerations(m: Manifest, r: random.Random) -> None:
    _template(m).setdefault("tolerations", []).append(copy.deepcopy(r.choice(TOLERATIONS)))


def mutate_service_account(m: Manifest, r: random.Random) -> None:
    _template(m)["serviceAccountName"] = r.choice(["default", "Bad", "sa.name", "sa\n", "sa_x"])


MUTATIONS: list[Callable[[Manifest, random.Random], None]] = [
    mutate_name,
    mutate_topology,
    mutate_training,
    mutate_scheduling,
    mutate_image,
    mutate_labels,
    mutate_labels,
    mutate_env,
    mutate_env,
    mutate_volume,
    mutate_volume,
    mutate_resources,
    mutate_resources,
    mutate_tolerations,
    mutate_service_account,
]


def mutants(examples: list[Manifest], count: int, seed: int) -> list[Manifest]:
    """`count` mutants, each of an example chosen in turn, with 1-3 values changed."""
    r = random.Random(seed)
    result = []
    for index in range(count):
        manifest = copy.deepcopy(examples[index % len(examples)])
        for _ in range(r.randint(1, 3)):
            r.choice(MUTATIONS)(manifest, r)
        result.append(manifest)
    return result
