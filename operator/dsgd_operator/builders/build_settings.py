"""What the operator (or `dsgd render/run`) decides about a job's objects, not the job."""

from __future__ import annotations

from dataclasses import dataclass

from dsgd_operator import api


@dataclass(frozen=True)
class BuildSettings:
    """The installation's choices: the trainer image a job gets when its spec names none.

    Ports, paths and the command are the pod contract's (dsgd_contract.pod), the
    same on every installation.
    """

    default_image: str = api.DEFAULT_IMAGE

    def __post_init__(self) -> None:
        if not self.default_image:
            raise ValueError("default_image must not be empty")


#: The settings of `dsgd render/run` and of an operator started without overrides.
DEFAULT_SETTINGS = BuildSettings()
