"""Downpour SGD against independent oracles: torch.optim.SGD and torch.optim.Adagrad.

The servers are the real `python -m dsgd_trainer.parameter_server` processes, the
worker the real DownpourSGD algorithm on a gloo rank; both talk over
torch.distributed.rpc on free ports, and every process is stopped at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import (
    PARAMETER_SERVER_METRICS,
    SERVER_FETCHES,
    SERVER_UPDATES,
    STALENESS,
)
from dsgd_contract.pod import CONFIG_ENV, METRICS_PORT_ENV, PS_ADDR_ENV, PS_INDEX_ENV, PS_PORT_ENV
from dsgd_operator.local_run import free_port
from dsgd_trainer.parameter_server.shard import Shard
from dsgd_trainer.parameter_server.sharding import shard_bounds
from dsgd_trainer.parameter_server.update_rules import make_update_rule
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from torch import nn

from tests._dist_harness import forkserver_stopped_after_module, rank_batch, run_on_ranks

__all__ = ["forkserver_stopped_after_module"]

STEPS = 120
LR = 0.05
WEIGHT_DECAY = 1e-3


def downpour_config(tmp_path: Path, **algorithm) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "topology": {"nodes": 1, "parameterServers": algorithm.pop("servers", 2)},
            "algorithm": {"name": "downpour-sgd", **algorithm},
            "optimizer": {
                "learningRate": LR,
                "momentum": 0,
                "nesterov": False,
                "weightDecay": WEIGHT_DECAY,
                "scaling": "none",
                "warmupEpochs": 0,
                "milestones": [],
            },
            "training": {
                "epochs": 1,
                "checkpointDir": str(tmp_path / "checkpoints"),
                "outputDir": str(tmp_path / "out"),
            },
        }
    )


def tiny_model() -> nn.Module:
    torch.manual_seed(7)
    # 5·8 + 8 + 8·3 + 3 = 75 numbers: two servers split a tensor between them.
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def start_servers(
    config: TrainingConfig, tmp_path: Path, port: int, metrics_port: int = 0
) -> list[subprocess.Popen]:
    """The job's parameter servers; server 0 serves its metrics on `metrics_port` (0: none)."""
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_wire()))
    processes = []
    for index in range(config.topology.parameter_servers):
        env = {
            **os.environ,
            CONFIG_ENV: str(config_path),
            PS_INDEX_ENV: str(index),
            PS_ADDR_ENV: "127.0.0.1",
            PS_PORT_ENV: str(port),
            METRICS_PORT_ENV: str(metrics_port if index == 0 else 0),
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "dsgd_trainer.parameter_server"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return processes


def stop(processes: list[subprocess.Popen], timeout: float = 60) -> list[str]:
    """Wait for each process (killing it at the timeout); their outputs."""
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        outputs.append(out.decode(errors="replace"))
    return outputs


def _worker(rank: int, world_size: int, config_json: dict, port: int, metrics_port: int) -> dict:
    """One Downpour replica on `rank_batch` data; returns the servers' final parameters
    and server 0's metrics page, read before the servers finish."""
    from dsgd_trainer.algorithms import make_dist_context
    from dsgd_trainer.algorithms.downpour import DownpourSGD
    from dsgd_trainer.parameter_server import rpc_world

    os.environ.update({PS_ADDR_ENV: "127.0.0.1", PS_PORT_ENV: str(port)})
    config = TrainingConfig.model_validate(config_json)
    model = tiny_model()
    ctx = make_dist_context(torch.device("cpu"), intra_node_groups=False)
    algorithm = DownpourSGD(model, config, ctx, steps_per_epoch=STEPS)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    for step in range(STEPS):
        inputs, labels = rank_batch(rank, step)
        with algorithm.step_context(step):
            nn.functional.cross_entropy(algorithm.training_model()(inputs), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        algorithm.after_optimizer_step(step)
    served = algorithm.synchronize_for_evaluation()
    result = {
        "params": [p.detach().clone() for p in served.parameters()],
        "counters": algorithm.counters.state_dict(),
        "metrics": urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read(),
    }
    rpc_world.leave(graceful=True)
    return result


def run_downpour(config: TrainingConfig, tmp_path: Path) -> tuple[dict, list[dict]]:
    """(the worker's result, each server's summary)."""
    port, metrics_port = free_port(), free_port()
    servers = start_servers(config, tmp_path, port, metrics_port)
    try:
        [result] = run_on_ranks(
            _worker,
            1,
            tmp_path / "ranks",
            args=(config.to_wire(), port, metrics_port),
            timeout=120,
        )
    finally:
        outputs = stop(servers)
    for server, output in zip(servers, outputs, strict=True):
        assert server.returncode == 0, output
    summaries = [
        json.loads((tmp_path / "out" / f"parameter-server-{i}.json").read_text())
        for i in range(config.topology.parameter_servers)
    ]
    return result, summaries


def oracle(optimizer_factory) -> list[torch.Tensor]:
    """Sequential training of the same model on the same batches with a torch optimizer."""
    model = tiny_model()
    optimizer = optimizer_factory(model.parameters())
    for step in range(STEPS):
        inputs, labels = rank_batch(0, step)
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return [p.detach() for p in model.parameters()]


def test_one_worker_fetching_and_pushing_every_step_is_sequential_training(
    tmp_path: Path,
) -> None:
    """End to end (server processes, RPC, the worker's g + λw) with the plain SGD rule; the
    Adagrad rule itself is checked against torch.optim.Adagrad in process, below."""
    config = downpour_config(tmp_path, serverOptimizer="sgd")
    result, summaries = run_downpour(config, tmp_path)
    expected = oracle(lambda ps: torch.optim.SGD(ps, lr=LR, weight_decay=WEIGHT_DECAY))
    for got, want in zip(result["params"], expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (got - want).abs().max()
    # One update per step on every shard, each computed on the version it is applied to.
    assert [s["version"] for s in summaries] == [STEPS, STEPS]
    assert all(s["staleness"]["max"] == 0 for s in summaries)
    numel = sum(p.numel() for p in expected)
    assert [s["numel"] for s in summaries] == [b - a for a, b in shard_bounds(numel, 2)]
    counters = result["counters"]
    assert counters["rounds"]["push"] == counters["rounds"]["fetch"] == STEPS
    # Server 0's Prometheus page: the contract's names, labelled by shard.
    families = {f.name: f for f in text_string_to_metric_families(result["metrics"].decode())}
    assert {name.removesuffix("_total") for name in PARAMETER_SERVER_METRICS} <= set(families)
    samples = {
        (s.name, s.labels.get("le")): s.value
        for f in families.values()
        for s in f.samples
        if s.name.startswith(tuple(PARAMETER_SERVER_METRICS)) and s.labels.get("shard") == "0"
    }
    assert samples[(f"{STALENESS}_count", None)] == STEPS
    assert samples[(f"{STALENESS}_bucket", "0.0")] == STEPS  # never stale
    assert samples[(SERVER_UPDATES, None)] == STEPS
    assert samples[(SERVER_FETCHES, None)] == STEPS + 1  # and the evaluation's
    assert counters["bytes"]["push"] == counters["bytes"]["fetch"] == STEPS * numel * 4


def test_server_adagrad_equals_torch_adagrad_across_shards_and_a_restore(
    tmp_path: Path,
) -> None:
    """Three shards fed slices of one gradient sequence (changing lr) end where
    torch.optim.Adagrad on the whole vector does, also through a checkpoint/restore."""
    config = downpour_config(
        tmp_path, servers=3, adagrad={"epsilon": 1e-8, "initialAccumulator": 0.3}
    )
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(101, generator=generator)
    whole = start.clone().requires_grad_(True)
    reference = torch.optim.Adagrad([whole], lr=0.1, eps=1e-8, initial_accumulator_value=0.3)
    bounds = shard_bounds(101, 3)
    shards = [Shard(config, i, tmp_path / "ckpt") for i in range(3)]
    for shard, (a, b) in zip(shards, bounds, strict=True):
        shard.initialize(start[a:b])
    for step in range(60):
        gradient = torch.randn(101, generator=generator) * (step % 7 + 0.1)
        lr = 0.1 / (1 + step // 20)
        for group in reference.param_groups:
            group["lr"] = lr
        whole.grad = gradient.clone()
        reference.step()
        for shard, (a, b) in zip(shards, bounds, strict=True):
            assert shard.push(gradient[a:b].clone(), shard.version, lr) == 0
        if step == 29:  # a gang restart: new server processes restore the checkpoint
            for shard in shards:
                shard.save(step=30)
            shards = [Shard(config, i, tmp_path / "ckpt") for i in range(3)]
            assert [shard.restore(30) for shard in shards] == [30, 30, 30]
    served = torch.cat([shard.fetch()[0] for shard in shards])
    assert torch.equal(served, whole.detach())


def test_adagrad_epsilon_defaults_to_torchs(tmp_path: Path) -> None:
    rule = make_update_rule(downpour_config(tmp_path).algorithm, 4)
    assert rule.epsilon == torch.optim.Adagrad([torch.zeros(1)]).defaults["eps"] == 1e-10
    assert torch.equal(rule.accumulator, torch.zeros(4))


def test_shards_are_contiguous_and_size_balanced() -> None:
    for numel, servers in [(75, 2), (101, 3), (7, 7), (1000, 6)]:
        bounds = shard_bounds(numel, servers)
        assert bounds[0][0] == 0 and bounds[-1][1] == numel
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="fewer than the 4 parameter servers"):
        shard_bounds(3, 4)


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"algorithm": {"name": "downpour-sgd"}}, "topology.parameterServers", "at least one"),
        (
            {"algorithm": {"name": "local-sgd"}, "topology": {"parameterServers": 1}},
            "topology.parameterServers",
            "belong to downpour-sgd",
        ),
        (
            {
                "algorithm": {"name": "downpour-sgd"},
                "topology": {"parameterServers": 1},
                "optimizer": {"momentum": 0.9, "nesterov": False},
            },
            "optimizer.momentum",
            "plain SGD",
        ),
        (
            {
                "algorithm": {"name": "downpour-sgd", "compression": "sign"},
                "topology": {"parameterServers": 1},
                "optimizer": {"momentum": 0, "nesterov": False},
            },
            "algorithm.compression",
            "not downpour-sgd",
        ),
        (
            {
                "algorithm": {"name": "downpour-sgd", "outerOptimizer": {"momentum": 0.5}},
                "topology": {"parameterServers": 1},
                "optimizer": {"momentum": 0, "nesterov": False},
            },
            "algorithm.outerOptimizer",
            "outer optimizer",
        ),
    ],
)
def test_config_refuses_what_downpour_cannot_run(spec: dict, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig.model_validate(spec)
    located = {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}
    assert field in located and message in located[field], located


def _resume_without_server_checkpoint(rank: int, world_size: int, config_json: dict, port: int):
    from dsgd_trainer.algorithms import make_dist_context
    from dsgd_trainer.algorithms.downpour import DownpourSGD
    from dsgd_trainer.parameter_server import rpc_world
    from dsgd_trainer.stopping import TrainerExit

    os.environ.update({PS_ADDR_ENV: "127.0.0.1", PS_PORT_ENV: str(port)})
    model = tiny_model()
    ctx = make_dist_context(torch.device("cpu"), intra_node_groups=False)
    algorithm = DownpourSGD(model, TrainingConfig.model_validate(config_json), ctx, 10)
    algorithm.load_state_dict(
        {
            "algorithm": "downpour-sgd",
            "counters": algorithm.counters.state_dict(),
            "accrued": torch.zeros(75),
            "versions": [3, 3],
            "server_step": 7,
        }
    )
    try:
        with algorithm.step_context(7):
            pass
    except TrainerExit as error:
        return error.code, error.message
    finally:
        rpc_world.leave(graceful=True)
    return None


def test_a_resume_whose_servers_lack_the_checkpoint_fails_as_a_bad_checkpoint(
    tmp_path: Path,
) -> None:
    config = downpour_config(tmp_path)
    port = free_port()
    servers = start_servers(config, tmp_path, port)
    try:
        [result] = run_on_ranks(
            _resume_without_server_checkpoint,
            1,
            tmp_path / "ranks",
            args=(config.to_wire(), port),
            timeout=120,
        )
    finally:
        stop(servers)
    code, message = result
    assert code == 64
    assert "cannot restore their shards of the checkpoint after step 7" in message
    assert "step-7.pt" in message
