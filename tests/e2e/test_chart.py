"""``helm install`` of charts/gigafab into the real local plane: what it creates, on which
nodes its pods land, what its identities may do, and that ``helm uninstall`` takes it away.

The plane's KWOK nodes run no containers, so the pods become Running without executing the
image (it cannot be built here); placement, admission, RBAC and the objects are all real.
cert-manager's CRDs (from its Go module) are installed so the chart takes its cert-manager
branch and its Certificates are accepted by the apiserver's schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gigafab.local import chart
from gigafab.local.layout import SITES
from gigafab.local.nodes import node_name
from gigafab.local.plane import Plane
from gigafab.local.toolchain import cert_manager_module

from .conftest import Kubectl, eventually

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
    nodes = {site: [node_name(site, index) for index in range(2)] for site in SITES}
    values = {
        "sites": [{"name": site} for site in SITES],
        "healthEtcd": "etcd.gigafab-system.svc:2379",
        "operator": {"tolerations": KWOK},
        "gateway": {"tolerations": KWOK},
        # null removes the chart default (nvidia.com/gpu.present), which KWOK nodes do not carry
        "agent": {"tolerations": KWOK, "nodeSelector": {"nvidia.com/gpu.present": None, "type": "kwok"}, "runtimeClassName": ""},
        "certificates": {"nodes": nodes},
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
    assert set(deployments) == {f"{NAME}-operator"} | {f"{NAME}-gateway-{site}" for site in SITES}
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


def test_cert_manager_gets_a_certificate_per_gateway_and_per_node(installed: str, kubectl: Kubectl) -> None:
    certificates = {
        c["metadata"]["name"]: c["spec"] for c in kubectl.get("certificates.cert-manager.io", "-n", installed)["items"]
    }
    assert len(certificates) == len(SITES) * 3
    node = node_name("de-halm", 1)
    assert certificates[f"{NAME}-agent-{node}"]["commonName"] == node
    assert certificates[f"{NAME}-gateway-de-halm"]["dnsNames"] == [f"{NAME}-gateway-de-halm.{installed}.svc"]


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


def test_gateways_and_agents_may_not_touch_the_api(installed: str, kubectl: Kubectl) -> None:
    account = f"system:serviceaccount:{installed}:{NAME}-health"
    assert not kubectl.can("list", "pods", installed, account)
    assert not kubectl.can("get", "nodes", installed, account)


def test_uninstall_takes_it_all_away(plane: Plane, installed: str, kubectl: Kubectl) -> None:
    helm(plane, "uninstall", RELEASE, "-n", installed, "--wait", "--timeout", "120s")
    eventually(lambda: _gone(kubectl, installed), timeout=60)
    assert kubectl.get("clusterrole", f"{NAME}-operator") is None


def _gone(kubectl: Kubectl, namespace: str) -> None:
    left = kubectl.get("deployments,daemonsets,certificates.cert-manager.io", "-n", namespace)
    assert left is not None
    assert left["items"] == []
