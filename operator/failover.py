"""What to do with placed work whose site is in trouble, and when a moved copy may start: pure functions.

``assess`` looks at one placed GpuWorkload and its site and says whether to leave it
(``Stay``), to move it to another site (``Move``, which then goes through placement like
new work), or to keep it where it is although the site is in trouble (``Hold``), with
the reason. The rules, in order:

1. a workload already moving is left alone until its new copy runs (one move at a time),
   unless the site it is moving to is lost meanwhile;
2. its site lost (the gateway gone, or most nodes Silent; Site Healthy=False):
   work with failover moves, critical work first, standard work after it where there
   is still room; work without failover waits for the site to return
   (``spec.failover.enabled`` defaults to true for critical and standard work and to
   false for preemptible work);
3. its site Draining: the work moves (whatever its criticality), one workload of the
   site at a time;
4. replicas of the current copy waiting ``NO_ROOM_GRACE`` seconds for GPUs on a
   reachable site (a GPU or node failed and the site has no room left): the work moves
   if failover is on;
5. a replica unschedulable that long for any other reason (too little CPU, a volume or
   affinity conflict; ``scheduling`` tells them apart): another site would not help, so
   the work stays and says why (``Hold``) instead of moving between sites again and again.

``may_start`` says when a moved copy may start: not before the old site's work is
fenced (``starts_after``), and not before every pod of an older epoch has stopped.
Whether a pod of the old copy must be *seen* to go follows from the move's cause
(``awaits_old_copies``): on a lost site it cannot be (the site's agents have fenced it
by ``starts_after``); on every other move it must, however the move came about
(draining, no room, a power cap, work placed again after a suspension). A pod on a
Silent node counts as stopped once that node's agent has surely fenced it, as its
deletion may never be confirmed. Together they give the invariant: never two running
copies of one workload with different epochs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from gigafab.operator.tracks import CRITICALITY_ORDER

NO_ROOM_GRACE = 3.0
"""Seconds a replica may wait for the scheduler before its site counts as full."""


class Step(enum.StrEnum):
    STAY = "Stay"
    MOVE = "Move"
    HOLD = "Hold"


class Cause(enum.StrEnum):
    """The trouble behind a Move or Hold, as a short name (the metrics' ``reason`` label)."""

    NONE = ""
    SITE_LOST = "site_lost"
    SITE_DRAINING = "site_draining"
    NO_ROOM = "no_room"
    POWER_CAP = "power_cap"
    """Shed by a lowered power cap (``power_cap``), or placed again after being suspended for one."""


@dataclass(frozen=True)
class Situation:
    """A placed workload and its site, as the failover loop sees them."""

    site: str
    criticality: str
    failover: bool | None
    """``spec.failover.enabled`` (None: the default for its criticality)."""
    moving: bool = False
    site_lost: bool = False
    site_draining: bool = False
    unschedulable_for: float | None = None
    """Seconds the oldest replica of the current copy has waited for GPUs its site lacks (None: none waits)."""
    blocked_for: float | None = None
    """Seconds the oldest replica of the current copy has been unschedulable for another reason (None: none is)."""
    blocked_by: str = ""
    """The scheduler's reason for that replica."""


@dataclass(frozen=True)
class Assessment:
    step: Step
    reason: str
    cause: Cause = Cause.NONE


def failover_enabled(criticality: str, enabled: bool | None) -> bool:
    """``spec.failover.enabled``, or its default: on for critical and standard work, off for preemptible."""
    return enabled if enabled is not None else criticality != "preemptible"


def assess(situation: Situation) -> Assessment:
    site = situation.site
    enabled = failover_enabled(situation.criticality, situation.failover)
    if situation.moving and not situation.site_lost:  # a move whose destination is lost is decided again
        return Assessment(Step.STAY, "a move is under way")
    if situation.site_lost:
        return _when_lost(site, situation.criticality, enabled)
    if situation.site_draining:
        return Assessment(Step.MOVE, f"site {site} is draining", Cause.SITE_DRAINING)
    return _when_unschedulable(situation, enabled)


def _when_unschedulable(situation: Situation, enabled: bool) -> Assessment:
    site = situation.site
    if situation.unschedulable_for is not None and situation.unschedulable_for >= NO_ROOM_GRACE:
        if not enabled:
            waits = f"no room left in site {site}; failover is off for this work, it waits for room"
            return Assessment(Step.HOLD, waits, Cause.NO_ROOM)
        return Assessment(Step.MOVE, f"no room left in site {site} after a failure", Cause.NO_ROOM)
    if situation.blocked_for is not None and situation.blocked_for >= NO_ROOM_GRACE:
        waits = f"a replica cannot be scheduled on site {site}, not for want of GPUs, so the work does not move"
        return Assessment(Step.HOLD, f"{waits}: {situation.blocked_by}")
    return Assessment(Step.STAY, "runs where it is")


def _when_lost(site: str, criticality: str, enabled: bool) -> Assessment:
    if not enabled:
        waits = "preemptible work waits" if criticality == "preemptible" else "failover is off for this work, it waits"
        return Assessment(Step.HOLD, f"site {site} is lost; {waits} for it to return", Cause.SITE_LOST)
    return Assessment(Step.MOVE, f"site {site} is lost", Cause.SITE_LOST)


def move_order(criticality: str, name: str) -> tuple[int, str]:
    """Which of a site's workloads moves first: critical, then standard, then preemptible; then by name."""
    return (CRITICALITY_ORDER.get(criticality, 2), name)


def awaits_old_copies(cause: Cause, fenced_at: float | None) -> bool:
    """Whether a move's new copy waits until the old copy's pods on the site it leaves are seen to go:
    on every move but one away from a lost site whose fence deadline (``fenced_at``) is known. A lost
    site's pods cannot be seen to go (its kubelets may be cut off too), and its agents have stopped
    them by that deadline; without a deadline nothing else vouches for them."""
    return not (cause is Cause.SITE_LOST and fenced_at is not None)


@dataclass(frozen=True)
class OldPod:
    """A pod of an older epoch of the workload, still in the API (running, or terminating)."""

    on_lost_site: bool
    """It is on the site a move leaves, and that move does not await old copies: ``starts_after`` covers it."""
    node_fenced_at: float | None = None
    """Its node is Silent: from then (wall clock) the node's agent has surely stopped it."""


def may_start(now: float, starts_after: float, old_pods: Iterable[OldPod]) -> bool:
    """Whether a held copy may start: the old site is fenced (``starts_after``) and every pod of an older
    epoch has stopped: gone, on the lost site it leaves, or on a Silent node whose agent has fenced it."""
    return now >= starts_after and all(_stopped(pod, now) for pod in old_pods)


def _stopped(pod: OldPod, now: float) -> bool:
    return pod.on_lost_site or (pod.node_fenced_at is not None and now >= pod.node_fenced_at)
