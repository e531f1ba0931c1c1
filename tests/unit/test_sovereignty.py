"""Where a tenant's pods may run, and what its NetworkPolicies never reach."""

from __future__ import annotations

from typing import Any

import pytest
from gigafab.operator.sovereignty import lawful_sites, no_lawful_site, site_view
from gigafab.operator.tenancy import Destination, desired_objects

from gigafab.api.labels import LAWFUL_SITES_ANNOTATION
from gigafab.api.v1alpha1.tenant import TenantSpec


def spec(**fields: Any) -> TenantSpec:
    body: dict[str, Any] = {"track": "regional", "quota": {"gpus": 4}}
    body.update(fields)
    return TenantSpec.model_validate(body)


def site(
    name: str, jurisdiction: str = "NL", classes: tuple[str, ...] = ("public", "internal"), lifecycle: str = "Active"
) -> Any:
    body = {"jurisdiction": jurisdiction, "dataClasses": list(classes), "powerBudgetKW": 100, "lifecycle": lifecycle}
    return site_view({"metadata": {"name": name}, "spec": body})


FACILITY = [
    site("niemeyer", classes=("public", "internal", "personal", "health")),
    site("de-halm", classes=("public", "internal", "personal")),
    site("eemshaven", lifecycle="Planned"),
    site("ohio", jurisdiction="US", classes=("public", "internal", "personal", "health")),
    site("oslo", jurisdiction="NO", classes=("public", "internal", "personal", "health")),
]


@pytest.mark.parametrize(
    ("fields", "lawful", "reasons"),
    [
        # the audit's case: health data may be only on niemeyer, never on an uncertified or a non-EU site
        (
            {"dataClass": "health"},
            ("niemeyer",),
            {"de-halm": "NotCertified", "eemshaven": "NotCertified", "ohio": "OutsideEU", "oslo": "OutsideEU"},
        ),
        ({"dataClass": "internal"}, ("de-halm", "niemeyer"), {"eemshaven": "NotActive", "ohio": "OutsideEU"}),
        ({"dataClass": "internal", "allowedSites": ["de-halm", "ohio"]}, ("de-halm",), {"niemeyer": "NotAllowedForTenant"}),
        ({"dataClass": "internal", "allowedSites": ["eemshaven"]}, (), {"eemshaven": "NotActive"}),
    ],
)
def test_lawful_sites_follow_placements_sovereignty_rules(
    fields: dict[str, Any], lawful: tuple[str, ...], reasons: dict[str, str]
) -> None:
    found = lawful_sites("t", spec(**fields), FACILITY)
    assert found.sites == lawful
    assert found.annotation == ",".join(lawful)
    refused = {verdict.site: verdict.rule.value for verdict in found.refused}
    assert {name: refused[name] for name in reasons} == reasons
    assert set(refused) | set(lawful) == {s.name for s in FACILITY}


def test_health_and_room_do_not_make_a_site_unlawful() -> None:
    """A site that is lost or full still may hold the data: only the pin's reason to exist counts."""
    lost = site("niemeyer", classes=("health",))
    assert lawful_sites("t", spec(dataClass="health"), [lost]).sites == ("niemeyer",)


def test_no_lawful_site_says_why_and_what_to_do() -> None:
    tenant = spec(dataClass="health", allowedSites=["de-halm"])
    found = lawful_sites("umcg", tenant, FACILITY)
    message = no_lawful_site("umcg", tenant, found)
    assert found.sites == ()
    assert "no site may hold health data of tenant umcg" in message
    assert "de-halm: not certified for health data" in message
    assert "allowedSites" in message
    assert no_lawful_site("umcg", spec(dataClass="health"), lawful_sites("umcg", spec(dataClass="health"), FACILITY)) == ""


def test_every_namespace_carries_the_lawful_sites_sorted() -> None:
    plan = desired_objects("umcg", spec(namespaces=["a", "b"]), {}, lawful_sites=["niemeyer", "de-halm"])
    namespaces = [m for m in plan.objects if m["kind"] == "Namespace"]
    assert [m["metadata"]["annotations"][LAWFUL_SITES_ANNOTATION] for m in namespaces] == ["de-halm,niemeyer"] * 2
    nowhere = desired_objects("umcg", spec(), {})
    assert next(m for m in nowhere.objects if m["kind"] == "Namespace")["metadata"]["annotations"] == {
        LAWFUL_SITES_ANNOTATION: ""
    }


def egress_blocks(plan: Any) -> list[Any]:
    boundary = next(m for m in plan.objects if m["metadata"]["name"] == "gigafab-tenant-boundary")
    return [rule["to"] for rule in boundary["spec"]["egress"] if any("ipBlock" in peer for peer in rule["to"])]


def test_the_clusters_own_networks_are_excepted_from_every_destination() -> None:
    wide = Destination("campus", True, ("10.0.0.0/16", "192.0.2.0/24", "2001:db8::/32"))
    plan = desired_objects(
        "t", spec(egress=["campus"]), {"campus": wide}, cluster_networks=["10.0.0.0/24", "10.96.0.0/12", "2001:db8::/64"]
    )
    assert egress_blocks(plan) == [
        [
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/24"]}},
            {"ipBlock": {"cidr": "192.0.2.0/24"}},
            {"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8::/64"]}},
        ]
    ]


def test_a_destination_inside_the_cluster_gets_no_rule_at_all() -> None:
    """An egress rule without peers would allow every address: a destination wholly inside the cluster's
    networks (or equal to one) leaves no rule behind, not an empty one."""
    inside = Destination("pods", True, ("10.0.0.0/24",), ((443, "TCP"),))
    plan = desired_objects("t", spec(egress=["pods"]), {"pods": inside}, cluster_networks=["10.0.0.0/16"])
    boundary = next(m for m in plan.objects if m["metadata"]["name"] == "gigafab-tenant-boundary")
    assert all(rule["to"] for rule in boundary["spec"]["egress"])
    assert egress_blocks(plan) == []
