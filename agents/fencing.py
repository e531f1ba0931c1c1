"""Fencing: a node that lost its site's gateway stops its gigafab workloads by itself.

The operator moves a lost site's work to another site only after ``fenceAfter`` plus
a margin (``OPERATOR_MARGIN``) has passed since the site's last contact. For that to
be safe, every node of the lost site must have stopped its gigafab workloads by then.
The agent does it:

- when it has had no live stream to a gateway for ``fence_after`` (counted from the
  last moment the stream was known alive, so the time gRPC keepalive takes to notice
  a dead connection is included), or
- at once, when its gateway tells it to (``Fence`` directive: the gateway itself lost
  etcd and cannot vouch for the site any more).

While fenced the node keeps its gigafab workloads stopped; the fence is lifted when a
gateway with contact acknowledges the agent again. By then the operator has removed
every copy with an old epoch, so what the kubelet starts again is only what should run.

A fence outlives the agent: it is kept on the host (``record.FenceRecord``), so an agent
restarted while out of contact starts fenced, or counts its lost contact from the last
moment it knew it had some. And the agent pets a watchdog (``watchdog``) that stops the
node when the agent cannot: ``Fence.step`` says for how long each pet may hold, so
that a dead, hung or failing agent's node stops before the operator moves its work
(docs/health-plane.md has the arithmetic).

``Fence`` only decides, from its clock and what it was told; ``keeper.FenceKeeper``
applies its steps (runtime, watchdog, record). Two runtimes do the stopping:

- ``cri.CriRuntime`` (a real node): through the container runtime with ``crictl``.
- ``SimulatedRuntime`` (KWOK nodes have no containers): records when the node was
  fenced and lifted, as JSON lines, so tests and benchmarks can prove the order of
  events: the old copy stopped before the new one started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

FENCE_AFTER_HEADER = "gigafab-fence-after"
"""Call metadata in which an agent says after how many seconds without contact it fences. The
gateway promises the operator its own ``fence_after`` (in its etcd key); an agent that would
wait longer could still run its work when the operator starts it elsewhere, so it is refused."""

WORKLOAD_LABEL = "gigafab.nl/workload"
"""The label of every pod of a GpuWorkload (the operator sets it; fencing stops what carries it)."""

OPERATOR_MARGIN = 2.0
"""Seconds the operator waits beyond ``fenceAfter`` (``operator.site_contact.FENCE_MARGIN``; a unit
test holds the two equal). The agent's promises below are made to fit inside it."""

STOP_WITHIN = 1.0
"""Seconds a node's work may take to stop once its fence fell due. The watchdog is then petted for
no longer than that, so a node whose runtime cannot stop its work is stopped by its watchdog within
``STOP_WITHIN`` plus one ``TICK`` of the fence falling due: 1.25 s, inside ``OPERATOR_MARGIN`` with
0.75 s left for clocks. Also the longest a pet holds while fenced: an agent that dies while fenced
must not leave the kubelet time to start the stopped work again. 1 s is the shortest timeout a
Linux watchdog takes."""

TICK = 0.25
"""How often the agent checks its fence, pets its watchdog and keeps a fenced node's work stopped."""


def keepalive_seconds(fence_after: float) -> float:
    """Keepalive interval (and timeout) of a fencing agent's stream: a quarter of ``fence_after``, at least 1 s."""
    return max(1.0, fence_after / 4)


def watchdog_seconds(fence_after: float) -> int:
    """The watchdog timeout of a node in contact: half of ``fence_after`` in whole seconds, at least 1.

    A connected agent that dies has its node stopped this long after its last pet, which is at
    most two report intervals and a tick after the last report its gateway took (one report may
    be lost with the agent); the operator moves the node's work ``fence_after`` plus
    ``OPERATOR_MARGIN`` after that report. Half leaves the other half, plus the margin, for the
    intervals and clocks (``check_watchdog_timeout``); a longer timeout only makes false stops of
    a slow agent rarer."""
    return max(1, int(fence_after // 2))


def check_watchdog_timeout(timeout: float, fence_after: float, interval: float) -> str | None:
    """Why ``timeout`` cannot keep the promise to the operator for an agent reporting every ``interval``, or None."""
    if timeout < STOP_WITHIN:
        return f"a watchdog timeout under {STOP_WITHIN:g} s is below what a Linux watchdog takes"
    latest = timeout + 2 * interval + TICK
    if latest >= fence_after + OPERATOR_MARGIN:
        return (
            f"a dead agent's node would stop up to {latest:g} s after its last report (watchdog timeout {timeout:g} s "
            f"+ 2 report intervals of {interval:g} s + {TICK:g} s), not before the operator moves its work "
            f"({fence_after:g} s + {OPERATOR_MARGIN:g} s): shorten --watchdog-timeout or --interval"
        )
    return None


class Runtime(Protocol):
    """What runs the node's workloads, as far as fencing is concerned."""

    blocking: bool
    """Its calls may block (a subprocess): the agent makes them in a worker thread."""

    def fence(self, reason: str) -> None:
        """Stop the node's gigafab workloads (called again while fenced: keep them stopped); raise if it cannot."""

    def lift(self) -> None:
        """Contact is back: the kubelet may run what the apiserver says again."""


class SimulatedRuntime:
    """Fences of a KWOK node, recorded as JSON lines ``{"node", "event", "at", "reason"}``."""

    blocking = False

    def __init__(self, node: str, log: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.node, self.log, self.clock = node, log, clock
        self.fenced_at: float | None = None
        self.events: list[dict[str, object]] = []

    def fence(self, reason: str) -> None:
        if self.fenced_at is None:
            self.fenced_at = self.clock()
            self._record("fenced", reason)

    def lift(self) -> None:
        if self.fenced_at is not None:
            self.fenced_at = None
            self._record("lifted", "")

    def _record(self, event: str, reason: str) -> None:
        entry: dict[str, object] = {"node": self.node, "event": event, "at": self.clock(), "reason": reason}
        self.events.append(entry)
        if self.log is not None:
            with self.log.open("a") as out:  # one short line per write: appends do not interleave
                out.write(json.dumps(entry) + "\n")


@dataclass(frozen=True)
class Start:
    """How an agent starts, from its node's record (``record.start_of``)."""

    fenced: bool = False
    reason: str = ""
    lost_for: float = 0.0
    """Seconds the node had already been without contact when the agent started."""


@dataclass(frozen=True)
class Step:
    """What the agent does now."""

    stop: str | None
    """Stop the node's gigafab work, for this reason (each step while fenced: keep it stopped)."""
    lift: bool
    """Contact came back while fenced: let the kubelet run what the apiserver says."""
    pet: float | None
    """Pet the watchdog so that it stops the node unless petted again within this many seconds;
    None: withhold the pet (the work may be running when it must not: let the watchdog stop the node)."""


class Fence:
    """When to fence, and for how long a pet of the watchdog may hold. The agent tells it about contact."""

    def __init__(
        self,
        fence_after: float,
        clock: Callable[[], float] = time.monotonic,
        watchdog_timeout: float | None = None,
        start: Start = Start(),
    ) -> None:
        self.fence_after, self.clock = fence_after, clock
        self.timeout = watchdog_seconds(fence_after) if watchdog_timeout is None else watchdog_timeout
        self.blind = 2 * keepalive_seconds(fence_after)
        """How long a dead stream can look alive: the keepalive interval plus its timeout."""
        self.lost_since: float | None = clock() - start.lost_for
        """Since when there is no known contact (None: a stream is alive); a new agent has none yet."""
        self.fenced = False
        self.reason = ""
        self.due_at: float | None = None
        """When the current fence was first stepped (the stop fell due); None until then."""
        self.kept: bool | None = None
        """The last stop's outcome since the fence fell due: True stopped, False failed, None none yet."""
        self.lift_due = False
        if start.fenced:
            self._fence(start.reason)

    @property
    def in_contact(self) -> bool:
        return self.lost_since is None and not self.fenced

    def _fence(self, reason: str) -> None:
        if not self.fenced:
            self.fenced, self.reason, self.due_at, self.kept, self.lift_due = True, reason, None, None, False

    def connected(self) -> None:
        """A gateway with contact acknowledged us."""
        self.lost_since = None
        if self.fenced:
            self.fenced, self.due_at, self.kept, self.lift_due = False, None, None, True

    def disconnected(self) -> None:
        """The stream broke: it may have been dead for ``blind`` seconds already."""
        if self.lost_since is None:
            self.lost_since = self.clock() - self.blind

    def ordered(self, reason: str) -> None:
        """The gateway says: fence now."""
        self._fence(reason)

    def reset(self, reason: str) -> None:
        """The watchdog stopped the node: it is back, fenced, and what the kubelet restarted must stop again
        (a fence not stepped yet, such as the one an agent starts with, already will)."""
        if self.due_at is not None:
            self.fenced = False
        self._fence(reason)

    def stopped(self, ok: bool) -> None:
        """The outcome of the stop a step asked for."""
        if self.fenced:
            self.kept = ok

    def step(self) -> Step:
        """What to do now: fence when contact has been lost for ``fence_after``; while fenced keep the work stopped."""
        now = self.clock()
        if not self.fenced and self.lost_since is not None and now - self.lost_since >= self.fence_after:
            self._fence(f"no gateway for {self.fence_after:g} s")
        lift, self.lift_due = self.lift_due, False
        if self.fenced and self.due_at is None:
            self.due_at = now
        return Step(self.reason if self.fenced else None, lift, self._pet(now))

    def _pet(self, now: float) -> float | None:
        if self.fenced:
            if self.kept is None:
                assert self.due_at is not None
                left = self.due_at + STOP_WITHIN - now
                return left if left > 0 else None
            return STOP_WITHIN if self.kept else None
        if self.lost_since is None:
            return self.timeout
        left = self.lost_since + self.fence_after + STOP_WITHIN - now
        return min(self.timeout, left) if left > 0 else None
