"""A dsgd trainer pod (one that sets DSGD_CONFIG) on the node agent: its config's
directories mapped through the pod's volumes, then `dsgd run`'s rewrite of a pod into a
local process (`dsgd_operator.local_run.local_process`): rendezvous (and downpour-sgd's
RPC store) on loopback at the gang's ports, metrics on the pod's IP. The pod's env
arrives rewritten already (paths under its volumes and its termination message file,
`container.prepare`).
"""

from __future__ import annotations

import json
from pathlib import Path

from dsgd_contract.pod import CONFIG_ENV, METRICS_ADDR_ENV, METRICS_PORT_ENV
from dsgd_operator.local_run import local_process

from dsgd_cluster.node_agent.container import Launch, PodSetupError, map_path


def trainer_launch(
    pod: dict,
    env: dict[str, str],
    base: dict[str, str],
    table: list[tuple[str, Path]],
    pod_dir: Path,
    pod_ip: str,
    ports: tuple[int, int],
    threads: int,
) -> Launch:
    """`ports`: the gang attempt's rendezvous port and its RPC store port (downpour-sgd)."""
    config_file = Path(env[CONFIG_ENV])
    if not config_file.is_file():
        raise PodSetupError(
            "CreateContainerConfigError", f"DSGD_CONFIG {config_file} is not mounted", False
        )
    config = json.loads(config_file.read_text())
    training = config["training"]
    # The trainer's own directories live in the container's filesystem unless a
    # volume is mounted there (the builder mounts emptyDirs, users mount PVCs).
    for key in ("checkpointDir", "outputDir"):
        if training.get(key):
            local = map_path(training[key], table)
            training[key] = (
                local
                if local != training[key]
                else str(pod_dir / "rootfs" / training[key].lstrip("/"))
            )
    local_config = pod_dir / "config.json"
    local_config.write_text(json.dumps(config))
    metrics_port = int(env.get(METRICS_PORT_ENV, "0"))
    planned = local_process(
        pod,
        config_path=local_config,
        multiproc_dir=pod_dir / "prometheus",
        master_port=ports[0],
        metrics_port=metrics_port,
        threads=threads,
        base_env=base,
        parameter_server_port=ports[1],
    )
    (pod_dir / "prometheus").mkdir(exist_ok=True)
    return Launch(planned.argv, {**planned.env, METRICS_ADDR_ENV: pod_ip}, pod_dir)
