"""``gigafab enrol``: one node's certificate, asked of the gigafab signer through the apiserver.

It makes a fresh ECDSA P-256 key in memory, sends a CertificateSigningRequest for CN=<node>,
O=gigafab:site:<site> (``identity.SIGNER_NAME``, client auth) with the pod's ServiceAccount
token, watches that one request until the signer has answered, checks that the certificate is
for this key, node and site, and prints key and certificate (PEM) on its standard output. The
key exists nowhere else: the agent (``renewal``) that runs this command writes both to its
tmpfs. A denial ends the command with exit code 1 and the signer's reason and message.

It is a process of its own because it speaks HTTPS to the apiserver with Python's ``ssl``,
which the agent process keeps out of its memory (see ``agents.cli``); it runs for a few
seconds at start and once a day or so after.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gigafab.agents.identity import SIGNER_NAME, USAGES
from gigafab.agents.tls import certificate_sites, site_group

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


class EnrolmentFailed(Exception):
    """No certificate: the message says why and what to do."""


@dataclass(frozen=True)
class Apiserver:
    """Where the apiserver is and how the agent proves who it is to it."""

    url: str
    token: Path
    """A token of the agent's pod (the kubelet renews the file; it is read for each call)."""
    ca: Path

    @staticmethod
    def in_cluster_url() -> str:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise EnrolmentFailed("no apiserver: pass --apiserver, or run in a pod ($KUBERNETES_SERVICE_HOST is not set)")
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme != "https" or parsed.hostname is None:
            raise EnrolmentFailed(f"--apiserver {self.url}: give an https:// URL")
        context = ssl.create_default_context(cafile=str(self.ca))
        return http.client.HTTPSConnection(parsed.hostname, parsed.port or 443, timeout=timeout, context=context)

    def _headers(self) -> dict[str, str]:
        try:
            token = self.token.read_text().strip()
        except OSError as unreadable:
            raise EnrolmentFailed(f"cannot read the ServiceAccount token {self.token}: {unreadable}") from unreadable
        return {"Authorization": f"Bearer {token}", "Accept": "application/json", "Content-Type": "application/json"}

    def create(self, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        connection = self._connection(timeout)
        try:
            connection.request("POST", CSR_PATH, json.dumps(body), self._headers())
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        if answer.status == 403:
            raise EnrolmentFailed(
                f"the apiserver refused to take the request (403): the agent's ServiceAccount needs create on "
                f"certificatesigningrequests (the chart's agent ClusterRole): {_message(data)}"
            )
        if answer.status not in (200, 201):
            raise EnrolmentFailed(f"the apiserver refused the request ({answer.status}): {_message(data)}")
        created: dict[str, Any] = json.loads(data)
        return created

    def watch(self, name: str, resource_version: str, seconds: int) -> Iterator[dict[str, Any]]:
        """The request ``name`` as it changes, for at most ``seconds``."""
        query = urllib.parse.urlencode(
            {
                "fieldSelector": f"metadata.name={name}",
                "watch": "true",
                "resourceVersion": resource_version,
                "timeoutSeconds": str(seconds),
            }
        )
        connection = self._connection(seconds + 15)
        try:
            connection.request("GET", f"{CSR_PATH}?{query}", headers=self._headers())
            answer = connection.getresponse()
            if answer.status != 200:
                raise EnrolmentFailed(f"cannot watch request {name} ({answer.status}): {_message(answer.read())}")
            for line in answer:
                event = json.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    yield event["object"]
        finally:
            connection.close()


def _message(data: bytes) -> str:
    try:
        return str(json.loads(data).get("message") or data[:300].decode(errors="replace"))
    except ValueError:
        return data[:300].decode(errors="replace")


def request_for(node: str, site: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A new key and the PKCS#10 request (PEM) for CN=<node>, O=gigafab:site:<site>."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, site_group(site)), x509.NameAttribute(NameOID.COMMON_NAME, node)]
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, request.public_bytes(serialization.Encoding.PEM)


def answer_of(csr: dict[str, Any]) -> bytes | None:
    """The certificate of a request (PEM), None while the signer has not answered; raises on a refusal."""
    status = csr.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Denied", "Failed") and condition.get("status", "True") == "True":
            raise EnrolmentFailed(
                f"CertificateSigningRequest {csr['metadata']['name']} {condition['type'].lower()} by the signer: "
                f"{condition.get('reason', '')}: {condition.get('message', '')}"
            )
    certificate = status.get("certificate")
    return base64.b64decode(certificate) if certificate else None


def check(pem: bytes, key: ec.EllipticCurvePrivateKey, node: str, site: str) -> None:
    """The signer's certificate is for this key, this node and this site."""
    certificate = x509.load_pem_x509_certificate(pem)
    names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if certificate.public_key() != key.public_key() or names != [node] or certificate_sites(pem) != {site}:
        raise EnrolmentFailed(f"the signer's certificate is not for this key, node {node} and site {site}: {certificate.subject}")


def enrol(apiserver: Apiserver, node: str, site: str, seconds: int, wait: int) -> tuple[bytes, bytes]:
    """(key, certificate), both PEM, after the signer approved a request for ``node`` of ``site``."""
    key, request = request_for(node, site)
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": f"gigafab-agent-{node}-"[:200]},
        "spec": {
            "request": base64.b64encode(request).decode(),
            "signerName": SIGNER_NAME,
            "usages": list(USAGES),
            "expirationSeconds": seconds,
        },
    }
    created = apiserver.create(body)
    name = created["metadata"]["name"]
    pem = answer_of(created)
    if pem is None:
        for csr in apiserver.watch(name, created["metadata"]["resourceVersion"], wait):
            pem = answer_of(csr)
            if pem is not None:
                break
    if pem is None:
        raise EnrolmentFailed(f"no answer to CertificateSigningRequest {name} within {wait} s: is the gigafab signer running?")
    check(pem, key, node, site)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return private, pem


def main(node: str, site: str, apiserver: Apiserver, seconds: int, wait: int) -> int:
    """Print key and certificate on standard output; exit 1 with the reason on standard error."""
    try:
        key, certificate = enrol(apiserver, node, site, seconds, wait)
    except (EnrolmentFailed, OSError, http.client.HTTPException, ValueError) as failure:  # unreachable, cut off, garbled
        print(f"gigafab enrol: {failure}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(key + certificate)
    sys.stdout.flush()
    return 0
