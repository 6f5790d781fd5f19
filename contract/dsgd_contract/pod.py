"""The pod contract: how a trainer pod is named, labelled, started and wired.

The operator's builders lay pods out with these facts, `dsgd run` and the node
agent rewrite the same pods into local processes, and the trainer reads the
environment they describe. Names are `<job>-node-<i>` in a headless Service
`<job>`; torchrun rendezvouses statically on node 0 (PET_* variables, as
Kubeflow Trainer does); the trainer reads its config at DSGD_CONFIG and serves
Prometheus metrics on DSGD_METRICS_PORT.

A downpour-sgd job has S parameter-server pods `<job>-ps-<i>` besides: members
nodes … nodes + S − 1 of the gang (their NODE_RANK_LABEL), role PARAMETER_SERVER;
workers and servers meet in torch.distributed.rpc, whose store server 0 hosts on
PS_PORT (DSGD_PS_ADDR, DSGD_PS_PORT).
"""

from __future__ import annotations

from dsgd_contract import run_results

#: The API group: the CRD's and the prefix of every label and annotation dsgd sets.
GROUP = "dsgd.io"

# -- labels ------------------------------------------------------------------------------------

JOB_NAME_LABEL = f"{GROUP}/job-name"
NODE_RANK_LABEL = f"{GROUP}/node-rank"
#: The gang attempt (status.restarts): a recreated gang is told apart from the
#: old one while the old pods are still terminating.
ATTEMPT_LABEL = f"{GROUP}/attempt"
#: What a pod runs: a node of training ranks, or one parameter server (downpour-sgd).
ROLE_LABEL = f"{GROUP}/role"
WORKER = "worker"
PARAMETER_SERVER = "parameter-server"


def job_labels(job_name: str) -> dict[str, str]:
    """Labels on every object of the job; also the selector of its pods."""
    return {JOB_NAME_LABEL: job_name}


def pod_labels(job_name: str, node_rank: int, attempt: int, role: str = WORKER) -> dict[str, str]:
    """The labels of gang member `node_rank` of gang attempt `attempt`.

    Members 0 … nodes − 1 are the worker nodes; a downpour-sgd job's parameter
    server i is member nodes + i, with role PARAMETER_SERVER.
    """
    return {
        **job_labels(job_name),
        NODE_RANK_LABEL: str(node_rank),
        ATTEMPT_LABEL: str(attempt),
        ROLE_LABEL: role,
    }


# -- names -------------------------------------------------------------------------------------

#: Longest pod-name suffix added to a job name is "-node-" + the digits of the last rank.
POD_NAME_INFIX = "-node-"


def service_name(job_name: str) -> str:
    """The headless Service that gives the pods their DNS names."""
    return job_name


def config_map_name(job_name: str) -> str:
    return f"{job_name}-config"


def pod_name(job_name: str, node_rank: int) -> str:
    """Also the pod's hostname: `<job>-node-<i>`."""
    return f"{job_name}{POD_NAME_INFIX}{node_rank}"


#: Parameter server i of a downpour-sgd job: `<job>-ps-<i>` (shorter than POD_NAME_INFIX).
PARAMETER_SERVER_INFIX = "-ps-"


def parameter_server_pod_name(job_name: str, index: int) -> str:
    """Also the pod's hostname: `<job>-ps-<index>`."""
    return f"{job_name}{PARAMETER_SERVER_INFIX}{index}"


def parameter_server_address(job_name: str) -> str:
    """Server 0's DNS name within the namespace: the host of the RPC store."""
    return f"{parameter_server_pod_name(job_name, 0)}.{service_name(job_name)}"


def member_pod_names(job_name: str, nodes: int, parameter_servers: int) -> list[str]:
    """The pod name of each gang member in member order: the nodes, then the servers."""
    return [pod_name(job_name, rank) for rank in range(nodes)] + [
        parameter_server_pod_name(job_name, index) for index in range(parameter_servers)
    ]


def pod_group_name(job_name: str) -> str:
    return job_name


def master_address(job_name: str) -> str:
    """Node 0's DNS name within the namespace (hostname.subdomain): torchrun's store host."""
    return f"{pod_name(job_name, 0)}.{service_name(job_name)}"


# -- the container -----------------------------------------------------------------------------

CONTAINER_NAME = "trainer"
#: torchrun, except that the pod exits with the failing worker's exit code.
COMMAND = ("python", "-m", "dsgd_trainer.launch")
#: The operator restarts whole gangs; torchrun restarting workers in place
#: would hide failures from it. Everything else comes from the PET_* env.
ARGS = ("--max-restarts=0", "--module", "dsgd_trainer")

#: torchrun's static rendezvous on node 0 (its default port), and the trainer's metrics.
RENDEZVOUS_PORT = 29500
METRICS_PORT = 9400
RENDEZVOUS_PORT_NAME = "rendezvous"
METRICS_PORT_NAME = "metrics"
#: A parameter server's process (dsgd_trainer.parameter_server) and the RPC store on server 0.
#: TensorPipe's own connections use ephemeral ports of every member, as NCCL's do.
PS_COMMAND = ("python", "-m", "dsgd_trainer.parameter_server")
PS_PORT = 29600
PS_PORT_NAME = "rpc-store"

# -- paths -------------------------------------------------------------------------------------

CONFIG_DIR = "/etc/dsgd"
CONFIG_FILE = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
TMP_DIR = "/tmp"
SHM_DIR = "/dev/shm"
#: prometheus-client's multiprocess directory: inside the writable /tmp.
METRICS_DIR = f"{TMP_DIR}/dsgd-metrics"

# -- the environment ---------------------------------------------------------------------------

#: torchrun's flags, as environment variables.
NNODES_ENV = "PET_NNODES"
NPROC_PER_NODE_ENV = "PET_NPROC_PER_NODE"
NODE_RANK_ENV = "PET_NODE_RANK"
MASTER_ADDR_ENV = "PET_MASTER_ADDR"
MASTER_PORT_ENV = "PET_MASTER_PORT"
#: The trainer's.
CONFIG_ENV = "DSGD_CONFIG"
METRICS_PORT_ENV = "DSGD_METRICS_PORT"
#: The address the metrics server binds (unset: every interface). Pods that share
#: one host (the local cluster's node agent) set their pod IP here.
METRICS_ADDR_ENV = "DSGD_METRICS_ADDR"
JOB_NAME_ENV = "DSGD_JOB_NAME"
#: downpour-sgd: the RPC store's host and port (server 0), and a server's shard index.
PS_ADDR_ENV = "DSGD_PS_ADDR"
PS_PORT_ENV = "DSGD_PS_PORT"
PS_INDEX_ENV = "DSGD_PS_INDEX"
#: How long a collective waits for its peers (optional; the trainer has a default).
COLLECTIVE_TIMEOUT_ENV = "DSGD_COLLECTIVE_TIMEOUT_SECONDS"
#: On GPUs, run each training step under torch.cuda.set_sync_debug_mode with this value
#: ("warn" or "error"): every host synchronisation inside a step is reported
#: (benchmarks/gpu_check.sh sets it; unset in pods).
CUDA_SYNC_DEBUG_ENV = "DSGD_CUDA_SYNC_DEBUG"
#: Where rank 0 writes the run's results message (dsgd_contract.run_results): the trainer
#: container's terminationMessagePath, so that Kubernetes puts it on the pod's status.
RESULTS_MESSAGE_ENV = run_results.RESULTS_MESSAGE_ENV
TERMINATION_MESSAGE_PATH = run_results.TERMINATION_MESSAGE_PATH
#: prometheus-client's multiprocess directory, shared by the ranks of a pod.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: torchrun reads PET_* as its flags and the trainer reads DSGD_*: a user value
#: would rewire the gang or point it at another config.
RESERVED_ENV_PREFIXES = ("PET_", "DSGD_")
RESERVED_ENV_NAMES = (MULTIPROC_DIR_ENV,)


def trainer_env(
    *,
    nodes: int,
    processes_per_node: int,
    node_rank: int,
    master_addr: str,
    job_name: str,
    master_port: int = RENDEZVOUS_PORT,
    config_path: str = CONFIG_PATH,
    metrics_port: int = METRICS_PORT,
    multiproc_dir: str = METRICS_DIR,
    results_message_path: str = TERMINATION_MESSAGE_PATH,
    parameter_server_addr: str | None = None,
) -> dict[str, str]:
    """The trainer container's own environment, in the pod contract's order.

    The defaults are a pod's; `dsgd run`, the node agent and the tests pass
    local values (loopback, free ports, local paths) for the same variables.
    `parameter_server_addr` (downpour-sgd): where the workers find the RPC store.
    """
    servers = (
        {}
        if parameter_server_addr is None
        else {PS_ADDR_ENV: parameter_server_addr, PS_PORT_ENV: str(PS_PORT)}
    )
    return {
        NNODES_ENV: str(nodes),
        NPROC_PER_NODE_ENV: str(processes_per_node),
        NODE_RANK_ENV: str(node_rank),
        MASTER_ADDR_ENV: master_addr,
        MASTER_PORT_ENV: str(master_port),
        CONFIG_ENV: config_path,
        METRICS_PORT_ENV: str(metrics_port),
        JOB_NAME_ENV: job_name,
        MULTIPROC_DIR_ENV: multiproc_dir,
        RESULTS_MESSAGE_ENV: results_message_path,
        **servers,
        "PYTHONUNBUFFERED": "1",
    }


def parameter_server_env(
    *,
    index: int,
    job_name: str,
    parameter_server_addr: str,
    config_path: str = CONFIG_PATH,
    metrics_port: int = METRICS_PORT,
) -> dict[str, str]:
    """A parameter server container's own environment (see trainer_env for the defaults)."""
    return {
        PS_INDEX_ENV: str(index),
        PS_ADDR_ENV: parameter_server_addr,
        PS_PORT_ENV: str(PS_PORT),
        CONFIG_ENV: config_path,
        METRICS_PORT_ENV: str(metrics_port),
        JOB_NAME_ENV: job_name,
        "PYTHONUNBUFFERED": "1",
    }
