"""The local SGD family against PyTorch's own implementations, parameter values compared.

Oracles: torch's `HierarchicalModelAverager` (hierarchical local SGD),
DistributedDataParallel (mini-batch SGD, against local SGD with H = 1), and
torch's post-local SGD stack, DDP with `post_localSGD_hook` then
`PeriodicModelAverager(warmup_steps=T)` (post-local SGD with the default
switch). Each scenario runs our algorithm and the oracle side by side on the
same gang, with the same initial model and the same batches; the tests compare
the parameters every rank ends with. The switch step T of post-local SGD is
computed here from the learning rate the test itself writes down (the step at
which it first decays), not from the module.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from dsgd_trainer.optim import build_optimizer
from dsgd_trainer.schedule import LearningRateSchedule
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
    PostLocalSGDState,
    post_localSGD_hook,
)
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.distributed.algorithms.model_averaging.hierarchical_model_averager import (
    HierarchicalModelAverager,
)
from torch.nn.parallel import DistributedDataParallel

from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401

BATCH, IN, HIDDEN, OUT = 6, 5, 7, 3
LR, MOMENTUM = 0.05, 0.9


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
    )


def make_batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1_000 * rank + step)
    x = torch.randn(BATCH, IN, generator=generator)
    return x, torch.randint(0, OUT, (BATCH,), generator=generator)


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def config(nodes: int, per_node: int, algorithm: dict, optimizer: dict, epochs: int):
    return TrainingConfig.model_validate(
        {
            "topology": {"nodes": nodes, "processesPerNode": per_node},
            "algorithm": algorithm,
            "optimizer": optimizer,
            "training": {"epochs": epochs, "batchSizePerProcess": BATCH},
        }
    )


def run_ours(
    cfg: TrainingConfig, rank: int, steps_per_epoch: int, make_optimizer=None
) -> nn.Module:
    """Our algorithm through the trainer's contract (see algorithms/base.py), lr per step."""
    model = make_model()
    algo = build_algorithm(cfg, model, make_dist_context(torch.device("cpu")), steps_per_epoch)
    make_optimizer = make_optimizer or (lambda m: build_optimizer(m, cfg.optimizer))
    optimizer = make_optimizer(model)
    lr = LearningRateSchedule.from_config(cfg, dist.get_world_size(), steps_per_epoch)
    for step in range(cfg.training.epochs * steps_per_epoch):
        for group in optimizer.param_groups:
            group["lr"] = lr(step)
        x, y = make_batch(rank, step)
        with algo.step_context(step):
            F.cross_entropy(algo.training_model()(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        algo.after_optimizer_step(step)
    return model


# ---------------------------------------------------------------- hierarchical

HIER_STEPS, HIER_H, HIER_HB = 13, 2, 3


def hierarchical_vs_torch(rank: int, world_size: int, per_node: int) -> dict:
    cfg = config(
        world_size // per_node,
        per_node,
        {"name": "hierarchical-local-sgd", "localSteps": HIER_H, "blockSteps": HIER_HB},
        {"momentum": MOMENTUM, "nesterov": False, "weightDecay": 0, "warmupEpochs": 0},
        epochs=HIER_STEPS,
    )

    def plain_sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    ours = run_ours(cfg, rank, 1, make_optimizer=plain_sgd)

    reference = make_model()
    optimizer = plain_sgd(reference)
    averager = HierarchicalModelAverager(
        OrderedDict([(HIER_H, per_node), (HIER_H * HIER_HB, world_size)]), warmup_steps=0
    )
    # torch averages when its counter (from 0) divides a period, so also after
    # the first step; Lin et al. average after H, 2H, ... steps: start at 1.
    averager.step = 1
    lr = LearningRateSchedule.from_config(cfg, world_size, 1)
    for step in range(HIER_STEPS):
        for group in optimizer.param_groups:
            group["lr"] = lr(step)
        x, y = make_batch(rank, step)
        F.cross_entropy(reference(x), y).backward()
        optimizer.step()
        # torch's averagers skip parameters without a gradient: average before zero_grad.
        averager.average_parameters(reference.parameters())
        optimizer.zero_grad(set_to_none=True)
    return {"ours": parameters(ours), "torch": parameters(reference)}


@pytest.mark.parametrize("per_node", [2, 3])
def test_hierarchical_equals_torch_hierarchical_model_averager(tmp_path, per_node: int) -> None:
    results = run_on_ranks(
        hierarchical_vs_torch,
        2 * per_node,
        tmp_path,
        args=(per_node,),
        local_world_size=per_node,
        timeout=120,
    )
    initial = parameters(make_model())
    for rank, result in enumerate(results):
        # (The first layer's bias has no gradient: the BatchNorm after it cancels it.)
        assert not torch.equal(result["torch"]["0.weight"], initial["0.weight"]), "no training"
        for name, expected in result["torch"].items():
            torch.testing.assert_close(
                result["ours"][name], expected, rtol=0, atol=1e-6, msg=f"rank {rank} {name}"
            )
    # 13 steps end between averagings: nodes must differ (a broadcast or a
    # world-size divisor instead of the node's would not match torch above).
    assert not torch.equal(results[0]["ours"]["0.weight"], results[per_node]["ours"]["0.weight"])


# ---------------------------------------------------------------- H = 1 and mini-batch SGD

H1_EPOCHS, H1_STEPS_PER_EPOCH = 3, 4


def h1_vs_mini_batch(rank: int, world_size: int) -> dict:
    """Nesterov momentum, weight decay, BatchNorm, warm-up and a decay, over 3 epochs."""
    optimizer = {
        "learningRate": LR,
        "baseBatchSize": BATCH,
        "momentum": MOMENTUM,
        "nesterov": True,
        "weightDecay": 5e-3,
        "warmupEpochs": 1,
        "milestones": [0.75],
    }
    runs = {}
    for key, algorithm in [
        ("mini_batch", {"name": "mini-batch-sgd"}),
        ("local_h1", {"name": "local-sgd", "localSteps": 1}),
    ]:
        cfg = config(1, world_size, algorithm, optimizer, epochs=H1_EPOCHS)
        runs[key] = parameters(run_ours(cfg, rank, H1_STEPS_PER_EPOCH))
    return runs


def test_local_sgd_with_h1_equals_mini_batch_with_nesterov_weight_decay_and_batchnorm(
    tmp_path,
) -> None:
    results = run_on_ranks(h1_vs_mini_batch, 2, tmp_path, timeout=120)
    initial = parameters(make_model())
    for result in results:
        assert not torch.equal(result["mini_batch"]["3.weight"], initial["3.weight"])
        for name, expected in result["mini_batch"].items():
            torch.testing.assert_close(result["local_h1"][name], expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- post-local, default switch

POST_H, POST_SPE = 2, 3


def first_decay_step(epochs: int, steps_per_epoch: int, milestone: float) -> int:
    """The step at which the test's lr (constant, × 0.1 from the milestone on) first decays."""
    lrs = [step_lr(s, epochs, steps_per_epoch, milestone) for s in range(epochs * steps_per_epoch)]
    return next(s for s in range(1, len(lrs)) if lrs[s] < lrs[s - 1])


def step_lr(step: int, epochs: int, steps_per_epoch: int, milestone: float) -> float:
    # Goyal et al.'s step decay at a fraction of all iterations, rounded to the nearest step.
    return LR * (0.1 if step >= round(milestone * epochs * steps_per_epoch) else 1.0)


def post_local_vs_torch(rank: int, world_size: int, epochs: int) -> dict:
    milestone = 0.5
    cfg = config(
        1,
        world_size,
        {"name": "post-local-sgd", "localSteps": POST_H},
        {
            "learningRate": LR,
            "scaling": "none",
            "momentum": MOMENTUM,
            "nesterov": False,
            "weightDecay": 0,
            "warmupEpochs": 0,
            "milestones": [milestone],
        },
        epochs=epochs,
    )

    def plain_sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    ours = run_ours(cfg, rank, POST_SPE, make_optimizer=plain_sgd)

    switch = first_decay_step(epochs, POST_SPE, milestone)
    reference = make_model()
    ddp = DistributedDataParallel(reference)
    # After the switch each rank's gradients stay its own: a subgroup of one rank.
    own_group, _ = dist.new_subgroups(group_size=1)
    ddp.register_comm_hook(
        PostLocalSGDState(process_group=None, subgroup=own_group, start_localSGD_iter=switch),
        post_localSGD_hook,
    )
    optimizer = plain_sgd(reference)
    averager = PeriodicModelAverager(period=POST_H, warmup_steps=switch)
    averager.step = 1  # average after T + H − 1, T + 2H − 1, ... (see hierarchical above)
    for step in range(epochs * POST_SPE):
        for group in optimizer.param_groups:
            group["lr"] = step_lr(step, epochs, POST_SPE, milestone)
        x, y = make_batch(rank, step)
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()
        # torch's averagers skip parameters without a gradient: average before zero_grad.
        averager.average_parameters(reference.parameters())
        optimizer.zero_grad(set_to_none=True)
    return {"ours": parameters(ours), "torch": parameters(reference), "switch": switch}


@pytest.mark.parametrize("epochs", [5, 3])
def test_post_local_default_switch_equals_torch_post_local_sgd(tmp_path, epochs: int) -> None:
    # round(0.5 × epochs) epochs and round(0.5 × epochs × 3) steps disagree for both.
    switch = first_decay_step(epochs, POST_SPE, 0.5)
    assert switch != round(0.5 * epochs) * POST_SPE
    results = run_on_ranks(post_local_vs_torch, 2, tmp_path, args=(epochs,), timeout=120)
    for result in results:
        assert result["switch"] == switch
        for name, expected in result["torch"].items():
            torch.testing.assert_close(result["ours"][name], expected, rtol=0, atol=1e-6)
    # The run ends between averagings (local phase really ran): ranks differ.
    assert not torch.equal(results[0]["ours"]["0.weight"], results[1]["ours"]["0.weight"])
