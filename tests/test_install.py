"""The README's set-up path, for real: a fresh clone, `make install` with Debian's own Python.

Debian's /usr/bin/python3 is externally managed (PEP 668): pip refuses to install
into it, so this passes only when `make install` builds the clone's own venv and
installs nothing outside it. The clone is `git clone` of this repository at HEAD
(committed files only, as a new user gets them), so uncommitted edits are not tested.

It takes minutes: on a 2-core machine `make install` took 90-115 s fetching the 2.8 GB
of wheels (torch and its CUDA libraries) over a fast link, 60 s with every wheel local;
a slow link adds the download. Marked `install` (deselect with `-m "not install"`) and
`slow`, so `make test` runs it and `make test-fast` does not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SYSTEM_PYTHON = "/usr/bin/python3"
EXAMPLE = "examples/fashion-mnist-local-sgd.yaml"
STAMP = ".venv/.dsgd-installed"
# Downloading torch and its CUDA libraries on a cold cache is the slow part.
INSTALL_TIMEOUT_SECONDS = 3600

# An outer `make test` or an activated venv must not leak into the clone's build.
LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def _skip_reason() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing (not a Debian-like machine)"
    # Debian ships venv's ensurepip in python3-venv; without it `-m venv` cannot make a venv.
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"], capture_output=True)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} has no venv/ensurepip (apt-get install python3-venv)"
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        return "not a git checkout: nothing to clone"
    return None


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    if sys.prefix != sys.base_prefix:  # drop the running venv's bin/ from PATH
        own_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != own_bin)
    return env


def _system_site_packages() -> dict[str, list[str]]:
    """What is installed for the system Python: each site-packages folder's entries."""
    script = "import site; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"
    folders = subprocess.run(
        [SYSTEM_PYTHON, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    return {f: sorted(os.listdir(f)) if os.path.isdir(f) else [] for f in folders}


def _fresh_clone(destination: Path) -> Path:
    """This repository at HEAD, as `git clone` gives it (HEAD may be detached, as in CI)."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    git = ["git", "-C", str(destination)]
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(destination)], check=True)
    subprocess.run([*git, "fetch", "-q", "origin", head], check=True)
    subprocess.run([*git, "checkout", "-q", "--detach", head], check=True)
    return destination


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def clone(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh clone, deleted afterwards: its venv is gigabytes, too big for pytest to keep."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    path = _fresh_clone(tmp_path / "dsgd")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.install
@pytest.mark.timeout(INSTALL_TIMEOUT_SECONDS)
def test_make_install_with_debian_python_builds_the_clones_venv(clone: Path) -> None:
    system_before = _system_site_packages()
    started = time.monotonic()
    install = _run(
        ["make", "install", f"PYTHON={SYSTEM_PYTHON}"], clone, INSTALL_TIMEOUT_SECONDS - 60
    )
    seconds = time.monotonic() - started
    print(f"make install (fresh clone, {SYSTEM_PYTHON}): {seconds:.0f} s")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    # The venv is the clone's own and made by the system Python, which gained nothing.
    assert (clone / STAMP).is_file()
    assert re.search(r"^home = /usr/bin$", (clone / ".venv/pyvenv.cfg").read_text(), re.M)
    assert _system_site_packages() == system_before

    validate = _run([str(clone / ".venv/bin/dsgd"), "validate", EXAMPLE], clone, 120)
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout.strip() == f"{EXAMPLE}: valid (fashion-mnist-local-sgd)"

    probe = "import dsgd_operator, torch; print(dsgd_operator.__file__); print(torch.__version__)"
    imported = _run([str(clone / ".venv/bin/python"), "-c", probe], clone, 300)
    assert imported.returncode == 0, imported.stderr
    package_file, torch_version = imported.stdout.split()
    assert Path(package_file).is_relative_to(clone)  # editable: this clone, no other
    pinned = re.search(r'"torch==([^"]+)"', (clone / "pyproject.toml").read_text())
    assert pinned and torch_version.split("+")[0] == pinned.group(1)

    # Installed once: the stamp is up to date, until the pins in pyproject.toml change.
    def stamp_is_current() -> bool:
        query = _run(["make", "-q", STAMP, f"PYTHON={SYSTEM_PYTHON}"], clone, 60)
        assert query.returncode in (0, 1), query.stderr
        return query.returncode == 0

    assert stamp_is_current()
    later = time.time() + 10
    os.utime(clone / "pyproject.toml", (later, later))
    assert not stamp_is_current()
