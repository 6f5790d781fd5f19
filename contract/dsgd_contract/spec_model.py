"""The base of every spec section, and how cross-field errors are raised.

Apart from config.py so that the sections defined in their own modules
(dsgd_contract.downpour) can share them without an import cycle; config.py
re-exports both names.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError


class SpecModel(BaseModel):
    """Base for every spec section: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict:
        """The JSON-ready camelCase form, defaults included."""
        return self.model_dump(mode="json", by_alias=True)


def raise_cross_field_errors(title: str, errors: list[tuple[tuple[str, ...], str]]) -> None:
    """Raise all cross-field errors at once, each located at its field path."""
    if errors:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("cross_field", message), loc=loc, input=None
                )
                for loc, message in errors
            ],
        )
