"""The ConfigMap holding the training config the trainer reads ($DSGD_CONFIG)."""

from __future__ import annotations

import json

from dsgd_contract.pod import CONFIG_FILE, config_map_name

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.metadata import object_meta


def config_json(job: DistributedSGDJob) -> str:
    """The trainer's config: exactly the spec's training sections, camelCase, defaults filled."""
    return json.dumps(job.spec.training_config().to_wire(), indent=2, sort_keys=True) + "\n"


def build_config_map(job: DistributedSGDJob) -> dict:
    """ConfigMap `<job>-config` with key config.json, mounted read-only at /etc/dsgd."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(job, config_map_name(job.name)),
        "data": {CONFIG_FILE: config_json(job)},
    }
