"""The generated configuration made local (dsgd_cluster.prometheus_config): only discovery's
credentials and the rule files' directory change; `$(VAR)` expands as the config-reloader's.

The end-to-end oracle (the operator's real output, loaded and run by Prometheus) is
tests/test_prometheus_operator.py; these pin the contract on a configuration of the same
shape, including what must stay untouched.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from dsgd_cluster.prometheus_config import expand_env, local_config, reloader_env, rule_files
from kubernetes import client

GENERATED = {
    "global": {
        "scrape_interval": "30s",
        "external_labels": {"prometheus": "monitoring/dsgd", "prometheus_replica": "$(POD_NAME)"},
    },
    "rule_files": ["/etc/prometheus/rules/prometheus-dsgd-rulefiles-0/*.yaml", "/other/*.yaml"],
    "scrape_configs": [
        {
            "job_name": "podMonitor/dsgd-system/dsgd-trainers/0",
            "kubernetes_sd_configs": [{"role": "pod"}],
            "relabel_configs": [
                {"target_label": "__tmp_current_shard", "replacement": "$(SHARD)"},
                {"source_labels": ["__tmp_hash"], "regex": "$(SHARD);|.+;.+", "action": "keep"},
            ],
        },
        {
            "job_name": "serviceMonitor/dsgd-system/dsgd-operator/0",
            "kubernetes_sd_configs": [
                {"role": "endpointslice", "namespaces": {"names": ["dsgd-system"]}}
            ],
        },
        {"job_name": "static", "static_configs": [{"targets": ["127.0.0.1:9090"]}]},
    ],
}


def test_only_credentials_and_rule_paths_change(tmp_path: Path) -> None:
    kubeconfig, rules = tmp_path / "prometheus.kubeconfig", tmp_path / "rules"
    text = local_config(
        yaml.safe_dump(GENERATED), name="dsgd", kubeconfig=kubeconfig, rules_dir=rules
    )
    local = yaml.safe_load(text)
    expected = copy.deepcopy(GENERATED)
    expected["global"]["external_labels"]["prometheus_replica"] = "prometheus-dsgd-0"
    pod_job, service_job, _static = expected["scrape_configs"]
    pod_job["relabel_configs"][0]["replacement"] = "0"
    pod_job["relabel_configs"][1]["regex"] = "0;|.+;.+"
    for job in (pod_job, service_job):
        for discovery in job["kubernetes_sd_configs"]:
            discovery["kubeconfig_file"] = str(kubeconfig)
    expected["rule_files"] = [f"{rules}/prometheus-dsgd-rulefiles-0/*.yaml", "/other/*.yaml"]
    assert local == expected


def test_an_unset_variable_is_refused_by_name() -> None:
    assert expand_env("a $(SHARD) b", reloader_env("x")) == "a 0 b"
    assert expand_env("$ (SHARD) and $SHARD", {}) == "$ (SHARD) and $SHARD"  # not references
    with pytest.raises(ValueError, match="unset variable NODE_NAME"):
        expand_env("node: $(NODE_NAME)", reloader_env("x"))


def test_rule_files_are_laid_out_as_the_statefulset_mounts_them() -> None:
    maps = [
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"prometheus-dsgd-rulefiles-{n}"),
            data={f"ns-rules-{n}.yaml": f"groups: [{n}]"},
        )
        for n in range(2)
    ] + [client.V1ConfigMap(metadata=client.V1ObjectMeta(name="empty"), data=None)]
    assert rule_files(maps) == {
        "prometheus-dsgd-rulefiles-0/ns-rules-0.yaml": "groups: [0]",
        "prometheus-dsgd-rulefiles-1/ns-rules-1.yaml": "groups: [1]",
    }
