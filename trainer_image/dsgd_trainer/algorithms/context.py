"""What the algorithms need of the gang: this process's position, its device, its node's group."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from dsgd_trainer.gang import GangPosition
from dsgd_trainer.stop_vote import StopVote


@dataclass(frozen=True)
class DistContext:
    """Built once by the training loop after `dist.init_process_group` (see make_dist_context).

    intra_node_group: the process group of this node's ranks, used by
    hierarchical local SGD; None when every node runs a single rank (there is
    nothing to average within a node) or when none was asked for.
    """

    gang: GangPosition
    device: torch.device
    intra_node_group: dist.ProcessGroup | None
    #: The trainer's agreed stopping (dsgd_trainer.stop_vote): its ballot rides on the
    #: all-reduces the algorithm makes anyway. None: no ballots (tests, benchmarks).
    stop_vote: StopVote | None = None


def make_dist_context(
    device: torch.device,
    gang: GangPosition | None = None,
    *,
    intra_node_groups: bool = True,
    stop_vote: StopVote | None = None,
) -> DistContext:
    """Check `gang` (default: read from the environment); create the intra-node groups if asked.

    Call after `dist.init_process_group` on every rank, with the same
    `intra_node_groups` on all (the trainer: uses_intra_node_groups(config)).
    Each group is a communicator of its own (with NCCL, created eagerly, with
    its own GPU memory), so algorithms that never average within a node should
    not ask for them. The gang must agree with the process group and have
    torchrun's contiguous layout (checked). `dist.new_group` is collective, so
    every rank creates the group of every node, in node order, and keeps its own.
    """
    gang = GangPosition.from_env() if gang is None else gang
    if (gang.rank, gang.world_size) != (dist.get_rank(), dist.get_world_size()):
        raise RuntimeError(
            f"the environment says rank {gang.rank} of {gang.world_size}, the process group "
            f"rank {dist.get_rank()} of {dist.get_world_size()}"
        )
    gang.check_contiguous()
    group = None
    if intra_node_groups and gang.local_world_size > 1:
        for node in range(gang.nodes):
            ranks = list(range(node * gang.local_world_size, (node + 1) * gang.local_world_size))
            created = dist.new_group(ranks=ranks)
            if node == gang.node_rank:
                group = created
    return DistContext(gang=gang, device=device, intra_node_group=group, stop_vote=stop_vote)
