"""Operator options: what an installation decides (`dsgd operator` flags, Helm, DSGD_* env)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields

from dsgd_operator import api
from dsgd_operator.builders.build_settings import BuildSettings
from dsgd_operator.builders.gpu_pods import GpuPodSettings
from dsgd_operator.builders.pod_defaults import PodDefaults
from dsgd_operator.template_policy import DEFAULT_POLICY, TemplatePolicy

#: How from_env() reads each annotation (annotations are strings here); sections are JSON.
_FIELD_TYPES = {
    "int": int,
    "float": float,
    "str": str,
    "TemplatePolicy": TemplatePolicy.from_json,
    "PodDefaults": PodDefaults.from_json,
}


@dataclass(frozen=True)
class OperatorOptions:
    """How one operator installation behaves; `dsgd operator` flags and the Helm values map here.

    Environment variables (see `from_env`) are named `DSGD_<FIELD IN UPPER CASE>`.
    """

    namespaces: tuple[str, ...] = ()  # empty = cluster-wide; else only these (Role-based install)
    trainer_image: str = api.DEFAULT_IMAGE
    liveness_port: int = 8080  # kopf's http://<listen_address>:8080/healthz (0 = off)
    metrics_port: int = 9300  # operator Prometheus metrics at :9300/metrics (0 = off)
    # Where both listeners bind: `dsgd operator` uses $POD_IP when set (two operator pods
    # on one host never collide), else every interface.
    listen_address: str = "0.0.0.0"
    # kopf peering object (KopfPeering per namespace, or ClusterKopfPeering cluster-wide):
    # replicas sharing it elect the highest priority; empty = standalone (one replica only).
    peering: str = ""
    priority: int = 0  # this replica's peering priority; 0 = a random one at start
    pending_timeout_seconds: float = 600  # pods Pending longer → condition and event
    restart_backoff_seconds: float = 10  # base of the gang-restart backoff (doubles per restart)
    restart_backoff_cap_seconds: float = 300  # the backoff never grows beyond this
    progress_interval_seconds: float = 15  # how often node 0's metrics are scraped while Running
    resync_seconds: float = 60  # a job is reconciled at least this often (±10 %), events or not
    # A job's pods are listed again this often; between lists the pod watch feeds them
    # (a re-listing of that watch, after "410 Gone", makes the next pass list at once).
    pod_relist_seconds: float = 600
    debounce_seconds: float = 0.2  # pod events this close together share one reconcile pass
    watch_timeout_seconds: float = 300  # server-side timeout of kopf's watch requests
    # What spec.template may carry (Helm values templatePolicy; DSGD_TEMPLATE_POLICY as JSON).
    template_policy: TemplatePolicy = DEFAULT_POLICY
    # What trainer pods get that their job does not say (Helm values trainerPods;
    # DSGD_POD_DEFAULTS as JSON): per-rank requests/limits, emptyDir sizes, pull policy.
    pod_defaults: PodDefaults = dataclasses.field(default_factory=PodDefaults)
    # -- what GPU jobs' pods get (builders/gpu_pods.py; Helm values gpuPods) -----------
    gpu_runtime_class_name: str = ""  # RuntimeClass of GPU pods; empty = the nodes' default
    gpu_rdma_resources: str = ""  # JSON {resource: count} per GPU pod; adds IPC_LOCK; empty = none
    gpu_nccl_env: str = ""  # JSON {NAME: value} for GPU pods; empty = {"NCCL_DEBUG": "WARN"}

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"{field.name} must not be negative, got {value}")
        for port_field in ("liveness_port", "metrics_port"):
            if getattr(self, port_field) > 65535:
                raise ValueError(f"{port_field} {getattr(self, port_field)} is not a TCP port")
        if not self.trainer_image:
            raise ValueError("trainer_image must not be empty")
        self.gpu_pod_settings  # noqa: B018 - refuse bad GPU settings at start, not per job

    @property
    def gpu_pod_settings(self) -> GpuPodSettings:
        """The gpu_* options parsed; ValueError naming the DSGD_GPU_* variable at fault."""
        try:
            return GpuPodSettings.from_json(
                self.gpu_runtime_class_name, self.gpu_rdma_resources, self.gpu_nccl_env
            )
        except ValueError as error:
            raise ValueError(f"DSGD_GPU_* settings: {error}") from None

    @property
    def build_settings(self) -> BuildSettings:
        """What the builders need from these options (every object of a job is built with it)."""
        return BuildSettings(
            default_image=self.trainer_image,
            pod_defaults=self.pod_defaults,
            gpu_pods=self.gpu_pod_settings,
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorOptions:
        """Options from DSGD_NAMESPACES (comma list), DSGD_TRAINER_IMAGE, DSGD_LIVENESS_PORT, ...

        Unset or empty variables keep the defaults; a malformed number raises
        ValueError naming the variable.
        """
        environ = os.environ if environ is None else environ
        values: dict = {}
        for field in fields(cls):
            variable = f"DSGD_{field.name.upper()}"
            raw = environ.get(variable, "").strip()
            if not raw:
                continue
            if field.name == "namespaces":
                values[field.name] = tuple(ns.strip() for ns in raw.split(",") if ns.strip())
                continue
            kind = _FIELD_TYPES[field.type]
            try:
                values[field.name] = kind(raw)
            except ValueError as error:
                if field.type in ("int", "float", "str"):
                    raise ValueError(f"{variable}={raw!r} is not a valid {field.type}") from None
                raise ValueError(f"{variable}: {error}") from None
        return cls(**values)
