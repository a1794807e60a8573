"""Certificates and service-account keys for the test control plane, made with `cryptography`.

One CA signs everything: the apiserver's serving cert (loopback + in-cluster names) and a client
cert per component, whose CN/O are the user/groups the apiserver's x509 authenticator sees.
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

SERVICE_IP = "10.0.0.1"  # first address of --service-cluster-ip-range: the `kubernetes` Service

# Client identities: file stem -> (user, groups).
CLIENTS: dict[str, tuple[str, list[str]]] = {
    "admin": ("kubernetes-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files the components are started with."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def cert(self, stem: str) -> Path:
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(cn: str, orgs: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
    )


def generate(
    directory: Path, node_name: str, *, service_ip: str = SERVICE_IP, extra_ips: tuple[str, ...] = ()
) -> Pki:
    """Write a CA, serving/client certs (the node's and the API server's kubelet client) and the SA
    signing key pair. `service_ip` is the `kubernetes` Service's address, `extra_ips` the API
    server's other addresses (the real node's gateway)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("dbmigrate-test-ca")
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, cn: str, orgs: list[str], server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = _builder(_name(cn, orgs), ca_name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            dns = [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            ips = [ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", service_ip, *extra_ips)]
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [*(x509.DNSName(d) for d in dns), *(x509.IPAddress(i) for i in ips)]
                ),
                critical=False,
            )
        _write_key(pki.key(stem), key)
        pki.cert(stem).write_bytes(
            builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )

    issue("apiserver", "kube-apiserver", [], server=True)
    for stem, (user, groups) in CLIENTS.items():
        issue(stem, user, groups, server=False)
    # The node agent is a kubelet stand-in: a node identity, plus masters so that what it may do is
    # never the thing under test (the operator's RBAC is).
    issue("node", f"system:node:{node_name}", ["system:nodes", "system:masters"], server=False)
    # The real node's identities: exactly what kubeadm gives them (the Node authorizer and the
    # bootstrap ClusterRoles decide what they may do); the API server's client to the kubelets.
    issue("kubelet", f"system:node:{node_name}", ["system:nodes"], server=False)
    issue("kube-proxy", "system:kube-proxy", [], server=False)
    issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"], server=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def serving_cert(
    directory: Path, dns_names: list[str], ips: tuple[str, ...] = ("127.0.0.1",)
) -> tuple[bytes, Path, Path]:
    """A throwaway CA and a serving cert signed by it, e.g. for a webhook server in a test.

    Returns (CA PEM for a caBundle, cert path, key path).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("dbmigrate-test-serving-ca")
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [*(x509.DNSName(d) for d in dns_names), *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]
    cert = (
        _builder(_name(dns_names[0] if dns_names else ips[0]), ca_name, key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path
