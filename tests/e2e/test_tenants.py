"""Tenant onboarding on the real control plane: objects, access, boundaries, drift."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, condition, destination, eventually, gpu_pod, tenant

MEMBER = "dr-jansen"


def ready(kubectl: Kubectl, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        body = kubectl.get("tenant", name)
        state = condition(body, "Ready")
        assert state["status"] == "True", state
        assert state["observedGeneration"] == body["metadata"]["generation"]
        return dict(body)

    return eventually(check)


@pytest.fixture(scope="module")
def destinations(kubectl: Kubectl) -> tuple[str, str]:
    kubectl.apply(
        destination("t-eu-store", "NL", "192.0.2.0/24", ports=[{"port": 443}]), destination("t-us-store", "US", "203.0.113.0/24")
    )
    return "t-eu-store", "t-us-store"


@pytest.fixture(scope="module")
def hospital(kubectl: Kubectl, destinations: tuple[str, str]) -> str:
    kubectl.apply(
        tenant(
            "hospital",
            dataClass="health",
            namespaces=["hospital-a", "hospital-b"],
            members=[
                {"kind": "User", "name": MEMBER, "role": "member"},
                {"kind": "Group", "name": "hospital-admins", "role": "admin"},
                {"kind": "User", "name": "auditor", "role": "viewer"},
            ],
            quota={"gpus": 5, "cpu": "16", "memory": "64Gi"},
            egress=list(destinations),
        )
    )
    ready(kubectl, "hospital")
    kubectl.apply(tenant("neighbour", members=[{"name": "other-user", "role": "admin"}]))
    ready(kubectl, "neighbour")
    return "hospital"


def test_tenant_yields_namespaces_quota_limits_access_and_boundaries(kubectl: Kubectl, hospital: str) -> None:
    status = kubectl.get("tenant", hospital)["status"]
    assert status["namespaces"] == ["hospital-a", "hospital-b"]
    quotas = {}
    for namespace in ("hospital-a", "hospital-b"):
        labels = kubectl.get("namespace", namespace)["metadata"]["labels"]
        assert labels["gigafab.nl/tenant"] == hospital
        assert labels["gigafab.nl/data-class"] == "health"
        quotas[namespace] = kubectl.get("resourcequota", "gigafab-quota", "-n", namespace)["spec"]["hard"]
        assert kubectl.get("limitrange", "gigafab-limits", "-n", namespace) is not None
        bindings = {b["metadata"]["name"]: b for b in kubectl.get("rolebindings", "-n", namespace)["items"]}
        assert set(bindings) == {"gigafab-admin", "gigafab-member", "gigafab-viewer"}
        assert bindings["gigafab-admin"]["subjects"][0]["kind"] == "Group"
        policies = {p["metadata"]["name"] for p in kubectl.get("networkpolicies", "-n", namespace)["items"]}
        assert policies == {"gigafab-default-deny", "gigafab-tenant-boundary"}
    # 5 GPUs over two namespaces: 3 + 2, never more than the tenant's quota in total
    assert [q["requests.nvidia.com/gpu"] for q in quotas.values()] == ["3", "2"]


def test_boundary_allows_own_namespaces_dns_and_only_eu_destinations(kubectl: Kubectl, hospital: str) -> None:
    policy = kubectl.get("networkpolicy", "gigafab-tenant-boundary", "-n", "hospital-a")["spec"]
    assert policy["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {"gigafab.nl/tenant": hospital}}}]}]
    blocks = [peer["ipBlock"]["cidr"] for rule in policy["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert blocks == ["192.0.2.0/24"]
    assert any(port.get("port") == 53 for rule in policy["egress"] for port in rule.get("ports", []))
    refused = condition(kubectl.get("tenant", hospital), "Egress")
    assert (refused["status"], refused["reason"]) == ("False", "DestinationRefused")


def test_non_eu_destination_is_refused_and_in_no_policy(kubectl: Kubectl, hospital: str) -> None:
    accepted = condition(kubectl.get("egressdestination", "t-us-store"), "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "OutsideEU")
    every = kubectl.run("get", "networkpolicies", "-A", "-o", "yaml").stdout
    assert "203.0.113.0/24" not in every
    assert condition(kubectl.get("egressdestination", "t-eu-store"), "Accepted")["status"] == "True"


def test_member_runs_pods_in_own_namespace_only(kubectl: Kubectl, hospital: str) -> None:
    kubectl.create(gpu_pod("member-pod", "hospital-a", gpus=0), as_user=MEMBER)
    refused = kubectl.create(gpu_pod("intruder", "neighbour", gpus=0), as_user=MEMBER, check=False)
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr
    assert not kubectl.can("list", "pods", "neighbour", MEMBER)
    kubectl.run("delete", "pod", "member-pod", "-n", "hospital-a", "--wait=false")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda pod: pod["containers"][0].update(securityContext={"privileged": True}), "privileged"),
        (lambda pod: pod.update(hostNetwork=True), "hostNetwork=true"),
        (lambda pod: pod.update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "hostPath volumes"),
    ],
    ids=["privileged", "host-network", "host-path"],
)
def test_a_member_cannot_escape_the_pod_security_baseline(kubectl: Kubectl, hospital: str, change: Any, named: str) -> None:
    """Tenant namespaces enforce the baseline Pod Security Standard (operator/tenancy.py): a member's pod that
    would reach the node (privileged, its network, its files) is refused, saying which rule it breaks."""
    assert kubectl.get("namespace", "hospital-a")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    pod = gpu_pod("escape", "hospital-a", gpus=0)
    change(pod["spec"])
    refused = kubectl.create(pod, as_user=MEMBER, check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "baseline:latest"' in refused.stderr
    assert named in refused.stderr
    assert kubectl.get("pods", "-n", "hospital-a", "--field-selector", "metadata.name=escape")["items"] == []


def gpu_deployment(name: str, namespace: str) -> dict[str, Any]:
    pod = gpu_pod(name, namespace)
    template = {"metadata": {"labels": {"app": name}}, "spec": pod["spec"]}
    spec = {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.mark.parametrize("make", [gpu_pod, gpu_deployment], ids=["pod", "deployment"])
def test_a_tenant_gets_gpus_only_through_a_gpu_workload(kubectl: Kubectl, hospital: str, make: Any) -> None:
    """A Pod or Deployment asking for nvidia.com/gpu bypasses placement (data rules, fencing) and Kueue:
    the admission policy refuses it, saying what to do instead (config/admission)."""
    refused = kubectl.create(make("shortcut", "hospital-a"), as_user=MEMBER, check=False)
    assert refused.returncode != 0
    assert "GPUs are given only through a GpuWorkload" in refused.stderr
    assert "create a GpuWorkload instead" in refused.stderr
    assert kubectl.get("pods", "-n", "hospital-a", "-l", "app=shortcut")["items"] == []


@pytest.mark.parametrize(("user", "groups"), [(MEMBER, ()), ("someone", ("hospital-admins",)), ("auditor", ())])
@pytest.mark.parametrize(
    ("verb", "resource"),
    [
        ("update", "resourcequotas"),
        ("delete", "resourcequotas"),
        ("patch", "limitranges"),
        ("delete", "networkpolicies"),
        ("create", "networkpolicies"),
        ("patch", "namespaces"),
        ("create", "rolebindings"),
    ],
)
def test_no_tenant_role_may_change_platform_objects(
    kubectl: Kubectl, hospital: str, user: str, groups: tuple[str, ...], verb: str, resource: str
) -> None:
    assert not kubectl.can(verb, resource, "hospital-a", user, groups)


def test_roles_grant_what_they_say(kubectl: Kubectl, hospital: str) -> None:
    assert kubectl.can("create", "pods", "hospital-b", "someone", ("hospital-admins",))
    assert kubectl.can("create", "jobs.batch", "hospital-b", MEMBER)
    assert kubectl.can("list", "pods", "hospital-b", "auditor")
    assert not kubectl.can("create", "pods", "hospital-b", "auditor")
    assert not kubectl.can("get", "secrets", "hospital-b", MEMBER)


def test_member_cannot_edit_policy_or_quota_for_real(kubectl: Kubectl, hospital: str) -> None:
    patch = '{"spec":{"hard":{"requests.nvidia.com/gpu":"100"}}}'
    answer = kubectl.run(
        "patch",
        "resourcequota",
        "gigafab-quota",
        "-n",
        "hospital-a",
        "--type=merge",
        "-p",
        patch,
        as_user="someone",
        groups=("hospital-admins",),
        check=False,
    )
    assert answer.returncode != 0
    assert "forbidden" in answer.stderr
    answer = kubectl.run("delete", "networkpolicy", "gigafab-default-deny", "-n", "hospital-a", as_user=MEMBER, check=False)
    assert answer.returncode != 0
    assert "forbidden" in answer.stderr


def test_deleted_quota_is_put_back(kubectl: Kubectl, hospital: str) -> None:
    kubectl.run("delete", "resourcequota", "gigafab-quota", "-n", "hospital-b")
    eventually(lambda: _assert_gpus(kubectl, "hospital-b", "2"))


def test_hand_edited_policy_and_quota_are_put_back(kubectl: Kubectl, hospital: str) -> None:
    kubectl.run(
        "patch",
        "resourcequota",
        "gigafab-quota",
        "-n",
        "hospital-a",
        "--type=merge",
        "-p",
        '{"spec":{"hard":{"requests.nvidia.com/gpu":"50"}}}',
    )
    kubectl.run(
        "patch",
        "networkpolicy",
        "gigafab-tenant-boundary",
        "-n",
        "hospital-a",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/spec/egress/-","value":{"to":[{"ipBlock":{"cidr":"0.0.0.0/0"}}]}}]',
    )
    eventually(lambda: _assert_gpus(kubectl, "hospital-a", "3"))

    def restored() -> None:
        every = kubectl.run("get", "networkpolicy", "gigafab-tenant-boundary", "-n", "hospital-a", "-o", "yaml").stdout
        assert "0.0.0.0/0" not in every

    eventually(restored)
    events = kubectl.run("get", "events", "-A", "--field-selector", "reason=DriftRepaired,involvedObject.name=hospital").stdout
    assert "DriftRepaired" in events


def _assert_gpus(kubectl: Kubectl, namespace: str, gpus: str) -> None:
    quota = kubectl.get("resourcequota", "gigafab-quota", "-n", namespace)
    assert quota is not None
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == gpus


def test_describe_shows_the_decisions_as_events(kubectl: Kubectl, hospital: str) -> None:
    def described() -> None:
        text = kubectl.run("describe", "tenant", hospital).stdout
        assert "Reconciled" in text
        assert "EgressRefused" in text

    eventually(described)
