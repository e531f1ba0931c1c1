"""Pydantic validation of the gigafab.nl/v1alpha1 models (mirrors the CRD's rules)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gigafab.api.v1alpha1 import (
    EU_MEMBER_STATES,
    ISO_3166_ALPHA2,
    Condition,
    ConditionStatus,
    DataClass,
    EgressDestination,
    EgressDestinationSpec,
    Lifecycle,
    MemberKind,
    MemberRole,
    Protocol,
    Site,
    SiteSpec,
    SiteStatus,
    TenantSpec,
    TenantStatus,
    Track,
)

SITE_SPEC: dict[str, Any] = {"jurisdiction": "NL", "powerBudgetKW": 1200}
TENANT_SPEC: dict[str, Any] = {
    "track": "euro-hpc",
    "members": [
        {"name": "alice"},
        {"kind": "Group", "name": "uva-ml", "role": "admin"},
    ],
    "namespaces": ["uva-ml", "uva-ml-dev"],
    "quota": {"gpus": 64, "cpu": "500m", "memory": "512Gi"},
    "dataClass": "personal",
    "allowedSites": ["ams1", "gro1"],
    "egress": ["surf-object-store"],
}
EGRESS_SPEC: dict[str, Any] = {
    "cidrs": ["192.0.2.0/24", "2001:db8::/32"],
    "jurisdiction": "NL",
    "ports": [{"port": 443}, {"port": 53, "protocol": "UDP"}],
    "description": "SURF object store",
}
CONDITION: dict[str, Any] = {
    "type": "Ready",
    "status": "True",
    "reason": "NodesReady",
    "message": "",
    "lastTransitionTime": "2025-01-02T03:04:05Z",
}


def with_changes(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with top-level keys replaced (None removes the key)."""
    result = copy.deepcopy(body)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def test_iso_codes_are_249_sorted_unique_upper_case_pairs() -> None:
    assert len(ISO_3166_ALPHA2) == 249
    assert list(ISO_3166_ALPHA2) == sorted(set(ISO_3166_ALPHA2))
    assert all(len(code) == 2 and code.isascii() and code.isupper() for code in ISO_3166_ALPHA2)


def test_iso_codes_match_tzdata_when_present() -> None:
    table = Path("/usr/share/zoneinfo/iso3166.tab")
    if not table.is_file():
        pytest.skip("tzdata's iso3166.tab is not installed")
    lines = table.read_text(encoding="utf-8").splitlines()
    codes = {line.split("\t")[0] for line in lines if line and not line.startswith("#")}
    assert set(ISO_3166_ALPHA2) == codes


def test_eu_member_states_are_the_27_with_greece_as_gr() -> None:
    assert len(EU_MEMBER_STATES) == 27
    assert set(ISO_3166_ALPHA2) >= EU_MEMBER_STATES
    assert {"GR", "NL", "DE", "HR", "CY"} <= EU_MEMBER_STATES
    assert not {"EL", "GB", "CH", "NO", "IS"} & EU_MEMBER_STATES


def test_site_spec_applies_crd_defaults() -> None:
    spec = SiteSpec.from_body(SITE_SPEC)
    assert spec.zone is None
    assert spec.data_classes == [DataClass.PUBLIC, DataClass.INTERNAL]
    assert spec.lifecycle is Lifecycle.ACTIVE
    assert spec.gpu_power_watts == 700
    assert spec.power_cap_kw is None
    assert spec.effective_power_kw == 1200


def test_site_spec_effective_power_is_lowered_by_cap() -> None:
    spec = SiteSpec.from_body(with_changes(SITE_SPEC, powerCapKW=300))
    assert spec.effective_power_kw == 300


def test_models_accept_python_names_and_render_api_names() -> None:
    spec = SiteSpec.model_validate({"jurisdiction": "DE", "power_budget_kw": 5, "gpu_power_watts": 1000})
    assert spec.to_body() == {
        "jurisdiction": "DE",
        "dataClasses": ["public", "internal"],
        "powerBudgetKW": 5,
        "lifecycle": "Active",
        "gpuPowerWatts": 1000,
    }


def test_unknown_fields_are_ignored() -> None:
    spec = SiteSpec.from_body(with_changes(SITE_SPEC, somethingNew=True))
    assert "somethingNew" not in spec.to_body()


def test_default_lists_are_not_shared_between_instances() -> None:
    first, second = SiteSpec.from_body(SITE_SPEC), SiteSpec.from_body(SITE_SPEC)
    first.data_classes.append(DataClass.HEALTH)
    assert second.data_classes == [DataClass.PUBLIC, DataClass.INTERNAL]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"jurisdiction": "nl"}, "ISO 3166-1 alpha-2"),
        ({"jurisdiction": "EL"}, "ISO 3166-1 alpha-2"),
        ({"jurisdiction": "XX"}, "ISO 3166-1 alpha-2"),
        ({"jurisdiction": None}, "jurisdiction"),
        ({"powerBudgetKW": 0}, "powerBudgetKW"),
        ({"powerBudgetKW": None}, "powerBudgetKW"),
        ({"powerCapKW": -1}, "powerCapKW"),
        ({"powerCapKW": 1201}, "powerCapKW must not exceed powerBudgetKW"),
        ({"zone": "Zone_A"}, "zone"),
        ({"zone": "a" * 64}, "zone"),
        ({"dataClasses": ["public", "public"]}, "duplicate"),
        ({"dataClasses": ["secret"]}, "dataClasses"),
        ({"lifecycle": "Retired"}, "lifecycle"),
        ({"gpuPowerWatts": 0}, "gpuPowerWatts"),
        ({"gpuPowerWatts": 5001}, "gpuPowerWatts"),
    ],
)
def test_site_spec_rejects(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        SiteSpec.from_body(with_changes(SITE_SPEC, **changes))


def test_site_status_parses_conditions() -> None:
    status = SiteStatus.from_body({"zone": "ams1", "gpus": 8, "powerDrawKW": 5.6, "conditions": [CONDITION]})
    assert status.conditions[0].status is ConditionStatus.TRUE
    assert status.power_draw_kw == pytest.approx(5.6)
    assert SiteStatus.from_body(None).conditions == []


def test_site_object_parses_spec_and_missing_status() -> None:
    site = Site.model_validate({"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "spec": SITE_SPEC})
    assert site.spec.jurisdiction == "NL"
    assert site.status.nodes is None
    assert Site.crd.plural == "sites"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"status": "Maybe"}, "status"),
        ({"reason": ""}, "reason"),
        ({"reason": "not valid"}, "reason"),
        ({"type": "Ready!"}, "type"),
        ({"lastTransitionTime": "yesterday"}, "lastTransitionTime"),
        ({"lastTransitionTime": "2025-01-02"}, "RFC 3339"),
        ({"lastTransitionTime": "2025-01-02T03:04:05"}, "RFC 3339"),
        ({"lastTransitionTime": None}, "lastTransitionTime"),
    ],
)
def test_condition_rejects(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Condition.from_body(with_changes(CONDITION, **changes))


@pytest.mark.parametrize("status_model", [SiteStatus, TenantStatus])
def test_status_rejects_two_conditions_of_one_type(
    status_model: type[BaseModel],
) -> None:
    with pytest.raises(ValidationError, match="duplicate entries: Ready"):
        status_model.model_validate({"conditions": [CONDITION, CONDITION]})


def test_tenant_spec_parses_sample() -> None:
    spec = TenantSpec.from_body(TENANT_SPEC)
    assert spec.track is Track.EURO_HPC
    assert spec.members[0].kind is MemberKind.USER
    assert spec.members[0].role is MemberRole.MEMBER
    assert spec.members[1].role is MemberRole.ADMIN
    assert (spec.quota.gpus, spec.quota.cpu, spec.quota.memory) == (64, "500m", "512Gi")
    assert spec.data_class is DataClass.PERSONAL


def test_tenant_spec_applies_crd_defaults() -> None:
    spec = TenantSpec.from_body({"track": "national", "quota": {"gpus": 0}})
    assert (spec.members, spec.namespaces, spec.allowed_sites, spec.egress) == (
        [],
        [],
        [],
        [],
    )
    assert spec.data_class is DataClass.INTERNAL
    assert spec.quota.cpu is None


@pytest.mark.parametrize("quantity", [64, 0, "64", "500m", "1.5", "512Gi", "1e3", "2E", "+1k", ".5"])
def test_tenant_quota_accepts_quantities(quantity: int | str) -> None:
    spec = TenantSpec.from_body(with_changes(TENANT_SPEC, quota={"gpus": 1, "cpu": quantity}))
    assert spec.quota.cpu == quantity


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"track": "global"}, "track"),
        ({"quota": None}, "quota"),
        ({"quota": {"cpu": 4}}, "gpus"),
        ({"quota": {"gpus": -1}}, "gpus"),
        ({"quota": {"gpus": 1, "cpu": "4 cores"}}, "cpu must be a Kubernetes quantity"),
        ({"quota": {"gpus": 1, "cpu": 1.5}}, "cpu"),
        (
            {"quota": {"gpus": 1, "memory": "512GB"}},
            "memory must be a Kubernetes quantity",
        ),
        ({"namespaces": ["default"]}, "must not be default"),
        ({"namespaces": ["kube-system"]}, "must not be default"),
        ({"namespaces": ["gigafab-system"]}, "must not be default"),
        ({"namespaces": ["Research"]}, "namespaces"),
        ({"namespaces": ["a", "a"]}, "duplicate"),
        ({"namespaces": [f"ns{i}" for i in range(33)]}, "namespaces"),
        (
            {"members": [{"name": "bob"}, {"kind": "User", "name": "bob"}]},
            "duplicate entries: User/bob",
        ),
        ({"members": [{"name": ""}]}, "name"),
        ({"members": [{"name": "bob", "role": "owner"}]}, "role"),
        ({"dataClass": "secret"}, "dataClass"),
        ({"allowedSites": ["ams1", "ams1"]}, "duplicate"),
        ({"egress": ["Not_A_Name"]}, "egress"),
    ],
)
def test_tenant_spec_rejects(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        TenantSpec.from_body(with_changes(TENANT_SPEC, **changes))


def test_egress_destination_parses_sample() -> None:
    egress = EgressDestination.model_validate({"spec": EGRESS_SPEC})
    assert egress.spec.ports[0].protocol is Protocol.TCP
    assert egress.spec.ports[1].protocol is Protocol.UDP
    assert egress.status.conditions == []


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "192.0.2.1/24", "198.51.100.7/32", "2001:db8::/32", "2001:db8::/128"])
def test_egress_accepts_cidrs(cidr: str) -> None:
    assert EgressDestinationSpec.from_body(with_changes(EGRESS_SPEC, cidrs=[cidr])).cidrs == [cidr]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"cidrs": []}, "cidrs"),
        ({"cidrs": None}, "cidrs"),
        ({"cidrs": ["10.0.0.1"]}, "must be a CIDR"),
        ({"cidrs": ["10.0.0.0/33"]}, "must be a CIDR"),
        ({"cidrs": ["10.0.0.0/08"]}, "must be a CIDR"),
        ({"cidrs": ["10.0.0.0/255.0.0.0"]}, "must be a CIDR"),
        ({"cidrs": ["example.org/24"]}, "must be a CIDR"),
        ({"cidrs": ["::ffff:192.0.2.0/120"]}, "must be a CIDR"),
        ({"cidrs": ["fe80::1%eth0/64"]}, "must be a CIDR"),
        ({"cidrs": ["10.0.0.0/16", "10.0.0.0/16"]}, "duplicate"),
        ({"cidrs": ["0.0.0.0/0"]}, "no broader than /16"),
        ({"cidrs": ["10.0.0.0/8"]}, "no broader than /16"),
        ({"cidrs": ["192.0.2.0/24", "10.0.0.0/15"]}, "no broader than /16"),
        ({"cidrs": ["::/0"]}, "or /32"),
        ({"cidrs": ["2001:db8::/31"]}, "or /32"),
        ({"jurisdiction": "EU"}, "ISO 3166-1 alpha-2"),
        ({"ports": [{"port": 0}]}, "port"),
        ({"ports": [{"port": 65536}]}, "port"),
        ({"ports": [{"port": 443, "protocol": "ICMP"}]}, "protocol"),
        (
            {"ports": [{"port": 443}, {"port": 443, "protocol": "TCP"}]},
            "duplicate entries: 443/TCP",
        ),
        ({"description": "x" * 1025}, "description"),
    ],
)
def test_egress_destination_spec_rejects(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        EgressDestinationSpec.from_body(with_changes(EGRESS_SPEC, **changes))
