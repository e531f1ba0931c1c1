"""Certificate files of the health plane's mTLS, and whether they changed on disk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

SITE_GROUP_PREFIX = "gigafab:site:"
"""A node's certificate carries the organization ``gigafab:site:<site>``: the site it may speak for."""


def site_group(site: str) -> str:
    """The certificate organization that makes a node certificate one of ``site``."""
    return SITE_GROUP_PREFIX + site


def certificate_sites(pem: bytes) -> frozenset[str]:
    """The sites a peer certificate (PEM) may speak for, from its ``gigafab:site:`` organizations."""
    subject = x509.load_pem_x509_certificate(pem).subject
    orgs = (attribute.value for attribute in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return frozenset(org[len(SITE_GROUP_PREFIX) :] for org in orgs if isinstance(org, str) and org.startswith(SITE_GROUP_PREFIX))


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its key, and the CA that signs the other side's certificates."""

    cert: Path
    key: Path
    ca: Path

    def stamp(self) -> tuple[float, ...]:
        """Modification times of the three files: a change means they were rotated."""
        return tuple(path.stat().st_mtime for path in (self.cert, self.key, self.ca))


@dataclass(frozen=True)
class AgentTls(TlsFiles):
    """An agent's client certificate (its common name is its node) and the gateways' CA."""

    server_name: str = "localhost"

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), self.key.read_bytes(), self.cert.read_bytes())


@dataclass(frozen=True)
class GatewayTls(TlsFiles):
    """Files of the gateway's serving certificate and the CA that signs agents'."""

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=self.ca.read_bytes()
        )

    def credentials(self, handshake: Callable[[], None] | None = None) -> grpc.ServerCredentials:
        """Credentials that re-read the files when they change on disk (checked at each new handshake);
        ``handshake`` is called as each begins (in a gRPC core thread)."""
        seen = [self.stamp()]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            if handshake is not None:
                handshake()
            stamp = self.stamp()
            if stamp == seen[0]:
                return None
            seen[0] = stamp
            return self._configuration()

        return grpc.dynamic_ssl_server_credentials(self._configuration(), fetch, require_client_authentication=True)
