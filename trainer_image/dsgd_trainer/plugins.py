"""Resolving `package.module:function` plug-in references to user code.

Models and datasets can name user code instead of a built-in (see
`dsgd_trainer.models` and `dsgd_trainer.data` for what the function must
accept and return). The module must be importable in the trainer's Python
environment: installed into the trainer image, or on PYTHONPATH (template.env).

Resolution failures raise `PluginError` with the reference in the message; the
callers turn it into their own error type (`ModelError`, `DataLoadError`) so
the trainer maps it to the right exit code.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from dsgd_contract.config import PLUGIN_PATTERN


class PluginError(ValueError):
    """A plug-in reference that does not lead to a callable."""


def is_plugin_reference(name: str) -> bool:
    """Whether `name` has the `package.module:function` shape (not whether it resolves)."""
    return re.fullmatch(PLUGIN_PATTERN, name) is not None


def resolve_plugin(reference: str, what: str = "plug-in") -> Callable[..., Any]:
    """The callable that `reference` (`package.module:function`) names.

    `what` ("model", "dataset") only words the error. Raises `PluginError`
    naming the reference when it is malformed, its module cannot be imported
    (or fails while importing), the attribute is missing, or it is not callable.
    """
    if not is_plugin_reference(reference):
        raise PluginError(
            f"{what} plug-in {reference!r} is not a package.module:function reference"
        )
    module_name, function_name = reference.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise PluginError(
            f"{what} plug-in {reference!r}: cannot import module {module_name!r} ({error}); "
            "install it into the trainer image or put it on PYTHONPATH"
        ) from error
    except Exception as error:
        # User code can fail in any way while importing; report it against the reference.
        raise PluginError(
            f"{what} plug-in {reference!r}: importing module {module_name!r} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    try:
        function = getattr(module, function_name)
    except AttributeError as error:
        raise PluginError(
            f"{what} plug-in {reference!r}: module {module_name!r} has no attribute "
            f"{function_name!r}"
        ) from error
    if not callable(function):
        raise PluginError(
            f"{what} plug-in {reference!r}: {function_name!r} is a "
            f"{type(function).__name__}, not a callable"
        )
    return function
