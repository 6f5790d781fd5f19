"""The kopf operator: reconciles DistributedSGDJobs into gangs of trainer pods.

Modules: `handlers` (thin kopf handlers), `reconciler` (one pass: read, plan,
act), `policy` (the pure failure policy: a `plan.Snapshot` in, a `plan.Plan` out),
`applied_spec` (status.appliedSpec, immutable while running), `status` (pure status vocabulary),
`settings` (OperatorOptions, kopf settings), `metrics`, `progress`, `kube`
(API calls), `runtime` (in-memory bookkeeping), `permissions`.
"""

from dsgd_operator.reconcile.permissions import REQUIRED_PERMISSIONS, Permission
from dsgd_operator.reconcile.runner import run_operator
from dsgd_operator.reconcile.settings import OperatorOptions

__all__ = ["REQUIRED_PERMISSIONS", "OperatorOptions", "Permission", "run_operator"]
