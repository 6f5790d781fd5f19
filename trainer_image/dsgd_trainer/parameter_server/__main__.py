"""`python -m dsgd_trainer.parameter_server`: parameter server DSGD_PS_INDEX of a downpour job.

Reads the training config (DSGD_CONFIG), serves Prometheus metrics on
DSGD_METRICS_PORT, joins the RPC world (server i is member i; server 0 hosts
its store) and serves the workers until every worker has left that world at
the end of training; then writes `parameter-server-<i>.json` (what it applied,
the staleness it saw) to the output directory and exits 0. The workers
initialize it (fresh training) or tell it which checkpoint to restore (a
resumed gang). Exit codes: 64 for a bad config; a crash is retryable (the
operator restarts the gang, which resumes from the last checkpoint).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from dsgd_contract.config_file import ConfigFileError, read_config
from dsgd_contract.downpour import DOWNPOUR
from dsgd_contract.pod import CONFIG_ENV, PS_INDEX_ENV

from dsgd_trainer.stopping import exit_without_teardown

SUMMARY_NAME = "parameter-server-{index}.json"


def main() -> int:
    try:
        config = read_config(os.environ.get(CONFIG_ENV))
        index = int(os.environ[PS_INDEX_ENV])
    except ConfigFileError as error:
        print(error, file=sys.stderr, flush=True)
        return exit_codes.INVALID_CONFIG
    except (KeyError, ValueError):
        print(f"error: {PS_INDEX_ENV} must name this server's shard index", file=sys.stderr)
        return exit_codes.INVALID_CONFIG
    servers = config.topology.parameter_servers
    if config.algorithm.name != DOWNPOUR or not 0 <= index < servers:
        print(
            f"error: parameter server {index} of a job with algorithm {config.algorithm.name} "
            f"and {servers} parameter servers",
            file=sys.stderr,
        )
        return exit_codes.INVALID_CONFIG
    return serve(config, index)


def serve(config: TrainingConfig, index: int) -> int:
    """Run parameter server `index` until the workers are done; the exit code."""
    from dsgd_trainer.parameter_server import rpc_world, service
    from dsgd_trainer.parameter_server.metrics import start_server_metrics
    from dsgd_trainer.parameter_server.shard import Shard

    shard = Shard(config, index, Path(config.training.checkpoint_dir))
    metrics_server = start_server_metrics(shard)
    service.serve(shard)
    servers, workers = config.topology.parameter_servers, config.topology.world_size
    print(f"[dsgd] parameter server {index} of {servers}: waiting for {workers} worker(s)")
    rpc_world.join(rpc_world.server_name(index), index, servers + workers)
    rpc_world.leave(graceful=True)  # returns once every worker has left: training is over
    summary = shard.summary()
    output_dir = Path(config.training.resolved_output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SUMMARY_NAME.format(index=index)).write_text(json.dumps(summary, indent=2))
    print(
        f"[dsgd] parameter server {index}: done, version {summary['version']}, "
        f"{summary['fetches']} fetches served, staleness mean {summary['staleness']['mean']} "
        f"max {summary['staleness']['max']}",
        flush=True,
    )
    if metrics_server is not None:
        metrics_server.shutdown()
    return exit_codes.OK


if __name__ == "__main__":
    exit_without_teardown(main())
