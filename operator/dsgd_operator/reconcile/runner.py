"""`dsgd operator`: run kopf with our handlers until SIGTERM/SIGINT."""

from __future__ import annotations

import kopf

from dsgd_operator.reconcile.settings import OperatorOptions


def run_operator(options: OperatorOptions) -> int:
    """Run the operator in this thread until it is told to stop; returns the exit code.

    Standalone (no kopf peering objects): one operator replica per installation.
    Cluster-wide unless `options.namespaces` names the namespaces to serve.
    """
    import dsgd_operator.reconcile.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=False)
    liveness = f"http://0.0.0.0:{options.liveness_port}/healthz" if options.liveness_port else None
    kopf.run(
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(options=options),
    )
    return 0
