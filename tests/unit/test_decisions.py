"""Small pure decisions: conditions, jurisdiction, site health, drift comparison."""

from __future__ import annotations

import pytest
from gigafab.operator.conditions import Condition, merge
from gigafab.operator.drift import covers
from gigafab.operator.jurisdiction import Declared, egress_acceptance, judge_all
from gigafab.operator.site_health import HEALTHY_GPUS, NodeSummary, node_summary, site_status

from gigafab.api.labels import SITE_NODE_LABEL


def test_merge_keeps_transition_time_while_status_holds() -> None:
    first = merge(None, [Condition("Ready", True, "A", "a")], 1, clock="t1")
    second = merge(first, [Condition("Ready", True, "B", "b")], 2, clock="t2")
    third = merge(second, [Condition("Ready", False, "C", "c")], 3, clock="t3")
    assert first[0]["lastTransitionTime"] == second[0]["lastTransitionTime"] == "t1"
    assert second[0]["observedGeneration"] == 2
    assert (third[0]["status"], third[0]["lastTransitionTime"]) == ("False", "t3")


def test_merge_keeps_other_conditions() -> None:
    merged = merge([{"type": "Other", "status": "True"}], [Condition("Ready", True, "R", "r")], 1)
    assert [c["type"] for c in merged] == ["Other", "Ready"]


@pytest.mark.parametrize(
    ("code", "accepted"), [("NL", True), ("DE", True), ("GR", True), ("US", False), ("GB", False), ("CH", False), ("NO", False)]
)
def test_only_eu_member_states_are_accepted(code: str, accepted: bool) -> None:
    verdict = egress_acceptance(code)
    assert verdict.status is accepted
    assert code in verdict.message


def node(name: str, zone: str = "z", gpus: int = 8, ready: bool = True, vouched: bool = True) -> NodeSummary:
    """A node as its Site sees it; ``vouched``: its health agent has reported (all its GPUs Healthy)."""
    return NodeSummary(name, zone, gpus, ready, healthy_gpus=gpus if vouched else None)


@pytest.mark.parametrize(
    ("lifecycle", "nodes", "ready", "healthy"),
    [
        ("Active", [node("a"), node("b")], ("True", "NodesReady"), ("True", "MostNodesReady")),
        ("Active", [node("a"), node("b", ready=False)], ("True", "NodesReady"), ("False", "MostNodesLost")),
        ("Active", [node("a", ready=False)], ("False", "NoReadyNodes"), ("False", "MostNodesLost")),
        ("Active", [node("a", zone="other")], ("False", "NoNodes"), ("False", "NoNodes")),
        ("Planned", [node("a")], ("False", "Planned"), ("True", "MostNodesReady")),
        ("Draining", [node("a")], ("False", "Draining"), ("True", "MostNodesReady")),
        # a node no agent has vouched for is no capacity, whatever its kubelet says
        ("Active", [node("a", vouched=False), node("b", vouched=False)], ("False", "NotVouched"), ("False", "NotVouched")),
        ("Active", [node("a"), node("b", vouched=False)], ("True", "NodesReady"), ("False", "NotVouched")),
        ("Active", [node("a"), node("b"), node("c", vouched=False)], ("True", "NodesReady"), ("True", "MostNodesReady")),
    ],
)
def test_site_status(lifecycle: str, nodes: list[NodeSummary], ready: tuple[str, str], healthy: tuple[str, str]) -> None:
    counts, (readiness, health) = site_status("z", lifecycle, nodes)
    assert (("True" if readiness.status else "False"), readiness.reason) == ready
    assert (("True" if health.status else "False"), health.reason) == healthy
    assert counts["gpus"] == sum(n.gpus for n in nodes if n.zone == "z")


def test_node_summary_reads_gpus_readiness_and_power() -> None:
    summary = node_summary(
        "n1",
        {"topology.kubernetes.io/zone": "de-halm", "gigafab.nl/gpu-power-watts": "1000"},
        {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]},
        {"unschedulable": True},
    )
    assert summary == NodeSummary("n1", "de-halm", 8, False, 1000, site="")


def test_site_counts_healthy_gpus_one_by_one_and_lost_nodes_wholly() -> None:
    nodes = [
        NodeSummary("whole", "z", 8, True, healthy_gpus=8),
        NodeSummary("one-degraded", "z", 8, True, healthy_gpus=7),
        NodeSummary("failed", "z", 8, False, healthy_gpus=7),  # NoExecute: nothing on it counts
        NodeSummary("stale-count", "z", 4, True, healthy_gpus=8),  # never more than it has
        NodeSummary("never-vouched", "z", 8, True),  # no agent has reported for it: none of its GPUs
    ]
    counts, (ready, healthy) = site_status("z", "Active", nodes)
    assert (counts["gpus"], counts["gpusHealthy"], counts["nodesReady"]) == (36, 8 + 7 + 4, 3)
    assert ready.message == "3/5 node(s) ready, 19 GPU(s) healthy; no agent has vouched for 1 node(s)"
    assert healthy.message == "3/5 node(s) ready; no agent has vouched for 1 node(s)"


def test_a_site_whose_nodes_no_agent_vouched_for_says_so() -> None:
    counts, (ready, healthy) = site_status("z", "Active", [node("a", vouched=False), node("b", vouched=False)])
    assert (counts["nodesReady"], counts["gpusHealthy"]) == (0, 0)
    assert ready.message == "no agent has vouched for 2 node(s), and none of 2 node(s) is usable"
    assert healthy.message == "only 0/2 node(s) ready; no agent has vouched for 2 node(s)"


def test_node_summary_reads_the_healthy_gpu_count_annotation() -> None:
    labels = {"topology.kubernetes.io/zone": "z", SITE_NODE_LABEL: "z"}
    status = {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}
    assert node_summary("n", labels, status, {}, {"gigafab.nl/gpus-healthy": "6"}).healthy_gpus == 6
    assert node_summary("n", labels, status, {}, {"gigafab.nl/gpus-healthy": "six"}).healthy_gpus is None


def test_a_count_on_a_node_no_provisioner_labelled_for_a_site_is_no_vouching() -> None:
    """A kubelet may set its own zone label and annotations, never the site label: it cannot vouch for itself."""
    self_made = {"topology.kubernetes.io/zone": "z"}
    status = {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}
    summary = node_summary("rogue", self_made, status, {}, {"gigafab.nl/gpus-healthy": "8"})
    assert not summary.vouched
    counts, _ = site_status("z", "Active", [summary], site="z")
    assert counts["gpusHealthy"] == 0


def test_a_node_of_the_zone_labelled_for_another_site_counts_for_none() -> None:
    status = {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}
    vouched = {HEALTHY_GPUS: "8"}
    own = node_summary("own", {"topology.kubernetes.io/zone": "z", SITE_NODE_LABEL: "niemeyer"}, status, {}, vouched)
    other = node_summary("other", {"topology.kubernetes.io/zone": "z", SITE_NODE_LABEL: "de-halm"}, status, {}, vouched)
    counts, (_, healthy) = site_status("z", "Active", [own, other], site="niemeyer")
    assert (counts["nodes"], counts["nodesReady"], counts["gpusHealthy"]) == (2, 1, 8)
    assert healthy.reason == "NotVouched"


@pytest.mark.parametrize(
    ("observed", "desired", "same"),
    [
        ({"a": 1, "extra": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"hard": {"cpu": "5"}}, {"hard": {"cpu": "5000m"}}, True),
        ({"hard": {"memory": "1Gi"}}, {"hard": {"memory": "1024Mi"}}, True),
        ({"hard": {"memory": "1Gi"}}, {"hard": {"memory": "2Gi"}}, False),
        ({"l": [1, 2, 3]}, {"l": [1, 2]}, False),
        ({"l": [{"x": 1, "y": 0}]}, {"l": [{"x": 1}]}, True),
        ({}, {"a": None}, True),
        ({"name": "abc"}, {"name": "abd"}, False),
    ],
)
def test_covers(observed: object, desired: object, same: bool) -> None:
    assert covers(observed, desired) is same


def test_a_site_whose_gateway_is_lost_is_not_healthy_whatever_its_nodes_last_said() -> None:
    _, (_, health) = site_status("z", "Active", [NodeSummary("n", "z", 8, True)], gateway_lost=True)
    assert (health.status, health.reason) == (False, "GatewayLost")


def declared(name: str, jurisdiction: str, *cidrs: str, invalid: str = "") -> Declared:
    return Declared(name, jurisdiction, tuple(cidrs), invalid=invalid)


def test_an_eu_claim_on_a_range_a_non_eu_destination_claims_is_refused_naming_it() -> None:
    """One network is under one jurisdiction: the EU claim gives way, so no tenant reaches the range (the non-EU one
    is refused anyway); a disjoint EU destination is unaffected, and so is an overlap between two EU claims."""
    everyone = {
        "nl-store": declared("nl-store", "NL", "203.0.0.0/16"),
        "us-bucket": declared("us-bucket", "US", "203.0.113.0/24"),
        "de-registry": declared("de-registry", "DE", "198.51.100.0/24", "203.0.113.128/25"),
        "fr-archive": declared("fr-archive", "FR", "192.0.2.0/24"),
        "be-mirror": declared("be-mirror", "BE", "192.0.2.0/25"),
    }
    verdicts = judge_all(everyone)
    assert {name: (v.status, v.reason) for name, v in verdicts.items()} == {
        "nl-store": (False, "OverlapsNonEU"),
        "us-bucket": (False, "OutsideEU"),
        "de-registry": (False, "OverlapsNonEU"),
        "fr-archive": (True, "EUJurisdiction"),
        "be-mirror": (True, "EUJurisdiction"),
    }
    assert "us-bucket: 203.0.0.0/16 and 203.0.113.0/24" in verdicts["nl-store"].message
    assert "203.0.113.128/25 and 203.0.113.0/24" in verdicts["de-registry"].message


def test_an_overlap_across_families_or_with_an_unreadable_destination_is_none() -> None:
    everyone = {
        "nl": declared("nl", "NL", "2001:db8::/32"),
        "us": declared("us", "US", "192.0.2.0/24"),
        "broken": declared("broken", "US", invalid="spec.cidrs.0: too broad"),
    }
    verdicts = judge_all(everyone)
    assert verdicts["nl"].status is True
    assert (verdicts["broken"].status, verdicts["broken"].reason) == (False, "InvalidSpec")
    assert "spec.cidrs.0: too broad" in verdicts["broken"].message
