"""How the facility's healthy GPUs divide over the allocation tracks: a pure function.

Each track is guaranteed its share of the healthy GPUs of the Active sites. Shares
are rounded down, and the GPUs left by rounding go to the tracks of highest priority
first (then the largest remainder), so the guarantees always add up to the whole.
A track that uses more than its guarantee borrows; what it borrows is lent by the
tracks that lend and leave part of their guarantee idle, the lowest priority first
(they are the ones that can best wait for it to be taken back).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Share:
    name: str
    share: int
    """Percent."""
    priority: int = 0
    lending: bool = True


@dataclass(frozen=True)
class TrackUse:
    name: str
    guaranteed: int
    used: int
    borrowed: int
    lent: int


def guarantees(shares: Sequence[Share], healthy_gpus: int) -> dict[str, int]:
    """Each track's guaranteed GPUs; they add up to ``healthy_gpus`` when the shares add up to 100."""
    exact = {share.name: share.share * healthy_gpus / 100 for share in shares}
    given = {name: int(value) for name, value in exact.items()}
    left = healthy_gpus * sum(share.share for share in shares) // 100 - sum(given.values())
    order = sorted(shares, key=lambda share: (-share.priority, -(exact[share.name] - given[share.name]), share.name))
    for share in order[: max(left, 0)]:
        given[share.name] += 1
    return given


def track_use(shares: Sequence[Share], guaranteed: Mapping[str, int], used: Mapping[str, int]) -> list[TrackUse]:
    """Guaranteed, used, borrowed and lent GPUs of every track."""
    borrowed = {share.name: max(0, used.get(share.name, 0) - guaranteed.get(share.name, 0)) for share in shares}
    to_lend = sum(borrowed.values())
    lent: dict[str, int] = {}
    for share in sorted(shares, key=lambda share: (share.priority, share.name)):
        idle = max(0, guaranteed.get(share.name, 0) - used.get(share.name, 0)) if share.lending else 0
        lent[share.name] = min(idle, to_lend)
        to_lend -= lent[share.name]
    return [
        TrackUse(share.name, guaranteed.get(share.name, 0), used.get(share.name, 0), borrowed[share.name], lent[share.name])
        for share in shares
    ]


def shares_of(policy_spec: Mapping[str, Any]) -> list[Share]:
    """The tracks of an AllocationPolicy's spec."""
    return [
        Share(str(t["name"]), int(t["share"]), int(t.get("priority", 0)), bool(t.get("lending", True)))
        for t in policy_spec.get("tracks") or []
    ]


CRITICALITY_ORDER = {"critical": 0, "standard": 1, "preemptible": 2}


@dataclass(frozen=True)
class Waiting:
    """Work that waits for GPUs."""

    key: tuple[str, str]
    track: str
    gpus: int
    criticality: str
    created: str
    """creationTimestamp (RFC 3339 sorts as time)."""


def admission_order(
    waiting: Sequence[Waiting], priorities: Mapping[str, int], used: Mapping[str, int], guaranteed: Mapping[str, int]
) -> list[Waiting]:
    """The order in which waiting work is served, as Kueue orders its queues: first the work whose track
    stays within its guarantee, then the highest track priority (the regional track when GPUs are
    scarce), then critical before standard before preemptible, then the oldest."""

    def borrows(item: Waiting) -> bool:
        return used.get(item.track, 0) + item.gpus > guaranteed.get(item.track, 0)

    return sorted(
        waiting,
        key=lambda item: (
            borrows(item),
            -priorities.get(item.track, 0),
            CRITICALITY_ORDER.get(item.criticality, 2),
            item.created,
            item.key,
        ),
    )
