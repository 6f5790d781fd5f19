"""`dsgd operator`: kopf's settings for our handlers, and running kopf until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import random

import kopf
from dsgd_contract.pod import JOB_NAME_LABEL

from dsgd_operator import api
from dsgd_operator.reconcile.options import OperatorOptions

#: kopf's finalizer and the prefix of its bookkeeping annotations: in our group,
#: and in metadata rather than status, which a structural schema could prune.
FINALIZER = f"{api.GROUP}/finalizer"
ANNOTATIONS_PREFIX = api.GROUP

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


def configure_kopf(settings: kopf.OperatorSettings, options: OperatorOptions) -> None:
    """Production settings for kopf: our finalizer and annotations, timeouts, quiet events."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATIONS_PREFIX
    )
    settings.persistence.diffbase_storage = PodsWithoutDiffBase(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    # kopf would post a Normal event for every handler run; ours are the ones that matter.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "dsgd-operator"
    # Watches end server-side now and then so that a silently broken connection heals.
    settings.watching.server_timeout = options.watch_timeout_seconds
    settings.watching.client_timeout = options.watch_timeout_seconds + 30
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # Only the job's pods are watched, filtered by the API server.
    settings.watching.label_selectors["v1", "pods"] = JOB_NAME_LABEL
    # Namespaced installs get no cluster-wide reads of namespaces (nor of CRDs): kopf serves
    # exactly the named namespaces and discovers resources once, at start (discovery API).
    settings.scanning.disabled = bool(options.namespaces)


class PodsWithoutDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base (the last handled state, for on.create/on.update handlers), not kept
    for pods.

    kopf builds an "essence" of every object event it processes, starting from a deep copy
    of the whole object, status included, before it knows whether a change handler wants
    it. Pods have none here (one watch handler, `pod_changed`), and a gang of N nodes sends
    about 2N pod events: profiled during a burst of 40 jobs × 16 pods, those copies were a
    quarter of the operator's CPU. For a Pod the essence is empty and nothing is stored;
    every other resource keeps kopf's own behaviour.
    """

    def build(self, *, body: kopf.Body, extra_fields: object = None) -> kopf.BodyEssence:
        if body.get("kind") == "Pod":
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") == "Pod":
            return None
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") != "Pod":
            super().store(body=body, patch=patch, essence=essence)
