"""The node agent's loop: watch pods bound to our nodes, run them, report, clean up.

One agent plays the kubelet of several Nodes. Each pod bound to one of them gets
an address of its own from the pod network (dsgd_cluster.pod_network) as its pod IP,
runs as a local process group (container.py decides argv and env), and its status
goes back through the status subresource the way a kubelet reports it: phase,
conditions, podIP, containerStatuses with exit codes and reasons. Deleting a pod sends SIGTERM,
waits for the grace period, SIGKILLs, then removes the pod object (the kubelet's
final delete). With `run_pods=False` pods are only reported Running (for
measuring the operator without training load).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import queue
import signal
import socket
import subprocess
import threading
import time

from dsgd_contract.pod import ATTEMPT_LABEL, JOB_NAME_LABEL
from kubernetes import client, watch

from dsgd_cluster.node_agent import nodes
from dsgd_cluster.node_agent.container import AgentContext, PodSetupError, prepare
from dsgd_cluster.node_agent.pod_status import RunningPod, status_body, termination_message
from dsgd_cluster.pod_network import LOOPBACK

log = logging.getLogger("dsgd.node_agent")
HEARTBEAT_SECONDS = 10.0
STATUS_EVERY_HEARTBEATS = 3
RESTART_BACKOFF_MAX = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gang_key(pod: dict) -> tuple[str, str, str]:
    """(namespace, job, attempt): the pods that rendezvous at one master port."""
    labels = pod["metadata"].get("labels") or {}
    return (
        pod["metadata"]["namespace"],
        labels.get(JOB_NAME_LABEL, ""),
        labels.get(ATTEMPT_LABEL, ""),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NodeAgent:
    """Registers `node_names`, then runs what the scheduler binds to them until stopped."""

    def __init__(
        self,
        api: client.ApiClient,
        ctx: AgentContext,
        node_names: list[str],
        gpus_per_node: int = 0,
        run_pods: bool = True,
        pod_network: ipaddress.IPv4Network = LOOPBACK,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.ctx = ctx
        self.node_names = node_names
        self.gpus = gpus_per_node
        self.run_pods = run_pods
        self.pods: dict[str, RunningPod] = {}  # by uid
        #: Per gang: torchrun's rendezvous port and downpour-sgd's RPC store port.
        self.master_ports: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.stopping = threading.Event()
        self.pod_network = pod_network
        # Two clusters on one machine share the pod network: agents start apart.
        self._next_ip = (os.getpid() % 256) * 256

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        for name in self.node_names:
            nodes.register(self.core, name, self.gpus, "127.0.0.1")
            nodes.renew_lease(self.coordination, name)
        threading.Thread(target=self._heartbeat, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()
        log.info("node agent ready: %s", ", ".join(self.node_names))
        while not self.stopping.is_set():
            try:
                kind, pod = self.events.get(timeout=0.2)
            except queue.Empty:
                kind, pod = "", {}
            try:
                if pod:
                    self._on_event(kind, pod)
                self._tick()
            except client.ApiException as error:
                log.warning("API error: %s %s", error.status, error.reason)
        self._shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def _shutdown(self) -> None:
        for pod in self.pods.values():
            self._terminate(pod, grace=5.0)

    def _heartbeat(self) -> None:
        beats = 0
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            beats += 1
            for name in self.node_names:
                with contextlib.suppress(Exception):
                    nodes.renew_lease(self.coordination, name)
                    if beats % STATUS_EVERY_HEARTBEATS == 0:
                        nodes.post_status(self.core, name, self.gpus, "127.0.0.1")

    def _watch(self) -> None:
        """Feed pod events into the queue; relist on every (re)connection."""
        while not self.stopping.is_set():
            try:
                listing = self.api.sanitize_for_serialization(
                    self.core.list_pod_for_all_namespaces()
                )
                for pod in listing["items"]:
                    self.events.put(("SYNC", pod))
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=300,
                    _preload_content=True,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    obj = self.api.sanitize_for_serialization(event["object"])
                    self.events.put((event["type"], obj))
            except Exception as error:  # a dropped watch: relist after a breath
                log.info("pod watch restarts: %s", error)
                time.sleep(1.0)

    # -- pods ----------------------------------------------------------------------------------

    def _on_event(self, kind: str, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("nodeName") not in self.node_names:
            return
        uid = meta["uid"]
        known = self.pods.get(uid)
        if kind == "DELETED":
            if known is not None:
                self._terminate(known, grace=0)
                self.pods.pop(uid, None)
            return
        if known is None:
            phase = (pod.get("status") or {}).get("phase", "Pending")
            if phase != "Pending" or meta.get("deletionTimestamp"):
                if meta.get("deletionTimestamp"):
                    self._remove(meta["namespace"], meta["name"], uid)
                return
            known = self._admit(pod)
        known.pod = pod
        if meta.get("deletionTimestamp") and not known.deleting:
            known.deleting = True
            grace = meta.get("deletionGracePeriodSeconds")
            grace = spec.get("terminationGracePeriodSeconds", 30) if grace is None else grace
            threading.Thread(target=self._delete, args=(known, float(grace)), daemon=True).start()

    def _admit(self, pod: dict) -> RunningPod:
        meta, spec = pod["metadata"], pod["spec"]
        # Host addresses only: not the network's first (.0) nor its last (broadcast).
        ip = str(self.pod_network[1 + self._next_ip % (self.pod_network.num_addresses - 2)])
        self._next_ip += 1
        pod_dir = self.ctx.workdir / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        running = RunningPod(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            node=spec["nodeName"],
            ip=ip,
            restart_policy=spec.get("restartPolicy", "Always"),
            container=spec["containers"][0]["name"],
            log_path=pod_dir / "container.log",
            pod=pod,
        )
        self.pods[meta["uid"]] = running
        return running

    def _tick(self) -> None:
        # A gang's master port lives as long as one of its pods is on these nodes.
        live = {_gang_key(pod.pod) for pod in list(self.pods.values())}
        for key in self.master_ports.keys() - live:
            del self.master_ports[key]
        for pod in list(self.pods.values()):
            if pod.deleting or pod.final:
                continue
            if pod.process is None:
                if time.monotonic() >= pod.next_start:
                    self._start(pod)
                continue
            code = pod.process.poll()
            if code is not None:
                self._on_exit(pod, code)

    def _master_ports(self, pod: dict) -> tuple[int, int]:
        """One pair of ports per gang (job and attempt), shared by its pods on every node
        served: torchrun's rendezvous and downpour-sgd's RPC store."""
        return self.master_ports.setdefault(_gang_key(pod), (_free_port(), _free_port()))

    def _start(self, pod: RunningPod) -> None:
        if not self.run_pods:
            pod.started_at = _now()
            self._report_running(pod)
            pod.final = True  # nothing more will happen to it
            return
        try:
            threads = max(1, (os.cpu_count() or 1) // 2)
            launch = prepare(
                self.ctx, pod.pod, pod.node, pod.ip, self._master_ports(pod.pod), threads
            )
        except PodSetupError as error:
            pod.next_start = time.monotonic() + 2.0
            self._report_waiting(pod, error.reason, str(error))
            return
        pod.termination_log = launch.termination_log
        pod.log_path.parent.mkdir(parents=True, exist_ok=True)
        with pod.log_path.open("ab") as out:
            pod.process = subprocess.Popen(
                launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pod.started_at = _now()
        log.info("started %s/%s as pid %d at %s", pod.namespace, pod.name, pod.process.pid, pod.ip)
        self._report_running(pod)

    def _record_exit(self, pod: RunningPod, code: int) -> int:
        """Remember how the container ended (128 + N for signal N, as a runtime reports)."""
        exit_code = 128 - code if code < 0 else code
        pod.last_exit = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": pod.started_at,
            "finishedAt": _now(),
            "containerID": f"dsgd://{pod.process.pid if pod.process else 0}",
        }
        if code < 0:
            pod.last_exit["signal"] = -code
        message = termination_message(pod, exit_code)
        if message:
            pod.last_exit["message"] = message
        pod.process = None
        return exit_code

    def _on_exit(self, pod: RunningPod, code: int) -> None:
        exit_code = self._record_exit(pod, code)
        restart = pod.restart_policy == "Always" or (
            pod.restart_policy == "OnFailure" and exit_code
        )
        if restart:
            pod.restarts += 1
            pod.next_start = time.monotonic() + min(
                RESTART_BACKOFF_MAX, 2.0 ** min(pod.restarts, 5)
            )
            self._report_waiting(
                pod, "CrashLoopBackOff", f"back-off restarting container {pod.container}"
            )
            return
        pod.final = True
        self._report_terminated(pod, "Succeeded" if exit_code == 0 else "Failed")

    # -- status --------------------------------------------------------------------------------

    def _report(self, pod: RunningPod, phase: str, state: dict) -> None:
        try:
            self.core.patch_namespaced_pod_status(
                pod.name, pod.namespace, {"status": status_body(pod, phase, state, _now())}
            )
        except client.ApiException as error:
            if error.status != 404:  # gone already: nothing to report to
                raise

    def _report_running(self, pod: RunningPod) -> None:
        self._report(pod, "Running", {"running": {"startedAt": pod.started_at}})

    def _report_waiting(self, pod: RunningPod, reason: str, message: str) -> None:
        phase = "Running" if pod.restarts else "Pending"
        self._report(pod, phase, {"waiting": {"reason": reason, "message": message}})

    def _report_terminated(self, pod: RunningPod, phase: str) -> None:
        self._report(pod, phase, {"terminated": pod.last_exit})

    # -- deletion ------------------------------------------------------------------------------

    def _delete(self, pod: RunningPod, grace: float) -> None:
        """Graceful stop, final status, then the kubelet's final delete of the object."""
        process = pod.process
        self._terminate(pod, grace)
        if process is not None and not pod.final:
            exit_code = self._record_exit(pod, process.returncode)
            pod.final = True
            self._report_terminated(pod, "Succeeded" if exit_code == 0 else "Failed")
        self._remove(pod.namespace, pod.name, pod.uid)
        self.pods.pop(pod.uid, None)

    def _remove(self, namespace: str, name: str, uid: str) -> None:
        body = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
        )
        with contextlib.suppress(client.ApiException):
            self.core.delete_namespaced_pod(name, namespace, body=body)

    @staticmethod
    def _terminate(pod: RunningPod, grace: float) -> None:
        process = pod.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            process.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
