"""What a tenant with an open problem still has taken away, and what blocks deleting its namespaces."""

from __future__ import annotations

from typing import Any

import pytest
from gigafab.operator.revocation import narrowed_binding, narrowed_boundary, narrowed_sites, revocations
from gigafab.operator.tenant_checks import removal_blockers

BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "gigafab-member", "namespace": "ns"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gigafab-tenant-member"},
}


def subjects(*names: str) -> list[dict[str, str]]:
    return [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"} for name in names]


def test_a_binding_keeps_only_the_members_still_named_and_gains_none() -> None:
    observed = {**BINDING, "subjects": subjects("ann", "bob")}
    desired = {**BINDING, "subjects": subjects("ann", "carol")}
    assert narrowed_binding(observed, desired) == {**BINDING, "subjects": subjects("ann")}
    assert narrowed_binding(observed, {**BINDING, "subjects": subjects("carol")}) is None
    assert narrowed_binding(observed, None) is None


def boundary(*egress: dict[str, Any]) -> dict[str, Any]:
    spec_ = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": [OWN]}], "egress": list(egress)}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "gigafab-tenant-boundary"},
        "spec": spec_,
    }


OWN = {"namespaceSelector": {"matchLabels": {"gigafab.nl/tenant": "t"}}}
STORE = {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}
REGISTRY = {"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}
NEW = {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}


def test_the_boundary_loses_deleted_destinations_and_gains_none() -> None:
    observed = boundary({"to": [OWN]}, STORE, REGISTRY)
    desired = boundary({"to": [OWN]}, REGISTRY, NEW)  # the store was deleted, NEW was just named
    assert narrowed_boundary(observed, desired)["spec"]["egress"] == [{"to": [OWN]}, REGISTRY]


def test_revocations_of_a_namespace() -> None:
    observed = [
        {**BINDING, "subjects": subjects("ann", "bob")},
        {**BINDING, "metadata": {"name": "gigafab-viewer"}, "subjects": subjects("vi")},
    ]
    desired = [{**BINDING, "subjects": subjects("ann")}, boundary({"to": [OWN]})]
    apply, delete = revocations(observed, boundary({"to": [OWN]}, STORE), desired)
    assert delete == ["gigafab-viewer"]
    assert [m["kind"] for m in apply] == ["RoleBinding", "NetworkPolicy"]
    assert apply[0]["subjects"] == subjects("ann")
    assert apply[1]["spec"]["egress"] == [{"to": [OWN]}]
    assert revocations([{**BINDING, "subjects": subjects("ann")}], boundary({"to": [OWN]}), desired) == ([], [])


@pytest.mark.parametrize(
    ("carried", "lawful", "kept"),
    [
        ("de-halm,niemeyer", ["niemeyer"], "niemeyer"),
        ("niemeyer", ["de-halm", "niemeyer"], "niemeyer"),
        (None, ["a"], ""),
        ("a", [], ""),
    ],
)
def test_a_problem_narrows_the_lawful_sites_and_never_widens_them(carried: str | None, lawful: list[str], kept: str) -> None:
    assert narrowed_sites(carried, lawful) == kept


def named(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_what_blocks_deleting_a_namespace() -> None:
    pods = [named("a", phase="Running"), named("b", phase="Pending"), named("c", phase="Succeeded")]
    claims = [named("scans"), named("cohort")]
    workloads = [
        named("train", phase="Running"),
        named("queued"),
        named("moving", phase="FailingOver"),
        named("dead", phase="Failed"),
    ]
    assert removal_blockers(pods, claims, workloads) == [
        "2 pod(s) running or pending",
        "PersistentVolumeClaim(s) cohort, scans",
        "GpuWorkload(s) moving (FailingOver), queued (Pending), train (Running)",
    ]
    assert removal_blockers([named("c", phase="Succeeded")], [], [named("dead", phase="Failed")]) == []


def test_a_long_list_of_blockers_is_cut_short() -> None:
    claims = [named(f"claim-{index:02d}") for index in range(8)]
    assert removal_blockers([], claims, []) == [
        "PersistentVolumeClaim(s) claim-00, claim-01, claim-02, claim-03, claim-04 and 3 more"
    ]
