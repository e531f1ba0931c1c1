"""From a node's health in etcd to Kubernetes facts on its Node, as a pure function.

- Degraded → taint ``gigafab.nl/gpu-degraded:NoSchedule`` (no new work);
- Failed → taint ``gigafab.nl/gpu-failed:NoExecute`` (work leaves now);
- Silent → taints ``gigafab.nl/node-silent`` with NoExecute and NoSchedule: gigafab work
  tolerates the NoExecute one for a while (its agent fences it by then), and the
  NoSchedule one keeps new pods off the node meanwhile (a toleration of a NoExecute
  taint would otherwise let the scheduler place pods there);
- a condition ``GigafabGpuHealthy`` on the Node says which and why.

Hysteresis: a node becomes worse at once, but better only after it has stayed
better for a quiet period, so a flapping GPU does not flap taints. Until then the
worse state's taints stay and the condition says so. The quiet period is
``trust_after`` seconds (default 30 s), doubled for every relapse: a node that gets
worse again while it waits out its quiet period, or within ``MEMORY`` of being
trusted, has to stay well twice as long the next time (at most ``MAX_DOUBLINGS``
times; going Silent is lost contact, not a relapse). A GPU that flaps is therefore trusted again a bounded number of times
however it flaps, and work that left it is not drawn back to it only to be evicted
again. A node that stays well for ``MEMORY`` after being trusted starts afresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

HEALTHY, DEGRADED, FAILED, SILENT = "Healthy", "Degraded", "Failed", "Silent"
RANK = {HEALTHY: 0, DEGRADED: 1, SILENT: 2, FAILED: 3}
TAINTS = {
    DEGRADED: [{"key": "gigafab.nl/gpu-degraded", "effect": "NoSchedule"}],
    FAILED: [{"key": "gigafab.nl/gpu-failed", "effect": "NoExecute"}],
    SILENT: [{"key": "gigafab.nl/node-silent", "effect": "NoExecute"}, {"key": "gigafab.nl/node-silent", "effect": "NoSchedule"}],
}
OURS = frozenset(taint["key"] for taints in TAINTS.values() for taint in taints)
CONDITION = "GigafabGpuHealthy"
TRUST_AFTER = 30.0
MEMORY = 3600.0
"""Seconds after being trusted within which getting worse again counts as a relapse (the operator's
``$GIGAFAB_RELAPSE_MEMORY``; a benchmark of independent faults on few nodes sets it to 0, so that it
measures failover, not the damping of what would otherwise look like flapping nodes)."""
MAX_DOUBLINGS = 5
"""The quiet period grows to at most ``trust_after × 2⁵`` (16 min for 30 s)."""


@dataclass(frozen=True)
class Applied:
    """What the operator last put on a node, and since when the node looks better."""

    health: str = HEALTHY
    reason: str = ""
    better_since: float | None = None
    better_health: str | None = None
    relapses: int = 0
    """Times the node got worse again soon after looking better (see the module's docstring)."""
    trusted_at: float | None = None
    """When the node was last trusted to be better."""


def quiet_period(applied: Applied, trust_after: float = TRUST_AFTER) -> float:
    """Seconds ``applied``'s node must look better before it is trusted."""
    return trust_after * float(2 ** min(applied.relapses, MAX_DOUBLINGS))


def _relapses(applied: Applied, reported: str, now: float, memory: float = MEMORY) -> int:
    """``applied.relapses`` after the node reported ``reported`` (no better than ``applied.health``)."""
    if SILENT in (reported, applied.better_health):  # a lost contact is no relapse of the node's GPUs
        return applied.relapses
    waiting = applied.better_health is not None and RANK[reported] > RANK[applied.better_health]
    recent = applied.trusted_at is not None and now - applied.trusted_at < memory
    if waiting or (recent and RANK[reported] > RANK[applied.health]):
        return applied.relapses + 1
    if applied.trusted_at is not None and not recent:
        return 0
    return applied.relapses


def decide(
    applied: Applied, reported: str, reason: str, now: float, trust_after: float = TRUST_AFTER, memory: float = MEMORY
) -> Applied:
    """The state to put on the node after it reported ``reported``; ``memory``: see ``MEMORY``."""
    if RANK[reported] >= RANK[applied.health]:
        return Applied(reported, reason, relapses=_relapses(applied, reported, now, memory), trusted_at=applied.trusted_at)
    if applied.better_health != reported or applied.better_since is None:
        return replace(applied, better_since=now, better_health=reported)
    if now - applied.better_since >= quiet_period(applied, trust_after):
        return Applied(reported, reason, relapses=applied.relapses, trusted_at=now)
    return applied


def taints_for(health: str, existing: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The node's taints: others' kept as they are, ours as ``health`` requires."""
    kept = [dict(taint) for taint in existing if taint.get("key") not in OURS]
    kept.extend({**taint, "value": "true"} for taint in TAINTS.get(health, []))
    return kept


def condition_for(applied: Applied, trust_after: float = TRUST_AFTER) -> dict[str, str]:
    healthy = applied.health == HEALTHY
    message = applied.reason or applied.health
    if applied.better_health is not None:
        message += f"; looks {applied.better_health} since recently, trusted after {quiet_period(applied, trust_after):g} s quiet"
        if applied.relapses:
            message += f" (doubled for each of {applied.relapses} relapse(s))"
    return {"type": CONDITION, "status": "True" if healthy else "False", "reason": applied.health, "message": message}
