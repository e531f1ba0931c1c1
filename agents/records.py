"""Health transitions into etcd, under the gateway's lease.

Keys (prefix ``/gigafab/health/v1/sites/<site>/``):

- ``gateway`` — who serves the site, attached to a lease the gateway keeps alive;
  when the gateway dies the key goes with its lease, and the operator sees the site's
  health plane lost.
- ``nodes/<node>`` — the node's current health and that of its GPUs, as JSON,
  written only when something changed (a transition). Not on the lease: a restarted
  gateway rebuilds its ledger from these keys and writes no false transition.

Every write is a transaction that also checks that the ``gateway`` key still holds
this gateway's identity, so a gateway that lost its lease (a partition) can never
overwrite what a newer one wrote.

Writes are group-committed: transitions that arrive while a write is under way go
together into the next one (at most ``NODES_PER_TRANSACTION`` nodes per transaction,
under etcd's default limit of 128 operations). A quiet gateway writes at once; one
whose whole site reconnects or falls silent writes a few large transactions instead
of ten thousand small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

import aetcd
from gigafab.agents.ledger import Ledger, Transition

PREFIX = "/gigafab/health/v1/sites"
NODES_PER_TRANSACTION = 100


class LeaseLost(RuntimeError):
    """This gateway no longer holds its site's gateway key."""


def site_prefix(site: str) -> str:
    return f"{PREFIX}/{site}/"


def node_key(site: str, node: str) -> bytes:
    return f"{site_prefix(site)}nodes/{node}".encode()


def gateway_key(site: str) -> bytes:
    return f"{site_prefix(site)}gateway".encode()


def node_document(ledger: Ledger, node: str, transitions: Sequence[Transition], at: float, clock: float) -> dict[str, Any]:
    """The node's record; ``at`` is the wall-clock time and ``clock`` the ledger's clock at that time."""
    record = ledger.nodes[node]
    heard = record.sequence >= 0  # a node restored from etcd has not reported yet
    reasons = {t.gpu: t.reason for t in transitions if t.node == node}
    return {
        "node": node,
        "site": ledger.site,
        "health": record.health,
        "reason": reasons.get(None, ""),
        "gpus": {str(index): health for index, health in sorted(record.gpus.items())},
        "gpuReasons": {str(index): reason for index, reason in reasons.items() if index is not None and reason},
        "changedAt": at,
        "lastReportAt": at - (clock - record.seen) if heard else None,
    }


class EtcdRecords:
    """The gateway's writer: holds the lease and writes transitions in transactions."""

    def __init__(self, client: aetcd.Client, ledger: Ledger, identity: str, ttl: int = 5) -> None:
        self.client = client
        self.ledger = ledger
        self.identity = identity.encode()
        self.ttl = ttl
        self.lease: aetcd.Lease | None = None
        self._keeper: asyncio.Task[None] | None = None
        self.writes = 0
        self._waiting: list[Transition] = []
        self._batch: asyncio.Future[None] | None = None
        """Settled when the transitions in ``_waiting`` are written."""
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the lease and the gateway key, restore the ledger, keep the lease alive."""
        self.lease = await self.client.lease(self.ttl)
        await self.client.put(gateway_key(self.ledger.site), self.identity, lease=self.lease)
        await self.restore()
        self._keeper = asyncio.create_task(self._keep_alive())

    async def restore(self) -> None:
        now = time.monotonic()
        for item in await self.client.get_prefix(f"{site_prefix(self.ledger.site)}nodes/".encode()):
            document = json.loads(item.value)
            gpus = {int(index): health for index, health in document["gpus"].items()}
            self.ledger.restore(document["node"], document["health"], gpus, now)

    async def _keep_alive(self) -> None:
        assert self.lease is not None
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.lease.refresh()

    async def stop(self, *, revoke: bool = True) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if revoke and self.lease is not None:
            await self.lease.revoke()

    async def __call__(self, transitions: Sequence[Transition]) -> None:
        """Write the nodes these transitions touched; returns once they are in etcd."""
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        batch = self._batch
        self._waiting.extend(transitions)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches())
        await asyncio.shield(batch)

    async def _write_batches(self) -> None:
        await asyncio.sleep(0)  # let the reports that arrived together join this batch
        while self._batch is not None:
            batch, transitions = self._batch, self._waiting
            self._batch, self._waiting = None, []
            try:
                await self._write(transitions)
            except Exception as failure:  # handed to every writer waiting for this batch
                batch.set_exception(failure)
            else:
                batch.set_result(None)

    async def _write(self, transitions: Sequence[Transition]) -> None:
        site, at, clock = self.ledger.site, time.time(), time.monotonic()
        nodes = sorted({t.node for t in transitions})
        held = self.client.transactions.value(gateway_key(site)) == self.identity
        for first in range(0, len(nodes), NODES_PER_TRANSACTION):
            puts = [
                self.client.transactions.put(
                    node_key(site, node), json.dumps(node_document(self.ledger, node, transitions, at, clock)).encode()
                )
                for node in nodes[first : first + NODES_PER_TRANSACTION]
            ]
            succeeded, _ = await self.client.transaction(compare=[held], success=puts, failure=[])
            if not succeeded:
                raise LeaseLost(f"gateway {self.identity.decode()} no longer holds {gateway_key(site).decode()}")
            self.writes += 1
