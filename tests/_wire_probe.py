"""Run algorithms on gloo ranks inside a fresh network namespace and count the loopback's bytes.

`python -m tests._wire_probe OUT.json`, started by tests/test_wire_bytes.py under
`unshare --net` (so the namespace's loopback carries only these ranks' traffic).
For each scenario it records, per rank, the algorithm's counters over a window
of training steps and, on rank 0, the bytes the loopback transmitted in that
window (/proc/self/net/dev of this namespace, read between barriers).
"""

from __future__ import annotations

import json
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


def loopback_tx_bytes() -> int:
    for line in Path("/proc/self/net/dev").read_text().splitlines():
        name, _, fields = line.partition(":")
        if name.strip() == "lo":
            return int(fields.split()[8])  # Transmit bytes
    raise RuntimeError("no loopback interface in this namespace")


def probe(rank: int, world_size: int, name: str) -> dict:
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
    tx_before = loopback_tx_bytes()
    dist.barrier()
    for index in range(before, before + window):
        step(index)
    dist.barrier()
    tx_after = loopback_tx_bytes()
    end = algo.counters.state_dict()
    return {
        "wire": sum(end["bytes"].values()) - sum(start["bytes"].values()),
        "payload": sum(end["payload_bytes"].values()) - sum(start["payload_bytes"].values()),
        "loopback_tx": tx_after - tx_before if rank == 0 else None,
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


if __name__ == "__main__":
    main(sys.argv[1])
