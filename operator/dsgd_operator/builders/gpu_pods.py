"""What an installation adds to the pods of GPU jobs (topology.gpu: true), never the job itself.

Three cluster facts a job author cannot know, and must not be able to grant
themselves (the job's template has no field for them), so they are operator
settings (Helm values `gpuPods`, env DSGD_GPU_*):

- `runtime_class_name`: where the NVIDIA container runtime is not the nodes'
  default, a pod must name its RuntimeClass (e.g. `nvidia`), or its GPUs are
  allocated by the device plugin but invisible inside the container.
- `rdma_resources`: extended resources that put InfiniBand / RoCE devices into
  the pod (e.g. `rdma/rdma_shared_device_a: 1` of the k8s-rdma-shared-dev-plugin,
  or `nvidia.com/hostdev: 1`). Without them NCCL finds no RDMA device and falls
  back to TCP sockets. With them the container also gets the IPC_LOCK
  capability: RDMA registers (pins) memory, which the default memlock limit of
  a container forbids. IPC_LOCK is beyond Pod Security "restricted" and
  "baseline": the job's namespace must admit privileged pods.
- `nccl_env`: NCCL's environment (default NCCL_DEBUG=WARN: NCCL's own warnings
  in the pod log, where a silent fallback to sockets would otherwise go
  unnoticed; NCCL_IB_HCA, NCCL_SOCKET_IFNAME, ... for a cluster's fabric).
  A variable the job's template.env sets wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

#: NCCL's defaults on every installation that sets nothing else.
DEFAULT_NCCL_ENV: tuple[tuple[str, str], ...] = (("NCCL_DEBUG", "WARN"),)
#: The capability RDMA needs to pin memory.
RDMA_CAPABILITY = "IPC_LOCK"
#: An extended resource name: a domain-prefixed name (e.g. rdma/hca, nvidia.com/hostdev).
_EXTENDED_RESOURCE = re.compile(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: RFC 1123 subdomain, what a RuntimeClass name must be.
_RUNTIME_CLASS = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class GpuPodSettings:
    """The installation's additions to GPU pods (see the module docstring); empty = none."""

    runtime_class_name: str = ""
    rdma_resources: tuple[tuple[str, str], ...] = ()
    nccl_env: tuple[tuple[str, str], ...] = DEFAULT_NCCL_ENV

    def __post_init__(self) -> None:
        if self.runtime_class_name and not _RUNTIME_CLASS.match(self.runtime_class_name):
            raise ValueError(
                f"runtimeClassName {self.runtime_class_name!r} is not a RuntimeClass name "
                "(lower-case letters, digits, '-' and '.')"
            )
        for name, amount in self.rdma_resources:
            if not _EXTENDED_RESOURCE.match(name):
                raise ValueError(
                    f"rdmaResources: {name!r} is not an extended resource name (domain/name)"
                )
            try:
                whole = Decimal(amount)
            except InvalidOperation:
                whole = Decimal(-1)
            if whole < 1 or whole != whole.to_integral_value():
                raise ValueError(
                    f"rdmaResources.{name}: {amount!r} is not a positive whole number "
                    "(extended resources are counted in units)"
                )
        for name, _ in self.nccl_env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"ncclEnv: {name!r} is not an environment variable name")

    @property
    def ipc_lock(self) -> bool:
        """Whether GPU containers get IPC_LOCK: exactly when RDMA devices are requested."""
        return bool(self.rdma_resources)

    @classmethod
    def from_json(
        cls, runtime_class_name: str, rdma_resources: str, nccl_env: str
    ) -> GpuPodSettings:
        """From the operator's settings: a name, and two JSON objects (name → value).

        Empty strings keep the defaults. ValueError names what is wrong.
        """
        return cls(
            runtime_class_name=runtime_class_name.strip(),
            rdma_resources=_string_pairs("rdmaResources", rdma_resources, ()),
            nccl_env=_string_pairs("ncclEnv", nccl_env, DEFAULT_NCCL_ENV),
        )

    def without_env(self, names: set[str]) -> GpuPodSettings:
        """These settings minus the NCCL variables in `names` (set by someone who wins)."""
        kept = tuple((name, value) for name, value in self.nccl_env if name not in names)
        return GpuPodSettings(self.runtime_class_name, self.rdma_resources, kept)


def _string_pairs(
    what: str, raw: str, default: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    if not raw.strip():
        return default
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what}: not a JSON object ({error.msg})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{what}: expected a JSON object of name → value, got {raw!r}")
    pairs = []
    for name, value in parsed.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"{what}.{name}: expected a string or a number, got {value!r}")
        pairs.append((name, str(value)))
    return tuple(pairs)


def add_gpu_pod_settings(pod_spec: dict, settings: GpuPodSettings) -> None:
    """Add `settings` to the spec of a GPU job's pod (in place): runtime class, RDMA, NCCL env.

    The container's resources already hold the GPUs; RDMA resources go beside
    them in limits and requests (extended resources cannot be overcommitted).
    NCCL variables that the container's env already names are left alone.
    """
    if settings.runtime_class_name:
        pod_spec["runtimeClassName"] = settings.runtime_class_name
    container = pod_spec["containers"][0]
    if settings.rdma_resources:
        resources = container.setdefault("resources", {})
        for section in ("limits", "requests"):
            resources.setdefault(section, {}).update(dict(settings.rdma_resources))
    if settings.ipc_lock:
        capabilities = container["securityContext"].setdefault("capabilities", {})
        capabilities["add"] = [*capabilities.get("add", []), RDMA_CAPABILITY]
    present = {var["name"] for var in container.get("env", [])}
    container["env"] = container.get("env", []) + [
        {"name": name, "value": value} for name, value in settings.nccl_env if name not in present
    ]
