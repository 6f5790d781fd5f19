"""Operator settings that shape the objects a job becomes."""

from __future__ import annotations

from dataclasses import dataclass

from dsgd_operator import api

IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class BuildSettings:
    """What the operator (or `dsgd render/run`) decides, not the job.

    The ports are the pod contract's (29500 rendezvous, 9400 metrics); they are
    settings only so that a cluster with a clash can move them.
    """

    default_image: str = api.DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    master_port: int = 29500
    metrics_port: int = 9400

    def __post_init__(self) -> None:
        if not self.default_image:
            raise ValueError("default_image must not be empty")
        if self.image_pull_policy not in IMAGE_PULL_POLICIES:
            raise ValueError(
                f"image_pull_policy {self.image_pull_policy!r}: use one of "
                f"{', '.join(IMAGE_PULL_POLICIES)}"
            )
        for name in ("master_port", "metrics_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ValueError(f"{name} {port} is not a TCP port (1-65535)")
        if self.master_port == self.metrics_port:
            raise ValueError(f"master_port and metrics_port are both {self.master_port}")


#: The settings of `dsgd render/run` and of an operator started without overrides.
DEFAULT_SETTINGS = BuildSettings()
