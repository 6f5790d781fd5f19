"""Kubeconfig files for the local cluster's identities (client certificate or token)."""

from __future__ import annotations

from pathlib import Path

import yaml

CONTEXT = "dsgd-local"


def write_kubeconfig(
    path: Path,
    server: str,
    ca_file: Path,
    *,
    user: str,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a one-context kubeconfig; credentials are a client certificate, a token, or a
    token file (which clients re-read, so the file can be renewed under them)."""
    given = [c for c in (cert_file, token, token_file) if c is not None]
    if len(given) != 1:
        raise ValueError(
            "a kubeconfig needs exactly one of a client certificate, a token or a token file"
        )
    credentials: dict[str, str]
    if token is not None:
        credentials = {"token": token}
    elif token_file is not None:
        credentials = {"tokenFile": str(token_file)}
    else:
        credentials = {"client-certificate": str(cert_file), "client-key": str(key_file)}
    context: dict[str, str] = {"cluster": CONTEXT, "user": user}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": CONTEXT, "context": context}],
        "current-context": CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
