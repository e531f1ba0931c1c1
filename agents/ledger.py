"""The gateway's memory of its site: the latest state of every node, and transitions.

A pure state machine with the clock passed in. ``observe`` takes a report and
returns the transitions it causes (node and GPU health changes only); ``sweep``
turns nodes that stayed quiet for ``silent_after`` seconds (plus however far the
gateway itself is behind with reading reports) into Silent. The gateway
writes exactly these transitions to etcd, so a steady stream of healthy reports
writes nothing.

Nearly every report repeats the last one, so ``heard`` takes a report's
``signature`` (whatever the caller derives from it cheaply: the gateway uses the
tuple of its GPUs' health codes) and, when it equals the last one, only moves the
node's sequence and clock: no objects are built on that path. Nodes that still talk
are kept in order of their last report, so a sweep looks only at the oldest ones.

``Lag`` measures how far behind the gateway is: how late its own timer runs, and how long
the reports it reads took to reach it (``Delays``). Under
overload (a reconnect storm) reports wait in the event loop's queue; without the
allowance the gateway would declare Silent the nodes whose reports it has not read
yet, and each such false Silent costs a transition, an etcd write and an
acknowledgement when the node's next report is read: more work for a gateway that is
already behind.

A node whose stream ended (its agent closed the connection: it restarts, or its
network broke and it reconnects) is kept apart until it reports again. While the
gateway itself still has connections to take (``sweep``'s ``reconnecting``: how long it
has had new connections whose stream it has not started, see ``arrivals.Arrivals``), such a
node is allowed that much longer too: its new connection may be among those waiting.
A node whose stream stays open but falls quiet (a partition, a dead node) gets no such
allowance.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

HEALTHY, DEGRADED, FAILED, SILENT = "Healthy", "Degraded", "Failed", "Silent"
_ORDER = {HEALTHY: 0, DEGRADED: 1, FAILED: 2}
SEQUENCE_AHEAD_ALLOWED_US = 300 * 1_000_000
"""How far (microseconds) a report's sequence may be ahead of the gateway's wall clock.

An agent numbers its reports by its own wall clock in microseconds, and by one more per report when
reports come faster than that (``agent.Agent.report``), so an honest sequence is ahead of the gateway's
clock by no more than the node's clock is ahead of the gateway's. Five minutes is the clock skew Kerberos
tolerates by default (MIT krb5's ``clockskew``, 300 s): far more than clocks kept by NTP drift, so a node
is refused for it only when its clock is plainly wrong (the refusal says so).

It also bounds what a stolen node certificate can do with sequences alone. Without it a single report with
sequence 2^64-1 made every later report of that node "replayed", forever, even after the thief was gone.
With it the node's last sequence can be pushed at most this far ahead of the present, and the node's own
agent, whose sequence follows its clock, is taken again once that moment has passed."""


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
    signature: object = None
    """What ``heard`` compares: set by ``observe``, None after a restore (never equal)."""


def check_sequence(node: str, sequence: int, wall_us: int) -> None:
    """Refuse a ``sequence`` further ahead of the gateway's wall clock (``wall_us``, microseconds since 1970)
    than any agent's can be (``SEQUENCE_AHEAD_ALLOWED_US``). Checked before the ledger, so a refused
    sequence never becomes the node's last."""
    ahead = sequence - wall_us
    if ahead > SEQUENCE_AHEAD_ALLOWED_US:
        raise Refused(
            "implausible_sequence",
            f"sequence {sequence} of {node} is {ahead / 1e6:.0f} s ahead of this gateway's clock (at most "
            f"{SEQUENCE_AHEAD_ALLOWED_US / 1e6:.0f} s allowed): agents number reports by their clock, is the node's clock right?",
        )


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
        self._talking: OrderedDict[str, NodeRecord] = OrderedDict()
        """Nodes not Silent with a stream open, oldest report first."""
        self._closed: dict[str, NodeRecord] = {}
        """Nodes not Silent whose stream ended, and which have not reported since."""

    def restore(self, node: str, health: str, gpus: dict[int, str], now: float) -> None:
        """Take a node's last recorded state (from etcd after a restart) without a transition."""
        self._keep(node, NodeRecord(sequence=-1, seen=now, health=health, gpus=dict(gpus)))
        if health == SILENT:
            del self._talking[node]

    def heard(self, node: str, site: str, sequence: int, signature: object, now: float) -> bool:
        """Take a report that changes nothing: True when its ``signature`` is that of the node's
        last observed report and the node is not Silent; anything else needs ``observe``."""
        record = self.nodes.get(node)
        if record is None or record.signature is None or record.signature != signature or record.health == SILENT:
            return False
        if site != self.site:
            return False
        if sequence <= record.sequence:
            raise Refused("replayed_sequence", f"sequence {sequence} of {node} is not after {record.sequence}")
        record.sequence, record.seen = sequence, now
        try:
            self._talking.move_to_end(node)
        except KeyError:  # its first report on a new stream
            self._talking[node] = self._closed.pop(node)
        return True

    def _keep(self, node: str, record: NodeRecord) -> None:
        self.nodes[node] = record
        self._closed.pop(node, None)
        self._talking[node] = record
        self._talking.move_to_end(node)

    def waiting(self, node: str, now: float) -> None:
        """A report of ``node`` arrived at ``now`` and waits behind the record of its last one (its
        stream takes reports in order): the node is not silent. Nothing else changes; a Silent node stays
        Silent until a report of it is taken."""
        record = self._talking.get(node)
        if record is not None:
            record.seen = now
            self._talking.move_to_end(node)

    def closed(self, node: str) -> None:
        """The stream ``node`` reported on ended: until it reports again it may be reconnecting."""
        record = self._talking.pop(node, None)
        if record is not None:
            self._closed[node] = record

    def observe(
        self, node: str, site: str, sequence: int, gpus: Sequence[GpuReport], now: float, signature: object = None
    ) -> list[Transition]:
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
        self._keep(node, NodeRecord(sequence, now, health, {gpu.index: gpu.health for gpu in gpus}, signature))
        return transitions

    def sweep(self, now: float, behind: float = 0.0, reconnecting: float = 0.0) -> list[Transition]:
        """Nodes heard from longer than ``silent_after`` ago become Silent (once).

        ``behind``: seconds the gateway itself is behind with reading reports (its event loop's lag,
        see ``Lag``); a node is not blamed for them: its reports may be waiting to be read.
        ``reconnecting``: seconds the gateway has had new connections waiting for it; a node whose stream
        ended is not blamed for them either: its new connection may be one of them."""
        transitions = []
        while self._talking:
            name, record = next(iter(self._talking.items()))
            if now - record.seen <= self.silent_after + behind:
                break
            transitions.append(self._silence(name, record))
            del self._talking[name]
        allowed = self.silent_after + behind + reconnecting
        for name in [name for name, record in self._closed.items() if now - record.seen > allowed]:
            transitions.append(self._silence(name, self._closed.pop(name)))
        return transitions

    def _silence(self, name: str, record: NodeRecord) -> Transition:
        before, record.health = record.health, SILENT
        return Transition(name, None, before, SILENT, f"no report for {self.silent_after:g}s")


class Lag:
    """How far behind a periodic task runs: the most it was late recently, forgetting a second per second."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._at: float | None = None

    def late(self, by: float, now: float) -> float:
        """The task ran ``by`` seconds after it was due, at ``now``; returns the lag to allow for."""
        forgotten = 0.0 if self._at is None else now - self._at
        self.seconds, self._at = max(by, self.seconds - forgotten, 0.0), now
        return self.seconds


class Delays:
    """How long the reports the gateway reads now took from their agent to its ledger: the median of
    each node's latest since the last look. When reports are held up on their way in (a busy edge, a
    backlog in a socket, an edge's garbage collector stalling the goroutines that forward them), the
    gateway's own timer is on time and only this shows it. Agents' clocks are trusted only as a crowd:
    one value per node, and the lower median, so a minority of nodes (or one node reporting fast) with
    a wrong clock cannot hold back the Silent of the others."""

    def __init__(self) -> None:
        self._latest: dict[str, float] = {}

    def note(self, node: str, seconds: float) -> None:
        """A report of ``node`` reached the ledger ``seconds`` after its agent sent it."""
        self._latest[node] = seconds

    def take(self) -> float:
        """The lower median of the nodes' delays noted since the last ``take`` (0 without any), and forget them."""
        if not self._latest:
            return 0.0
        latest, self._latest = self._latest, {}
        return max(statistics.median_low(latest.values()), 0.0)
