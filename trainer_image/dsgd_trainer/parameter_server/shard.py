"""One parameter server's state: its shard, the shard's optimizer, its version, its checkpoints.

Every operation takes the shard's lock, so the RPC threads that serve the
workers apply their pushes one at a time, in the order they arrive (no barrier,
no ordering between workers), and a fetch sees a whole number of pushes.

version: how many pushes the shard has applied since training began (restored
with a checkpoint). Staleness of a push: the version when it is applied minus
the version of the fetch the pushing replica's parameters came from.

Checkpoints (under training.checkpointDir):

    parameter-servers/ps-<i>/step-<n>.pt   the shard, its optimizer state and version
                                           after the workers' global step n

written when the workers checkpoint (dsgd_trainer.algorithms.downpour: the
workers are quiescent then, so the S files and the workers' files describe one
state), atomically; the newest KEEP + 1 stay (the workers keep KEEP complete
ones and may be writing one more).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from dsgd_contract.config import TrainingConfig

from dsgd_trainer.checkpoint import KEEP
from dsgd_trainer.parameter_server.update_rules import UpdateRule, make_update_rule
from dsgd_trainer.storage import atomic_write

FORMAT_VERSION = 1
CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")
#: Upper bounds of the staleness histogram (pushes); the summary keeps exact counts too.
STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def shard_directory(checkpoint_dir: Path, index: int) -> Path:
    return checkpoint_dir / "parameter-servers" / f"ps-{index}"


@dataclass
class StalenessStats:
    """Exact statistics of the staleness of the pushes applied by this server process."""

    count: int = 0
    total: int = 0
    maximum: int = 0
    #: staleness → pushes applied with it.
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, staleness: int) -> None:
        self.count += 1
        self.total += staleness
        self.maximum = max(self.maximum, staleness)
        self.counts[staleness] = self.counts.get(staleness, 0) + 1

    def as_dict(self) -> dict:
        return {
            "count": self.count,
            "mean": self.total / self.count if self.count else None,
            "max": self.maximum,
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
        }


class ShardNotReady(RuntimeError):
    """A fetch or push before the shard was initialized or restored."""


class Shard:
    """Shard `index` of `servers`, of the model the workers train under `config`."""

    def __init__(self, config: TrainingConfig, index: int, checkpoint_dir: Path) -> None:
        self.config = config
        self.index = index
        self.servers = config.topology.parameter_servers
        self.directory = shard_directory(checkpoint_dir, index)
        self._lock = threading.Lock()
        self.params: torch.Tensor | None = None
        self.rule: UpdateRule | None = None
        self.version = 0
        self.fetches = 0
        self.staleness = StalenessStats()
        #: Pushes applied by this process (after a restore: since the restore).
        self.applied_here = 0
        #: The checkpoint it resumed from (workers' step), None on a fresh start.
        self.restored_step: int | None = None
        #: Called with each push's staleness, and after each fetch (the Prometheus series).
        self.on_push: Callable[[int], None] = lambda staleness: None
        self.on_fetch: Callable[[], None] = lambda: None

    def initialize(self, values: torch.Tensor) -> None:
        """Start from the workers' initial parameters (fresh training)."""
        with self._lock:
            if self.params is not None:
                raise RuntimeError(f"parameter server {self.index} is already initialized")
            self.params = values.detach().to(torch.float32).clone()
            self.rule = make_update_rule(self.config.algorithm, self.params.numel())
            self.version = 0

    def fetch(self) -> tuple[torch.Tensor, int]:
        """(a copy of the shard, its version)."""
        with self._lock:
            params = self._ready()
            self.fetches += 1
            fetched = params.clone(), self.version
        self.on_fetch()
        return fetched

    def push(self, gradient: torch.Tensor, based_on: int, lr: float) -> int:
        """Apply `gradient` (computed on version `based_on`) with lr `lr`; returns its staleness."""
        with self._lock:
            params = self._ready()
            if gradient.shape != params.shape:
                raise ValueError(
                    f"a gradient of {gradient.numel()} numbers pushed to shard {self.index} "
                    f"of {params.numel()}"
                )
            staleness = self.version - based_on
            assert self.rule is not None
            self.rule.apply_(params, gradient, lr)
            self.version += 1
            self.applied_here += 1
            self.staleness.add(staleness)
        self.on_push(staleness)
        return staleness

    def save(self, step: int) -> None:
        """Checkpoint the shard as the state after the workers' global step `step`."""
        with self._lock:
            params = self._ready()
            assert self.rule is not None
            state = {
                "format": FORMAT_VERSION,
                "index": self.index,
                "servers": self.servers,
                "step": step,
                "version": self.version,
                "params": params.clone(),
                "rule": self.rule.name,
                "rule_state": self.rule.state_dict(),
            }
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(self.directory / f"step-{step}.pt", lambda file: torch.save(state, file))
            self._prune(step)

    def restore(self, step: int) -> int:
        """Load the checkpoint after the workers' step `step`; returns its version.

        FileNotFoundError / ValueError when it is missing or does not fit this shard.
        """
        path = self.directory / f"step-{step}.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)
        if (state.get("format"), state.get("index"), state.get("servers")) != (
            FORMAT_VERSION,
            self.index,
            self.servers,
        ):
            raise ValueError(
                f"{path} is not shard {self.index} of {self.servers} of this trainer version"
            )
        with self._lock:
            self.params = state["params"].clone()
            self.rule = make_update_rule(self.config.algorithm, self.params.numel())
            if self.rule.name != state["rule"]:
                raise ValueError(
                    f"{path} was written by serverOptimizer {state['rule']}, this run uses "
                    f"{self.rule.name}"
                )
            self.rule.load_state_dict(state["rule_state"])
            self.version = int(state["version"])
            self.restored_step = step
            return self.version

    def summary(self) -> dict:
        """What this server did, for parameter-server-<i>.json."""
        with self._lock:
            return {
                "shard": self.index,
                "servers": self.servers,
                "numel": None if self.params is None else self.params.numel(),
                "version": self.version,
                "applied_by_this_process": self.applied_here,
                "restored_from_step": self.restored_step,
                "fetches": self.fetches,
                "server_optimizer": None if self.rule is None else self.rule.name,
                "staleness": self.staleness.as_dict(),
            }

    def _ready(self) -> torch.Tensor:
        if self.params is None:
            raise ShardNotReady(f"parameter server {self.index} has no parameters yet")
        return self.params

    def _prune(self, current: int) -> None:
        steps = sorted(
            int(match.group(1))
            for entry in self.directory.iterdir()
            if (match := CHECKPOINT_NAME.match(entry.name))
        )
        kept = [s for s in steps if s <= current][-(KEEP + 1) :]
        for step in steps:
            if step not in kept:
                (self.directory / f"step-{step}.pt").unlink(missing_ok=True)
