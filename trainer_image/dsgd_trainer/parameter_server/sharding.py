"""How a model is split across S parameter servers: contiguous, size-balanced chunks.

The trainable parameters are flattened in model order (torch's
parameters_to_vector) into one vector of n numbers; server i holds the
contiguous slice [bounds[i], bounds[i+1]), where the slices differ in length by
at most one (the first n mod S are one longer). A tensor may straddle two
shards: the balance is over numbers, which is what a server stores, applies
and sends.
"""

from __future__ import annotations

from itertools import accumulate


def shard_bounds(numel: int, servers: int) -> list[tuple[int, int]]:
    """The [start, end) slice of a vector of `numel` numbers that each of `servers` holds.

    ValueError when there are more servers than numbers (a server would hold nothing).
    """
    if servers < 1:
        raise ValueError(f"need at least one parameter server, got {servers}")
    if numel < servers:
        raise ValueError(
            f"the model has {numel} trainable numbers, fewer than the {servers} parameter "
            "servers that would shard it; lower topology.parameterServers"
        )
    base, extra = divmod(numel, servers)
    sizes = [base + (1 if i < extra else 0) for i in range(servers)]
    ends = list(accumulate(sizes))
    return [(end - size, end) for size, end in zip(sizes, ends, strict=True)]
