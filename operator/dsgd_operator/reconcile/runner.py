"""`dsgd operator`: run kopf with our handlers until SIGTERM/SIGINT."""

from __future__ import annotations

import random

import kopf

from dsgd_operator.reconcile.settings import OperatorOptions

#: Random peering priorities are drawn from [1, PRIORITY_RANGE): two replicas tie (and
#: kopf then pauses both until one goes) with a chance of about 1 in 2e9.
PRIORITY_RANGE = 2**31


def run_operator(options: OperatorOptions) -> int:
    """Run the operator in this thread until it is told to stop; returns the exit code.

    Standalone when `options.peering` is empty (one replica per installation).
    With a peering name, kopf's peering elects among replicas: each announces
    its priority in the peering object (a ClusterKopfPeering cluster-wide, a
    KopfPeering in each served namespace otherwise) and every replica but the
    highest pauses. Cluster-wide unless `options.namespaces` names the
    namespaces to serve. The liveness endpoint listens on `options.listen_address`.
    """
    import dsgd_operator.reconcile.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=False)
    liveness = (
        f"http://{options.listen_address}:{options.liveness_port}/healthz"
        if options.liveness_port
        else None
    )
    peering: dict[str, object] = {"standalone": True}
    if options.peering:
        priority = options.priority or random.SystemRandom().randrange(1, PRIORITY_RANGE)
        peering = {"peering_name": options.peering, "priority": priority}
    kopf.run(
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(options=options),
        **peering,
    )
    return 0
