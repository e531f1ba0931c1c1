"""The operator writes only in tenant namespaces, and binds only the tenant roles.

Its ClusterRole reaches every namespace (RBAC cannot say "only where labelled
gigafab.nl/tenant"); the admission policy ``gigafab-operator-in-tenant-namespaces``
(config/admission/) confines it. Each test acts as the operator's own user, as a
compromised operator would, against the real apiserver: RBAC lets the request
through, the policy refuses it and says why, and nothing changes. The same writes in
a tenant namespace pass (server-side dry runs, so the operator's objects stay as they
are), and every Tenant of the e2e suite being Ready shows the operator works under
the policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, eventually, tenant
from tests.e2e.test_workloads import tenant_ready

OPERATOR = "gigafab-operator"
BYSTANDER = "bystander"
"""A namespace someone else made, without the tenant label."""
CONFINED = "the gigafab operator writes only in tenant namespaces"


@pytest.fixture(scope="module")
def tenant_namespace(kubectl: Kubectl) -> Iterator[str]:
    kubectl.apply(tenant("confined", members=[{"name": "someone", "role": "admin"}]))
    eventually(lambda: tenant_ready(kubectl, "confined"))
    kubectl.run("create", "namespace", BYSTANDER)
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        }
    )
    yield "confined"
    kubectl.run("delete", "tenant", "confined", "--wait=false", check=False)
    kubectl.run("delete", "namespace", BYSTANDER, "--wait=false", check=False)
    kubectl.run("delete", "clusterrole", "pod-reader", check=False)


def binding(namespace: str, role: str, name: str = "mallory") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"gigafab-{name}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
    }


def deployment(namespace: str) -> dict[str, Any]:
    pod = {"containers": [{"name": "miner", "image": "registry.example/miner:1"}]}
    template = {"metadata": {"labels": {"app": "miner"}}, "spec": pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "miner", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "miner"}}, "template": template},
    }


def refused(answer: Any, *words: str) -> None:
    assert answer.returncode != 0, answer.stdout
    assert "ValidatingAdmissionPolicy 'gigafab-operator-in-tenant-namespaces'" in answer.stderr, answer.stderr
    for word in words:
        assert word in answer.stderr


@pytest.mark.parametrize("namespace", ["kube-system", "default", BYSTANDER])
def test_the_operator_cannot_bind_a_tenant_role_outside_tenant_namespaces(
    kubectl: Kubectl, tenant_namespace: str, namespace: str
) -> None:
    """Binding gigafab-tenant-admin to itself in kube-system would give a compromised operator its Secrets."""
    assert kubectl.can("create", "rolebindings", namespace, OPERATOR)  # RBAC alone would let it
    answer = kubectl.create(binding(namespace, "gigafab-tenant-admin"), as_user=OPERATOR, check=False)
    refused(answer, CONFINED, f"CREATE of rolebindings gigafab-mallory in namespace {namespace}")
    assert kubectl.get("rolebinding", "gigafab-mallory", "-n", namespace) is None


def test_the_operator_cannot_run_a_deployment_in_a_system_namespace(kubectl: Kubectl, tenant_namespace: str) -> None:
    answer = kubectl.create(deployment("kube-system"), as_user=OPERATOR, check=False)
    refused(answer, CONFINED, "deployments miner in namespace kube-system")
    assert kubectl.get("deployment", "miner", "-n", "kube-system") is None


def test_the_operator_cannot_delete_or_take_over_a_namespace_that_is_no_tenants(kubectl: Kubectl, tenant_namespace: str) -> None:
    deleting = kubectl.run("delete", "namespace", BYSTANDER, "--wait=false", as_user=OPERATOR, check=False)
    refused(deleting, CONFINED, f"DELETE of namespaces {BYSTANDER}")
    labelling = kubectl.run("label", "namespace", BYSTANDER, "gigafab.nl/tenant=confined", as_user=OPERATOR, check=False)
    refused(labelling, CONFINED, f"UPDATE of namespaces {BYSTANDER}")
    namespace = kubectl.get("namespace", BYSTANDER)
    assert namespace["status"]["phase"] == "Active"
    assert "gigafab.nl/tenant" not in (namespace["metadata"].get("labels") or {})


def test_the_operator_binds_only_the_tenant_roles(kubectl: Kubectl, tenant_namespace: str) -> None:
    """pod-reader holds nothing the operator lacks, so RBAC's escalation check lets it be bound; the policy does not."""
    answer = kubectl.create(binding(tenant_namespace, "pod-reader"), as_user=OPERATOR, check=False)
    refused(answer, "binds only the tenant roles", "refers to ClusterRole pod-reader")
    assert kubectl.get("rolebinding", "gigafab-mallory", "-n", tenant_namespace) is None


def test_in_a_tenant_namespace_the_same_writes_pass(kubectl: Kubectl, tenant_namespace: str) -> None:
    """The check can fail: the policy refuses by namespace, not every write of the operator."""
    for manifest in (binding(tenant_namespace, "gigafab-tenant-viewer"), deployment(tenant_namespace)):
        answer = kubectl.create(manifest, as_user=OPERATOR, check=False, dry_run=True)
        assert answer.returncode == 0, answer.stderr


def test_other_users_are_not_confined(kubectl: Kubectl, tenant_namespace: str) -> None:
    """The policy matches the operator's user only: an administrator still writes where it must."""
    answer = kubectl.create(binding(BYSTANDER, "pod-reader"), check=False, dry_run=True)
    assert answer.returncode == 0, answer.stderr
