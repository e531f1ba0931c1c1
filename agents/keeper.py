"""The agent's fence loop: it applies ``fencing.Fence``'s steps to the runtime, the watchdog and the record.

Every ``fencing.TICK`` (and at once when contact comes or goes, or a gateway orders a
fence) the keeper takes a step and applies it: it keeps the node's record on the host,
pets the watchdog for as long as the step allows (or withholds the pet), lifts, and
stops the node's work when the fence says so. A runtime that blocks (crictl) is called
in a worker thread, so the agent's stream goes on meanwhile; the record is written in one
too: a new fence before the work is stopped, the rest beside the loop, so that a slow
disk does not hold up the pets.

Nothing that fails here ends the loop: each failure is logged, counted by stage
(``agent_metrics``), and the next tick tries again. A stop that fails leaves the node
fenced and withholds the watchdog's pet, so the watchdog stops the node unless a retry
succeeds first. The loop pets only while it runs: an agent that dies or hangs stops
petting, and its node stops when the last pet runs out.

On a clean stop (SIGTERM) the keeper disarms the watchdog only when the node is in
contact and not fenced; otherwise it leaves it armed, and the node stops unless the
next agent takes it over in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gigafab.agents.agent_metrics import AgentMetrics
from gigafab.agents.fencing import TICK, Fence, Runtime
from gigafab.agents.record import CONTACT_EVERY, FenceRecord, save
from gigafab.agents.watchdog import NoWatchdog, Watchdog

log = logging.getLogger("gigafab.agent.fence")


class FenceKeeper:
    """Keeps one node's fence."""

    def __init__(
        self,
        node: str,
        fence: Fence,
        runtime: Runtime,
        watchdog: Watchdog | None = None,
        record: Path | None = None,
        contact_at: float | None = None,
        metrics: AgentMetrics | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node, self.fence, self.runtime = node, fence, runtime
        self.watchdog = watchdog or NoWatchdog()
        self.record, self.wall = record, wall
        self.contact_at = contact_at
        """The last contact the record holds (wall clock): the loaded record's until contact comes back."""
        self.metrics = metrics or AgentMetrics()
        self.wake = asyncio.Event()
        self.saved: FenceRecord | None = None
        self.saving: asyncio.Task[None] | None = None
        self.writing = threading.Lock()
        self.withheld = False
        self.on_reset: Callable[[], None] = lambda: None
        """Told when the watchdog stopped the node (the agent then opens a new stream)."""
        self.metrics.fenced[node] = fence.fenced
        self.metrics.watchdog[node] = 0.0

    @property
    def fence_after(self) -> float:
        return self.fence.fence_after

    def connected(self) -> None:
        was = self.fence.in_contact
        self.fence.connected()
        if not was:
            self.wake.set()

    def disconnected(self) -> None:
        self.fence.disconnected()
        self.wake.set()

    def ordered(self, reason: str) -> None:
        self.fence.ordered(reason)
        self.wake.set()

    async def run(self) -> None:
        """Tick until cancelled; then close the watchdog as the fence allows."""
        try:
            while True:
                await self._guarded("loop", self.tick)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), TICK)
                self.wake.clear()
        finally:
            self.close()

    async def tick(self) -> None:
        """One step, applied: each stage on its own, so that one failing does not skip the others."""
        try:
            if self.watchdog.reset():
                self.fence.reset("the watchdog stopped the node")
                self.on_reset()
        except Exception as failure:  # whatever fails, the loop must go on
            self._failed("watchdog", failure)
        step = self.fence.step()
        self.metrics.fenced[self.node] = self.fence.fenced
        await self._guarded("watchdog", lambda: self._pet(step.pet))
        await self._guarded("record", self._keep_record)
        if step.lift:
            await self._guarded("lift", self._call(self.runtime.lift))
        if step.stop is not None:
            reason = step.stop
            self.fence.stopped(await self._guarded("stop", self._call(lambda: self.runtime.fence(reason))))

    async def _guarded(self, stage: str, action: Callable[[], object]) -> bool:
        """Run ``action`` (awaiting what it returns, if anything); False when it failed, logged and counted."""
        try:
            result = action()
            if asyncio.iscoroutine(result):
                await result
        except Exception as failure:  # whatever fails, the loop must go on
            self._failed(stage, failure)
            return False
        return True

    def _failed(self, stage: str, failure: Exception) -> None:
        self.metrics.failed(self.node, stage)
        log.error("agent %s: fence %s failed (tried again at the next tick): %s", self.node, stage, failure)

    def _call(self, action: Callable[[], None]) -> Callable[[], object]:
        if self.runtime.blocking:
            return lambda: asyncio.to_thread(action)
        return action

    def _pet(self, within: float | None) -> None:
        petted = within is not None and self.watchdog.pet(within)
        self.metrics.watchdog[self.node] = within if petted and within is not None else 0.0
        if within is None and not self.withheld:
            log.warning("agent %s: watchdog pet withheld: the node's work may run while fenced", self.node)
        self.withheld = within is None

    def _wanted(self) -> FenceRecord:
        now = self.wall()
        if self.fence.in_contact and (self.contact_at is None or now - self.contact_at >= CONTACT_EVERY):
            self.contact_at = now
        return FenceRecord(self.node, self.fence.fenced, self.fence.reason if self.fence.fenced else "", self.contact_at)

    async def _keep_record(self) -> None:
        """Save the record when it changed, in a worker thread. A new fence is on disk before the work is stopped,
        so that it outlives a crash right after; the rest (a lift, the contact every second) is saved beside the
        loop, so that an fsync that takes long on a busy disk does not hold up the pets."""
        if self.record is None:
            return
        wanted = self._wanted()
        if wanted == self.saved:
            return
        if wanted.fenced and not (self.saved is not None and self.saved.fenced):
            await asyncio.to_thread(self._write, self.record, wanted)
            self.saved = wanted
        elif self.saving is None or self.saving.done():  # one at a time: the next tick saves what is newest
            self.saving = asyncio.create_task(self._save(self.record, wanted))

    async def _save(self, path: Path, record: FenceRecord) -> None:
        if await self._guarded("record", lambda: asyncio.to_thread(self._write, path, record)):
            self.saved = record

    def _write(self, path: Path, record: FenceRecord) -> None:
        with self.writing:  # one write at a time, so the last one written is the last one asked for
            save(path, record)

    def close(self) -> None:
        """A clean stop: disarm only a node in contact; keep its record."""
        if self.saving is not None:
            self.saving.cancel()  # a write its thread began ends first (``writing``): this one is the last
        disarm = self.fence.in_contact
        try:
            if self.record is not None:
                self._write(self.record, self._wanted())
        except OSError as failure:
            log.error("agent %s: cannot keep the fence record on stopping: %s", self.node, failure)
        try:
            self.watchdog.close(disarm=disarm)
        except OSError as failure:
            log.error("agent %s: cannot close the watchdog (it stays armed): %s", self.node, failure)
            return
        log.info("agent %s: watchdog %s", self.node, "disarmed" if disarm else "left armed: the node is out of contact")
