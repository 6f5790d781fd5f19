"""A real Prometheus server (Debian's /usr/bin/prometheus) and promtool, for tests.

The server runs on a free loopback port with its config and TSDB in a temp
directory; `stop()` ends it (SIGTERM, then SIGKILL) and waits for it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests._polling import wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

T = TypeVar("T")


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (bad syntax, unknown function, ...)."""


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def relabel_configs(relabelings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus Operator RelabelConfigs (camelCase) as Prometheus relabel_configs."""
    configs = []
    for relabeling in relabelings:
        config = {_snake(key): value for key, value in relabeling.items()}
        if "action" in config:
            config["action"] = config["action"].lower()
        configs.append(config)
    return configs


class PrometheusApi:
    """The HTTP API of a Prometheus at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns `data`, or raises PrometheusQueryError with its error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time: the result's samples."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data]


class PrometheusServer(PrometheusApi):
    """One Prometheus process; use as a context manager or call `stop()`."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        scrape_configs: list[dict[str, Any]],
        rule_groups: list[dict[str, Any]] | None = None,
        scrape_interval: str = "1s",
    ) -> None:
        super().__init__(f"http://127.0.0.1:{port}")
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": scrape_interval,
            },
            "scrape_configs": scrape_configs,
        }
        if rule_groups:
            rules_file = workdir / "rules.yaml"
            rules_file.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
            config["rule_files"] = [str(rules_file)]
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_file = workdir / "prometheus.log"
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, 30, "Prometheus to be ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited: {self.log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; stdout and stderr together in `.stdout`."""
    return subprocess.run(
        [PROMTOOL, *args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
