"""Where dataset files are looked for.

With `dataset.path` set, only that directory (and a sub-directory named like
the dataset's usual folder in it) is searched: a user who names a path means
it. Without it, the usual system locations are searched in this order:
/usr/share/datasets/<name> (Debian's dataset-* packages), /data/<name>, /data,
~/.cache/dsgd/<name>.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dsgd_trainer.data.bundle import DataLoadError


def default_roots(name: str) -> list[Path]:
    """The system locations searched for dataset `name` when no path is given."""
    return [
        Path("/usr/share/datasets") / name,
        Path("/data") / name,
        Path("/data"),
        Path.home() / ".cache" / "dsgd" / name,
    ]


def candidate_dirs(name: str, path: str | None, subdirs: Sequence[str] = ()) -> list[Path]:
    """Directories to try, in order: each root, then each of `subdirs` inside it."""
    roots = [Path(path).expanduser()] if path else default_roots(name)
    candidates: list[Path] = []
    for root in roots:
        for candidate in (root, *(root / sub for sub in subdirs)):
            if candidate not in candidates:
                candidates.append(candidate)
    return candidates


def find_dir(
    name: str,
    path: str | None,
    holds_dataset: Callable[[Path], bool],
    expected: str,
    subdirs: Sequence[str] = (),
) -> Path:
    """The first candidate directory for which `holds_dataset` is true.

    Raises `DataLoadError` listing every directory searched and what was
    expected (`expected` words it, e.g. "train-images-idx3-ubyte[.gz]").
    """
    searched = candidate_dirs(name, path, subdirs)
    for directory in searched:
        if directory.is_dir() and holds_dataset(directory):
            return directory
    where = "\n".join(f"  - {directory}" for directory in searched)
    hint = "" if path else "\nor set training.dataset.path to the directory that holds it"
    raise DataLoadError(f"dataset {name!r} not found: looked for {expected} in\n{where}{hint}")
