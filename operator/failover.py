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
4. replicas of the current copy unschedulable for ``NO_ROOM_GRACE`` seconds on a
   reachable site (a GPU or node failed and the site has no room left): the work moves
   if failover is on.

``may_start`` says when a moved copy may start: not before the old site's work is
fenced (``starts_after``), and, when the old site is reachable, not before every pod
of an older epoch is gone. Together they give the invariant: never two running copies
of one workload with different epochs.
"""

from __future__ import annotations

import enum
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
    """Seconds the oldest unschedulable replica of the current copy has waited (None: none waits)."""


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
    if situation.unschedulable_for is not None and situation.unschedulable_for >= NO_ROOM_GRACE:
        if not enabled:
            waits = f"no room left in site {site}; failover is off for this work, it waits for room"
            return Assessment(Step.HOLD, waits, Cause.NO_ROOM)
        return Assessment(Step.MOVE, f"no room left in site {site} after a failure", Cause.NO_ROOM)
    return Assessment(Step.STAY, "runs where it is")


def _when_lost(site: str, criticality: str, enabled: bool) -> Assessment:
    if not enabled:
        waits = "preemptible work waits" if criticality == "preemptible" else "failover is off for this work, it waits"
        return Assessment(Step.HOLD, f"site {site} is lost; {waits} for it to return", Cause.SITE_LOST)
    return Assessment(Step.MOVE, f"site {site} is lost", Cause.SITE_LOST)


def move_order(criticality: str, name: str) -> tuple[int, str]:
    """Which of a site's workloads moves first: critical, then standard, then preemptible; then by name."""
    return (CRITICALITY_ORDER.get(criticality, 2), name)


def may_start(now: float, starts_after: float, await_old_copies: bool, old_copies: int) -> bool:
    """Whether a held copy may start: its old site is fenced and, if reachable, its old pods are gone."""
    return now >= starts_after and not (await_old_copies and old_copies > 0)
