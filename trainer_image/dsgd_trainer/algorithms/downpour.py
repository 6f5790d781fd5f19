"""Downpour SGD (Dean et al. 2012, "Large Scale Distributed Deep Networks", §4.1): the workers.

Each training rank is a model replica that never waits for another. Dean et
al.'s client (Algorithm 1.1 of their supplement, DownpourSGDClient(α, n_fetch,
n_push)), with the choices this module makes where the paper leaves one open:

    step ← 0; accrued ← 0
    loop:
        if step mod n_fetch = 0: parameters ← fetch()        # every shard, with its version
        g ← ∇loss(parameters, next mini-batch)              (+ weight decay · parameters)
        accrued ← accrued + g
        parameters ← parameters − α·g                        # the loop's optimizer: plain SGD
        if (step + 1) mod n_push = 0: push(accrued); accrued ← 0
        step ← step + 1

- n_fetch = algorithm.fetchSteps, n_push = algorithm.pushSteps, α = the lr
  schedule at `step` (dsgd_trainer.schedule; linear scaling counts one replica's
  batch). The config refuses momentum and LARS: between fetches a replica takes
  plain SGD steps, as in the paper. Weight decay is part of g (as torch.optim.SGD
  adds it), so what is pushed is the direction the local step took.
- Pushes: the accrued gradient is cut into the servers' shards (contiguous,
  size-balanced: parameter_server/sharding.py) and sent to each server with the
  version of that shard the replica last fetched and α at the pushing step; each
  server applies it the moment it arrives (Adagrad or SGD:
  parameter_server/update_rules.py) and counts its staleness, its version then
  minus the version sent. A push is asynchronous (the replica goes on computing)
  — the paper's "StartAsynchronouslyPushingGradients" — and the paper pushes
  when step mod n_push = 0, i.e. after the first step already; here each push
  carries n_push whole steps.
- Fetches wait: the replica computes on the fetched parameters, not on a mix
  (the paper starts the fetch and continues; a replica here waits for one
  round trip). A fetch is issued after the replica's own earlier pushes were
  applied (it waits for their acknowledgements): a replica always sees its own
  updates. With one replica, n_fetch = n_push = 1 and serverOptimizer sgd this
  is exactly sequential SGD without momentum (tests/test_downpour.py).

No barrier between replicas during training. The training loop still meets all
ranks at its evaluation points and epoch ends (its statistics all-reduce and
stop ballots), and two more points are collective here:

- evaluation: every replica waits for its pushes, the ranks meet (barrier), rank 0
  fetches the servers' whole model and broadcasts it; that model, with the
  replicas' floating buffers averaged (BatchNorm statistics live on the workers),
  is what is evaluated. Not counted in the traffic, like the other algorithms'
  evaluation averaging.
- checkpoint (state_dict, at the loop's epoch-end checkpoints): every replica
  waits for its pushes, the ranks meet, rank 0 has every server save its shard,
  optimizer state and version as the state after this global step, and the ranks
  meet again before anyone pushes on. The servers' files and the workers' files
  then describe one state: a gang restarted from them applies no update twice
  and loses none (the updates after the checkpoint are discarded with the old
  servers and recomputed). On resume rank 0 tells the servers which step to
  restore before the first step; on a fresh start it initializes them with its
  (seed-identical) initial parameters.

Traffic (counters, scopes push and fetch): one round per push or fetch by this
replica, Σ shard bytes = the trainable parameters' bytes each (traffic.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.rpc as rpc
from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import FETCH, PUSH
from torch import nn

from dsgd_trainer.optim import split_weight_decay
from dsgd_trainer.parameter_server import rpc_world, service
from dsgd_trainer.parameter_server.sharding import shard_bounds
from dsgd_trainer.schedule import LearningRateSchedule
from dsgd_trainer.stopping import TrainerExit

from . import traffic
from .averaging import average_, broadcast_, floating_buffers, payload_bytes, trainable_parameters
from .base import Algorithm
from .context import DistContext


class DownpourSGD(Algorithm):
    """One replica of Downpour SGD: fetch every n_fetch steps, push every n_push steps."""

    name = "downpour-sgd"

    def __init__(
        self, model: nn.Module, config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
    ) -> None:
        super().__init__(model, config, ctx, steps_per_epoch)
        algo = config.algorithm
        self.fetch_steps, self.push_steps = algo.fetch_steps, algo.push_steps
        self.schedule = LearningRateSchedule.from_config(
            config, ctx.gang.world_size, steps_per_epoch
        )
        self.params = trainable_parameters(model)
        decayed, _ = split_weight_decay(model, config.optimizer)
        decayed_ids = {id(p) for p in decayed}
        self._weight_decay = [
            config.optimizer.weight_decay if id(p) in decayed_ids else 0.0 for p in self.params
        ]
        numel = sum(p.numel() for p in self.params)
        servers = config.topology.parameter_servers
        self.bounds = shard_bounds(numel, servers)
        self.model_bytes = payload_bytes(self.params)
        self.accrued = torch.zeros(numel, dtype=torch.float32, device=ctx.device)
        #: The version of each shard at this replica's last fetch.
        self.versions = [0] * servers
        self._pending: list[torch.futures.Future] = []
        self._step = 0
        #: The servers' checkpoint to restore before the first step; None: initialize them.
        self._resume_step: int | None = None
        self._started = False
        rank = ctx.gang.rank
        rpc_world.join(rpc_world.worker_name(rank), servers + rank, servers + ctx.gang.world_size)

    # -- the Algorithm interface ----------------------------------------------------------

    def training_model(self) -> nn.Module:
        return self.model

    def step_context(self, step: int) -> AbstractContextManager[None]:
        return self._step_context(step)

    @contextmanager
    def _step_context(self, step: int) -> Iterator[None]:
        self._start()
        self._step = step
        if step % self.fetch_steps == 0:
            self._fetch()
        yield
        self._accrue()

    def after_optimizer_step(self, step: int) -> None:
        self._step = step + 1
        if (step + 1) % self.push_steps == 0:
            self._push(self.schedule(step))

    def synchronize_for_evaluation(self) -> nn.Module:
        """The servers' model, fetched whole by rank 0 and broadcast, with averaged buffers."""
        self._start()
        self._quiesce()
        replica = copy.deepcopy(self.model)
        params = trainable_parameters(replica)
        if self.ctx.gang.rank == 0:
            self._load(params, [shard for shard, _ in self._fetch_shards()])
        broadcast_(params, src=0)
        buffers = floating_buffers(replica)
        if buffers:
            average_(buffers)
        return replica

    def state_dict(self) -> dict:
        """Also checkpoints the servers (collective; see the module docstring)."""
        self._start()
        self._quiesce()
        if self.ctx.gang.rank == 0:
            self._on_servers(service.save, self._step)
        dist.barrier()  # nobody pushes before every server has saved
        return {
            **super().state_dict(),
            "accrued": self.accrued.clone(),
            "versions": list(self.versions),
            "server_step": self._step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore this replica's state; the servers are restored before the next step."""
        super().load_state_dict(state)
        if state["accrued"].shape != self.accrued.shape:
            raise ValueError("the accrued gradient does not fit this model")
        self.accrued.copy_(state["accrued"])
        self.versions = [int(v) for v in state["versions"]]
        self._resume_step = int(state["server_step"])

    # -- the exchanges ------------------------------------------------------------------------

    def _start(self) -> None:
        """Once, before anything else reaches the servers: initialize or restore them.

        Collective: the ranks meet after rank 0 did it."""
        if self._started:
            return
        self._started = True
        if self.ctx.gang.rank == 0:
            if self._resume_step is None:
                flat = torch.cat([p.detach().reshape(-1) for p in self.params]).float().cpu()
                futures = [
                    rpc.rpc_async(
                        rpc_world.server_name(i), service.initialize, args=(flat[a:b].clone(),)
                    )
                    for i, (a, b) in enumerate(self.bounds)
                ]
                torch.futures.wait_all(futures)
            else:
                self._restore_servers(self._resume_step)
        dist.barrier()

    def _restore_servers(self, step: int) -> None:
        try:
            self._on_servers(service.restore, step)
        except Exception as error:  # re-raised from the server, whatever it was there
            raise TrainerExit(
                exit_codes.INVALID_CONFIG,
                f"checkpoint error: the parameter servers cannot restore their shards of the "
                f"checkpoint after step {step} ({error}); they live under "
                "training.checkpointDir/parameter-servers, which must be the volume the "
                "servers wrote (mount the same PersistentVolumeClaim on every pod)",
            ) from error

    def _on_servers(self, function: Callable[..., Any], *args: object) -> list:
        futures = [
            rpc.rpc_async(rpc_world.server_name(i), function, args=args)
            for i in range(len(self.bounds))
        ]
        return torch.futures.wait_all(futures)

    def _quiesce(self) -> None:
        """Wait for this replica's pushes, then for every rank's (collective)."""
        self._wait_pushes()
        dist.barrier()

    def _wait_pushes(self) -> None:
        if self._pending:
            torch.futures.wait_all(self._pending)
            self._pending = []

    def _fetch_shards(self) -> list[tuple[torch.Tensor, int]]:
        futures = [
            rpc.rpc_async(rpc_world.server_name(i), service.fetch) for i in range(len(self.bounds))
        ]
        return torch.futures.wait_all(futures)

    @torch.no_grad()
    def _load(self, params: list[torch.Tensor], shards: list[torch.Tensor]) -> None:
        flat = torch.cat(shards).to(self.ctx.device)
        offset = 0
        for param in params:
            param.copy_(flat[offset : offset + param.numel()].view_as(param))
            offset += param.numel()

    def _fetch(self) -> None:
        with self.counters.timed(self.ctx.device):
            self._wait_pushes()  # a replica sees its own updates
            fetched = self._fetch_shards()
            self._load(self.params, [shard for shard, _ in fetched])
        self.versions = [version for _, version in fetched]
        self.counters.record(FETCH, traffic.parameter_server(self.model_bytes))

    @torch.no_grad()
    def _accrue(self) -> None:
        """accrued += g + weight decay · w, per parameter as torch.optim.SGD forms it."""
        offset = 0
        for param, decay in zip(self.params, self._weight_decay, strict=True):
            n = param.numel()
            if param.grad is not None:  # no gradient: SGD skips it, so does the push
                direction = param.grad if decay == 0 else param.grad.add(param, alpha=decay)
                self.accrued[offset : offset + n].add_(direction.reshape(-1))
            offset += n

    def _push(self, lr: float) -> None:
        # Pushes acknowledged by now leave the list (a failed one raises here).
        for future in [f for f in self._pending if f.done()]:
            future.wait()
        self._pending = [f for f in self._pending if not f.done()]
        with self.counters.timed(self.ctx.device):
            gradient = self.accrued.cpu() if self.accrued.is_cuda else self.accrued.clone()
            self._pending.extend(
                rpc.rpc_async(
                    rpc_world.server_name(i),
                    service.push,
                    # A clone per shard: RPC would send a view's whole storage.
                    args=(gradient[a:b].clone(), self.versions[i], lr),
                )
                for i, (a, b) in enumerate(self.bounds)
            )
            self.accrued.zero_()
        self.counters.record(PUSH, traffic.parameter_server(self.model_bytes))
