"""The local control plane itself: what every cluster test stands on.

Oracles are the real components: the API server's /version and admission,
the scheduler's bindings, the controller manager's ServiceAccount tokens and
garbage collector, and the node agent's reports of processes that really ran.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import urllib.request

import pytest
from dsgd_cluster import pod_network
from dsgd_cluster.control_plane import COMPONENTS, down, status, up
from dsgd_cluster.node_agent.agent import NodeAgent
from dsgd_cluster.node_agent.pod_status import RunningPod
from dsgd_contract.pod import ATTEMPT_LABEL, JOB_NAME_LABEL
from dsgd_operator import process_tree
from kubernetes import client

from tests._polling import wait_until

pytestmark = pytest.mark.slow


def _pod(name: str, command: list[str], **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": "python",
                    "command": command,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            **spec,
        },
    }


def _phase(core: client.CoreV1Api, name: str, namespace: str) -> str:
    return core.read_namespaced_pod(name, namespace).status.phase


def test_version_is_the_pinned_release(kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"
    assert version["clientVersion"]["gitVersion"] == "v1.37.2"


def test_nodes_registered_ready_with_capacity(kube_api) -> None:
    nodes = client.CoreV1Api(kube_api).list_node().items
    assert len(nodes) == 4
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True"
        assert int(node.status.capacity["cpu"]) == os.cpu_count()
    leases = client.CoordinationV1Api(kube_api).list_namespaced_lease("kube-node-lease").items
    assert {lease.metadata.name for lease in leases} >= {n.metadata.name for n in nodes}


def test_pod_security_admission_refuses_a_privileged_pod(kube_api, namespace) -> None:
    pod = _pod("bad", ["true"])
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(kube_api).create_namespaced_pod(namespace, pod)
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body


def test_pod_runs_as_a_process_and_reports_its_exit_code(kube_api, namespace) -> None:
    core = client.CoreV1Api(kube_api)
    script = (
        "import os, sys; print(os.environ['POD_NAME'], os.environ['POD_IP']); "
        "sys.exit(int(os.environ['CODE']))"
    )
    pod = _pod("exits-3", ["python", "-c", script])
    pod["spec"]["containers"][0]["env"] = [
        {"name": "CODE", "value": "3"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    core.create_namespaced_pod(namespace, pod)
    wait_until(lambda: _phase(core, "exits-3", namespace) == "Failed", 60, "pod Failed")
    read = core.read_namespaced_pod("exits-3", namespace)
    assert read.spec.node_name.startswith("dsgd-node-")  # the real scheduler bound it
    terminated = read.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"
    pod_ip = ipaddress.ip_address(read.status.pod_ip)
    assert pod_ip in pod_network.ROUTABLE or pod_ip in pod_network.LOOPBACK


def test_a_services_endpoints_are_its_pods_ips_and_answer_there(kube_api, namespace) -> None:
    """Pod IPs a Service can hold (an EndpointSlice refuses loopback ones): the controller
    manager lists the pod's IP and port, and the pod's listener answers at that address."""
    core = client.CoreV1Api(kube_api)
    serve = (
        "import http.server as h, os; "
        "h.HTTPServer((os.environ['IP'], 8000), h.SimpleHTTPRequestHandler).serve_forever()"
    )
    pod = _pod("web", ["python", "-c", serve])
    container = pod["spec"]["containers"][0]
    container["env"] = [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    container["ports"] = [{"name": "http", "containerPort": 8000}]
    pod["metadata"]["labels"] = {"app": "web"}
    core.create_namespaced_pod(namespace, pod)
    pod_ip = wait_until(
        lambda: core.read_namespaced_pod("web", namespace).status.pod_ip, 60, "the pod's IP"
    )
    if ipaddress.ip_address(pod_ip) in pod_network.LOOPBACK:
        pytest.skip("loopback pod IPs: no local route for the pod network (root, iproute2)")
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    discovery = client.DiscoveryV1Api(kube_api)

    def addresses() -> list[tuple[str, int]]:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=web"
        ).items
        return [
            (address, port.port)
            for piece in slices
            for endpoint in piece.endpoints or []
            if endpoint.conditions.ready
            for address in endpoint.addresses
            for port in piece.ports or []
        ]

    ((address, port),) = wait_until(addresses, 60, "the Service's endpoint")
    assert address == pod_ip
    answered = wait_until(
        lambda: _get(f"http://{address}:{port}/"), 30, "the pod's server to answer"
    )
    assert answered == 200


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except OSError:
        return None


def test_termination_message_path_reaches_the_pods_status(kube_api, namespace) -> None:
    """As a kubelet: the file at terminationMessagePath becomes state.terminated.message
    (its first 4096 bytes); with FallbackToLogsOnError an empty file and a failure give
    the log's tail instead."""
    core = client.CoreV1Api(kube_api)
    write = "import os; open(os.environ['MESSAGE'], 'w').write('done: ' + 'x' * 5000)"
    pod = _pod("says-done", ["python", "-c", write])
    container = pod["spec"]["containers"][0]
    container["terminationMessagePath"] = "/var/run/result"
    container["env"] = [{"name": "MESSAGE", "value": "/var/run/result"}]
    core.create_namespaced_pod(namespace, pod)
    fail = "print('first line'); print('the error'); raise SystemExit(3)"
    fallback = _pod("falls-back", ["python", "-c", fail])
    fallback["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    core.create_namespaced_pod(namespace, fallback)
    wait_until(lambda: _phase(core, "says-done", namespace) == "Succeeded", 60, "Succeeded")
    done = core.read_namespaced_pod("says-done", namespace).status.container_statuses[0]
    assert done.state.terminated.message == ("done: " + "x" * 5000)[:4096]
    wait_until(lambda: _phase(core, "falls-back", namespace) == "Failed", 60, "Failed")
    failed = core.read_namespaced_pod("falls-back", namespace).status.container_statuses[0]
    assert failed.state.terminated.message == "first line\nthe error\n"


def test_service_account_token_authenticates_as_the_pod(cluster, kube_api, namespace) -> None:
    """The pod's kubeconfig carries a token minted for its ServiceAccount: RBAC applies."""
    core = client.CoreV1Api(kube_api)
    script = (
        "from kubernetes import client, config; config.load_kube_config(); "
        "api = client.AuthenticationV1Api(); "
        "r = api.create_self_subject_review({'apiVersion': 'authentication.k8s.io/v1', "
        "'kind': 'SelfSubjectReview'}); print('USER', r.status.user_info.username); "
        "client.CoreV1Api().list_namespaced_secret('kube-system')"
    )
    core.create_namespaced_pod(namespace, _pod("whoami", ["python", "-c", script]))
    wait_until(lambda: _phase(core, "whoami", namespace) in ("Succeeded", "Failed"), 60, "pod done")
    terminated = core.read_namespaced_pod("whoami", namespace).status.container_statuses[0]
    assert terminated.state.terminated.exit_code == 1
    # The API server, not the agent, says who the pod is and what it may not do.
    (log,) = (cluster.root / "pods" / namespace).glob("whoami-*/container.log")
    output = log.read_text()
    assert f"USER system:serviceaccount:{namespace}:default" in output, output
    assert "Forbidden" in output and "secrets" in output, output


def test_deleting_a_running_pod_stops_its_process(kube_api, namespace) -> None:
    core = client.CoreV1Api(kube_api)
    pod = _pod("sleeper", ["python", "-c", "import time; time.sleep(600)"])
    pod["spec"]["terminationGracePeriodSeconds"] = 5
    core.create_namespaced_pod(namespace, pod)
    wait_until(lambda: _phase(core, "sleeper", namespace) == "Running", 60, "pod Running")
    pid = int(
        core.read_namespaced_pod("sleeper", namespace)
        .status.container_statuses[0]
        .container_id.removeprefix("dsgd://")
    )
    os.kill(pid, 0)  # a real process
    core.delete_namespaced_pod("sleeper", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_until(gone, 30, "the pod object removed after its process stopped")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path) -> None:
    info = up(tmp_path / "c", nodes=1, tie_to_caller=True)
    try:
        pids = status(tmp_path / "c")
        assert all(pids.values())
        again = up(tmp_path / "c", nodes=1, tie_to_caller=True)
        assert again.server == info.server
        assert status(tmp_path / "c") == pids
    finally:
        stopped = down(tmp_path / "c")
    assert stopped == list(reversed(COMPONENTS))
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(status(tmp_path / "c").values())


def test_a_killed_callers_cluster_leaves_no_process(tmp_path) -> None:
    """A test session killed outright (SIGKILL: no fixture teardown) takes its tied
    cluster with it, every component; nothing is left to hold ports or memory."""
    root = tmp_path / "c"
    caller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, sys, time\n"
            "from dsgd_cluster.control_plane import up\n"
            "up(pathlib.Path(sys.argv[1]), nodes=1, tie_to_caller=True)\n"
            "print('up', flush=True)\n"
            "time.sleep(600)\n",
            str(root),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    pids: dict[str, int | None] = {}
    try:
        assert caller.stdout is not None and caller.stdout.readline() == "up\n"
        pids = status(root)
        assert all(pids.values()), pids
    finally:
        caller.kill()
        caller.wait()
    try:
        wait_until(
            lambda: not any(process_tree.running(pid) for pid in pids.values() if pid),
            30,
            "every component of the killed caller's cluster gone",
        )
    finally:
        down(root)


def test_a_gangs_master_port_is_kept_while_its_pods_live_and_freed_after(tmp_path) -> None:
    """The node agent gives all pods of a gang (job, attempt) one master port, and forgets
    it once no pod of that gang is left on its nodes (no map growing with every job)."""
    agent = NodeAgent(client.ApiClient(), ctx=None, node_names=["node-0"])  # type: ignore[arg-type]

    def pod(job: str, attempt: str, rank: int) -> RunningPod:
        labels = {JOB_NAME_LABEL: job, ATTEMPT_LABEL: attempt}
        body = {"metadata": {"namespace": "ns", "name": f"{job}-{rank}", "labels": labels}}
        running = RunningPod(
            "ns", f"{job}-{rank}", f"uid-{job}-{attempt}-{rank}", "node-0", "127.64.0.1",
            "Never", "trainer", tmp_path / "log", final=True, pod=body,
        )  # fmt: skip
        agent.pods[running.uid] = running
        return running

    a0, a1, b0 = pod("a", "0", 0), pod("a", "0", 1), pod("b", "0", 0)
    port = agent._master_ports(a0.pod)
    assert agent._master_ports(a1.pod) == port != agent._master_ports(b0.pod)
    assert agent._master_ports(pod("a", "1", 0).pod) != port  # a new attempt, a new gang
    del agent.pods[a0.uid]
    agent._tick()
    assert agent._master_ports(a1.pod) == port  # one pod of the gang is left
    for uid in [
        u for u, p in agent.pods.items() if p.pod["metadata"]["labels"][JOB_NAME_LABEL] == "a"
    ]:
        del agent.pods[uid]
    agent._tick()
    assert set(agent.master_ports) == {("ns", "b", "0")}
