"""The topology section: worker pods, ranks per pod, devices, parameter servers."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from dsgd_contract.downpour import MAX_PARAMETER_SERVERS
from dsgd_contract.spec_model import SpecModel

#: The largest gang we accept. Larger specs are almost always a typo, and a
#: typo here would ask a cluster for thousands of GPUs.
MAX_NODES = 512
MAX_PROCESSES_PER_NODE = 16


class Topology(SpecModel):
    """How ranks are laid out: `nodes` pods, each running `processesPerNode` ranks."""

    nodes: Annotated[int, Field(ge=1, le=MAX_NODES)] = Field(
        1, description="Number of pods (one per machine); world size is nodes × processesPerNode."
    )
    processes_per_node: Annotated[int, Field(ge=1, le=MAX_PROCESSES_PER_NODE)] = Field(
        1, description="Ranks per pod; with gpu: true, also the GPUs requested per pod."
    )
    gpu: bool = Field(
        False,
        description="true: request nvidia.com/gpu and use NCCL; false: CPU ranks talking gloo.",
    )
    parameter_servers: Annotated[int, Field(ge=0, le=MAX_PARAMETER_SERVERS)] = Field(
        0,
        description=(
            "downpour-sgd only (at least 1 there): parameter-server pods <job>-ps-<i>, each "
            "holding one contiguous shard of the model (CPU pods, whatever gpu says)."
        ),
    )

    @property
    def world_size(self) -> int:
        """The training ranks (parameter servers are not ranks of the trainers' group)."""
        return self.nodes * self.processes_per_node

    @property
    def gang_members(self) -> int:
        """Pods of one gang: the worker nodes, then the parameter servers."""
        return self.nodes + self.parameter_servers
