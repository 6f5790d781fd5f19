"""Where this process sits in the gang: rank, node, and the ranks around it.

One type for the launcher's view (torchrun's environment, checked against the
config in distributed.py) and the algorithms' view (algorithms.context adds the
device and the intra-node process group to it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GangPosition:
    """This process's place in a gang of `world_size` ranks on `nodes` nodes.

    under_torchrun: whether torchrun started the process (its variables are
    set); without it the trainer runs as a single rank.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    under_torchrun: bool = False

    @property
    def nodes(self) -> int:
        return self.world_size // self.local_world_size

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GangPosition:
        """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK; one rank when RANK is unset.

        With RANK set, a missing LOCAL_WORLD_SIZE means one node, and missing
        LOCAL_RANK / GROUP_RANK follow the contiguous layout torchrun uses.
        """
        if "RANK" not in env:
            return cls(0, 1, 0, 1, 0, under_torchrun=False)
        rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_world_size = int(env.get("LOCAL_WORLD_SIZE", world_size))
        return cls(
            rank=rank,
            world_size=world_size,
            local_rank=int(env.get("LOCAL_RANK", rank % local_world_size)),
            local_world_size=local_world_size,
            node_rank=int(env.get("GROUP_RANK", rank // local_world_size)),
            under_torchrun=True,
        )

    def check_contiguous(self) -> None:
        """RuntimeError unless node n holds the contiguous ranks n·L .. n·L+L−1 (L = local size).

        torchrun's static rendezvous gives that layout; a different one would
        make intra-node groups span machines.
        """
        if self.local_world_size < 1 or self.world_size % self.local_world_size:
            raise RuntimeError(
                f"LOCAL_WORLD_SIZE={self.local_world_size} does not divide "
                f"WORLD_SIZE={self.world_size}: every node must run the same number of processes"
            )
        if self.rank != self.node_rank * self.local_world_size + self.local_rank:
            raise RuntimeError(
                f"rank {self.rank} is not node {self.node_rank} × {self.local_world_size} + "
                f"local rank {self.local_rank}: expected torchrun's contiguous rank layout"
            )
