"""What NVIDIA's dcgm-exporter serves, for the GPU panels' tests (no GPU or DCGM here).

DEFAULT_COUNTERS are the metrics of dcgm-exporter's default counter set
(etc/default-counters.csv of github.com/NVIDIA/dcgm-exporter): a panel on any other
DCGM field would stay empty on a default install. `exposition` writes what its
/metrics endpoint serves with the Kubernetes pod mapping on: one series per GPU,
labelled with the GPU and, for a GPU a pod holds, that pod's namespace, pod and
container (empty strings for an idle GPU, as dcgm-exporter leaves them).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_COUNTERS = {
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
}  # fmt: skip
#: Gauges the GPU panels read, with a plausible value for each.
SAMPLE_VALUES = {
    "DCGM_FI_DEV_GPU_UTIL": 87,
    "DCGM_FI_DEV_FB_USED": 30512,
    "DCGM_FI_DEV_FB_FREE": 50408,
    "DCGM_FI_DEV_POWER_USAGE": 512.25,
    "DCGM_FI_DEV_GPU_TEMP": 61,
}


@dataclass(frozen=True)
class Gpu:
    index: int
    hostname: str
    namespace: str = ""
    pod: str = ""
    container: str = ""


def exposition(gpus: list[Gpu]) -> str:
    """The text format dcgm-exporter serves for these GPUs."""
    lines = []
    for name, value in SAMPLE_VALUES.items():
        lines += [f"# HELP {name} {name}.", f"# TYPE {name} gauge"]
        for gpu in gpus:
            labels = {
                "gpu": str(gpu.index),
                "UUID": f"GPU-{gpu.hostname}-{gpu.index:04d}",
                "device": f"nvidia{gpu.index}",
                "modelName": "NVIDIA H100 80GB HBM3",
                "Hostname": gpu.hostname,
                "DCGM_FI_DRIVER_VERSION": "570.124.06",
                "container": gpu.container,
                "namespace": gpu.namespace,
                "pod": gpu.pod,
            }
            text = ",".join(f'{key}="{text}"' for key, text in labels.items())
            lines.append(f"{name}{{{text}}} {value}")
    return "\n".join(lines) + "\n"
