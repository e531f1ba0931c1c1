"""``gigafab signer``: approves, denies and signs the agents' CertificateSigningRequests.

It holds the health plane's CA key, which is why it is its own small process (a Deployment of
its own in the chart) and not part of the operator: the operator has wide rights over tenants'
namespaces and reads everything tenants write, and may not read Secrets; the signer's account
may only read CertificateSigningRequests of its signer, approve and sign them, read Nodes, and
publish the CA's certificate (public) in one ConfigMap.

It lists the requests for ``identity.SIGNER_NAME`` and watches them. For each one that has
neither a certificate nor a Denied or Failed condition it gathers the Node the request's token is
bound to, asks ``identity.judge``, and applies the verdict: Approved and then a certificate, or
Denied with the rule's reason and a message that says what to fix. A request someone else
approved is still judged: if the rules refuse it, it gets Failed instead of a certificate, so an
approval alone never makes an identity. Every decision is also a JSON line on ``gigafab.audit``.

It keeps nothing in memory that the requests do not hold: after a restart it lists them again
and finishes what was left (approved, not yet signed). Writes carry the resourceVersion they
read, so two signers never both sign one request (the second gets a conflict and moves on).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gigafab.agents.identity import (
    MINIMUM_SECONDS,
    SIGNER_NAME,
    Asked,
    NodeFacts,
    Verdict,
    bound_node,
    judge,
    lifetime,
    service_account,
)
from gigafab.agents.tls import site_group
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gigafab.api.labels import SITE_NODE_LABEL

log = logging.getLogger("gigafab.signer")
audit = logging.getLogger("gigafab.audit")

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
MANAGER = [("fieldManager", "gigafab-signer")]
JSON = "application/json"
APPLY = "application/apply-patch+yaml"
OURS_KEPT = 4096
"""Approvals remembered, so that the watch event each one makes is skipped (its certificate is written
right after it): without it every request would be judged and signed twice, the second time in vain."""
WATCH_SECONDS = 300
"""A watch ends after this long and the signer lists again: whatever a broken watch missed is then found."""
BACKDATE = dt.timedelta(minutes=5)
"""Certificates start this long before they are signed, so that a node whose clock is a little behind
(the gateway checks the times, not the agent) can use its certificate at once."""


@dataclass(frozen=True)
class HealthCa:
    """The health plane's CA: files that may be rotated while the signer runs (read at each signature)."""

    cert: Path
    key: Path

    def load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
        certificate = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{self.key}: the CA key must be ECDSA or RSA, not {type(key).__name__}")
        return certificate, key

    def issue(self, request: bytes, verdict: Verdict, seconds: int, now: dt.datetime) -> bytes:
        """A client certificate for the approved ``request``. The subject and extensions are the
        signer's own (CN=<node>, O=gigafab:site:<site>, client auth): only the key is taken from it."""
        authority, signing_key = self.load()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, site_group(verdict.site)),
                x509.NameAttribute(NameOID.COMMON_NAME, verdict.node),
            ]
        )
        public_key = x509.load_pem_x509_csr(request).public_key()
        not_after = min(now + dt.timedelta(seconds=seconds), authority.not_valid_after_utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(authority.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
            .sign(signing_key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)


def main(kubeconfig: str | None, ca_cert: Path, ca_key: Path, agents: str, max_seconds: int, publish: str | None) -> int:
    """``gigafab signer``: check the arguments (exit 2) and the CA (exit 1), then sign until stopped."""
    account, published = _namespaced(agents), _namespaced(publish) if publish else None
    if account is None or (publish and published is None):
        print("gigafab signer: --agents and --publish-ca take NAMESPACE/NAME", file=sys.stderr)
        return 2
    if max_seconds < MINIMUM_SECONDS:
        print(f"gigafab signer: --max-seconds must be at least {MINIMUM_SECONDS} (Kubernetes' shortest)", file=sys.stderr)
        return 2
    ca = HealthCa(ca_cert, ca_key)
    try:
        certificate, key = ca.load()
    except (OSError, ValueError) as unusable:
        print(f"gigafab signer: the CA cannot sign: {unusable}", file=sys.stderr)
        return 1
    if certificate.public_key() != key.public_key():
        print(f"gigafab signer: {ca_key} is not the key of {ca_cert}", file=sys.stderr)
        return 1
    Signer(Api(connect(kubeconfig)), ca, service_account(*account), max_seconds, published).run()
    return 0


def _namespaced(text: str) -> tuple[str, str] | None:
    namespace, _, name = text.partition("/")
    return (namespace, name) if namespace and name and "/" not in name else None


def connect(kubeconfig: str | None) -> client.ApiClient:
    """A client from ``kubeconfig`` (or $KUBECONFIG), else the pod's ServiceAccount."""
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class Api:
    """The signer's few calls, as JSON (no client models: it needs a handful of fields)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _send(self, method: str, path: str, query: list[tuple[str, str]], body: Any, content_type: str, timeout: float) -> Any:
        method, url, headers, _, _ = self.api.param_serialize(
            method,
            path,
            query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)

    def call(
        self, method: str, path: str, *, body: Any = None, query: list[tuple[str, str]] | None = None, content_type: str = JSON
    ) -> Any:
        response = self._send(method, path, query or [], body, content_type, 30)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
        return json.loads(data) if data else None

    def watch(self, path: str, query: list[tuple[str, str]], seconds: int) -> Iterator[dict[str, Any]]:
        """The events of a watch that the apiserver ends after ``seconds``."""
        query = [*query, ("watch", "true"), ("timeoutSeconds", str(seconds))]
        response = self._send("GET", path, query, None, JSON, seconds + 15)
        if response.status != 200:
            raise ApiException(status=response.status, reason=response.reason)
        for line in response.response:
            event: dict[str, Any] = json.loads(line)
            if event.get("type") == "ERROR":  # 410: the resourceVersion is too old; list again
                raise ApiException(status=event["object"].get("code", 500), reason=event["object"].get("message"))
            yield event


class Signer:
    """One signer: ``run`` lists and watches the agents' requests and decides each one."""

    def __init__(self, api: Api, ca: HealthCa, agents: str, max_seconds: int, published: tuple[str, str] | None = None) -> None:
        self.api, self.ca, self.agents, self.max_seconds, self.published = api, ca, agents, max_seconds, published
        self.ours: collections.deque[str] = collections.deque(maxlen=OURS_KEPT)
        """resourceVersions of the signer's own approvals: their watch events need no second look."""

    def run(self) -> None:
        """Until stopped: list, decide, watch; after a failure list again (with backoff)."""
        backoff = 1.0
        while True:
            try:
                self.publish()
                self._list_and_watch()
                backoff = 1.0
            except (ApiException, OSError, urllib3.exceptions.HTTPError) as failure:
                log.warning("signer: %s; listing again in %.0f s", str(failure).strip().splitlines()[0], backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _list_and_watch(self) -> None:
        selector = [("fieldSelector", f"spec.signerName={SIGNER_NAME}")]
        listed = self.api.call("GET", CSR_PATH, query=selector)
        for item in listed.get("items") or []:
            self.decide(item)
        since = [*selector, ("resourceVersion", listed["metadata"]["resourceVersion"]), ("allowWatchBookmarks", "false")]
        for event in self.api.watch(CSR_PATH, since, WATCH_SECONDS):
            if event["type"] in ("ADDED", "MODIFIED"):
                self.decide(event["object"], watched=True)

    def decide(self, csr: dict[str, Any], *, watched: bool = False) -> Verdict | None:
        """Judge and apply one request; None when there is nothing left to do for it. A ``watched`` event
        of this signer's own approval is skipped (a list never skips: it finishes what a failure left)."""
        status = csr.get("status") or {}
        conditions = {c.get("type") for c in status.get("conditions") or []}
        if status.get("certificate") or conditions & {"Denied", "Failed"}:
            return None
        if watched and csr["metadata"].get("resourceVersion") in self.ours:  # signed right after it was approved
            return None
        spec = csr.get("spec") or {}
        try:
            request = base64.b64decode(spec.get("request") or "")
        except ValueError:
            request = b""
        asked = Asked(spec.get("username") or "", spec.get("extra") or {}, tuple(spec.get("usages") or ()), request)
        verdict = judge(asked, self._node(bound_node(asked)), self.agents)
        try:
            self._apply(csr, asked, verdict, approved="Approved" in conditions)
        except ApiException as failure:
            if failure.status not in (404, 409):  # gone, or changed since read: the watch brings it again
                raise
        return verdict

    def _node(self, name: str | None) -> NodeFacts | None:
        if name is None:
            return None
        try:
            node = self.api.call("GET", f"/api/v1/nodes/{name}")
        except ApiException as failure:
            if failure.status == 404:
                return None
            raise
        meta = node["metadata"]
        return NodeFacts(meta["name"], meta.get("uid", ""), (meta.get("labels") or {}).get(SITE_NODE_LABEL))

    def _apply(self, csr: dict[str, Any], asked: Asked, verdict: Verdict, *, approved: bool) -> None:
        name = csr["metadata"]["name"]
        if not verdict.approved:
            # someone else approved what the rules refuse: the signer fails it rather than sign
            kind = "Failed" if approved else "Denied"
            self._condition(csr, kind, verdict)
            _audit(kind, name, asked, verdict)
            return
        if not approved:
            csr = self._condition(csr, "Approved", verdict)
            self.ours.append(csr["metadata"]["resourceVersion"])
            _audit("Approved", name, asked, verdict)
        seconds = lifetime((csr.get("spec") or {}).get("expirationSeconds"), self.max_seconds)
        pem = self.ca.issue(asked.request, verdict, seconds, dt.datetime.now(dt.UTC))
        csr.setdefault("status", {})["certificate"] = base64.b64encode(pem).decode()
        self.api.call("PUT", f"{CSR_PATH}/{name}/status", body=csr, query=MANAGER)
        _audit("Issued", name, asked, verdict)

    def _condition(self, csr: dict[str, Any], kind: str, verdict: Verdict) -> dict[str, Any]:
        """Add the condition ``kind`` (through /approval, or /status for Failed); returns the object written."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": kind,
            "status": "True",
            "reason": verdict.reason,
            "message": verdict.message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
        status = csr.setdefault("status", {})
        status["conditions"] = [*(status.get("conditions") or []), condition]
        path = f"{CSR_PATH}/{csr['metadata']['name']}/{'status' if kind == 'Failed' else 'approval'}"
        written: dict[str, Any] = self.api.call("PUT", path, body=csr, query=MANAGER)
        return written

    def publish(self) -> None:
        """Keep the CA's certificate in the ConfigMap agents mount to verify their gateway (no key in it)."""
        if self.published is None:
            return
        namespace, name = self.published
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "gigafab"}},
            "data": {"ca.crt": self.ca.cert.read_text()},
        }
        path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        try:
            self.api.call("PATCH", path, body=json.dumps(body), query=[*MANAGER, ("force", "true")], content_type=APPLY)
        except ApiException as failure:  # loud, but no reason to stop signing: agents that have the CA go on
            log.error("signer: cannot publish the CA in ConfigMap %s/%s: %s %s", namespace, name, failure.status, failure.reason)


def _audit(kind: str, name: str, asked: Asked, verdict: Verdict) -> None:
    line = {
        "event": kind,
        "kind": "CertificateSigningRequest",
        "name": name,
        "requester": asked.username,
        "reason": verdict.reason,
        "message": verdict.message,
    }
    (audit.info if verdict.approved else audit.warning)(json.dumps(line))
