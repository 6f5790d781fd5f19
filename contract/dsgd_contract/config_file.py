"""Reading the training config file, torch-free: a bad config fails before torch is imported.

Every rank reads the JSON the operator put in the job's ConfigMap (or `dsgd run`
wrote), validated by the shared pydantic models, so the trainer refuses exactly
what `dsgd validate` and the operator refuse.
"""

from __future__ import annotations

from pathlib import Path

import pydantic

from dsgd_contract.config import TrainingConfig


class ConfigFileError(ValueError):
    """No usable config; the message has one line per problem (exit code 64)."""


def read_config(path: str | None) -> TrainingConfig:
    """The validated config at `path`.

    Raises ConfigFileError when `path` is None or unreadable, or when the JSON
    is invalid: one line per bad field, `<path>: <field.path>: <problem> (got <value>)`.
    """
    if not path:
        raise ConfigFileError("error: no config: pass --config FILE or set DSGD_CONFIG")
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigFileError(f"error: cannot read config {path}: {error.strerror}") from error
    try:
        return TrainingConfig.model_validate_json(text)
    except pydantic.ValidationError as error:
        lines = [f"{path}: {error.error_count()} problem(s) in the training config:"]
        for detail in error.errors(include_url=False):
            where = ".".join(str(part) for part in detail["loc"]) or "(document)"
            value = detail.get("input")
            shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
            lines.append(f"{path}: {where}: {detail['msg']}{shown}")
        raise ConfigFileError("\n".join(lines)) from error
