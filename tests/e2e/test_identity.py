"""Each node agent holds only its own identity, on the real apiserver (audit finding 6, issue 19).

An agent asks for its certificate with its pod's ServiceAccount token; the apiserver binds that
token to the pod and its node and writes both into the CertificateSigningRequest. The signer
(``gigafab signer``, here with the plane's health CA and its own user's RBAC from
config/rbac/signer.yaml) approves only a request for the token's own node, in the site that
Node's ``SITE_NODE_LABEL`` names. The tokens are real TokenRequests bound to pods on a KWOK node,
as the kubelet gets them for an agent pod; the last tests run ``gigafab agent --enrol`` itself and
see the site's real gateway take it.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from gigafab.agents.enrol import request_for
from gigafab.agents.identity import SIGNER_NAME, service_account
from gigafab.agents.records import node_key
from gigafab.agents.tls import certificate_sites

from gigafab.local import health
from gigafab.local.nodes import node_name
from gigafab.local.plane import Plane

from .conftest import Kubectl, eventually
from .enrolment import (
    allowed,
    apiserver_flags,
    conditions,
    enrol,
    etcd_keys,
    health_ca,
    node,
    pod_on,
    requests_for,
    start_signer,
    stop,
    token,
)

SITE = "de-halm"
AGENT = "gigafab-agent"
SIGNER_USER = "gigafab-signer"
CA_MAP = "gigafab-health-ca"


@dataclass
class Enrolment:
    """A namespace with the agents' account, a node of de-halm with an agent pod on it, and a signer."""

    namespace: str
    node: str
    folder: Path
    agent_token: Path
    start_signer: Callable[[], subprocess.Popen[bytes]]
    signer: subprocess.Popen[bytes] | None = None

    @property
    def agents(self) -> str:
        return service_account(self.namespace, AGENT)


def _objects(namespace: str, node_of_site: str) -> list[dict[str, object]]:
    accounts = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n, "namespace": namespace}} for n in (AGENT, "other")
    ]
    subjects = [{"kind": "ServiceAccount", "name": n, "namespace": namespace} for n in (AGENT, "other")]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{namespace}-health-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gigafab-health-agent"},
        "subjects": subjects,
    }
    # the chart's Role for the signer's one ConfigMap (templates/identity.yaml)
    publish = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "gigafab-signer", "namespace": namespace},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CA_MAP], "verbs": ["create", "patch"]}],
    }
    published = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "gigafab-signer", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gigafab-signer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": SIGNER_USER}],
    }
    pods = [pod_on(node_of_site, namespace, AGENT, "agent"), pod_on(node_of_site, namespace, "other", "intruder")]
    return [*accounts, binding, publish, published, *pods]


@pytest.fixture(scope="module")
def enrolment(plane: Plane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enrolment]:
    suffix = uuid.uuid4().hex[:6]
    namespace, node_of_site = f"identity-{suffix}", f"{SITE}-enrol-{suffix}"
    folder = tmp_path_factory.mktemp("identity")
    kubectl.run("create", "namespace", namespace)
    kubectl.create(node(node_of_site, SITE))
    kubectl.apply(*_objects(namespace, node_of_site))
    agent_token = token(kubectl, namespace, AGENT, folder, pod="agent")
    kubeconfig = plane.layout.kubeconfig_for("signer")  # the plane's gigafab-signer user: config/rbac/signer.yaml

    def signer() -> subprocess.Popen[bytes]:
        log = folder / f"signer-{time.monotonic_ns()}.log"
        return start_signer(plane.layout, kubeconfig, f"{namespace}/{AGENT}", f"{namespace}/{CA_MAP}", log)

    enrolled = Enrolment(namespace, node_of_site, folder, agent_token, signer, signer())
    try:
        yield enrolled
    finally:
        if enrolled.signer is not None:
            stop(enrolled.signer)
        kubectl.run("delete", "csr", f"--field-selector=spec.signerName={SIGNER_NAME}", check=False)
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
        kubectl.run("delete", "clusterrolebinding", f"{namespace}-health-agent", check=False)
        kubectl.run("delete", "node", node_of_site, check=False)


def _denied(kubectl: Kubectl, node_asked: str, reason: str) -> dict[str, object]:
    """The last request for ``node_asked`` is Denied for ``reason``, and has no certificate."""
    csr = requests_for(kubectl, node_asked)[-1]
    denied = conditions(csr).get("Denied")
    assert denied is not None, f"{csr['metadata']['name']} is not denied: {conditions(csr)}"
    assert denied["reason"] == reason
    assert not (csr.get("status") or {}).get("certificate")
    return dict(denied)


def test_an_agent_gets_a_certificate_for_its_own_node_that_the_health_ca_verifies(
    plane: Plane, kubectl: Kubectl, enrolment: Enrolment
) -> None:
    answer = enrol(plane.layout, enrolment.node, SITE, enrolment.agent_token)
    assert answer.returncode == 0, answer.stderr.decode()
    blocks = answer.stdout.split(b"-----END PRIVATE KEY-----\n")
    certificate = x509.load_pem_x509_certificate(blocks[1])
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(health_ca(plane.layout)[0].read_bytes()))
    assert certificate.subject.rfc4514_string() == f"CN={enrolment.node},O=gigafab:site:{SITE}"
    assert certificate_sites(blocks[1]) == {SITE}
    csr = requests_for(kubectl, enrolment.node)[-1]
    assert conditions(csr)["Approved"]["reason"] == "AgentOfItsNode"
    assert csr["spec"]["username"] == enrolment.agents
    assert csr["spec"]["extra"]["authentication.kubernetes.io/node-name"] == [enrolment.node], "the apiserver wrote it"


@pytest.mark.parametrize(
    ("node_asked", "site", "reason", "says"),
    [
        (node_name(SITE, 0), SITE, "OtherNode", "but its token is bound to a pod on node {node}"),
        (
            None,
            "niemeyer",
            "WrongSite",
            "asks for site niemeyer, but Node {node} has node-restriction.kubernetes.io/gigafab-site=de-halm",
        ),
    ],
    ids=["another node of its site", "its node in another site"],
)
def test_an_agent_asking_for_what_is_not_its_own_is_denied_with_the_reason(
    plane: Plane, kubectl: Kubectl, enrolment: Enrolment, node_asked: str | None, site: str, reason: str, says: str
) -> None:
    asked = node_asked or enrolment.node
    answer = enrol(plane.layout, asked, site, enrolment.agent_token)
    assert answer.returncode == 1
    message = says.format(node=enrolment.node)
    assert reason in answer.stderr.decode()
    assert message in answer.stderr.decode(), "the agent is told why"
    assert message in str(_denied(kubectl, asked, reason)["message"])


def test_a_token_bound_to_no_pod_on_a_node_is_denied(plane: Plane, kubectl: Kubectl, enrolment: Enrolment) -> None:
    unbound = token(kubectl, enrolment.namespace, AGENT, enrolment.folder)
    answer = enrol(plane.layout, enrolment.node, SITE, unbound)
    assert answer.returncode == 1
    assert "NotBoundToANode" in answer.stderr.decode()
    _denied(kubectl, enrolment.node, "NotBoundToANode")


def test_another_account_with_a_pod_on_the_node_is_denied(plane: Plane, kubectl: Kubectl, enrolment: Enrolment) -> None:
    """Any account may be allowed to make requests (here: bound like the agents'); only the agents' is believed."""
    intruder = token(kubectl, enrolment.namespace, "other", enrolment.folder, pod="intruder")
    answer = enrol(plane.layout, enrolment.node, SITE, intruder)
    assert answer.returncode == 1
    message = str(_denied(kubectl, enrolment.node, "NotTheAgents")["message"])
    assert message == (
        f"requested by {service_account(enrolment.namespace, 'other')}; "
        f"only {enrolment.agents} may ask for gigafab.nl/health-agent certificates"
    )


def test_an_approval_by_someone_else_makes_no_identity(kubectl: Kubectl, enrolment: Enrolment) -> None:
    """A cluster administrator who approves a request the rules refuse gets Failed, not a certificate. The
    approval is given while the signer is stopped; the signer started again lists it and judges it."""
    assert enrolment.signer is not None
    stop(enrolment.signer)
    _, request = request_for(enrolment.node, SITE)
    name = f"gigafab-agent-{enrolment.node}-by-hand"
    csr = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64.b64encode(request).decode(),
            "signerName": SIGNER_NAME,
            "usages": ["digital signature", "client auth"],
        },
    }
    kubectl.create(csr)
    kubectl.run("certificate", "approve", name)
    enrolment.signer = enrolment.start_signer()

    def failed() -> None:
        found = kubectl.get("csr", name)
        assert "Failed" in conditions(found), conditions(found)

    eventually(failed, timeout=30)
    found = kubectl.get("csr", name)
    assert conditions(found)["Failed"]["reason"] == "NotTheAgents"
    assert conditions(found)["Approved"]["status"] == "True", "approved, by the administrator"
    assert not (found.get("status") or {}).get("certificate"), "and yet no certificate"


def test_the_signer_publishes_the_cas_certificate_for_the_agents(kubectl: Kubectl, enrolment: Enrolment, plane: Plane) -> None:
    def published() -> None:
        found = kubectl.get("configmap", CA_MAP, "-n", enrolment.namespace)
        assert found is not None
        assert found["data"]["ca.crt"] == health_ca(plane.layout)[0].read_text()

    eventually(published, timeout=30)


@pytest.mark.parametrize(
    ("user", "verb", "resource", "name", "may"),
    [
        (SIGNER_USER, "approve", "signers", "gigafab.nl/health-agent", True),
        (SIGNER_USER, "sign", "signers", "gigafab.nl/health-agent", True),
        (SIGNER_USER, "approve", "signers", "kubernetes.io/kube-apiserver-client", False),
        (SIGNER_USER, "sign", "signers", "kubernetes.io/kube-apiserver-client", False),
        (SIGNER_USER, "get", "secrets", "", False),
        (SIGNER_USER, "patch", "nodes", "", False),
        ("agents", "create", "certificatesigningrequests", "", True),
        ("agents", "get", "nodes", "", False),
        ("agents", "update", "certificatesigningrequests/approval", "", False),
        ("agents", "approve", "signers", "gigafab.nl/health-agent", False),
    ],
)
def test_the_signer_and_the_agents_may_do_their_work_and_no_more(
    kubectl: Kubectl, enrolment: Enrolment, user: str, verb: str, resource: str, name: str, may: bool
) -> None:
    who = enrolment.agents if user == "agents" else user
    kind, _, subresource = resource.partition("/")
    group = "certificates.k8s.io" if kind in ("signers", "certificatesigningrequests") else ""
    where = {"subresource": subresource} if subresource else {}
    assert allowed(kubectl, who, verb, group, kind, name, **where) is may


def _agent(plane: Plane, enrolment: Enrolment, node_asked: str, pki: Path) -> subprocess.Popen[bytes]:
    layout = plane.layout
    gateway = f"{urllib.parse.urlsplit(health.control_url(layout, SITE)).hostname}:{health.gateway_port(layout, SITE)}"
    argv = [sys.executable, "-m", "gigafab", "agent", f"--site={SITE}", f"--node={node_asked}", f"--gateway={gateway}"]
    argv += [f"--pki={pki}", f"--ca={health_ca(layout)[0]}", "--enrol", "--gpus=2", "--fence-after=4"]
    argv += [f"--fence-log={pki.parent / 'fences.jsonl'}", *apiserver_flags(layout, enrolment.agent_token)]
    pki.mkdir(parents=True)
    with (pki.parent / "agent.log").open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def test_an_enrolling_agent_reaches_its_sites_gateway_with_its_own_certificate(plane: Plane, enrolment: Enrolment) -> None:
    """``gigafab agent --enrol``: key made in the process, certificate from the signer, and the site's real
    gateway takes its reports (its node's health appears in etcd, written by the gateway)."""
    pki = enrolment.folder / "enrolled" / "pki"
    agent = _agent(plane, enrolment, enrolment.node, pki)
    try:
        key = node_key(SITE, enrolment.node).decode()
        eventually(lambda: _has(etcd_keys(plane.layout, key), key), timeout=90)
        certificate = x509.load_pem_x509_certificate((pki / f"{enrolment.node}.crt").read_bytes())
        assert certificate.subject.rfc4514_string() == f"CN={enrolment.node},O=gigafab:site:{SITE}"
        assert (pki / f"{enrolment.node}.key").stat().st_mode & 0o777 == 0o600
        assert agent.poll() is None
    finally:
        stop(agent)


def test_an_agent_denied_its_certificate_keeps_running_says_why_and_fences(plane: Plane, enrolment: Enrolment) -> None:
    """An agent configured with another node's name gets no certificate: it logs the signer's reason, keeps
    asking, and fences its node, since no gateway will take it."""
    pki = enrolment.folder / "misconfigured" / "pki"
    other = node_name(SITE, 1)
    agent = _agent(plane, enrolment, other, pki)
    log, fences = pki.parent / "agent.log", pki.parent / "fences.jsonl"
    try:
        eventually(lambda: _has(log.read_text(), f"but its token is bound to a pod on node {enrolment.node}"), timeout=60)
        eventually(lambda: _has(fences.read_text() if fences.exists() else "", '"event": "fenced"'), timeout=30)
        time.sleep(1)
        assert agent.poll() is None, "it keeps running (and asking) rather than exit"
        assert not (pki / f"{other}.crt").exists()
    finally:
        stop(agent)


def _has(where: object, wanted: str) -> None:
    assert wanted in where, f"{wanted!r} not yet in {where!r}"  # type: ignore[operator]
