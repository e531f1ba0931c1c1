"""Each node agent's own identity: the contract between an agent that asks for its certificate
and the signer that decides (pure functions; ``signer`` gathers and applies, ``enrol`` asks).

An agent proves which node it runs on with its pod's ServiceAccount token. The apiserver binds
such a token to the pod and the pod's node, and copies who asked, with the node's name and uid,
into the CertificateSigningRequest it makes (``spec.username`` and ``spec.extra``): no agent can
write those fields. The signer approves a request for ``signerName: gigafab.nl/health-agent``
only when all of this holds, and denies it naming the first rule it breaks otherwise:

- it was made by the agents' ServiceAccount (``NotTheAgents``);
- with a token bound to a pod on a node (``NotBoundToANode``);
- it is a readable PKCS#10 request signed by the key it carries (``Unreadable``, ``NotSigned``);
- its subject is exactly CN=<node> and O=gigafab:site:<site> (``SubjectRefused``) and it asks
  for no extensions (``ExtensionsRefused``);
- the CN is the token's node (``OtherNode``), and that Node exists, is the one the token was
  bound to (``NodeNotFound``), and carries ``SITE_NODE_LABEL`` = <site> (``WrongSite``): a label
  no kubelet may set on itself;
- its usages are client auth and at most digital signature (``UsagesRefused``);
- its key is ECDSA P-256 or P-384, or RSA of 2048 to 4096 bits (``KeyRefused``).

A node can therefore get a certificate for itself only, and speak to a gateway only for itself,
in its own site (``agents.gateway`` checks CN and O against each report).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from gigafab.agents.tls import SITE_GROUP_PREFIX

from gigafab.api.labels import SITE_NODE_LABEL

SIGNER_NAME = "gigafab.nl/health-agent"
"""The ``signerName`` of agents' requests; only the gigafab signer approves and signs for it."""
USAGES = ("digital signature", "client auth")
"""What an agent asks for: a TLS client certificate (an ECDSA key signs, it never enciphers)."""
ALLOWED_USAGES = frozenset(USAGES)
NODE_NAME = "authentication.kubernetes.io/node-name"
NODE_UID = "authentication.kubernetes.io/node-uid"
POD_NAME = "authentication.kubernetes.io/pod-name"
"""Keys of ``spec.extra`` the apiserver fills from a pod-bound ServiceAccount token (Kubernetes ≥ 1.32)."""
MINIMUM_SECONDS = 600
"""The shortest ``expirationSeconds`` Kubernetes lets a request ask for."""
RENEW_BETWEEN = (0.7, 0.9)
"""An agent renews after 70 to 90 % of its certificate's lifetime (chosen at random per certificate,
as the kubelet does): the rest is time to retry while the signer or the apiserver is away, and the
spread keeps a site's agents, enrolled together, from all renewing in the same second."""


def service_account(namespace: str, name: str) -> str:
    """The username the apiserver gives a ServiceAccount's tokens."""
    return f"system:serviceaccount:{namespace}:{name}"


@dataclass(frozen=True)
class Asked:
    """A CertificateSigningRequest as the signer sees it: who asked (set by the apiserver) and what."""

    username: str
    extra: Mapping[str, Sequence[str]]
    usages: tuple[str, ...]
    request: bytes
    """The PKCS#10 request, PEM."""


@dataclass(frozen=True)
class NodeFacts:
    """The Node a request's token was bound to, as the apiserver has it now."""

    name: str
    uid: str
    site: str | None
    """Its ``SITE_NODE_LABEL``; None when it has none."""


@dataclass(frozen=True)
class Verdict:
    """Approve or deny, with the condition's ``reason`` and a ``message`` that says what to fix."""

    approved: bool
    reason: str
    message: str
    node: str = ""
    site: str = ""


def _deny(reason: str, message: str) -> Verdict:
    return Verdict(False, reason, message)


def bound_node(asked: Asked) -> str | None:
    """The node the request's token is bound to (through a pod), or None."""
    nodes, pods = asked.extra.get(NODE_NAME) or [], asked.extra.get(POD_NAME) or []
    return nodes[0] if len(nodes) == 1 and len(pods) == 1 else None


def judge(asked: Asked, node: NodeFacts | None, agents: str) -> Verdict:
    """Whether the signer gives ``asked`` a certificate. ``node`` is the Node named by the request's
    token (None: there is none); ``agents`` the username of the agents' ServiceAccount."""
    if asked.username != agents:
        return _deny("NotTheAgents", f"requested by {asked.username}; only {agents} may ask for {SIGNER_NAME} certificates")
    claimed = bound_node(asked)
    if claimed is None:
        return _deny(
            "NotBoundToANode",
            "the token that made it is not bound to a pod on a node: the agent must use its pod's own ServiceAccount token",
        )
    read = _read(asked.request)
    if isinstance(read, Verdict):
        return read
    name, site, key = read
    if name != claimed:
        return _deny("OtherNode", f"asks for node {name}, but its token is bound to a pod on node {claimed}")
    refused = _node_refused(node, claimed, asked, site) or _usages_refused(asked.usages) or _key_refused(key)
    if refused is not None:
        return refused
    return Verdict(True, "AgentOfItsNode", f"node {name} of site {site}, asked with a token bound to a pod on it", name, site)


def _read(pem: bytes) -> tuple[str, str, object] | Verdict:
    """(node, site, public key) of a PKCS#10 request, or the denial of one the signer will not read."""
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as unreadable:
        return _deny("Unreadable", f"spec.request is no PEM certificate request: {unreadable}")
    if not request.is_signature_valid:
        return _deny("NotSigned", "the request is not signed by the key it carries")
    subject = _subject(request.subject)
    if isinstance(subject, str):
        return _deny("SubjectRefused", subject)
    if len(request.extensions) > 0:
        return _deny("ExtensionsRefused", "the request asks for extensions; the signer sets them itself: ask for none")
    return (*subject, request.public_key())


def _subject(subject: x509.Name) -> tuple[str, str] | str:
    """(node, site) from CN=<node>, O=gigafab:site:<site>; or why the subject is refused."""
    names = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    others = [a for a in subject if a.oid not in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME)]
    wanted = f"the subject must be exactly CN=<node>, O={SITE_GROUP_PREFIX}<site>"
    if len(names) != 1 or len(orgs) != 1 or others:
        return f"{wanted}; it is {subject.rfc4514_string()}"
    org = orgs[0]
    if not isinstance(org, str) or not org.startswith(SITE_GROUP_PREFIX) or org == SITE_GROUP_PREFIX:
        return f"{wanted}; its organization is {org!r}"
    return str(names[0]), org[len(SITE_GROUP_PREFIX) :]


def _node_refused(node: NodeFacts | None, claimed: str, asked: Asked, site: str) -> Verdict | None:
    uids = asked.extra.get(NODE_UID) or []
    if node is None or node.name != claimed:
        return _deny("NodeNotFound", f"there is no Node {claimed}")
    if uids and uids[0] != node.uid:
        return _deny("NodeNotFound", f"Node {claimed} was deleted and made again since the token was issued: ask again")
    if node.site != site:
        found = f"{SITE_NODE_LABEL}={node.site}" if node.site is not None else f"no label {SITE_NODE_LABEL}"
        return _deny("WrongSite", f"asks for site {site}, but Node {claimed} has {found}")
    return None


def _usages_refused(usages: Sequence[str]) -> Verdict | None:
    if "client auth" in usages and set(usages) <= ALLOWED_USAGES:
        return None
    return _deny("UsagesRefused", f"usages {sorted(usages)}: ask for client auth and at most digital signature")


def _key_refused(key: object) -> Verdict | None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            return None
        return _deny("KeyRefused", f"ECDSA curve {key.curve.name}: use P-256 or P-384")
    if isinstance(key, rsa.RSAPublicKey):
        if 2048 <= key.key_size <= 4096:
            return None
        return _deny("KeyRefused", f"RSA key of {key.key_size} bits: use 2048 to 4096")
    return _deny("KeyRefused", f"a {type(key).__name__}: use ECDSA P-256 or P-384, or RSA of 2048 to 4096 bits")


def lifetime(requested: int | None, maximum: int) -> int:
    """Seconds the signer makes a certificate valid: what was asked, within [MINIMUM_SECONDS, maximum]."""
    return max(MINIMUM_SECONDS, min(requested or maximum, maximum))


def renewal_due(not_before: dt.datetime, not_after: dt.datetime, fraction: float) -> dt.datetime:
    """When to renew a certificate valid from ``not_before`` to ``not_after`` (``fraction`` drawn from RENEW_BETWEEN)."""
    return not_before + (not_after - not_before) * fraction
