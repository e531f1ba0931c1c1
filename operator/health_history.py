"""A node's health history on its Node, so that a restarted operator goes on where the last one was.

``node_health.decide`` needs what the operator last applied to a node and since when the node
looks better (its quiet period), how often it relapsed and when it was last trusted. In memory
only, a restart forgot it: a node waiting out its quiet period was trusted at once, and a
flapping GPU's doubled quiet period started again from 30 s. So the operator writes that state
into the Node's annotation ``gigafab.nl/health-history`` (JSON) in the same patch as its taints,
and reads it back before its first decision about the node.

The decision runs on the monotonic clock, which does not survive a restart (nor a move to another
machine), so the annotation holds wall-clock times: ``annotation`` and ``applied_from`` convert
with ``wall_offset`` (``time.time() - time.monotonic()`` of the process).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gigafab.operator.node_health import RANK, Applied

HISTORY = "gigafab.nl/health-history"
"""Node annotation: the operator's ``Applied`` state of the node, with wall-clock times."""


def annotation(applied: Applied, wall_offset: float) -> str:
    """``applied`` as the annotation's JSON; monotonic times become wall-clock ones."""
    document: dict[str, Any] = {"health": applied.health, "reason": applied.reason, "relapses": applied.relapses}
    if applied.better_health is not None and applied.better_since is not None:
        document["betterHealth"] = applied.better_health
        document["betterSince"] = round(applied.better_since + wall_offset, 3)
    if applied.trusted_at is not None:
        document["trustedAt"] = round(applied.trusted_at + wall_offset, 3)
    return json.dumps(document, separators=(",", ":"))


def applied_from(annotations: Mapping[str, str], wall_offset: float) -> Applied | None:
    """The state a Node's annotation recorded, in this process's monotonic time; None when there is
    none or it cannot be read (a hand edit): the node is then decided afresh."""
    try:
        document = json.loads(annotations[HISTORY])
        health, better = document["health"], document.get("betterHealth")
        if health not in RANK or (better is not None and better not in RANK):
            return None
        since, trusted = document.get("betterSince"), document.get("trustedAt")
        return Applied(
            health=health,
            reason=str(document.get("reason") or ""),
            better_since=float(since) - wall_offset if better is not None and since is not None else None,
            better_health=better if since is not None else None,
            relapses=max(0, int(document.get("relapses") or 0)),
            trusted_at=float(trusted) - wall_offset if trusted is not None else None,
        )
    except (KeyError, ValueError, TypeError):
        return None
