"""The Prometheus Operator's generated configuration, made the local Prometheus' own.

The operator writes the configuration of Prometheus `<namespace>/<name>` into Secret
`prometheus-<name>` (key `prometheus.yaml.gz`: scrape jobs from every selected
ServiceMonitor and PodMonitor) and the selected PrometheusRules into ConfigMaps
`prometheus-<name>-rulefiles-<n>`. In a cluster, its StatefulSet mounts both, and the
config-reloader sidecar expands `$(VAR)` references from the pod's environment into the
file Prometheus reads, then POSTs `/-/reload`. `python -m dsgd_cluster.prometheus_config`
plays that sidecar for the Debian Prometheus running beside the local cluster
(dsgd_cluster.monitoring), and `local_config` changes two things only, both for where
Prometheus runs rather than what it scrapes:

- every `kubernetes_sd_configs` entry gets `kubeconfig_file`: Prometheus' ServiceAccount
  token as a kubeconfig (a pod would read `/var/run/secrets/...` and dial the `kubernetes`
  Service, neither of which exists on this machine);
- `rule_files` under `/etc/prometheus/rules/` point into the local rules directory.

Scrape jobs, relabelings, intervals and rules stay exactly as the operator generated them.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

CONFIG_KEY = "prometheus.yaml.gz"
RULES_MOUNT = "/etc/prometheus/rules/"
#: A fresh ServiceAccount token lives this long, and is renewed at half its life.
TOKEN_SECONDS = 24 * 3600
POLL_SECONDS = 2.0
_ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` as the config-reloader does; an unset variable is an error (ValueError)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ValueError(f"the generated configuration refers to unset variable {name}")
        return env[name]

    return _ENV_REFERENCE.sub(value, text)


def reloader_env(name: str) -> dict[str, str]:
    """The variables the StatefulSet gives the sidecar of the one replica of shard 0."""
    return {"POD_NAME": f"prometheus-{name}-0", "SHARD": "0"}


def _expand_strings(node: Any, env: Mapping[str, str]) -> Any:
    """expand_env on every string of a parsed document: a value stays a string (`$(SHARD)`
    becomes "0", not the number a textual substitution would let YAML read)."""
    if isinstance(node, dict):
        return {key: _expand_strings(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_strings(value, env) for value in node]
    return expand_env(node, env) if isinstance(node, str) else node


def local_config(generated: str, *, name: str, kubeconfig: Path, rules_dir: Path) -> str:
    """The operator's configuration `generated` (YAML) as the local Prometheus runs it."""
    document: dict[str, Any] = _expand_strings(yaml.safe_load(generated) or {}, reloader_env(name))
    for job in document.get("scrape_configs") or []:
        for discovery in job.get("kubernetes_sd_configs") or []:
            discovery["kubeconfig_file"] = str(kubeconfig)
    document["rule_files"] = [
        str(rules_dir / path.removeprefix(RULES_MOUNT)) if path.startswith(RULES_MOUNT) else path
        for path in document.get("rule_files") or []
    ]
    return yaml.safe_dump(document, sort_keys=False)


def rule_files(configmaps: list[client.V1ConfigMap]) -> dict[str, str]:
    """`<configmap>/<key>` → rules, as the StatefulSet mounts the rule ConfigMaps."""
    return {
        f"{cm.metadata.name}/{key}": text
        for cm in configmaps
        for key, text in (cm.data or {}).items()
    }


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # Prometheus never reads a half-written file
    return True


class ConfigSync:
    """Keeps `<directory>/prometheus.yml` and `<directory>/rules/` equal to what the operator
    generated for Prometheus `namespace/name`, and the ServiceAccount token fresh."""

    def __init__(
        self, api: client.ApiClient, namespace: str, name: str, directory: Path, account: str
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.name, self.account = namespace, name, account
        self.config_file = directory / "prometheus.yml"
        self.rules_dir = directory / "rules"
        self.token_file = directory / "token"
        self.kubeconfig = directory / "prometheus.kubeconfig"

    def renew_token(self) -> bool:
        """A new token when the file is missing or past half its life; True if renewed."""
        fresh = time.time() - TOKEN_SECONDS / 2
        if self.token_file.exists() and self.token_file.stat().st_mtime > fresh:
            return False
        request = {"spec": {"expirationSeconds": TOKEN_SECONDS}}
        issued = self.core.create_namespaced_service_account_token(
            self.account, self.namespace, request
        )
        _write_if_changed(self.token_file, issued.status.token)
        self.token_file.chmod(0o600)
        return True

    def sync(self) -> bool:
        """Write what changed; True if Prometheus must reload. False while nothing is generated."""
        try:
            secret = self.core.read_namespaced_secret(f"prometheus-{self.name}", self.namespace)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        if not secret.data or CONFIG_KEY not in secret.data:
            return False
        generated = gzip.decompress(base64.b64decode(secret.data[CONFIG_KEY])).decode()
        configmaps = self.core.list_namespaced_config_map(
            self.namespace, label_selector=f"prometheus-name={self.name}"
        ).items
        changed = False
        wanted = rule_files(configmaps)
        for path, text in wanted.items():
            changed |= _write_if_changed(self.rules_dir / path, text)
        for stale in self.rules_dir.glob("*/*"):
            if str(stale.relative_to(self.rules_dir)) not in wanted:
                stale.unlink()
                changed = True
        text = local_config(
            generated, name=self.name, kubeconfig=self.kubeconfig, rules_dir=self.rules_dir
        )
        return _write_if_changed(self.config_file, text) or changed


def reload(url: str) -> str | None:
    """POST Prometheus' `/-/reload`; None when it took the configuration, else why not."""
    request = urllib.request.Request(f"{url}/-/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30):
            return None
    except urllib.error.HTTPError as error:
        return f"{error.code}: {error.read().decode(errors='replace').strip()}"
    except (urllib.error.URLError, OSError) as error:
        return str(error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsgd_cluster.prometheus_config")
    parser.add_argument("--kubeconfig", required=True, help="reads the operator's Secret")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True, help="the Prometheus object")
    parser.add_argument("--service-account", required=True, help="Prometheus' own identity")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--prometheus-url", required=True)
    args = parser.parse_args(argv)
    api = config.new_client_from_config(config_file=args.kubeconfig)
    sync = ConfigSync(api, args.namespace, args.name, args.dir, args.service_account)
    pending = False  # a change Prometheus has not taken yet (it may be starting)
    while True:
        try:
            sync.renew_token()
            pending |= sync.sync()
        except (client.ApiException, urllib.error.URLError, OSError) as error:
            print(f"sync failed, retrying: {error}", file=sys.stderr, flush=True)
        except ValueError as error:
            print(f"not applied: {error}", file=sys.stderr, flush=True)
        if pending:
            refused = reload(args.prometheus_url)
            pending = refused is not None
            print(f"reload: {refused or 'ok'}", file=sys.stderr, flush=True)
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
