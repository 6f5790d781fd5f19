"""`dsgd report sgdexperiment/NAME`: the report of an experiment on the current kube context.

Reads the SGDExperiment and its trial jobs (label `dsgd.io/experiment=NAME`)
from the API server: each succeeded trial's figures and curve come from its
job's `status.results`, a trial whose job is gone (deleted after its TTL) from
the experiment's `status.finishedTrials` (figures, no curve). Then the same
report as `dsgd report DIR` (`report.render_report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dsgd_contract.experiment import EXPERIMENT_LABEL

from dsgd_operator import api
from dsgd_operator.api_requests import call, resource_path
from dsgd_operator.experiments.aggregate import ReportError
from dsgd_operator.experiments.api import PLURAL, SHORT_NAMES, SINGULAR, SGDExperimentStatus
from dsgd_operator.experiments.manifest import parse_experiment
from dsgd_operator.experiments.report import render_report
from dsgd_operator.experiments.trial_results import report_cells
from dsgd_operator.manifest import ManifestError

#: What `dsgd report` reads as a resource on the cluster rather than a directory.
RESOURCE_PREFIXES = tuple(f"{kind}/" for kind in (SINGULAR, PLURAL, *SHORT_NAMES))


def is_resource(target: str) -> bool:
    """`sgdexperiment/NAME` (or sgdexperiments/, sgdexp/) and no such local directory."""
    return target.startswith(RESOURCE_PREFIXES) and not Path(target).is_dir()


def _get(api_client: Any, path: str, what: str, query: list | None = None) -> dict[str, Any]:
    try:
        code, data = call(api_client, "GET", path, query=query, timeout=30)
    except Exception as error:  # urllib3's connection errors: one line, no traceback
        raise ReportError(f"{what}: the API server is unreachable: {error}") from None
    if code == 404:
        raise ReportError(f"{what}: not found")
    if code >= 300:
        raise ReportError(f"{what}: the API server answered {code}: {data[:300].decode()}")
    return json.loads(data)


def cluster_report(target: str, namespace: str | None, out_dir: Path | None) -> list[Path]:
    """Write the report of experiment `target` (`sgdexperiment/NAME`); the files written.

    Raises ReportError (one line) when there is no context, no such experiment, or
    the stored experiment does not parse."""
    from dsgd_operator.server_validation import ServerUnavailable, connect

    name = target.split("/", 1)[1]
    try:
        api_client, namespace = connect(namespace)
    except ServerUnavailable as error:
        raise ReportError(str(error)) from None
    what = f"{SINGULAR}/{name} in namespace {namespace}"
    with api_client:
        body = _get(api_client, resource_path(api.API_VERSION, PLURAL, namespace, name), what)
        listing = _get(
            api_client,
            resource_path(api.API_VERSION, api.PLURAL, namespace),
            f"its trial jobs in {namespace}",
            [("labelSelector", f"{EXPERIMENT_LABEL}={name}")],
        )
    document = {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in body}
    try:
        experiment = parse_experiment(document, what)
    except ManifestError as error:
        raise ReportError(str(error)) from None
    status = SGDExperimentStatus.model_validate(body.get("status") or {})
    uid = body["metadata"].get("uid")
    children = [
        job
        for job in listing.get("items") or []
        if any(
            o.get("controller") and o.get("uid") == uid
            for o in job["metadata"].get("ownerReferences") or []
        )
    ]
    index, cells = report_cells(experiment, children, status.finished_trials)
    return render_report(index, cells, out_dir or Path("runs") / name)
