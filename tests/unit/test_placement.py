"""Placement: hard rules with a reason per site, preferences, stickiness, and a hint when nothing fits."""

from __future__ import annotations

from dataclasses import replace

import pytest
from gigafab.operator.placement import (
    Rule,
    SiteView,
    TenantView,
    WorkloadView,
    free_gpus_by_node,
    place,
    replica_room,
)


def site(name: str, **changes: object) -> SiteView:
    base = SiteView(
        name=name,
        lifecycle="Active",
        healthy=True,
        jurisdiction="NL",
        data_classes=frozenset({"public", "internal", "personal"}),
        power_limit_kw=100.0,
        placed_power_kw=0.0,
        gpu_watts=700,
        free_gpus={8: 4},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


NIEMEYER = site("niemeyer", data_classes=frozenset({"public", "internal", "personal", "health"}))
DE_HALM = site("de-halm")
EEMSHAVEN = site("eemshaven", free_gpus={8: 2})
ANYONE = TenantView("rug")
SITES = [NIEMEYER, DE_HALM, EEMSHAVEN]


def workload(**changes: object) -> WorkloadView:
    return replace(WorkloadView("train", gpus=8, replicas=1, data_class="internal"), **changes)  # type: ignore[arg-type]


def test_health_data_only_lands_on_a_certified_site() -> None:
    decision = place(SITES, workload(data_class="health"), TenantView("umcg"))
    assert decision.site == "niemeyer"
    reasons = {v.site: v.rule for v in decision.verdicts}
    assert reasons == {"niemeyer": Rule.FITS, "de-halm": Rule.NOT_CERTIFIED, "eemshaven": Rule.NOT_CERTIFIED}


def test_no_certified_site_left_stays_pending_with_a_hint() -> None:
    lost = replace(NIEMEYER, healthy=False)
    decision = place([lost, DE_HALM, EEMSHAVEN], workload(data_class="health"), TenantView("umcg"))
    assert decision.site is None
    assert "nearest: niemeyer" in decision.message
    assert "recovered" in decision.message


@pytest.mark.parametrize(
    ("changed", "rule"),
    [
        (site("x", jurisdiction="CH"), Rule.OUTSIDE_EU),
        (site("x", jurisdiction="GB"), Rule.OUTSIDE_EU),
        (site("x", data_classes=frozenset({"public"})), Rule.NOT_CERTIFIED),
        (site("x", lifecycle="Draining"), Rule.NOT_ACTIVE),
        (site("x", lifecycle="Planned"), Rule.NOT_ACTIVE),
        (site("x", healthy=False), Rule.NOT_HEALTHY),
        (site("x", free_gpus={4: 10}), Rule.NO_ROOM),  # 40 free GPUs, but no node with 8
        (site("x", free_gpus={}), Rule.NO_ROOM),
        (site("x", placed_power_kw=95.0), Rule.NO_POWER),  # 5.6 kW needed, 5 left
        (site("x", power_limit_kw=5.0), Rule.NO_POWER),  # a lowered cap
    ],
)
def test_each_hard_rule_refuses_with_its_reason(changed: SiteView, rule: Rule) -> None:
    decision = place([changed], workload(), ANYONE)
    assert decision.site is None
    assert decision.verdicts[0].rule is rule
    assert decision.verdicts[0].reason


def test_tenant_allowed_sites_are_honoured() -> None:
    decision = place(SITES, workload(), TenantView("umcg", frozenset({"eemshaven"})))
    assert decision.site == "eemshaven"
    assert {v.site for v in decision.verdicts if v.rule is Rule.NOT_ALLOWED} == {"niemeyer", "de-halm"}


def test_power_counts_every_gpu_of_every_replica_at_the_sites_watts() -> None:
    exactly = site("x", power_limit_kw=11.2, free_gpus={8: 2})  # 2 replicas of 8 GPUs at 700 W = 11.2 kW
    assert place([exactly], workload(replicas=2), ANYONE).site == "x"
    hotter = replace(exactly, gpu_watts=701)
    assert place([hotter], workload(replicas=2), ANYONE).verdicts[0].rule is Rule.NO_POWER


def test_replicas_are_packed_per_node() -> None:
    assert replica_room({8: 3, 3: 5}, 4) == 6  # two per 8-GPU node, none on 3-GPU nodes
    assert replica_room(free_gpus_by_node([8, 8, 0, 2, 2]), 2) == 10
    decision = place([site("x", free_gpus={8: 1, 6: 1})], workload(gpus=4, replicas=3), ANYONE)
    assert decision.site == "x"


def test_the_workloads_own_order_comes_first_then_stickiness_then_headroom() -> None:
    assert place(SITES, workload(preferred_sites=("eemshaven",)), ANYONE).site == "eemshaven"
    assert place(SITES, workload(current_site="de-halm"), ANYONE).site == "de-halm"
    roomier = replace(DE_HALM, free_gpus={8: 40})
    assert place([NIEMEYER, roomier, EEMSHAVEN], workload(), ANYONE).site == "de-halm"


def test_ties_are_broken_by_name_and_the_answer_is_stable() -> None:
    twins = [site("b"), site("a"), site("c")]
    decisions = {place(order, workload(), ANYONE).site for order in (twins, twins[::-1], twins[1:] + twins[:1])}
    assert decisions == {"a"}


def test_a_preferred_site_that_does_not_fit_is_passed_over_with_its_reason() -> None:
    full = replace(EEMSHAVEN, free_gpus={})
    decision = place([NIEMEYER, DE_HALM, full], workload(preferred_sites=("eemshaven", "de-halm")), ANYONE)
    assert decision.site == "de-halm"
    assert decision.verdicts[0].site == "de-halm"
    assert next(v for v in decision.verdicts if v.site == "eemshaven").rule is Rule.NO_ROOM


def test_a_lowered_cap_that_leaves_no_room_refuses_and_says_so() -> None:
    capped = [replace(s, power_limit_kw=1.0) for s in SITES]
    decision = place(capped, workload(), ANYONE)
    assert decision.site is None
    assert {v.rule for v in decision.verdicts} == {Rule.NO_POWER}
    assert "power headroom" in decision.message


def test_no_sites_at_all() -> None:
    assert place([], workload(), ANYONE).message == "no sites are defined"
