"""The tenancy decision: which objects a Tenant gets, and what stops it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from gigafab.operator.tenancy import Destination, desired_objects, quota_hard, share
from gigafab.operator.tenant_checks import find_problems

from gigafab.api.v1alpha1.tenant import TenantSpec


def spec(**fields: Any) -> TenantSpec:
    body: dict[str, Any] = {"track": "regional", "quota": {"gpus": 5, "cpu": "10", "memory": "3Gi"}}
    body.update(fields)
    return TenantSpec.model_validate(body)


EU = Destination("store", True, ("192.0.2.0/24",), ((443, "TCP"),))
US = Destination("bucket", False, ("203.0.113.0/24",))


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [(5, 2, [3, 2]), (4, 2, [2, 2]), (1, 3, [1, 0, 0]), (0, 2, [0, 0]), (7, 1, [7])],
)
def test_share_splits_without_exceeding_the_total(total: int, parts: int, expected: list[int]) -> None:
    split = [share(Decimal(total), parts, index) for index in range(parts)]
    assert split == expected
    assert sum(split) == total


def test_quota_is_split_over_namespaces_in_canonical_units() -> None:
    tenant = spec(namespaces=["a", "b"])
    assert quota_hard(tenant, 0, 2) == {"requests.nvidia.com/gpu": "3", "requests.cpu": "5", "requests.memory": "1536Mi"}
    assert quota_hard(tenant, 1, 2)["requests.nvidia.com/gpu"] == "2"


def test_default_namespace_is_the_tenant_name() -> None:
    plan = desired_objects("umcg", spec(), {})
    assert plan.namespaces == ["umcg"]
    kinds = sorted(m["kind"] for m in plan.objects)
    assert kinds == ["LimitRange", "LocalQueue", "Namespace", "NetworkPolicy", "NetworkPolicy", "ResourceQuota"]


def test_every_object_is_labelled_for_its_tenant() -> None:
    plan = desired_objects("umcg", spec(members=[{"name": "a"}]), {})
    assert all(m["metadata"]["labels"]["gigafab.nl/tenant"] == "umcg" for m in plan.objects)
    assert all(m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gigafab" for m in plan.objects)


def test_namespaces_enforce_the_baseline_pod_security_standard() -> None:
    plan = desired_objects("umcg", spec(namespaces=["umcg-a", "umcg-b"]), {})
    namespaces = [m for m in plan.objects if m["kind"] == "Namespace"]
    assert [m["metadata"]["name"] for m in namespaces] == ["umcg-a", "umcg-b"]
    for namespace in namespaces:
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    others = [m for m in plan.objects if m["kind"] != "Namespace"]
    assert not any(key.startswith("pod-security") for m in others for key in m["metadata"]["labels"])


def test_members_are_bound_by_role() -> None:
    members = [{"name": "a", "role": "admin"}, {"kind": "Group", "name": "g", "role": "viewer"}, {"name": "b", "role": "viewer"}]
    plan = desired_objects("t", spec(members=members), {})
    bindings = {m["metadata"]["name"]: m for m in plan.objects if m["kind"] == "RoleBinding"}
    assert set(bindings) == {"gigafab-admin", "gigafab-viewer"}
    assert bindings["gigafab-viewer"]["roleRef"]["name"] == "gigafab-tenant-viewer"
    assert [s["name"] for s in bindings["gigafab-viewer"]["subjects"]] == ["g", "b"]


def test_only_accepted_destinations_reach_the_boundary() -> None:
    plan = desired_objects("t", spec(egress=["store", "bucket"]), {"store": EU, "bucket": US})
    boundary = next(m for m in plan.objects if m["metadata"]["name"] == "gigafab-tenant-boundary")
    cidrs = [peer["ipBlock"]["cidr"] for rule in boundary["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert cidrs == ["192.0.2.0/24"]
    assert plan.refused_egress == ["bucket"]


def test_default_deny_selects_every_pod_both_ways() -> None:
    plan = desired_objects("t", spec(), {})
    deny = next(m for m in plan.objects if m["metadata"]["name"] == "gigafab-default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize(
    ("owners", "egress", "used", "reasons"),
    [
        ({}, [], {}, []),
        ({"t": "t"}, [], {}, []),
        ({"t": ""}, [], {}, ["NamespaceConflict"]),
        ({"t": "other"}, [], {}, ["NamespaceConflict"]),
        ({}, ["missing"], {}, ["UnknownEgressDestination"]),
        ({}, ["bucket"], {}, []),
        ({}, [], {"t": {"requests.nvidia.com/gpu": "6"}}, ["QuotaBelowUse"]),
        ({}, [], {"t": {"requests.nvidia.com/gpu": "5", "requests.memory": "4Gi"}}, ["QuotaBelowUse"]),
        ({"t": "x"}, ["missing"], {}, ["NamespaceConflict", "UnknownEgressDestination"]),
    ],
)
def test_problems(owners: dict[str, str], egress: list[str], used: dict[str, dict[str, str]], reasons: list[str]) -> None:
    found = find_problems("t", spec(egress=egress), namespace_owners=owners, destinations={"bucket": US}, quota_used=used)
    assert [p.reason for p in found] == reasons
    assert all(p.message for p in found)
