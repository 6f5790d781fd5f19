"""The local cluster's certificates and keys, generated once per cluster directory.

One self-signed CA signs every certificate: the API server's serving certificate
(loopback names and the in-cluster `kubernetes.default…` names) and one client
certificate per identity that talks to it. Kubernetes reads a client
certificate's common name as the user and its organisations as the groups, so
the identities below are exactly the ones a kubeadm cluster gives its components.
The service-account key pair lets the API server sign ServiceAccount tokens and
the controller manager mint them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)

#: Client identities: file stem → (user, groups). RBAC's default bootstrap roles
#: bind these users/groups, so the components need no extra grants.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("kubernetes-admin", ("system:masters",)),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    # The node agent acts for several nodes at once; it authenticates as an
    # administrator rather than as one `system:node:<name>` (see node_agent docs).
    "node-agent": ("dsgd:node-agent", ("system:masters",)),
    # The API server's own client identity towards kubelets (logs, exec).
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
}

SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of everything under `<cluster dir>/pki`."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        """Private key: signs ServiceAccount tokens (API server, controller manager)."""
        return self.root / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.root / "sa.pub"

    def client_cert(self, client: str) -> Path:
        return self.root / f"{client}.crt"

    def client_key(self, client: str) -> Path:
        return self.root / f"{client}.key"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _name(common_name: str, organisations: tuple[str, ...] = ()) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organisations]
    return x509.Name([*parts, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sign(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + VALIDITY)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca_key, hashes.SHA256())


def _leaf_usage(*purposes: x509.ObjectIdentifier) -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage(list(purposes)), False),
    ]


def ensure_pki(root: Path) -> Pki:
    """Create the CA, serving, client and service-account keys unless they exist.

    Idempotent: a directory that already holds a CA is reused as it is, so a
    restarted cluster keeps trusting the kubeconfigs and tokens it issued.
    """
    pki = Pki(root)
    if pki.ca_cert.exists():
        return pki
    root.mkdir(parents=True, exist_ok=True)

    ca_key = _new_key()
    ca_name = _name("dsgd-local-cluster-ca")
    ca_usage = x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca_cert = _sign(
        ca_name,
        ca_key.public_key(),
        ca_key,
        ca_name,
        [(x509.BasicConstraints(ca=True, path_length=None), True), (ca_usage, True)],
    )

    serving_key = _new_key()
    alt_names = [x509.DNSName(name) for name in SERVING_DNS_NAMES] + [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    serving_cert = _sign(
        _name("kube-apiserver"),
        serving_key.public_key(),
        ca_key,
        ca_name,
        [
            *_leaf_usage(ExtendedKeyUsageOID.SERVER_AUTH),
            (x509.SubjectAlternativeName(alt_names), False),
        ],
    )
    _write(pki.serving_cert, serving_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_key, _key_pem(serving_key), private=True)

    for client, (user, groups) in CLIENTS.items():
        key = _new_key()
        cert = _sign(
            _name(user, groups),
            key.public_key(),
            ca_key,
            ca_name,
            _leaf_usage(ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        _write(pki.client_cert(client), cert.public_bytes(serialization.Encoding.PEM))
        _write(pki.client_key(client), _key_pem(key), private=True)

    # ServiceAccount tokens are JWTs signed with RS256 by default everywhere.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.service_account_key, _key_pem(sa_key), private=True)
    _write(
        pki.service_account_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    # The CA goes last: its presence is what marks the directory complete.
    _write(pki.ca_key, _key_pem(ca_key), private=True)
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    return pki
