"""Health transitions into etcd, under the gateway's lease.

Keys (prefix ``/gigafab/health/v1/sites/<site>/``):

- ``gateway`` — who serves the site (JSON: ``identity``, lease ``ttl``, ``fenceAfter``),
  attached to a lease the gateway keeps alive; when the gateway dies or is cut off,
  the key goes with its lease, and the operator sees the site's health plane lost.
  The gateway's last contact is then at most ``ttl`` before the key went.
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

A gateway that cannot reach etcd keeps serving its agents. Transitions it could not
write are kept and written once it has its key again (a new lease, if the old one
expired meanwhile); and from ``fence_after - FENCE_NOTICE`` seconds after its last
contact it tells its agents to fence (``fence_reason``): the operator may move the
site's work once ``fence_after`` has passed, so by then nothing may run there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aetcd
from gigafab.agents.ledger import Ledger, Transition

PREFIX = "/gigafab/health/v1/sites"
NODES_PER_TRANSACTION = 100
FENCE_NOTICE = 1.5
"""Seconds before its fence deadline a gateway out of contact tells its agents: they hear
it with the answer to their next report (1 s apart) and stop their work at once."""
RETRY_OUT_OF_CONTACT = 0.25
"""Seconds between a gateway's attempts to refresh its lease while it has no contact with etcd."""
ETCD_CHANNEL = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
}
"""gRPC options for clients of the health etcd. gRPC's default reconnect backoff grows to two
minutes: after etcd was away for 30 s a gateway would try again only after its lease (5 s,
renewed in full when etcd restarts) ran out, and the operator would see every site lost.
Retrying at least every second keeps a restarted etcd no one's fault."""
log = logging.getLogger("gigafab.gateway")


class LeaseLost(RuntimeError):
    """This gateway no longer holds its site's gateway key."""


def site_prefix(site: str) -> str:
    return f"{PREFIX}/{site}/"


def node_key(site: str, node: str) -> bytes:
    return f"{site_prefix(site)}nodes/{node}".encode()


def gateway_key(site: str) -> bytes:
    return f"{site_prefix(site)}gateway".encode()


def node_document(ledger: Ledger, node: str, transitions: Sequence[Transition], at: float, clock: float) -> dict[str, Any]:
    """The node's record; ``transitions`` are the node's own (their reasons are written), ``at`` is the
    wall-clock time and ``clock`` the ledger's clock at that time."""
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

    def __init__(self, client: aetcd.Client, ledger: Ledger, identity: str, ttl: int = 5, fence_after: float = 4.0) -> None:
        self.client = client
        self.ledger = ledger
        self.identity = json.dumps({"identity": identity, "ttl": ttl, "fenceAfter": fence_after}).encode()
        self.ttl = ttl
        self.fence_after = fence_after
        self.contact = time.monotonic()
        """When etcd last confirmed this gateway's lease."""
        self.dirty: set[str] = set()
        """Nodes whose last transition could not be written (no contact)."""
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
        self.contact = time.monotonic()
        await self.restore()
        self._keeper = asyncio.create_task(self._keep_alive())

    def _held(self) -> Any:
        """The transaction compare: the site's gateway key still holds this gateway's identity."""
        return self.client.transactions.value(gateway_key(self.ledger.site)) == self.identity

    def vouched_until(self) -> float:
        """Until when (monotonic) this gateway vouches for its site: from then on its agents must fence."""
        return self.contact + self.fence_after - FENCE_NOTICE

    def fence_reason(self, now: float) -> str | None:
        """Why the site's agents must fence now, or None while this gateway has contact."""
        if now < self.vouched_until():
            return None
        return f"gateway of {self.ledger.site} has had no contact with etcd for {now - self.contact:.1f} s"

    async def restore(self) -> None:
        now = time.monotonic()
        for item in await self.client.get_prefix(f"{site_prefix(self.ledger.site)}nodes/".encode()):
            document = json.loads(item.value)
            gpus = {int(index): health for index, health in document["gpus"].items()}
            self.ledger.restore(document["node"], document["health"], gpus, now)

    async def _keep_alive(self) -> None:
        while True:
            # out of contact, try again soon: when etcd comes back (restarted, its leases renewed
            # for one TTL only), the lease must be refreshed before that TTL runs out
            in_contact = time.monotonic() - self.contact < self.ttl / 2
            await asyncio.sleep(self.ttl / 3 if in_contact else RETRY_OUT_OF_CONTACT)
            try:
                await asyncio.wait_for(self._refresh(), self.ttl / 3)
                if self.dirty:
                    await asyncio.wait_for(self._flush(), self.ttl)
            except (aetcd.ClientError, TimeoutError, LeaseLost) as failure:
                log.warning("gateway of %s: no contact with etcd: %r", self.ledger.site, failure)

    async def _refresh(self) -> None:
        """Keep the lease alive and check the gateway key is still ours; take it again if it went."""
        assert self.lease is not None
        reply = await self.lease.refresh()
        if reply is None or reply.TTL <= 0:  # expired while we were cut off (and the key with it)
            self.lease = await self.client.lease(self.ttl)
        key, transactions = gateway_key(self.ledger.site), self.client.transactions
        held, _ = await self.client.transaction(compare=[self._held()], success=[], failure=[])
        if not held:
            take = transactions.put(key, self.identity, lease=self.lease)
            taken, _ = await self.client.transaction(compare=[transactions.create(key) == 0], success=[take], failure=[])
            if not taken:
                raise LeaseLost(f"another gateway serves {self.ledger.site} now")
            log.warning("gateway of %s: took the gateway key again after losing it", self.ledger.site)
            self.dirty.update(self.ledger.nodes)  # what the operator saw was lost with us: say it all again
        self.contact = time.monotonic()

    async def _flush(self) -> None:
        nodes, self.dirty = self.dirty, set()
        try:
            await self._write_nodes(sorted(nodes), ())
        except BaseException:
            self.dirty.update(nodes)
            raise

    async def stop(self, *, revoke: bool = True) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if revoke and self.lease is not None:
            # say so first: the operator then counts contact until now, not until a lease's TTL earlier
            stopping = json.dumps({**json.loads(self.identity), "stopping": True}).encode()
            put = self.client.transactions.put(gateway_key(self.ledger.site), stopping, lease=self.lease)
            with contextlib.suppress(aetcd.ClientError, TimeoutError):
                await self.client.transaction(compare=[self._held()], success=[put], failure=[])
            await self.lease.revoke()

    async def __call__(self, transitions: Sequence[Transition]) -> bool:
        """Write the nodes these transitions touched; True once they are in etcd, False when they
        could not be written now (they are written when contact is back)."""
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        batch = self._batch
        self._waiting.extend(transitions)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches())
        try:
            await asyncio.shield(batch)
        except (aetcd.ClientError, TimeoutError, LeaseLost) as failure:
            self.dirty.update(t.node for t in transitions)
            log.warning("gateway of %s: transitions kept for later: %r", self.ledger.site, failure)
            return False
        return True

    async def _write_batches(self) -> None:
        await asyncio.sleep(0)  # let the reports that arrived together join this batch
        while self._batch is not None:
            batch, transitions = self._batch, self._waiting
            self._batch, self._waiting = None, []
            try:
                await asyncio.wait_for(self._write(transitions), self.ttl)
            except Exception as failure:  # handed to every writer waiting for this batch
                batch.set_exception(failure)
            else:
                batch.set_result(None)

    async def _write(self, transitions: Sequence[Transition]) -> None:
        await self._write_nodes(sorted({t.node for t in transitions}), transitions)

    async def _write_nodes(self, nodes: Sequence[str], transitions: Sequence[Transition]) -> None:
        site, at, clock = self.ledger.site, time.time(), time.monotonic()
        held = self._held()
        by_node: dict[str, list[Transition]] = {}
        for transition in transitions:  # once: a storm's batch holds thousands of nodes' transitions
            by_node.setdefault(transition.node, []).append(transition)
        for first in range(0, len(nodes), NODES_PER_TRANSACTION):
            puts = [
                self.client.transactions.put(
                    node_key(site, node),
                    json.dumps(node_document(self.ledger, node, by_node.get(node, ()), at, clock)).encode(),
                )
                for node in nodes[first : first + NODES_PER_TRANSACTION]
            ]
            succeeded, _ = await self.client.transaction(compare=[held], success=puts, failure=[])
            if not succeeded:
                raise LeaseLost(f"gateway {self.identity.decode()} no longer holds {gateway_key(site).decode()}")
            self.writes += 1
