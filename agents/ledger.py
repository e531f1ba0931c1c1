"""The gateway's memory of its site: the latest state of every node, and transitions.

A pure state machine with the clock passed in. ``observe`` takes a report and
returns the transitions it causes (node and GPU health changes only); ``sweep``
turns nodes that stayed quiet for ``silent_after`` seconds into Silent. The gateway
writes exactly these transitions to etcd, so a steady stream of healthy reports
writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

HEALTHY, DEGRADED, FAILED, SILENT = "Healthy", "Degraded", "Failed", "Silent"
_ORDER = {HEALTHY: 0, DEGRADED: 1, FAILED: 2}


class Refused(ValueError):
    """A report the gateway will not take; ``reason`` names why (for metrics and status)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class GpuReport:
    index: int
    health: str
    reason: str = ""


@dataclass(frozen=True)
class Transition:
    """A change of health: ``gpu`` is None for the node itself."""

    node: str
    gpu: int | None
    before: str | None
    after: str
    reason: str


@dataclass
class NodeRecord:
    sequence: int
    seen: float
    health: str
    gpus: dict[int, str] = field(default_factory=dict)


def node_health(gpus: Sequence[GpuReport]) -> tuple[str, str]:
    """A node is as healthy as its worst GPU."""
    worst = max(gpus, key=lambda gpu: _ORDER.get(gpu.health, 0), default=None)
    if worst is None or worst.health == HEALTHY:
        return HEALTHY, "all GPUs healthy"
    return worst.health, f"GPU {worst.index}: {worst.reason or worst.health}"


class Ledger:
    """Latest state per node of one site."""

    def __init__(self, site: str, silent_after: float = 3.0) -> None:
        self.site = site
        self.silent_after = silent_after
        self.nodes: dict[str, NodeRecord] = {}

    def restore(self, node: str, health: str, gpus: dict[int, str], now: float) -> None:
        """Take a node's last recorded state (from etcd after a restart) without a transition."""
        self.nodes[node] = NodeRecord(sequence=-1, seen=now, health=health, gpus=dict(gpus))

    def observe(self, node: str, site: str, sequence: int, gpus: Sequence[GpuReport], now: float) -> list[Transition]:
        if site != self.site:
            raise Refused("wrong_site", f"node {node} reports for site {site}, this gateway serves {self.site}")
        record = self.nodes.get(node)
        if record is not None and sequence <= record.sequence:
            raise Refused("replayed_sequence", f"sequence {sequence} of {node} is not after {record.sequence}")
        transitions: list[Transition] = []
        before = record.gpus if record else {}
        for gpu in gpus:
            if before.get(gpu.index) != gpu.health:
                transitions.append(Transition(node, gpu.index, before.get(gpu.index), gpu.health, gpu.reason))
        health, reason = node_health(gpus)
        if record is None or record.health != health:
            transitions.append(Transition(node, None, record.health if record else None, health, reason))
        self.nodes[node] = NodeRecord(sequence, now, health, {gpu.index: gpu.health for gpu in gpus})
        return transitions

    def sweep(self, now: float) -> list[Transition]:
        """Nodes heard from longer than ``silent_after`` ago become Silent (once)."""
        transitions = []
        for name, record in self.nodes.items():
            if record.health != SILENT and now - record.seen > self.silent_after:
                transitions.append(Transition(name, None, record.health, SILENT, f"no report for {self.silent_after:g}s"))
                record.health = SILENT
        return transitions
