"""The `dsgd` command: validate, render and run DistributedSGDJob manifests; run the operator.

Three front doors, one builder: `render` prints what `dsgd_operator.builders`
returns, `run` executes those pods as local processes, and `operator` has kopf
create them on a cluster. User mistakes end with one line per problem naming
the file and field (exit 1), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.experiments.api import SGDExperiment
from dsgd_operator.experiments.commands import add_experiment_commands
from dsgd_operator.experiments.grid import describe_grid, expand_trials, trial_job
from dsgd_operator.experiments.manifest import (
    is_experiment,
    load_manifests,
    parse_manifests,
    trial_policy_problems,
)
from dsgd_operator.manifest import ManifestError, read_manifest_documents
from dsgd_operator.template_policy import TemplatePolicy, policy_problems

EXIT_INVALID = 1


def _version() -> str:
    try:
        return version("dsgd")
    except PackageNotFoundError:
        return "unknown"


def _load_all(
    files: list[str],
) -> tuple[list[DistributedSGDJob], list[SGDExperiment], list[ManifestError]]:
    jobs, experiments, errors = [], [], []
    for path in files:
        try:
            found_jobs, found_experiments = load_manifests(path)
        except ManifestError as error:
            errors.append(error)
            continue
        jobs.extend(found_jobs)
        experiments.extend(found_experiments)
    return jobs, experiments, errors


def _report(errors: list[ManifestError]) -> None:
    for error in errors:
        print(error, file=sys.stderr)


def _load_policy(path: str | None) -> TemplatePolicy | None:
    """The template policy of a Helm values file (its templatePolicy) or a policy file."""
    if path is None:
        return None
    documents = read_manifest_documents(path)
    try:
        return TemplatePolicy.from_document(documents[0] if documents else {})
    except ValueError as error:
        raise ManifestError(path, (str(error),)) from None


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    # Per valid file: its jobs and their documents (read once: the file may be a pipe).
    valid: list[tuple[str, list[DistributedSGDJob], list[Any]]] = []
    try:
        policy = _load_policy(args.policy)
    except ManifestError as error:
        _report([error])
        return EXIT_INVALID
    for path in args.files:
        try:
            documents = read_manifest_documents(path)
            jobs, experiments = parse_manifests(documents, path)
            if policy is not None:
                refused = [
                    f"(document {index}) {problem}" if len(jobs) > 1 else problem
                    for index, job in enumerate(jobs)
                    for problem in policy_problems(job, policy)
                ]
                refused += trial_policy_problems(experiments, policy)
                if refused:
                    raise ManifestError(path, tuple(refused))
        except ManifestError as error:
            _report([error])
            status = EXIT_INVALID
            continue
        for experiment in experiments:
            print(f"{path}: valid ({describe_grid(experiment)})")
        if experiments and args.server:
            print(f"{path}: --server dry-runs jobs only; the experiment was checked here")
        if not jobs:
            continue
        valid.append((path, jobs, [d for d in documents if not is_experiment(d)]))
        if not args.server:
            names = ", ".join(job.name for job in jobs)
            print(f"{path}: valid ({names})")
    if args.server and valid:
        return max(status, _validate_on_server(valid, args.namespace))
    return status


def _validate_on_server(
    valid: list[tuple[str, list[DistributedSGDJob], list[Any]]], namespace: str | None
) -> int:
    """Dry-run create every object of every job on the current context's API server."""
    from dsgd_operator.server_validation import ServerUnavailable, connect, server_refusals

    try:
        api_client, namespace = connect(namespace)
        status = 0
        for path, jobs, documents in valid:
            refusals = [
                refusal
                for job, document in zip(jobs, documents, strict=True)
                for refusal in server_refusals(api_client, job, document, namespace)
            ]
            for refusal in refusals:
                print(f"{path}: {refusal}", file=sys.stderr)
            if refusals:
                status = EXIT_INVALID
            else:
                names = ", ".join(job.name for job in jobs)
                print(f"{path}: valid, the API server accepts every object ({names})")
        return status
    except ServerUnavailable as error:
        print(f"dsgd validate --server: {error}", file=sys.stderr)
        return EXIT_INVALID


class _RenderDumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's config.json) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RenderDumper.add_representer(str, _represent_str)


def cmd_render(args: argparse.Namespace) -> int:
    from dsgd_operator.builders import BuildSettings, build_children

    jobs, experiments, errors = _load_all(args.files)
    if errors:
        _report(errors)
        return EXIT_INVALID
    # An experiment renders as what the operator creates for it: one job per trial.
    trial_jobs = [trial_job(e, t) for e in experiments for t in expand_trials(e.spec)]
    for trial in trial_jobs:
        if args.namespace:
            trial["metadata"]["namespace"] = args.namespace
    yaml.dump_all(trial_jobs, sys.stdout, Dumper=_RenderDumper, sort_keys=False)
    if trial_jobs and jobs:
        sys.stdout.write("---\n")
    settings = BuildSettings(default_image=args.image) if args.image else BuildSettings()
    objects = []
    for job in jobs:
        if args.namespace:
            job = job.model_copy(
                update={"metadata": job.metadata.model_copy(update={"namespace": args.namespace})}
            )
        objects.extend(build_children(job, settings))
    yaml.dump_all(objects, sys.stdout, Dumper=_RenderDumper, sort_keys=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    jobs, experiments, errors = _load_all([args.file])
    if errors:
        _report(errors)
        return EXIT_INVALID
    if experiments:
        print(
            f"{args.file}: is an SGDExperiment; run it with `dsgd experiment run`", file=sys.stderr
        )
        return EXIT_INVALID
    if len(jobs) != 1:
        print(
            f"{args.file}: holds {len(jobs)} jobs; `dsgd run` runs one "
            "(split the file, or use the operator)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    from importlib.util import find_spec

    if find_spec("torch") is None:
        print("dsgd run needs the trainer: pip install 'dsgd[trainer]'", file=sys.stderr)
        return EXIT_INVALID
    from dsgd_operator.local_gang import interrupt_on_stop_signals
    from dsgd_operator.local_run import LocalRunError
    from dsgd_operator.run_display import run_with_display

    job = jobs[0]
    out_dir = Path(args.out) if args.out else Path("runs") / job.name
    interrupt_on_stop_signals()
    try:
        return run_with_display(job, out_dir, metrics_port=args.metrics_port, quiet=args.quiet)
    except LocalRunError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID


def cmd_operator(args: argparse.Namespace) -> int:
    try:
        from dsgd_operator.reconcile import OperatorOptions, run_operator
    except ImportError as error:
        print(f"the operator is not available in this install: {error}", file=sys.stderr)
        return EXIT_INVALID
    try:
        options = OperatorOptions.from_env()
    except ValueError as error:
        print(f"dsgd operator: {error}", file=sys.stderr)
        return EXIT_INVALID
    from kubernetes.config import ConfigException

    from dsgd_operator.reconcile.kube import load_configuration

    try:  # fail here, with one line, rather than inside kopf's startup with a traceback
        load_configuration()
    except (ConfigException, OSError) as error:
        print(
            "dsgd operator: no Kubernetes credentials: not running in a pod, and no usable "
            f"kubeconfig (KUBECONFIG or ~/.kube/config): {error}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    overrides: dict[str, object] = {}
    if args.namespace:
        overrides["namespaces"] = tuple(args.namespace)
    if args.trainer_image:
        overrides["trainer_image"] = args.trainer_image
    if args.liveness_port is not None:
        overrides["liveness_port"] = args.liveness_port
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.peering:
        overrides["peering"] = args.peering
    if args.priority is not None:
        overrides["priority"] = args.priority
    # In a pod (the chart sets POD_IP from status.podIP) the listeners bind the pod's own
    # address: two operator pods sharing a host's network never collide on their ports.
    if os.environ.get("POD_IP", "").strip():
        overrides["listen_address"] = os.environ["POD_IP"].strip()
    from dataclasses import replace

    return run_operator(replace(options, **overrides))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsgd",
        description="Run, compare and watch distributed SGD algorithms, locally or on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"dsgd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check manifests; name every bad field")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "--server",
        action="store_true",
        help="also dry-run create the job and every rendered object on the current "
        "kube context's API server",
    )
    validate.add_argument(
        "--namespace",
        help="with --server: namespace for jobs that name none (default: the context's)",
    )
    validate.add_argument(
        "--policy",
        metavar="FILE",
        help="also check the installation's template policy: a Helm values file (its "
        "templatePolicy) or a file holding only the policy",
    )
    validate.set_defaults(func=cmd_validate)

    render = sub.add_parser("render", help="print the Kubernetes objects the operator would create")
    render.add_argument("files", nargs="+", metavar="FILE")
    render.add_argument("--image", help="trainer image for jobs that name none")
    render.add_argument("--namespace", help="namespace for jobs that name none")
    render.set_defaults(func=cmd_render)

    run = sub.add_parser("run", help="run a job's pods as local processes")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--out", help="results directory (default: runs/<job name>)")
    run.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus port of node 0 (node i: +i); default: free ports",
    )
    run.add_argument("--quiet", action="store_true", help="no per-node log lines")
    run.set_defaults(func=cmd_run)

    add_experiment_commands(sub)

    operator = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    operator.add_argument(
        "--namespace", action="append", help="watch only this namespace (repeatable)"
    )
    operator.add_argument("--trainer-image", help="default trainer image")
    operator.add_argument("--liveness-port", type=int, help="liveness endpoint port")
    operator.add_argument("--metrics-port", type=int, help="operator metrics port (0: off)")
    operator.add_argument(
        "--peering", help="kopf peering object shared by replicas (default: standalone)"
    )
    operator.add_argument(
        "--priority", type=int, help="this replica's peering priority (default: random)"
    )
    operator.set_defaults(func=cmd_operator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `dsgd render x.yaml | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
