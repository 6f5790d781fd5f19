"""Run algorithms on gloo ranks and count the bytes an interface transmitted meanwhile.

Two ways in, both started by tests/test_wire_bytes.py:

- `python -m tests._wire_probe OUT.json` under `unshare --net`: every scenario on
  ranks of this one namespace, whose loopback carries only their traffic; rank 0
  reads the loopback's counter.
- `python -m tests._wire_probe --node RANK WORLD MASTER PORT SCENARIO OUT.json`, one
  process per node namespace of the benchmarks' network-namespace cluster: each
  rank reads its own node's eth0 (its veth end).

For each run it records the algorithm's counters over a window of training
steps and the interface's transmit counter (/proc/self/net/dev of the
namespace) over the same window, read between barriers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from torch import nn

from tests._dist_harness import run_on_ranks, stop_forkserver

WIDTH, BATCH = 512, 4
#: Scenario: (algorithm settings, nodes, processes per node, steps before the window, window).
SCENARIOS = {
    "mini-batch-sgd": ({"name": "mini-batch-sgd"}, 1, 3, 1, 3),
    "local-sgd": ({"name": "local-sgd", "localSteps": 2}, 1, 3, 1, 4),
    "local-sgd-sign": ({"name": "local-sgd", "localSteps": 2, "compression": "sign"}, 1, 3, 1, 4),
    "hierarchical-local-sgd": (
        {"name": "hierarchical-local-sgd", "localSteps": 1, "blockSteps": 2},
        2,
        2,
        1,
        4,
    ),
}


def tx_bytes(interface: str) -> int:
    for line in Path("/proc/self/net/dev").read_text().splitlines():
        name, _, fields = line.partition(":")
        if name.strip() == interface:
            return int(fields.split()[8])  # Transmit bytes
    raise RuntimeError(f"no interface {interface} in this namespace")


def probe(rank: int, world_size: int, name: str, interface: str = "lo") -> dict:
    algorithm, nodes, per_node, before, window = SCENARIOS[name]
    config = TrainingConfig.model_validate(
        {
            "topology": {"nodes": nodes, "processesPerNode": per_node},
            "algorithm": algorithm,
            "optimizer": {"warmupEpochs": 0},
            "training": {"epochs": 10},
        }
    )
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(WIDTH, WIDTH), nn.BatchNorm1d(WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10)
    )
    algo = build_algorithm(config, model, make_dist_context(torch.device("cpu")), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(rank)

    def step(index: int) -> None:
        x = torch.randn(BATCH, WIDTH, generator=generator)
        y = torch.randint(0, 10, (BATCH,), generator=generator)
        with algo.step_context(index):
            F.cross_entropy(algo.training_model()(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        algo.after_optimizer_step(index)

    for index in range(before):  # the one-time replica broadcast is not counted: skip it
        step(index)
    start = algo.counters.state_dict()
    dist.barrier()
    tx_before = tx_bytes(interface)
    dist.barrier()
    for index in range(before, before + window):
        step(index)
    dist.barrier()
    tx_after = tx_bytes(interface)
    end = algo.counters.state_dict()
    return {
        "wire": sum(end["bytes"].values()) - sum(start["bytes"].values()),
        "payload": sum(end["payload_bytes"].values()) - sum(start["payload_bytes"].values()),
        "interface_tx": tx_after - tx_before,
    }


def main(out: str) -> None:
    results = {}
    try:
        for name, (_, nodes, per_node, _, _) in SCENARIOS.items():
            ranks = run_on_ranks(
                probe,
                nodes * per_node,
                Path(out).parent / name,
                args=(name,),
                local_world_size=per_node,
                timeout=120,
            )
            results[name] = ranks
    finally:
        stop_forkserver()
    Path(out).write_text(json.dumps(results))


def node_main(rank: int, world_size: int, master: str, port: int, name: str, out: str) -> None:
    """One rank per node namespace (1 process per node): its own eth0 carries its traffic."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    os.environ.update(LOCAL_WORLD_SIZE="1", GROUP_RANK=str(rank), GLOO_SOCKET_IFNAME="eth0")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://{master}:{port}", rank=rank, world_size=world_size
    )
    try:
        Path(out).write_text(json.dumps(probe(rank, world_size, name, interface="eth0")))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "--node":
        rank, world, master, port, name, out = sys.argv[2:8]
        node_main(int(rank), int(world), master, int(port), name, out)
    else:
        main(sys.argv[1])
