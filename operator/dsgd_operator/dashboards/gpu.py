"""GPU panels of the training dashboard, from NVIDIA's dcgm-exporter, joined to trainer pods.

dcgm-exporter (the GPU Operator's, or its own chart) exports one series per GPU,
labelled `gpu`, `UUID`, `modelName`, `Hostname` and, with its Kubernetes mapping on
(the default), the `namespace`, `pod` and `container` of the pod holding the GPU.
Scraped with honorLabels those keep their names; without it (the GPU Operator's
default ServiceMonitor), Prometheus renames them `exported_namespace` and
`exported_pod`. The queries accept both, then keep the GPUs of the trainer pods
that the dashboard's filters select: a join on (cluster, namespace, pod) with the
trainer targets' `up`, which also brings the job's name (dsgd_job).
"""

from __future__ import annotations

from dsgd_contract import metrics as m

from dsgd_operator.dashboards.panels import Board, Look, Target, time_series
from dsgd_operator.dashboards.promql import CLUSTER_LABEL, TRAINER_PODS, matchers

#: dcgm-exporter's names (DCGM field identifiers) and units, from its default counters
#: (etc/default-counters.csv of NVIDIA/dcgm-exporter).
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # %
FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"  # W
GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"  # °C
#: The label dcgm-exporter puts the GPU's index in.
GPU_LABEL = "gpu"
POD_LABEL = "pod"

#: A target's health series: one per scraped trainer pod, whatever the metricRelabelings
#: drop (per-rank series may be dropped for all but rank 0, which lives on node 0 only).
UP = "up"
GPU_LEGEND = (
    f"{{{{{m.NAMESPACE_LABEL}}}}}/{{{{{m.JOB_LABEL}}}}} {{{{{POD_LABEL}}}}} GPU {{{{{GPU_LABEL}}}}}"
)


def _workload_labels(selector: str) -> str:
    """The selector with exported_namespace/exported_pod (no honorLabels) as namespace/pod."""
    for label in (m.NAMESPACE_LABEL, POD_LABEL):
        selector = f'label_replace({selector}, "{label}", "$1", "exported_{label}", "(.+)")'
    return selector


def on_trainer_pods(metric: str) -> str:
    """`metric` of the GPUs of the selected trainer pods, labelled with their dsgd_job."""
    gpus = _workload_labels(f"{metric}{{{matchers(**{CLUSTER_LABEL: 'cluster'})}}}")
    key = f"{CLUSTER_LABEL}, {m.NAMESPACE_LABEL}, {POD_LABEL}"
    pods = f"group by ({key}, {m.JOB_LABEL}) ({UP}{{{TRAINER_PODS}}})"
    return f"{gpus} * on ({key}) group_left ({m.JOB_LABEL}) {pods}"


def add_row(board: Board) -> None:
    board.row("GPUs (dcgm-exporter)")
    for title, metric, description, look in (
        ("GPU utilization", GPU_UTIL,
         "Share of time each GPU of the job's pods was busy (DCGM_FI_DEV_GPU_UTIL). Empty "
         "without dcgm-exporter, or for CPU jobs.",
         Look(unit="percent", min=0, max=100)),
        ("GPU memory used", FB_USED,
         "Frame-buffer memory in use on each GPU of the job's pods (DCGM_FI_DEV_FB_USED).",
         Look(unit="mbytes")),
        ("GPU power", POWER_USAGE,
         "Power draw of each GPU of the job's pods (DCGM_FI_DEV_POWER_USAGE).",
         Look(unit="watt")),
        ("GPU temperature", GPU_TEMP,
         "Temperature of each GPU of the job's pods (DCGM_FI_DEV_GPU_TEMP).",
         Look(unit="celsius")),
    ):  # fmt: skip
        board.panel(
            time_series(title, description, [Target(on_trainer_pods(metric), GPU_LEGEND)], look),
            12,
            8,
        )
