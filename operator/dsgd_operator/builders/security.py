"""Secure defaults of every pod; not overridable from the job (the template has no field)."""

from __future__ import annotations

#: The trainer image's unprivileged user.
RUN_AS_USER = 1000


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        # Volumes (a checkpoint PVC) become writable by the trainer's group;
        # OnRootMismatch skips the recursive chown of a large PVC on each restart.
        "fsGroup": RUN_AS_USER,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
