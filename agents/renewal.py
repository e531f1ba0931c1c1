"""An enrolling agent keeps its own certificate fresh (``gigafab agent --enrol``).

At start, and again after 70 to 90 % of each certificate's lifetime, the agent runs
``gigafab enrol`` (``agents.enrol``: a new key, a CertificateSigningRequest with the pod's
token, the signer's answer) and writes the key and certificate it prints into its own folder,
a tmpfs in the chart: the key never leaves the pod. It writes both files in one step of its
event loop, so the agent never reads a new key with an old certificate; the agent ends its
stream when the files change and reconnects with the new certificate.

A certificate still valid for this node that is already there (the container restarted in
the same pod) is kept until it is due. When enrolment fails (the signer or the apiserver is
away, or the request is denied: the reason is logged) the agent asks again after a backoff
that grows to ``RETRY_AT_MOST``; meanwhile it keeps using the certificate it has, and without
one it cannot reach a gateway, so its fence (``agents.fencing``) stops the node's work on time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from gigafab.agents.identity import RENEW_BETWEEN, renewal_due
from gigafab.agents.tls import AgentTls

log = logging.getLogger("gigafab.agent")

RETRY_AT_MOST = 300.0
"""Seconds between attempts at most: a denied node asks again every five minutes (its Node's label
may be corrected meanwhile) without filling the apiserver with requests."""
ENROL_TIMEOUT = 660.0
"""Seconds after which a ``gigafab enrol`` that has not finished is stopped. It waits up to 600 s for the
signer: when a whole site's agents start at once, the last of them waits while the signer works through
the others' requests, and one that gave up would only add another request to the queue."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Renewal:
    """Keeps the certificate and key of ``tls`` (one node's) issued by the signer, through ``command``."""

    def __init__(
        self,
        node: str,
        tls: AgentTls,
        command: Sequence[str],
        clock: Callable[[], dt.datetime] = _now,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.node, self.tls, self.command, self.clock, self.draw = node, tls, list(command), clock, draw
        self.issued = 0
        """Certificates written by this agent since it started."""
        self.fraction: float | None = None
        """How far into the present certificate's life it is renewed (drawn once per certificate)."""

    def due(self) -> dt.datetime:
        """When to enrol next: now without a usable certificate of this node, else 70-90 % into its life."""
        try:
            certificate = x509.load_pem_x509_certificate(self.tls.cert.read_bytes())
        except (OSError, ValueError):
            return self.clock()
        names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [self.node] or not self.tls.key.exists() or certificate.not_valid_after_utc <= self.clock():
            return self.clock()
        if self.fraction is None:
            low, high = RENEW_BETWEEN
            self.fraction = low + (high - low) * self.draw()
        return renewal_due(certificate.not_valid_before_utc, certificate.not_valid_after_utc, self.fraction)

    async def run(self) -> None:
        backoff = 1.0
        while True:
            wait = (self.due() - self.clock()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            if await self.enrol():
                backoff = 1.0
                continue
            await asyncio.sleep(backoff * (0.5 + self.draw()))
            backoff = min(backoff * 2, RETRY_AT_MOST)

    async def enrol(self) -> bool:
        """Run ``gigafab enrol`` once; on success write what it printed. False (and the reason logged) else."""
        process = await asyncio.create_subprocess_exec(
            *self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), ENROL_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            log.error("agent %s: gigafab enrol did not finish within %.0f s", self.node, ENROL_TIMEOUT)
            return False
        if process.returncode != 0:
            log.error("agent %s: no certificate: %s", self.node, err.decode(errors="replace").strip())
            return False
        key, certificate = split(out)
        if not key or not certificate:
            log.error("agent %s: gigafab enrol printed no key and certificate", self.node)
            return False
        _write(self.tls.key, key, 0o600)
        _write(self.tls.cert, certificate, 0o644)
        self.fraction = None
        self.issued += 1
        log.info("agent %s: new certificate from the signer", self.node)
        return True


def split(pem: bytes) -> tuple[bytes, bytes]:
    """(private key, certificate chain) from PEM blocks printed one after the other."""
    key, certificates = b"", b""
    block: list[bytes] = []
    for line in pem.splitlines(keepends=True):
        block.append(line)
        if line.startswith(b"-----END "):
            text = b"".join(block)
            if b"PRIVATE KEY-----" in line:
                key += text
            elif line.startswith(b"-----END CERTIFICATE-----"):
                certificates += text
            block = []
    return key, certificates


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` whole (a reader sees the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.new")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    os.chmod(partial, mode)
    os.replace(partial, path)
