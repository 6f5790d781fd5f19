"""DistributedSGDJobs on the real API server: create, read status, conditions, events, pods.

Thin helpers over the admin client, so that tests read as the user's story;
every value comes from the API server, nothing is cached here.
"""

from __future__ import annotations

from dsgd_operator import api
from kubernetes import client

from tests._polling import wait_until

CHECKPOINT_EVERY = 3


def job_spec(epochs: int = 2, batch: int = 16, nodes: int = 2, **sections: dict) -> dict:
    """A tiny local-SGD job (digits, mlp) that trains for real in seconds."""
    spec = {
        "topology": {"nodes": nodes},
        "algorithm": {"name": "local-sgd", "localSteps": 2},
        "optimizer": {"warmupEpochs": 0, "learningRate": 0.05},
        "training": {
            "model": "mlp",
            "dataset": {"name": "digits"},
            "batchSizePerProcess": batch,
            "epochs": epochs,
            "checkpointEvery": CHECKPOINT_EVERY,
        },
        "runPolicy": {"backoffLimit": 2},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


class Jobs:
    """The jobs of one namespace, through the real API."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, name: str, spec: dict) -> dict:
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, body
        )

    def patch(self, name: str, changes: dict) -> dict:
        """Merge-patch the job (spec changes, as `kubectl patch --type merge` does)."""
        return self.custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, name, changes
        )

    def get(self, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, api.PLURAL, name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, name
        )

    def status(self, name: str) -> dict:
        return (self.get(name) or {}).get("status") or {}

    def condition(self, name: str, kind: str) -> dict | None:
        conditions = self.status(name).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def wait_phase(self, name: str, phase: str, timeout: float) -> dict:
        wait_until(lambda: self.phase(name) == phase, timeout, f"{name} {phase}")
        return self.status(name)

    def events(self, name: str) -> list:
        """The Events whose involvedObject is the job, oldest first."""
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [e for e in events if e.involved_object.kind == api.KIND]

    def event_reasons(self, name: str) -> list[str]:
        return [event.reason for event in self.events(name)]

    def pods(self, name: str) -> list:
        selector = f"{api.GROUP}/job-name={name}"
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def running_pids(self, name: str) -> dict[str, int]:
        """Pod name → pid of its running trainer process (the node agent's containerID)."""
        pids = {}
        for pod in self.pods(name):
            for container in pod.status.container_statuses or []:
                running = container.state and container.state.running
                if running and (container.container_id or "").startswith("dsgd://"):
                    pids[pod.metadata.name] = int(container.container_id.removeprefix("dsgd://"))
        return pids
