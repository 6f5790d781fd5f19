"""The API server's audit log as the operator benchmark's oracle and clock.

The log is JSON lines (`--audit-log-format=json`), one event per request at the
ResponseComplete stage (the policy omits RequestReceived). Its timestamps are
the server's: when a job was accepted and when its last pod was created, with no
client-side watch lag in between (a Python watch decoding 1,600 pods falls
seconds behind on 2 cores, which measured the clock instead of the operator).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


def audit_policy(users: list[str], resource: tuple[str, str]) -> dict:
    """Metadata-level events for every request of `users`, and for the creation of
    `resource` ((group, plural): the jobs) by anyone; nothing else."""
    group, plural = resource
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "users": users},
            {
                "level": "Metadata",
                "verbs": ["create"],
                "resources": [{"group": group, "resources": [plural]}],
            },
            {"level": "None"},
        ],
    }


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class JobTimes:
    """One job's life as the server logged it (Unix seconds; NaN until it happened)."""

    accepted: float = float("nan")  # the job's create request completed
    first_request: float = float("nan")  # the first request for its children was received
    last_pod_created: float = float("nan")
    pods: int = 0  # pods created so far

    @property
    def creation_to_pods(self) -> float:
        return self.last_pod_created - self.accepted


@dataclass
class AuditLog:
    """Reads the log as it grows; keeps every job's times and every user's requests."""

    path: Path
    jobs: dict[str, JobTimes] = field(default_factory=dict)
    _offset: int = 0
    _events: list[dict] = field(default_factory=list)
    _writes: int = 0

    def writes(self) -> int:
        """Requests so far that change something (not get, list or watch): a resync's
        periodic reads never make a quiet control plane look busy."""
        self.update()
        return self._writes

    def position(self) -> int:
        """Events read so far: where a phase's requests start."""
        self.update()
        return len(self._events)

    def update(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data.rfind(b"\n") + 1  # a line still being written waits for next time
        self._offset += complete
        for line in data[:complete].splitlines():
            event = json.loads(line)
            self._events.append(event)
            self._writes += event["verb"] not in ("get", "list", "watch")
            self._record(event)

    def _record(self, event: dict) -> None:
        ref = event.get("objectRef") or {}
        name, resource, verb = ref.get("name") or "", ref.get("resource"), event["verb"]
        if event["responseStatus"].get("code", 200) >= 300 or not name:
            return
        if resource == "distributedsgdjobs" and verb == "create" and not ref.get("subresource"):
            self.jobs.setdefault(name, JobTimes()).accepted = _seconds(event["stageTimestamp"])
            return
        # Children are named <job>-<suffix>; pods <job>-node-<i>.
        job = name.rsplit("-node-", 1)[0] if resource == "pods" else name
        times = self.jobs.get(job) or next(
            (t for j, t in self.jobs.items() if name.startswith(j + "-")), None
        )
        if times is None:
            return
        received = _seconds(event["requestReceivedTimestamp"])
        if not times.first_request <= received:  # NaN-safe min
            times.first_request = received
        if resource == "pods" and verb == "create":
            times.pods += 1
            finished = _seconds(event["stageTimestamp"])
            if not times.last_pod_created >= finished:
                times.last_pod_created = finished

    def wait(self, jobs: list[str], pods: int, timeout: float) -> dict[str, JobTimes]:
        """Each of `jobs` once all its `pods` pods were created; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            self.update()
            missing = [j for j in jobs if j not in self.jobs or self.jobs[j].pods < pods]
            if not missing:
                return {job: self.jobs[job] for job in jobs}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} jobs still lack pods after {timeout:.0f} s")
            time.sleep(0.05)

    def requests_by_kind(self, user: str, since: int, until: int | None = None) -> Counter:
        """`user`'s requests between two positions, by verb and resource (watches excluded:
        one long request each, not a per-job cost). Reads what the log holds by now: the
        requests that came after the last `wait` (status patches, events) count too."""
        self.update()
        kinds: Counter = Counter()
        for event in self._events[since:until]:
            if event["user"].get("username") != user or event["verb"] == "watch":
                continue
            ref = event.get("objectRef") or {}
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            kinds[f"{event['verb']} {ref.get('resource', event['requestURI'])}{sub}"] += 1
        return kinds
