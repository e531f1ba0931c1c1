"""``helm install`` of charts/gigafab into the real local plane: what it creates, on which
nodes its pods land, what its identities may do, and that ``helm uninstall`` takes it away.

The plane's KWOK nodes run no containers, so the pods become Running without executing the
image (it cannot be built here); placement, admission, RBAC and the objects are all real.
cert-manager's CRDs (from its Go module) are installed so the chart takes its cert-manager
branch and its Certificates are accepted by the apiserver's schemas. The signer the chart
installs is run here as a process with its account's token, and an agent pod's token enrols.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gigafab.local import chart
from gigafab.local.layout import SITES
from gigafab.local.nodes import node_name
from gigafab.local.plane import Plane
from gigafab.local.toolchain import cert_manager_module

from .conftest import Kubectl, eventually
from .enrolment import allowed, conditions, enrol, health_ca, requests_for, start_signer, stop, token, token_kubeconfig

RELEASE = "chart-test"
NAME = "chart-test-gigafab"
KWOK = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]


def helm(plane: Plane, *args: str) -> str:
    answer = chart.helm(*args, "--kubeconfig", str(plane.layout.admin_kubeconfig), layout=plane.layout)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout


@pytest.fixture(scope="module")
def installed(plane: Plane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for name in ("certificates", "issuers", "clusterissuers"):
        crd = cert_manager_module() / "deploy" / "crds" / f"cert-manager.io_{name}.yaml"
        kubectl.run("apply", "--server-side", "-f", str(crd))
    kubectl.run("wait", "--for=condition=Established", "crd/certificates.cert-manager.io", "--timeout=60s")
    values = {
        "sites": [{"name": site} for site in SITES],
        "healthEtcd": "etcd.gigafab-system.svc:2379",
        "operator": {"tolerations": KWOK},
        "gateway": {"tolerations": KWOK},
        # null removes the chart default (nvidia.com/gpu.present), which KWOK nodes do not carry
        "agent": {"tolerations": KWOK, "nodeSelector": {"nvidia.com/gpu.present": None, "type": "kwok"}, "runtimeClassName": ""},
        "signer": {"tolerations": KWOK},
        # the plane has them already (config/rbac, config/admission)
        "rbac": {
            "createTenantRoles": False,
            "gpusThroughWorkloads": False,
            "operatorInTenantNamespaces": False,
            "tenantBoundary": False,
        },
    }
    path = Path(tmp_path_factory.mktemp("chart")) / "values.json"
    path.write_text(json.dumps(values))
    namespace = "gigafab-system"
    helm(
        plane,
        "install",
        RELEASE,
        str(chart.chart_dir()),
        "-n",
        namespace,
        "--create-namespace",
        "-f",
        str(path),
        "--wait",
        "--timeout",
        "180s",
    )
    yield namespace
    # usually gone already (test_uninstall_takes_it_all_away)
    chart.helm("uninstall", RELEASE, "-n", namespace, "--kubeconfig", str(plane.layout.admin_kubeconfig), layout=plane.layout)
    kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_install_runs_the_operator_a_gateway_per_site_and_agents_on_every_gpu_node(installed: str, kubectl: Kubectl) -> None:
    deployments = {d["metadata"]["name"]: d for d in kubectl.get("deployments", "-n", installed)["items"]}
    assert set(deployments) == {f"{NAME}-operator", f"{NAME}-signer"} | {f"{NAME}-gateway-{site}" for site in SITES}
    for deployment in deployments.values():
        assert deployment["status"].get("availableReplicas") == 1, deployment["metadata"]["name"]
    for site in SITES:
        daemonset = kubectl.get("daemonset", f"{NAME}-agent-{site}", "-n", installed)
        assert daemonset["status"]["desiredNumberScheduled"] == 2
        assert daemonset["status"]["numberReady"] == 2
        pods = kubectl.get("pods", "-n", installed, "-l", f"app.kubernetes.io/component=agent,gigafab.nl/site={site}")["items"]
        assert sorted(pod["spec"]["nodeName"] for pod in pods) == [node_name(site, 0), node_name(site, 1)]
        gateway = kubectl.get("pods", "-n", installed, "-l", f"app.kubernetes.io/component=gateway,gigafab.nl/site={site}")
        assert [pod["spec"]["nodeName"].startswith(f"{site}-") for pod in gateway["items"]] == [True]
    services = {s["metadata"]["name"] for s in kubectl.get("services", "-n", installed)["items"]}
    assert {f"{NAME}-gateway-{site}" for site in SITES} | {f"{NAME}-operator-metrics"} == services
    assert kubectl.get("clusterkopfpeering", "gigafab") is not None


def test_cert_manager_gets_the_health_ca_and_a_certificate_per_gateway_and_none_per_node(
    installed: str, kubectl: Kubectl
) -> None:
    certificates = {
        c["metadata"]["name"]: c["spec"] for c in kubectl.get("certificates.cert-manager.io", "-n", installed)["items"]
    }
    assert set(certificates) == {f"{NAME}-health-ca"} | {f"{NAME}-gateway-{site}" for site in SITES}
    assert certificates[f"{NAME}-health-ca"]["isCA"] is True
    assert certificates[f"{NAME}-gateway-de-halm"]["dnsNames"] == [f"{NAME}-gateway-de-halm.{installed}.svc"]


def _agent_pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return list(kubectl.get("pods", "-n", namespace, "-l", "app.kubernetes.io/component=agent")["items"])


def test_an_agent_pod_holds_nothing_of_another_node(installed: str, kubectl: Kubectl) -> None:
    """Every agent pod as the apiserver has it: no Secret in any volume (the key is made in the pod, in
    memory), the CA's certificate from a ConfigMap, and only its own pod-bound token."""
    pods = _agent_pods(kubectl, installed)
    assert len(pods) == 2 * len(SITES)
    for pod in pods:
        volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
        secrets = [v for v in volumes.values() if "secret" in v] + [
            source for v in volumes.values() for source in (v.get("projected") or {}).get("sources", []) if "secret" in source
        ]
        assert secrets == [], pod["metadata"]["name"]
        assert volumes["identity"]["emptyDir"]["medium"] == "Memory"
        assert volumes["health-ca"]["configMap"]["name"] == f"{NAME}-health-ca"
        token_sources = [
            source
            for v in volumes.values()
            for source in (v.get("projected") or {}).get("sources", [])
            if "serviceAccountToken" in source
        ]
        assert len(token_sources) == 1, "the kubelet's token for this pod, and no other"
        assert pod["spec"]["serviceAccountName"] == f"{NAME}-agent"


@pytest.fixture(scope="module")
def chart_signer(plane: Plane, kubectl: Kubectl, installed: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The chart's signer, run here as a process with its own ServiceAccount's token (KWOK runs no image), and
    the CA Secret it mounts (cert-manager's controller does not run in the plane: the test makes it)."""
    folder = tmp_path_factory.mktemp("chart-signer")
    cert, key = health_ca(plane.layout)
    kubectl.run("create", "secret", "tls", f"{NAME}-health-ca", "-n", installed, f"--cert={cert}", f"--key={key}")
    bearer = kubectl.run("create", "token", f"{NAME}-signer", "-n", installed, "--duration=1h").stdout.strip()
    kubeconfig = token_kubeconfig(plane.layout, bearer, folder / "signer.kubeconfig")
    signer = start_signer(
        plane.layout, kubeconfig, f"{installed}/{NAME}-agent", f"{installed}/{NAME}-health-ca", folder / "signer.log"
    )
    try:
        yield folder
    finally:
        stop(signer)
        kubectl.run("delete", "csr", "--field-selector=spec.signerName=gigafab.nl/health-agent", check=False)


def test_an_agent_pod_of_the_chart_gets_its_own_nodes_certificate_and_no_other(
    plane: Plane, kubectl: Kubectl, installed: str, chart_signer: Path
) -> None:
    """With the chart's two accounts and an agent pod the DaemonSet put on a node: the pod's token gets a
    certificate for that node, and a request for its neighbour's is denied."""
    pod = next(p for p in _agent_pods(kubectl, installed) if p["spec"]["nodeName"] == node_name("de-halm", 0))
    bound = token(kubectl, installed, f"{NAME}-agent", chart_signer, pod=pod["metadata"]["name"])
    answer = enrol(plane.layout, node_name("de-halm", 0), "de-halm", bound)
    assert answer.returncode == 0, answer.stderr.decode()
    certificate = x509.load_pem_x509_certificate(answer.stdout.split(b"-----END PRIVATE KEY-----\n")[1])
    assert certificate.subject.rfc4514_string() == f"CN={node_name('de-halm', 0)},O=gigafab:site:de-halm"
    neighbour = enrol(plane.layout, node_name("de-halm", 1), "de-halm", bound)
    assert neighbour.returncode == 1
    assert conditions(requests_for(kubectl, node_name("de-halm", 1))[-1])["Denied"]["reason"] == "OtherNode"

    def published() -> None:
        found = kubectl.get("configmap", f"{NAME}-health-ca", "-n", installed)
        assert found is not None, "the signer keeps the CA's certificate where the agents mount it"
        assert found["data"]["ca.crt"] == health_ca(plane.layout)[0].read_text()

    eventually(published, timeout=30)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "gpuworkloads.gigafab.nl:status", True),
        ("create", "deployments", True),
        ("patch", "clusterkopfpeerings.kopf.dev", True),
        ("get", "secrets", False),
        ("delete", "nodes", False),
        ("create", "clusterrolebindings", False),
    ],
)
def test_the_operator_account_may_do_its_work_and_no_more(
    installed: str, kubectl: Kubectl, verb: str, resource: str, allowed: bool
) -> None:
    account = f"system:serviceaccount:{installed}:{NAME}-operator"
    kind, _, subresource = resource.partition(":")
    assert kubectl.can(verb, kind, "default", account, subresource=subresource) is allowed


def test_gateways_may_not_touch_the_api_and_agents_may_only_ask_for_a_certificate(installed: str, kubectl: Kubectl) -> None:
    gateways = f"system:serviceaccount:{installed}:{NAME}-health"
    assert not kubectl.can("list", "pods", installed, gateways)
    assert not kubectl.can("get", "nodes", installed, gateways)
    agents = f"system:serviceaccount:{installed}:{NAME}-agent"
    assert kubectl.can("create", "certificatesigningrequests.certificates.k8s.io", installed, agents)
    for verb, resource in (("get", "nodes"), ("list", "pods"), ("get", "secrets"), ("get", "configmaps")):
        assert not kubectl.can(verb, resource, installed, agents), f"{verb} {resource}"
    assert not allowed(kubectl, agents, "approve", "certificates.k8s.io", "signers", "gigafab.nl/health-agent")


def test_the_signer_may_sign_for_its_signer_only_and_read_no_secret(installed: str, kubectl: Kubectl) -> None:
    signer = f"system:serviceaccount:{installed}:{NAME}-signer"
    assert allowed(kubectl, signer, "sign", "certificates.k8s.io", "signers", "gigafab.nl/health-agent")
    assert not allowed(kubectl, signer, "sign", "certificates.k8s.io", "signers", "kubernetes.io/kube-apiserver-client")
    assert not allowed(kubectl, signer, "approve", "certificates.k8s.io", "signers", "kubernetes.io/kubelet-serving")
    assert not kubectl.can("get", "secrets", installed, signer)
    assert not allowed(kubectl, signer, "patch", "", "configmaps", "kube-root-ca.crt", namespace=installed)
    assert allowed(kubectl, signer, "patch", "", "configmaps", f"{NAME}-health-ca", namespace=installed)


def test_uninstall_takes_it_all_away(plane: Plane, installed: str, kubectl: Kubectl) -> None:
    helm(plane, "uninstall", RELEASE, "-n", installed, "--wait", "--timeout", "120s")
    eventually(lambda: _gone(kubectl, installed), timeout=60)
    assert kubectl.get("clusterrole", f"{NAME}-operator") is None
    assert kubectl.get("clusterrole", f"{NAME}-signer") is None


def _gone(kubectl: Kubectl, namespace: str) -> None:
    left = kubectl.get("deployments,daemonsets,certificates.cert-manager.io,issuers.cert-manager.io", "-n", namespace)
    assert left is not None
    assert left["items"] == []
