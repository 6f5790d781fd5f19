"""The kopf operator: reconciles DistributedSGDJobs into gangs of trainer pods.

Modules: `handlers` (thin kopf handlers), `reconciler` (one pass: read, plan,
act), `policy` (the pure failure policy: a `plan.Snapshot` in, a `plan.Plan` out),
`applied_spec` (status.appliedSpec, immutable while running), `status` (pure status vocabulary),
`options` (OperatorOptions), `kopf_main` (kopf's settings, `dsgd operator`), `metrics`,
`progress_scrape` (status.progress from node 0), `kube` (API calls), `in_memory`
(per-job bookkeeping, rebuilt after a restart), `permissions`.
"""

from dsgd_operator.reconcile.kopf_main import run_operator
from dsgd_operator.reconcile.options import OperatorOptions
from dsgd_operator.reconcile.permissions import REQUIRED_PERMISSIONS, Permission

__all__ = ["REQUIRED_PERMISSIONS", "OperatorOptions", "Permission", "run_operator"]
