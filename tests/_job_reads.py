"""What tests read of a job and its pods and events, over any API that lists and gets.

Shared by the real-server helper (tests/_api_kubelet.py) and the emulator
(tests/_kmock_cluster.py): each provides `objects(resource)` and `get(resource, name)`
for its namespace; resources are written `group/version/plural` (`v1/pods`).
"""

from __future__ import annotations

from dsgd_contract.pod import JOB_NAME_LABEL
from dsgd_operator import api

JOBS = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"
PODS = "v1/pods"


class JobReads:
    """Reads built on `objects` and `get` (the subclass's)."""

    def objects(self, resource: str) -> list[dict]:
        raise NotImplementedError

    def get(self, resource: str, name: str) -> dict | None:
        raise NotImplementedError

    def job(self, name: str) -> dict | None:
        return self.get(JOBS, name)

    def status(self, name: str) -> dict:
        return (self.job(name) or {}).get("status") or {}

    def condition(self, job: str, kind: str) -> dict | None:
        conditions = self.status(job).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def pods(self, job: str) -> list[dict]:
        """The job's pods not being deleted, by name."""
        pods = [
            p
            for p in self.objects(PODS)
            if (p["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) == job
            and not p["metadata"].get("deletionTimestamp")
        ]
        return sorted(pods, key=lambda p: p["metadata"]["name"])

    def events(self, job: str) -> list[dict]:
        return [
            e
            for e in self.objects("v1/events")
            if (e.get("involvedObject") or {}).get("name") == job
        ]

    def event_reasons(self, job: str) -> list[str]:
        return [e["reason"] for e in self.events(job)]
