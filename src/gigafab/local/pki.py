"""Certificates for the local control plane, made with ``cryptography``.

One CA signs the apiserver's serving certificate and a client certificate per
identity; the apiserver trusts that CA for client-certificate authentication and
RBAC decides what each identity may do.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gigafab.agents.tls import site_group

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate subject: CN is the user, O entries are groups."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


def node_identity(node: str, site: str) -> ClientIdentity:
    """A health agent's certificate: CN is its node, the organization its site (see ``agents.tls``)."""
    return ClientIdentity(node, node, (site_group(site),))


IDENTITIES = (
    ClientIdentity("admin", "gigafab-admin", ("system:masters",)),
    ClientIdentity("kube-controller-manager", "system:kube-controller-manager"),
    ClientIdentity("kube-scheduler", "system:kube-scheduler"),
    # kwok plays every fake node's kubelet: it updates node and pod status of all
    # fake nodes, so it runs with the cluster's administrative group.
    ClientIdentity("kwok", "gigafab-kwok", ("system:masters",)),
    ClientIdentity("operator", "gigafab-operator"),
    # signs the node agents' certificate requests (config/rbac/signer.yaml); started by the tests that need it
    ClientIdentity("signer", "gigafab-signer"),
    ClientIdentity("kueue", "gigafab-kueue"),
)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


class Authority:
    """A CA kept in a directory; issues serving and client certificates."""

    def __init__(self, directory: Path, name: str = "gigafab-local-ca") -> None:
        self.directory = directory
        self.name = name
        self.pair = Pair(directory / "ca.crt", directory / "ca.key")

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.pair.cert.exists() and self.pair.key.exists():
            return
        key = _key()
        subject = _name(self.name)
        cert = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(self.pair.key, key)
        self.pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.pair.cert.read_bytes())
        key = serialization.load_pem_private_key(self.pair.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def issue(
        self,
        stem: str,
        subject: x509.Name,
        *,
        server_names: tuple[str, ...] = (),
        client: bool = True,
    ) -> Pair:
        """Issue (once) a certificate named ``stem`` for a client and/or a server."""
        pair = Pair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        if pair.cert.exists() and pair.key.exists():
            return pair
        ca_cert, ca_key = self._load()
        key = _key()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = _builder(subject, ca_cert.subject, key.public_key()).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(server_names)), critical=False)
        cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(ca_key, hashes.SHA256())
        _write_key(pair.key, key)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def issue_client(self, identity: ClientIdentity) -> Pair:
        return self.issue(identity.name, _name(identity.user, identity.groups))

    def issue_server(self, stem: str, names: tuple[str, ...]) -> Pair:
        return self.issue(stem, _name(names[0]), server_names=names, client=False)


def _alt_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt


def ensure_service_account_key(directory: Path) -> Path:
    """The RSA key the apiserver signs and verifies ServiceAccount tokens with."""
    path = directory / "sa.key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        _write_key(path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return path


APISERVER_NAMES = (
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
