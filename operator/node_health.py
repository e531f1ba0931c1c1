"""From a node's health in etcd to Kubernetes facts on its Node, as a pure function.

- Degraded → taint ``gigafab.nl/gpu-degraded:NoSchedule`` (no new work);
- Failed → taint ``gigafab.nl/gpu-failed:NoExecute`` (work leaves now);
- Silent → taints ``gigafab.nl/node-silent`` with NoExecute and NoSchedule: gigafab work
  tolerates the NoExecute one for a while (its agent fences it by then), and the
  NoSchedule one keeps new pods off the node meanwhile (a toleration of a NoExecute
  taint would otherwise let the scheduler place pods there);
- a condition ``GigafabGpuHealthy`` on the Node says which and why.

Hysteresis: a node becomes worse at once, but better only after it has stayed
better for ``trust_after`` seconds (default 30 s), so a flapping GPU does not flap
taints. Until then the worse state's taints stay and the condition says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Applied:
    """What the operator last put on a node, and since when the node looks better."""

    health: str = HEALTHY
    reason: str = ""
    better_since: float | None = None
    better_health: str | None = None


def decide(applied: Applied, reported: str, reason: str, now: float, trust_after: float = TRUST_AFTER) -> Applied:
    """The state to put on the node after it reported ``reported``."""
    if RANK[reported] >= RANK[applied.health]:
        return Applied(reported, reason)
    if applied.better_health != reported or applied.better_since is None:
        return Applied(applied.health, applied.reason, now, reported)
    if now - applied.better_since >= trust_after:
        return Applied(reported, reason)
    return applied


def taints_for(health: str, existing: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The node's taints: others' kept as they are, ours as ``health`` requires."""
    kept = [dict(taint) for taint in existing if taint.get("key") not in OURS]
    kept.extend({**taint, "value": "true"} for taint in TAINTS.get(health, []))
    return kept


def condition_for(applied: Applied) -> dict[str, str]:
    healthy = applied.health == HEALTHY
    message = applied.reason or applied.health
    if applied.better_health is not None:
        message += f"; looks {applied.better_health} since recently, trusted after a quiet period"
    return {"type": CONDITION, "status": "True" if healthy else "False", "reason": applied.health, "message": message}
