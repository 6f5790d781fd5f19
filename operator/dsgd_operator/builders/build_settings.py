"""What the operator (or `dsgd render/run`) decides about a job's objects, not the job."""

from __future__ import annotations

from dataclasses import dataclass, field

from dsgd_operator import api
from dsgd_operator.builders.gpu_pods import GpuPodSettings
from dsgd_operator.builders.pod_defaults import PodDefaults


@dataclass(frozen=True)
class BuildSettings:
    """The installation's choices: the trainer image a job gets when its spec names none,
    and what its pods get that the job does not say (pod_defaults).

    Ports, paths and the command are the pod contract's (dsgd_contract.pod), the
    same on every installation.
    """

    default_image: str = api.DEFAULT_IMAGE
    pod_defaults: PodDefaults = field(default_factory=PodDefaults)
    #: What GPU jobs' pods get from the cluster's set-up (runtime class, RDMA, NCCL env).
    gpu_pods: GpuPodSettings = field(default_factory=GpuPodSettings)

    def __post_init__(self) -> None:
        if not self.default_image:
            raise ValueError("default_image must not be empty")


#: The settings of `dsgd render/run` and of an operator started without overrides.
DEFAULT_SETTINGS = BuildSettings()
