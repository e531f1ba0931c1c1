"""Each agent's own identity: the signer's pure decision (approve or deny, with the reason), the
certificate it issues, and an agent that enrols (no certificate yet, then its own).

The whole path on a real apiserver (tokens bound to pods on nodes, the signer's RBAC, a real
gateway taking the agent) is tests/e2e/test_identity.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gigafab.agents.agent import Agent
from gigafab.agents.enrol import EnrolmentFailed, answer_of, check, request_for
from gigafab.agents.fencing import Fence, SimulatedRuntime
from gigafab.agents.gateway import HealthGateway, serve
from gigafab.agents.identity import (
    NODE_NAME,
    NODE_UID,
    POD_NAME,
    Asked,
    NodeFacts,
    judge,
    lifetime,
    renewal_due,
    service_account,
)
from gigafab.agents.keeper import FenceKeeper
from gigafab.agents.ledger import Ledger
from gigafab.agents.renewal import Renewal, split
from gigafab.agents.signer import HealthCa
from gigafab.agents.simulated import SimulatedBackend
from gigafab.agents.tls import AgentTls, GatewayTls, certificate_sites

from gigafab.local.pki import Authority, node_identity

AGENTS = service_account("gigafab-system", "gigafab-agent")
NODE, SITE, UID = "de-halm-gpu-007", "de-halm", "0b7e-uid"
BOUND = {NODE_NAME: [NODE], NODE_UID: [UID], POD_NAME: ["gigafab-agent-de-halm-x7k2p"]}
HERE = NodeFacts(NODE, UID, SITE)


def pem_request(
    common: str | None = NODE,
    orgs: tuple[str, ...] = (f"gigafab:site:{SITE}",),
    key: Any = None,
    extra: tuple[x509.NameAttribute, ...] = (),
    san: bool = False,
) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs] + list(extra)
    if common is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("gateway.example")]), critical=False)
    signing = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, signing).public_bytes(serialization.Encoding.PEM)


def tampered() -> bytes:
    """A request whose signature no longer matches its content (its last signature byte changed)."""
    der = bytearray(x509.load_pem_x509_csr(pem_request()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


def asked(request: bytes | None = None, **changes: Any) -> Asked:
    fields: dict[str, Any] = {
        "username": AGENTS,
        "extra": BOUND,
        "usages": ("digital signature", "client auth"),
        "request": request if request is not None else pem_request(),
    }
    fields.update(changes)
    return Asked(**fields)


DENIALS = [
    ("another account", asked(username=service_account("tenant-a", "default")), HERE, "NotTheAgents", "only " + AGENTS),
    ("a token bound to no pod", asked(extra={}), HERE, "NotBoundToANode", "not bound to a pod on a node"),
    ("a token bound to a Node only", asked(extra={NODE_NAME: [NODE]}), HERE, "NotBoundToANode", "pod's own"),
    ("no PEM", asked(b"not a request"), HERE, "Unreadable", "no PEM certificate request"),
    ("a forged signature", asked(tampered()), HERE, "NotSigned", "not signed by the key it carries"),
    ("no site", asked(pem_request(orgs=())), HERE, "SubjectRefused", "exactly CN=<node>, O=gigafab:site:<site>"),
    ("two sites", asked(pem_request(orgs=("gigafab:site:de-halm", "gigafab:site:niemeyer"))), HERE, "SubjectRefused", "O="),
    ("not a site", asked(pem_request(orgs=("system:masters",))), HERE, "SubjectRefused", "'system:masters'"),
    (
        "another attribute",
        asked(pem_request(extra=(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),))),
        HERE,
        "SubjectRefused",
        "OU=ops",
    ),
    ("extensions", asked(pem_request(san=True)), HERE, "ExtensionsRefused", "ask for none"),
    ("another node", asked(pem_request("de-halm-gpu-001")), HERE, "OtherNode", f"bound to a pod on node {NODE}"),
    ("no such Node", asked(), None, "NodeNotFound", f"no Node {NODE}"),
    ("a Node made again", asked(), NodeFacts(NODE, "another-uid", SITE), "NodeNotFound", "deleted and made again"),
    (
        "another site",
        asked(pem_request(orgs=("gigafab:site:niemeyer",))),
        HERE,
        "WrongSite",
        "node-restriction.kubernetes.io/gigafab-site=de-halm",
    ),
    ("a Node of no site", asked(), NodeFacts(NODE, UID, None), "WrongSite", "no label node-restriction"),
    ("server auth", asked(usages=("client auth", "server auth")), HERE, "UsagesRefused", "'server auth'"),
    ("no client auth", asked(usages=("digital signature",)), HERE, "UsagesRefused", "ask for client auth"),
    ("key encipherment", asked(usages=("key encipherment", "client auth")), HERE, "UsagesRefused", "key encipherment"),
    (
        "a weak RSA key",
        asked(pem_request(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))),
        HERE,
        "KeyRefused",
        "RSA key of 1024 bits",
    ),
    ("a P-521 key", asked(pem_request(key=ec.generate_private_key(ec.SECP521R1()))), HERE, "KeyRefused", "secp521r1"),
    ("an Ed25519 key", asked(pem_request(key=ed25519.Ed25519PrivateKey.generate())), HERE, "KeyRefused", "Ed25519"),
]


@pytest.mark.parametrize(("request_", "node", "reason", "says"), [case[1:] for case in DENIALS], ids=[c[0] for c in DENIALS])
def test_the_signer_denies_with_the_rule_broken_and_what_to_fix(
    request_: Asked, node: NodeFacts | None, reason: str, says: str
) -> None:
    verdict = judge(request_, node, AGENTS)
    assert (verdict.approved, verdict.reason) == (False, reason)
    assert says in verdict.message


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())],
    ids=["P-256", "P-384"],
)
def test_the_signer_approves_an_agent_asking_for_its_own_node_in_its_nodes_site(key: ec.EllipticCurvePrivateKey) -> None:
    verdict = judge(asked(pem_request(key=key), usages=("client auth",)), HERE, AGENTS)
    assert (verdict.approved, verdict.reason, verdict.node, verdict.site) == (True, "AgentOfItsNode", NODE, SITE)


def test_lifetimes_stay_between_kubernetes_shortest_and_the_signers_longest() -> None:
    assert lifetime(None, 86400) == 86400
    assert lifetime(3600, 86400) == 3600
    assert lifetime(10 * 86400, 86400) == 86400
    assert lifetime(60, 86400) == 600


def test_renewal_falls_due_at_the_drawn_share_of_the_lifetime() -> None:
    start = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert renewal_due(start, start + dt.timedelta(hours=10), 0.8) == start + dt.timedelta(hours=8)


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    ca = Authority(tmp_path / "ca", "gigafab-health-ca")
    ca.ensure()
    return ca


def test_the_certificate_issued_is_the_signers_own_for_the_requests_key(authority: Authority) -> None:
    """Subject and extensions come from the verdict, never from the request; it verifies against the CA."""
    key, request = request_for(NODE, SITE)
    verdict = judge(asked(request), HERE, AGENTS)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # certificates count whole seconds
    pem = HealthCa(authority.pair.cert, authority.pair.key).issue(request, verdict, 3600, now)
    certificate = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate(authority.pair.cert.read_bytes())
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject.rfc4514_string() == f"CN={NODE},O=gigafab:site:{SITE}"
    assert certificate_sites(pem) == {SITE}
    assert certificate.public_key() == key.public_key()
    assert list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert certificate.not_valid_after_utc - now == dt.timedelta(hours=1)
    check(pem, key, NODE, SITE)  # what the agent checks before it takes it
    with pytest.raises(EnrolmentFailed, match="not for this key, node de-halm-gpu-001"):
        check(pem, key, "de-halm-gpu-001", SITE)


def test_an_agent_reads_the_signers_refusal_from_the_request() -> None:
    denied = {
        "metadata": {"name": "gigafab-agent-x"},
        "status": {"conditions": [{"type": "Denied", "status": "True", "reason": "WrongSite", "message": "asks for site x"}]},
    }
    with pytest.raises(EnrolmentFailed, match="gigafab-agent-x denied by the signer: WrongSite: asks for site x"):
        answer_of(denied)
    assert answer_of({"metadata": {"name": "gigafab-agent-x"}, "status": {}}) is None


def test_split_takes_the_key_and_the_certificate_from_what_enrol_prints(authority: Authority) -> None:
    pair = authority.issue_client(node_identity(NODE, SITE))
    key, certificate = split(pair.key.read_bytes() + pair.cert.read_bytes())
    assert (key, certificate) == (pair.key.read_bytes(), pair.cert.read_bytes())
    assert split(b"gigafab enrol: denied\n") == (b"", b"")


async def _until(predicate: Any, seconds: float) -> bool:
    for _ in range(int(seconds * 20)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


def test_an_enrolling_agent_fences_until_it_has_its_certificate_then_connects_with_it(
    authority: Authority, tmp_path: Path
) -> None:
    """Before its first certificate the agent has no contact (and fences on time); once the renewal has
    written the key and certificate the command printed, it reaches a real gateway with them. The command
    here prints a certificate the test made: ``gigafab enrol`` itself needs an apiserver (tests/e2e)."""
    served = authority.issue_server("gateway", ("localhost", "127.0.0.1"))
    issued = authority.issue_client(node_identity(NODE, SITE))
    printed = tmp_path / "printed.pem"
    identity = tmp_path / "identity"
    tls = AgentTls(identity / f"{NODE}.crt", identity / f"{NODE}.key", authority.pair.cert)

    async def main() -> None:
        async def record(_: object) -> bool:
            return True

        server, port = await serve(
            HealthGateway(Ledger(SITE), record), "127.0.0.1:0", GatewayTls(served.cert, served.key, tls.ca)
        )
        runtime = SimulatedRuntime(NODE)
        keeper = FenceKeeper(NODE, Fence(1.0), runtime)
        agent = Agent(NODE, SITE, SimulatedBackend(NODE, 1), [f"127.0.0.1:{port}"], tls, 0.2, keeper)
        renewal = Renewal(NODE, tls, [sys.executable, "-c", f"import sys; sys.stdout.write(open({str(printed)!r}).read())"])
        running = asyncio.create_task(agent.run())
        try:
            assert not await renewal.enrol(), "nothing printed yet: no certificate written"
            assert await _until(lambda: runtime.fenced_at is not None, 5), "no certificate, no contact: fenced on time"
            assert not running.done(), "the agent keeps running without a certificate"
            printed.write_bytes(issued.key.read_bytes() + issued.cert.read_bytes())
            assert await renewal.enrol()
            assert (tls.key.stat().st_mode & 0o777, tls.cert.read_bytes()) == (0o600, issued.cert.read_bytes())
            assert await _until(lambda: agent.connected and runtime.fenced_at is None, 20), "connected with its own certificate"
            assert renewal.due() > dt.datetime.now(dt.UTC) + dt.timedelta(days=200), "a year's certificate: due in 70-90 %"
        finally:
            running.cancel()
            await server.stop(None)

    asyncio.run(main())


def test_a_certificate_of_another_node_or_an_expired_one_is_due_at_once(authority: Authority, tmp_path: Path) -> None:
    other = authority.issue_client(node_identity("de-halm-gpu-001", SITE))
    tls = AgentTls(other.cert, other.key, authority.pair.cert)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert Renewal(NODE, tls, [], clock=lambda: now).due() == now
    later = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    assert Renewal("de-halm-gpu-001", tls, [], clock=lambda: later).due() == later, "expired"
    missing = AgentTls(tmp_path / "none.crt", tmp_path / "none.key", authority.pair.cert)
    assert Renewal(NODE, missing, [], clock=lambda: now).due() == now


def test_an_agent_without_the_cas_certificate_yet_fences_then_connects_when_it_appears(
    authority: Authority, tmp_path: Path
) -> None:
    """The chart's ConfigMap with the CA's certificate is optional: until the signer has published it the
    agent runs, has no contact and fences; once the file is there it connects."""
    served = authority.issue_server("gateway", ("localhost", "127.0.0.1"))
    issued = authority.issue_client(node_identity(NODE, SITE))
    ca = tmp_path / "health-ca" / "ca.crt"
    tls = AgentTls(issued.cert, issued.key, ca)

    async def main() -> None:
        async def record(_: object) -> bool:
            return True

        gateway_tls = GatewayTls(served.cert, served.key, authority.pair.cert)
        server, port = await serve(HealthGateway(Ledger(SITE), record), "127.0.0.1:0", gateway_tls)
        runtime = SimulatedRuntime(NODE)
        keeper = FenceKeeper(NODE, Fence(1.0), runtime)
        agent = Agent(NODE, SITE, SimulatedBackend(NODE, 1), [f"127.0.0.1:{port}"], tls, 0.2, keeper)
        running = asyncio.create_task(agent.run())
        try:
            assert await _until(lambda: runtime.fenced_at is not None, 5)
            ca.parent.mkdir()
            ca.write_bytes(authority.pair.cert.read_bytes())
            assert await _until(lambda: agent.connected and runtime.fenced_at is None, 20)
        finally:
            running.cancel()
            await server.stop(None)

    asyncio.run(main())
