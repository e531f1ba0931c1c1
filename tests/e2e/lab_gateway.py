"""The health plane of a lab site, for fake nodes that run no agent.

Tests add lab sites of fresh KWOK nodes, and the operator counts a node only once its site's
health plane has vouched for it. The plane runs gateways and agents only for its own sites, so a
``LabGateway`` writes into the plane's etcd what a site's gateway writes, with the gateway's own
code: ``agents.records.EtcdRecords`` holds the site's gateway key on a lease it keeps alive and
writes each node's record in a transaction guarded by that key, and ``agents.ledger.Ledger``
turns the reports given to ``report`` into transitions, exactly as a gateway's agents' reports.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import aetcd
from gigafab.agents.ledger import HEALTHY, GpuReport, Ledger
from gigafab.agents.records import EtcdRecords

from gigafab.local.plane import Plane

T = TypeVar("T")
RUNNING: dict[str, LabGateway] = {}
"""The lab gateways running now, by site."""


class LabGateway:
    """A site's gateway in etcd, driven by the test: ``report`` what its agents would."""

    def __init__(self, plane: Plane, site: str, *, fence_after: float = 4.0, ttl: int = 5) -> None:
        self.site, self.fence_after, self.ttl = site, fence_after, ttl
        self.port = plane.layout.ports.etcd_client
        self.ledger = Ledger(site)
        self.sequence = int(time.time() * 1e6)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"lab-gateway-{site}", daemon=True)
        self._client: aetcd.Client | None = None
        self._records: EtcdRecords | None = None

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    def start(self) -> LabGateway:
        self._thread.start()

        async def take_the_key() -> None:
            self._client = aetcd.Client(host="127.0.0.1", port=self.port)
            self._records = EtcdRecords(self._client, self.ledger, f"lab-{self.site}", ttl=self.ttl, fence_after=self.fence_after)
            await self._records.start()

        self._run(take_the_key())
        RUNNING[self.site] = self
        return self

    def report(self, node: str, gpus: Sequence[str], reason: str = "") -> None:
        """One report of ``node`` with these GPU healths (index order); written when it is a transition."""
        assert self._records is not None, "start it first"
        self.sequence += 1
        reports = [GpuReport(index, health, reason if health != HEALTHY else "") for index, health in enumerate(gpus)]
        transitions = self.ledger.observe(node, self.site, self.sequence, reports, time.monotonic())
        if transitions:
            assert self._run(self._records(transitions)), f"the lab gateway of {self.site} could not write {node}"

    def vouch(self, *nodes: str, gpus: int = 8) -> None:
        """Every GPU of ``nodes`` Healthy, as their agents' first reports say."""
        for node in nodes:
            self.report(node, [HEALTHY] * gpus)

    def stop(self) -> None:
        """Stop as a gateway stops cleanly: its key goes with its lease (the operator sees the site lost)."""
        RUNNING.pop(self.site, None)
        if self._records is not None:
            self._run(self._records.stop())
        if self._client is not None:
            self._run(self._client.close())
        self._records = self._client = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@contextmanager
def lab_gateway(plane: Plane, site: str, *nodes: str, gpus: int = 8, fence_after: float = 4.0) -> Iterator[LabGateway]:
    """A lab gateway for ``site`` that vouches for ``nodes`` (all GPUs Healthy) for the block."""
    gateway = LabGateway(plane, site, fence_after=fence_after).start()
    try:
        gateway.vouch(*nodes, gpus=gpus)
        yield gateway
    finally:
        gateway.stop()
