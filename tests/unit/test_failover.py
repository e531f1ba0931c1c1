"""Failover decisions, fence deadlines and reservations: pure functions, no cluster."""

from __future__ import annotations

import time
from typing import Any

import pytest
from gigafab.operator import moves, workloads
from gigafab.operator.failover import (
    NO_ROOM_GRACE,
    Cause,
    OldPod,
    Situation,
    Step,
    assess,
    awaits_old_copies,
    may_start,
    move_order,
)
from gigafab.operator.runner_pods import RunnerPod, SiteNodes, site_nodes, waits
from gigafab.operator.site_contact import Contacts
from gigafab.operator.site_health import NodeSummary
from gigafab.operator.workload_plan import SILENT_TAINT, runner_for, take


def situation(**changes: object) -> Situation:
    return Situation(**{"site": "niemeyer", "criticality": "critical", "failover": None, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("criticality", "failover", "step"),
    [
        ("critical", None, Step.MOVE),
        ("critical", False, Step.HOLD),
        ("standard", None, Step.MOVE),
        ("standard", False, Step.HOLD),
        ("preemptible", None, Step.HOLD),
        ("preemptible", True, Step.MOVE),
    ],
)
def test_a_lost_site_moves_critical_and_standard_work_and_keeps_preemptible_and_opted_out_work_waiting(
    criticality: str, failover: bool | None, step: Step
) -> None:
    verdict = assess(situation(site_lost=True, criticality=criticality, failover=failover))
    assert verdict.step is step
    assert "niemeyer is lost" in verdict.reason


def test_draining_moves_everything_and_a_moving_workload_is_left_alone_unless_its_destination_is_lost() -> None:
    assert assess(situation(site_draining=True, criticality="preemptible")).step is Step.MOVE
    assert assess(situation(site_draining=True, moving=True)).step is Step.STAY
    assert assess(situation(site_lost=True, moving=True)).step is Step.MOVE, "its destination was lost meanwhile"


def test_no_room_after_a_failure_moves_the_work_only_after_a_grace_for_the_scheduler() -> None:
    assert assess(situation(unschedulable_for=NO_ROOM_GRACE - 0.1)).step is Step.STAY
    moved = assess(situation(unschedulable_for=NO_ROOM_GRACE))
    assert (moved.step, moved.reason) == (Step.MOVE, "no room left in site niemeyer after a failure")
    assert assess(situation(unschedulable_for=60.0, criticality="preemptible")).step is Step.HOLD
    assert assess(situation()).step is Step.STAY


def test_critical_work_leaves_first() -> None:
    names = [("standard", "a"), ("preemptible", "b"), ("critical", "z"), ("critical", "c")]
    assert sorted(names, key=lambda item: move_order(*item)) == [
        ("critical", "c"),
        ("critical", "z"),
        ("standard", "a"),
        ("preemptible", "b"),
    ]


@pytest.mark.parametrize(
    ("cause", "fenced_at", "awaits"),
    [
        (Cause.SITE_LOST, 100.0, False),  # its pods cannot be seen to go; its agents have stopped them by then
        (Cause.SITE_LOST, None, True),  # no deadline known (the site came back meanwhile): nothing else vouches
        (Cause.SITE_DRAINING, None, True),
        (Cause.SITE_DRAINING, 100.0, True),  # a Silent node of a draining site does not make its other pods stop
        (Cause.NO_ROOM, 100.0, True),
        (Cause.NO_ROOM, None, True),
        (Cause.POWER_CAP, None, True),
        (Cause.POWER_CAP, 100.0, True),
        (Cause.NONE, None, True),
    ],
)
def test_every_move_waits_for_the_old_pods_to_go_except_one_from_a_lost_site_with_a_fence_deadline(
    cause: Cause, fenced_at: float | None, awaits: bool
) -> None:
    assert awaits_old_copies(cause, fenced_at) is awaits


def test_a_held_copy_starts_after_the_fence_and_after_every_old_pod_has_stopped() -> None:
    lingering = OldPod(on_lost_site=False)
    assert not may_start(now=9.9, starts_after=10.0, old_pods=[])
    assert may_start(now=10.0, starts_after=10.0, old_pods=[])
    assert may_start(now=10.0, starts_after=10.0, old_pods=[OldPod(on_lost_site=True)] * 3), "a lost site's pods may linger"
    assert not may_start(now=10.0, starts_after=10.0, old_pods=[lingering]), "terminating on a reachable node: wait"
    assert not may_start(now=10.0, starts_after=10.0, old_pods=[OldPod(on_lost_site=True), lingering])


def test_an_old_pod_on_a_silent_node_counts_as_stopped_once_its_agent_has_surely_fenced_it() -> None:
    silent = OldPod(on_lost_site=False, node_fenced_at=20.0)
    assert not may_start(now=19.9, starts_after=10.0, old_pods=[silent])
    assert may_start(now=20.0, starts_after=10.0, old_pods=[silent])


def pod(epoch: int, site: str = "de-halm", node: str | None = "de-halm-gpu-000", **changes: Any) -> RunnerPod:
    fields: dict[str, Any] = {"unschedulable_since": None, "deleting": True, "gpus": 1, "phase": "Running"}
    return RunnerPod(epoch=epoch, node=node, site=site, **{**fields, **changes})


def test_old_pods_are_those_of_older_epochs_not_finished_and_only_the_lost_site_they_leave_is_covered_by_its_fence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("niemeyer", ttl=5.0, fence_after=4.0)
    contacts.node_heard("niemeyer", "niemeyer-gpu-001", "Silent", last_report=50.0, now=60.0)
    monkeypatch.setattr(moves, "CONTACTS", contacts)
    pods = [
        pod(1, "de-halm"),  # a copy two moves ago, still terminating elsewhere
        pod(2, "niemeyer", "niemeyer-gpu-000"),
        pod(2, "niemeyer", "niemeyer-gpu-001"),
        pod(2, "niemeyer", "niemeyer-gpu-000", phase="Succeeded"),
        pod(3, "eemshaven", "eemshaven-gpu-000", deleting=False),  # the new copy itself
    ]
    lost = {"fromSite": "niemeyer", "awaitOldCopies": False}
    assert moves.old_pods(pods, 3, lost) == [
        OldPod(on_lost_site=False),
        OldPod(on_lost_site=True),
        OldPod(on_lost_site=True, node_fenced_at=56.0),
    ]
    reachable = {"fromSite": "niemeyer", "awaitOldCopies": True}
    assert moves.old_pods(pods, 3, reachable) == [
        OldPod(on_lost_site=False),
        OldPod(on_lost_site=False),
        OldPod(on_lost_site=False, node_fenced_at=56.0),
    ]


def test_a_move_records_whether_it_awaits_the_old_copies_from_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("niemeyer", ttl=5.0, fence_after=4.0)
    contacts.node_heard("niemeyer", "niemeyer-gpu-001", "Silent", last_report=50.0, now=60.0)  # one node of two: not lost
    monkeypatch.setattr(moves, "CONTACTS", contacts)
    draining = moves.record("niemeyer", "site niemeyer is draining", Cause.SITE_DRAINING)
    assert (draining["awaitOldCopies"], draining["startsAfter"]) == (True, "1970-01-01T00:00:56.000Z")
    contacts.gateway_lost("niemeyer", at=100.0)
    lost = moves.record("niemeyer", "site niemeyer is lost", Cause.SITE_LOST)
    assert (lost["awaitOldCopies"], lost["startsAfter"]) == (False, "1970-01-01T00:01:41.000Z")


def test_work_placed_again_after_a_suspension_starts_held_until_its_last_copy_has_stopped() -> None:
    indexes: dict[str, Any] = {"site_index": {}, "node_index": {}}
    suspended = {"epoch": 1, "site": None, "phase": "Pending", "placements": [{"site": "niemeyer", "epoch": 1}]}
    fields = workloads._move_fields(None, Cause.NONE, suspended, indexes)
    assert fields["phase"] == "Placed"
    assert fields["move"]["fromSite"] == "niemeyer"
    assert fields["move"]["awaitOldCopies"] is True
    assert fields["move"]["reason"] == moves.SUSPENDED
    assert workloads._move_fields(None, Cause.NONE, {}, indexes) == {"phase": "Placed", "move": None}, "new work: not held"


def test_a_lease_that_ran_out_counts_contact_until_a_ttl_before_and_fence_after_plus_margin_from_there() -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("niemeyer", ttl=5.0, fence_after=4.0)
    assert contacts.fenced_at("niemeyer") is None
    assert not contacts.unreachable("niemeyer", nodes=2)
    contacts.gateway_lost("niemeyer", at=100.0)
    assert contacts.unreachable("niemeyer", nodes=2)
    assert contacts.fenced_at("niemeyer") == 100.0 - 5.0 + 4.0 + 2.0


def test_a_site_counts_as_served_after_a_listing_only_if_its_gateway_announced_itself_again() -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("niemeyer", ttl=5.0, fence_after=4.0)
    listed_at = time.monotonic()  # etcd answered again; niemeyer's key was not in the listing
    assert not contacts.served_since("niemeyer", listed_at), "served before the outage is no proof now"
    assert not contacts.unreachable("niemeyer", nodes=2), "yet not lost either: the grace decides"
    contacts.gateway_up("niemeyer", ttl=5.0, fence_after=4.0)
    assert contacts.served_since("niemeyer", listed_at)
    assert not contacts.served_since("eemshaven", listed_at), "never seen"


def test_no_site_is_unreachable_while_the_view_of_the_health_etcd_is_stale() -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("niemeyer", ttl=5.0, fence_after=4.0)
    contacts.gateway_lost("niemeyer", at=100.0)
    contacts.view_stale()  # etcd stopped answering: the lost key may be back
    assert not contacts.unreachable("niemeyer", nodes=2)
    contacts.view_current()  # read everything again, and the key is still gone
    assert contacts.unreachable("niemeyer", nodes=2)


def test_a_gateway_that_said_it_stops_had_contact_until_its_key_went() -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("de-halm", ttl=5.0, fence_after=4.0)
    contacts.gateway_stopping("de-halm")
    contacts.gateway_lost("de-halm", at=100.0)
    assert contacts.fenced_at("de-halm") == 106.0
    contacts.gateway_up("de-halm", ttl=5.0, fence_after=4.0)
    assert contacts.fenced_at("de-halm") is None, "back: nothing is fenced"


def test_most_nodes_silent_make_a_site_unreachable_and_their_last_reports_set_the_deadline() -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("eemshaven", ttl=5.0, fence_after=4.0)
    contacts.node_heard("eemshaven", "e0", "Silent", last_report=50.0, now=60.0)
    assert not contacts.unreachable("eemshaven", nodes=2), "one of two is not most"
    assert contacts.fenced_at("eemshaven") == 56.0, "its work may still only move after that node is fenced"
    contacts.node_heard("eemshaven", "e1", "Silent", last_report=52.0, now=60.0)
    assert contacts.unreachable("eemshaven", nodes=2)
    assert contacts.fenced_at("eemshaven") == 58.0
    contacts.node_heard("eemshaven", "e1", "Healthy", last_report=61.0, now=61.0)
    assert contacts.fenced_at("eemshaven") == 56.0


def test_reservations_take_the_fullest_node_that_holds_each_replica() -> None:
    free = {8: 2, 3: 1}  # two empty nodes, one with 3 GPUs free
    assert take(free, [(2, 1)]) == {8: 2, 1: 1}, "best fit: the node with 3 free"
    assert take(free, [(4, 3)]) == {4: 1, 3: 1}, "two replicas fill one 8-GPU node, the third half the other"
    assert take(free, [(16, 1)]) == free, "a replica that fits nowhere takes nothing"


def body() -> dict[str, object]:
    template = {"spec": {"containers": [{"name": "train", "image": "x"}]}}
    return {
        "metadata": {"name": "scan", "namespace": "umcg-research", "uid": "u-1"},
        "spec": {"gpus": 2, "replicas": 3, "template": template},
    }


def test_a_moved_copy_is_created_held_and_tolerates_silence_until_its_node_has_fenced() -> None:
    held = runner_for(body(), "de-halm", "de-halm", 2, held=True, silent_grace=6)
    assert held["metadata"]["name"] == "scan-e2"
    assert held["spec"]["replicas"] == 0
    tolerations = held["spec"]["template"]["spec"]["tolerations"]
    assert {"key": SILENT_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 6} in tolerations
    assert not any(t["key"] == "gigafab.nl/gpu-failed" for t in tolerations), "a failed GPU evicts at once"
    assert runner_for(body(), "de-halm", "de-halm", 1)["spec"]["replicas"] == 3


def waiting_indexes(healthy: int, pods: list[RunnerPod]) -> dict[str, Any]:
    """The operator's indexes for one workload of two replicas of 8 GPUs placed on site ``a`` at epoch 1."""
    healthy_condition = [{"type": "Healthy", "status": "True"}]
    site = {
        "name": "a",
        "body": {
            "spec": {"lifecycle": "Active", "jurisdiction": "NL"},
            "status": {"gpusHealthy": healthy, "conditions": healthy_condition},
        },
    }
    return {
        "runner_pod_index": {("t", "wide"): pods},
        "workload_index": {"a": [(("t", "wide"), 1, 16)]},
        "site_index": {"a": [site]},
    }


WIDE = {"metadata": {"namespace": "t", "name": "wide"}, "status": {"epoch": 1, "site": "a"}}
TWO_NODES = [NodeSummary("a-0", "a", 8, ready=True), NodeSummary("a-1", "a", 8, ready=True)]
GPUS_SHORT = (
    "0/6 nodes are available: 2 Insufficient nvidia.com/gpu, 4 node(s) didn't match Pod's node affinity/selector. "
    "no new claims to deallocate, preemption: 0/6 nodes are available: 2 No preemption victims found for incoming pod, "
    "4 Preemption is not helpful for scheduling."
)
CPU_SHORT = (
    "0/6 nodes are available: 1 Insufficient nvidia.com/gpu, 2 Insufficient cpu, 4 node(s) didn't match Pod's node "
    "affinity/selector. no new claims to deallocate, preemption: 0/6 nodes are available: 6 Preemption is not helpful "
    "for scheduling."
)


def waited(workload: dict[str, Any], indexes: dict[str, Any], nodes: list[NodeSummary] = TWO_NODES) -> float | None:
    """How long, at 130 s, the operator finds a pod of ``workload`` on site ``a`` waiting for GPUs."""
    return waits(workload, indexes, 130.0, site_nodes("a", nodes, indexes)).for_gpus


def test_a_replica_kueue_holds_on_a_site_that_lost_gpus_waits_for_room_like_an_unschedulable_one() -> None:
    """A node failed: its replica's new pod is held by Kueue, whose quota shrank with the site's healthy GPUs
    before it admitted the pod, so the scheduler never calls it Unschedulable. It must count as waiting for
    room all the same, or the work never moves (a race the e2e failover test lost once in CI)."""
    running = RunnerPod(epoch=1, node="a-0", phase="Running", unschedulable_since=None, deleting=False, gpus=8, created=100.0)
    held = RunnerPod(
        epoch=1, node=None, phase="Pending", unschedulable_since=None, deleting=False, gpus=8, created=110.0, queued=True
    )
    assert waited(WIDE, waiting_indexes(8, [running, held])) == 20.0
    assert waited(WIDE, waiting_indexes(16, [running, held])) is None, "room: Kueue will admit it"
    assert waited(WIDE, waiting_indexes(8, [running])) is None
    older = RunnerPod(
        epoch=0, node=None, phase="Pending", unschedulable_since=None, deleting=False, gpus=8, created=50.0, queued=True
    )
    assert waited(WIDE, waiting_indexes(8, [running, held, older])) == 20.0, "its own epoch only"


def refused(message: str, since: float = 120.0) -> RunnerPod:
    return RunnerPod(
        epoch=1, node=None, phase="Pending", unschedulable_since=since, deleting=False, gpus=8, unschedulable=message
    )


def test_only_a_replica_refused_for_want_of_gpus_waits_for_room_one_refused_for_cpu_is_blocked_and_says_why() -> None:
    indexes = waiting_indexes(16, [refused(GPUS_SHORT)])
    assert waited(WIDE, indexes) == 10.0
    blocked = waits(WIDE, waiting_indexes(16, [refused(CPU_SHORT, since=125.0)]), 130.0, SiteNodes(2, 0, short=False))
    assert (blocked.for_gpus, blocked.blocked_for) == (None, 5.0)
    assert blocked.blocked_by.endswith("2 Insufficient cpu, 4 node(s) didn't match Pod's node affinity/selector")
    lost = [NodeSummary("a-0", "a", 8, ready=False), TWO_NODES[1]]
    assert waited(WIDE, waiting_indexes(16, [refused(CPU_SHORT)]), lost) == 10.0, "a-0 lost, a-1 full of GPUs"


def test_a_replica_blocked_for_another_reason_holds_the_work_where_it_is_with_the_schedulers_words() -> None:
    verdict = assess(situation(blocked_for=NO_ROOM_GRACE, blocked_by="0/6 nodes are available: 2 Insufficient cpu"))
    assert verdict.step is Step.HOLD
    assert verdict.reason == (
        "a replica cannot be scheduled on site niemeyer, not for want of GPUs, so the work does not move: "
        "0/6 nodes are available: 2 Insufficient cpu"
    )
    assert assess(situation(blocked_for=NO_ROOM_GRACE - 0.1, blocked_by="x")).step is Step.STAY, "the scheduler's grace first"
    assert assess(situation(blocked_for=60.0, blocked_by="x", site_draining=True)).step is Step.MOVE, "draining still moves it"
    assert assess(situation(blocked_for=60.0, blocked_by="x", unschedulable_for=60.0)).step is Step.MOVE, "another lacks GPUs"


def test_a_silent_nodes_own_fence_deadline_is_its_last_report_plus_fence_after_plus_margin() -> None:
    contacts = Contacts(margin=2.0)
    contacts.gateway_up("de-halm", ttl=5.0, fence_after=4.0)
    assert contacts.node_fenced_at("de-halm", "de-halm-gpu-000") is None
    contacts.node_heard("de-halm", "de-halm-gpu-000", "Silent", last_report=50.0, now=60.0)
    contacts.node_heard("de-halm", "de-halm-gpu-001", "Silent", last_report=58.0, now=60.0)
    assert contacts.node_fenced_at("de-halm", "de-halm-gpu-000") == 56.0, "its own report, not the site's latest"
    contacts.node_heard("de-halm", "de-halm-gpu-000", "Healthy", last_report=61.0, now=61.0)
    assert contacts.node_fenced_at("de-halm", "de-halm-gpu-000") is None, "heard again: its deletion must be seen"
    assert contacts.node_fenced_at("eemshaven", "eemshaven-gpu-000") is None
