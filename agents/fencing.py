"""Fencing: a node that lost its site's gateway stops its gigafab workloads by itself.

The operator moves a lost site's work to another site only after ``fenceAfter`` plus
a margin has passed since the site's last contact. For that to be safe, every node
of the lost site must have stopped its gigafab workloads by then. The agent does it:

- when it has had no live stream to a gateway for ``fence_after`` (counted from the
  last moment the stream was known alive, so the time gRPC keepalive takes to notice
  a dead connection is included), or
- at once, when its gateway tells it to (``Fence`` directive: the gateway itself lost
  etcd and cannot vouch for the site any more).

While fenced the node keeps its gigafab workloads stopped; the fence is lifted when a
gateway with contact acknowledges the agent again. By then the operator has removed
every copy with an old epoch, so what the kubelet starts again is only what should run.

Two runtimes do the stopping:

- ``CriRuntime`` (a real node): through the container runtime with ``crictl``: every
  ready pod sandbox labelled ``gigafab.nl/workload`` is stopped, and stopped again
  each time the agent checks while fenced (the kubelet, cut off from the apiserver
  too, would otherwise start it again).
- ``SimulatedRuntime`` (KWOK nodes have no containers): records when the node was
  fenced and lifted, as JSON lines, so tests and benchmarks can prove the order of
  events: the old copy stopped before the new one started.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

FENCE_AFTER_HEADER = "gigafab-fence-after"
"""Call metadata in which an agent says after how many seconds without contact it fences. The
gateway promises the operator its own ``fence_after`` (in its etcd key); an agent that would
wait longer could still run its work when the operator starts it elsewhere, so it is refused."""

WORKLOAD_LABEL = "gigafab.nl/workload"
"""The label of every pod of a GpuWorkload (the operator sets it; fencing stops what carries it)."""


class Runtime(Protocol):
    """What runs the node's workloads, as far as fencing is concerned."""

    def fence(self, reason: str) -> None:
        """Stop the node's gigafab workloads (called again while fenced: keep them stopped)."""

    def lift(self) -> None:
        """Contact is back: the kubelet may run what the apiserver says again."""


class SimulatedRuntime:
    """Fences of a KWOK node, recorded as JSON lines ``{"node", "event", "at", "reason"}``."""

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


Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)


class CriRuntime:
    """Fencing on a real node, through the container runtime's CLI (``crictl``)."""

    def __init__(self, crictl: str = "crictl", run: Run = _run) -> None:
        self.crictl, self.run = crictl, run
        self.stopped: list[str] = []

    def sandboxes(self) -> list[str]:
        """IDs of the ready pod sandboxes of gigafab workloads on this node."""
        listed = self.run([self.crictl, "pods", "--label", WORKLOAD_LABEL, "--state", "ready", "--quiet"])
        if listed.returncode != 0:
            raise RuntimeError(f"crictl pods failed: {listed.stderr.strip()}")
        return [line.strip() for line in listed.stdout.splitlines() if line.strip()]

    def fence(self, reason: str) -> None:
        for sandbox in self.sandboxes():
            stopped = self.run([self.crictl, "stopp", sandbox])
            if stopped.returncode != 0:
                raise RuntimeError(f"crictl stopp {sandbox} failed: {stopped.stderr.strip()}")
            self.stopped.append(sandbox)

    def lift(self) -> None:
        """Nothing to undo: the kubelet starts what the apiserver still wants."""


def keepalive_seconds(fence_after: float) -> float:
    """Keepalive interval (and timeout) of a fencing agent's stream: a quarter of ``fence_after``, at least 1 s."""
    return max(1.0, fence_after / 4)


class Fence:
    """When to fence: the agent tells it about contact; ``check`` fences when it is overdue."""

    def __init__(self, runtime: Runtime, fence_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime, self.fence_after, self.clock = runtime, fence_after, clock
        self.blind = 2 * keepalive_seconds(fence_after)
        """How long a dead stream can look alive: the keepalive interval plus its timeout."""
        self.lost_since: float | None = clock()
        """Since when there is no known contact (None: a stream is alive); a new agent has none yet."""
        self.fenced = False

    def connected(self) -> None:
        """A gateway with contact acknowledged us."""
        self.lost_since = None
        if self.fenced:
            self.fenced = False
            self.runtime.lift()

    def disconnected(self) -> None:
        """The stream broke: it may have been dead for ``blind`` seconds already."""
        if self.lost_since is None:
            self.lost_since = self.clock() - self.blind

    def ordered(self, reason: str) -> None:
        """The gateway says: fence now."""
        self.fenced = True
        self.runtime.fence(reason)

    def check(self) -> None:
        """Fence when contact has been lost for ``fence_after``; while fenced, keep the workloads stopped."""
        if self.fenced:
            self.runtime.fence("still fenced")
        elif self.lost_since is not None and self.clock() - self.lost_since >= self.fence_after:
            self.ordered(f"no gateway for {self.fence_after:g} s")
