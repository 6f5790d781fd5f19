"""Where this process sits in the gang: ranks, node, device and the intra-node group."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Built once by the training loop after `dist.init_process_group` (see make_dist_context).

    intra_node_group: the process group of this node's ranks, used by
    hierarchical local SGD; None when every node runs a single rank (there is
    nothing to average within a node).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    device: torch.device
    intra_node_group: dist.ProcessGroup | None

    @property
    def nodes(self) -> int:
        return self.world_size // self.local_world_size


def make_dist_context(device: torch.device) -> DistContext:
    """Read torchrun's layout from the environment and create the intra-node groups.

    Call after `dist.init_process_group` on every rank. torchrun's static
    rendezvous gives node n the contiguous ranks n·L .. n·L+L−1 (L =
    LOCAL_WORLD_SIZE); this is checked, since a different layout would make the
    intra-node groups span machines. `dist.new_group` is collective, so every
    rank creates the group of every node, in node order, and keeps its own.

    LOCAL_RANK / LOCAL_WORLD_SIZE / GROUP_RANK default to a single node when
    unset (a plain `init_process_group` outside torchrun).
    """
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    local_rank = int(os.environ.get("LOCAL_RANK", rank % local_world_size))
    if local_world_size < 1 or world_size % local_world_size:
        raise RuntimeError(
            f"LOCAL_WORLD_SIZE={local_world_size} does not divide WORLD_SIZE={world_size}: "
            "every node must run the same number of processes"
        )
    node_rank = int(os.environ.get("GROUP_RANK", rank // local_world_size))
    if rank != node_rank * local_world_size + local_rank:
        raise RuntimeError(
            f"rank {rank} is not node {node_rank} × {local_world_size} + local rank {local_rank}: "
            "expected torchrun's contiguous rank layout"
        )
    group = None
    if local_world_size > 1:
        for node in range(world_size // local_world_size):
            ranks = list(range(node * local_world_size, (node + 1) * local_world_size))
            created = dist.new_group(ranks=ranks)
            if node == node_rank:
                group = created
    return DistContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        node_rank=node_rank,
        device=device,
        intra_node_group=group,
    )
