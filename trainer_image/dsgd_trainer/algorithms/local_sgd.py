"""The local SGD family (Lin et al., Algorithms 1–5): a sync schedule + synchronisers.

local-sgd, post-local-sgd and hierarchical-local-sgd differ only in their
schedule (sync_schedule.py: when to average, at which scope, and post-local's
mini-batch phase); how a model is averaged is a synchroniser (model_sync.py:
dense all-reduce, or sign / EF-sign compressed deltas for the global scope;
intra-node averaging is always dense), followed at the global scope by the
outer optimizer's step when one is configured (outer.py). With
algorithm.overlapSteps τ ≥ 1 the global averaging is overlapped instead
(overlap.py): started after the due step, applied τ steps later with the local
progress kept; intra-node averaging stays blocking. This module runs them
together behind the Algorithm interface.

Local phase: every rank takes optimizer steps on its own batches without
communicating (momentum buffers stay local) and averages parameters and
floating buffers when the schedule says so. Payload per round: dense, Σ numel ×
element size of the averaged tensors; compressed, the int8 sign sums and
float32 scales (see compression.py) plus the dense buffers; wire bytes are
those of ring all-reduces of these over the scope's ranks (traffic.py).

Start of the local phase at step 0 (local-sgd, hierarchical): rank 0's
parameters and buffers are broadcast so that the replicas start identical, as
DDP does at construction; this one-time initialization is not counted. Doing it
at step 0 rather than at construction keeps it harmless when the loop loads a
per-rank checkpoint before building the algorithm.

Mini-batch phase (post-local, steps s < T): DDP gradient averaging, counted as
in mini_batch.py. The switch: after step T − 1 the replicas have identical
parameters (same averaged gradients) but each rank's BatchNorm statistics came
from its own last batch, so rank 0's buffers are broadcast (what DDP's next
forward would have done; its bytes are counted in the global scope, as no
round). That identical model is the compression reference x_sync. The local
phase runs on the bare model instead of DDP + no_sync(): no_sync would still
broadcast buffers in the first forward after a synced step, and the DDP wrapper
is dropped to free its gradient buckets. The wrapper is created lazily in the
first mini-batch step, so a run resumed in the local phase never broadcasts
rank 0's model over the others.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from dsgd_contract.config import Algorithm as AlgorithmConfig
from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import GLOBAL, INTRA_NODE
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dsgd_trainer.stop_vote import StopVote

from .averaging import broadcast_, make_replicas_identical_
from .base import Algorithm
from .context import DistContext
from .mini_batch import ddp_step_traffic, rank0_buffers_, wrap_in_ddp
from .model_sync import DenseSync, ModelSync, SignSync
from .outer import OuterOptimizedSync, OuterSGD
from .overlap import OverlappedAveraging
from .sync_schedule import SyncSchedule, make_sync_schedule


class LocalSGD(Algorithm):
    """Local steps, averaged at the scopes and steps `schedule` names, by the synchronisers."""

    def __init__(
        self, model: nn.Module, config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
    ) -> None:
        super().__init__(model, config, ctx, steps_per_epoch)
        self.name = config.algorithm.name
        self.schedule: SyncSchedule = make_sync_schedule(config, ctx, steps_per_epoch)
        #: τ ≥ 1: the global averaging, overlapped (overlap.py); None: blocking.
        self.overlap = make_overlapped_sync(config.algorithm, ctx.stop_vote)
        self.synchronisers: dict[str, ModelSync] = {
            GLOBAL: self.overlap or make_global_sync(config.algorithm, ctx.stop_vote),
            INTRA_NODE: DenseSync(group=ctx.intra_node_group),
        }
        #: The last step of training: an overlapped averaging still pending then is applied.
        self._last_step = config.training.epochs * steps_per_epoch - 1
        #: The step being run, or the next one after after_optimizer_step.
        self._step = 0
        #: Whether all ranks now hold identical parameters and floating buffers.
        self._synced = False
        #: The mini-batch phase's DDP wrapper, created lazily (see the module docstring).
        self._ddp: DistributedDataParallel | None = None
        #: One mini-batch step's traffic: the same every step, computed once.
        self._ddp_step_traffic = ddp_step_traffic(model, ctx.gang.world_size)

    def in_local_phase(self) -> bool:
        return self.schedule.in_local_phase(self._step)

    def training_model(self) -> nn.Module:
        if self.in_local_phase():
            return self.model
        if self._ddp is None:
            self._ddp = wrap_in_ddp(self.model, self.ctx)
        return self._ddp

    def step_context(self, step: int) -> AbstractContextManager[None]:
        if step == 0 and self._step == 0 and self.schedule.switch_step == 0:
            self._start_local_phase()
        self._step = step
        if not self.in_local_phase():
            self.training_model()  # wrap now (a collective), not inside the loop's forward
        return nullcontext()

    def after_optimizer_step(self, step: int) -> None:
        self._step = step + 1
        if not self.schedule.in_local_phase(step):
            self.counters.record(GLOBAL, self._ddp_step_traffic)
            if step + 1 == self.schedule.switch_step:
                self._switch_to_local()
            return
        scope = self.schedule.averaging_after(step)
        if self.overlap is not None:
            self._overlapped_step(step, scope)
            return
        if scope is None:
            self._synced = False
            return
        with self.counters.timed(self.ctx.device):
            sent = self.synchronisers[scope].synchronize(self.model)
        self.counters.record(scope, sent)
        self._synced = scope == GLOBAL
        if scope == GLOBAL:
            self.consensus_distance = self.synchronisers[GLOBAL].consensus_distance

    def _overlapped_step(self, step: int, scope: str | None) -> None:
        """τ ≥ 1: apply the averaging due after `step`, then start (global) or run
        (intra-node) the one the schedule names; the last step applies what is pending."""
        overlap = self.overlap
        assert overlap is not None
        self._synced = False  # the ranks' local progress since the snapshot differs
        if overlap.pending_due is None and scope is None:
            return  # the common step: no clock, no counters
        sent = None
        with self.counters.timed(self.ctx.device):
            applied = overlap.finish_due(self.model, step)
            if scope == GLOBAL:
                sent = overlap.start(self.model, due=step + overlap.steps)
            elif scope is not None:
                sent = self.synchronisers[scope].synchronize(self.model)
            if step >= self._last_step:
                applied = overlap.finish_due(self.model, step, last=True) or applied
        if scope is not None and sent is not None:
            self.counters.record(scope, sent)
        if applied:
            self.consensus_distance = overlap.consensus_distance

    def synchronize_for_evaluation(self) -> nn.Module:
        """Local phase: the model itself right after a global sync, else a copy holding
        what the global sync would produce now (model_sync.ModelSync.consensus_now:
        the plain average; with compression, the compressed consensus; overlapped, the
        average of the models with the pending averaging applied, overlap.py).
        Mini-batch phase: the model, with rank 0's buffers, as mini-batch SGD.
        """
        if self.in_local_phase():
            return (
                self.model if self._synced else self.synchronisers[GLOBAL].consensus_now(self.model)
            )
        self.training_model()  # before step 0 the DDP wrap is what makes replicas identical
        rank0_buffers_(self.model)  # parameters are identical already
        return self.model

    def _start_local_phase(self) -> None:
        """Step 0: make replicas identical (uncounted), the compression reference x_sync."""
        make_replicas_identical_(self.model)
        self.synchronisers[GLOBAL].reset(self.model)
        self._synced = True

    def _switch_to_local(self) -> None:
        """After step T − 1: rank 0's buffers (counted, no round); drop DDP; x_sync."""
        buffers = list(self.model.buffers())
        if buffers:
            with self.counters.timed(self.ctx.device):
                sent = broadcast_(buffers, src=0)
            self.counters.record(GLOBAL, sent, rounds=0)
        self._ddp = None
        self.synchronisers[GLOBAL].reset(self.model)
        self._synced = True

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "step": self._step,
            "synced": self._synced,
            "global_sync": self.synchronisers[GLOBAL].state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._step = int(state["step"])
        self._synced = bool(state["synced"])
        self.synchronisers[GLOBAL].load_state_dict(state["global_sync"])


def make_global_sync(algorithm: AlgorithmConfig, vote: StopVote | None = None) -> ModelSync:
    """The global synchronization for `algorithm.compression` (none | sign | ef-sign), followed
    by the outer optimizer's step unless that is plain averaging (outer.py). `vote`: the stop
    ballot rides on its all-reduces (dsgd_trainer.stop_vote)."""
    if algorithm.compression == "none":
        dense = DenseSync(vote=vote, measure=True)
        if algorithm.outer_optimizer.is_plain_averaging:
            return dense
        return OuterOptimizedSync(dense, OuterSGD(algorithm.outer_optimizer))
    if algorithm.compression in ("sign", "ef-sign"):
        return SignSync(error_feedback=algorithm.compression == "ef-sign", vote=vote)
    raise ValueError(f"unknown algorithm.compression {algorithm.compression!r}")


def make_overlapped_sync(
    algorithm: AlgorithmConfig, vote: StopVote | None = None
) -> OverlappedAveraging | None:
    """The overlapped global averaging for overlapSteps τ ≥ 1 (with the outer optimizer's
    step unless that is plain averaging); None for τ = 0 (blocking)."""
    if algorithm.overlap_steps == 0:
        return None
    if algorithm.compression != "none":  # the config refuses it (config_rules.overlap_errors)
        raise ValueError("overlapped averaging applies to uncompressed syncs")
    outer = (
        None
        if algorithm.outer_optimizer.is_plain_averaging
        else OuterSGD(algorithm.outer_optimizer)
    )
    return OverlappedAveraging(algorithm.overlap_steps, outer, vote)
