"""The operator's side of the health plane: etcd transitions → Node taints and conditions.

On startup it reads every node's health under ``/gigafab/health/v1/sites/`` and then
watches from the revision after that read, so after a restart it resumes exactly
where etcd is. Each change goes through ``node_health.decide`` (worse at once, better
after a quiet period) and, when the decision changes, onto the Node: our taints
replaced (others kept), the ``GigafabGpuHealthy`` condition set and the number of
its Healthy GPUs in the ``gigafab.nl/gpus-healthy`` annotation (which the Site counts).
A second loop re-decides nodes that are waiting out their quiet period; until a node
is trusted again its count stays that of the worse state. A decision the apiserver did
not take (it was restarting, or not yet authorizing) is kept and written again by that
loop every second until it is: nothing else would bring it back, since etcd holds
transitions only and the node may not change again for a long time.

It also watches each site's ``gateway`` key. When a key goes (the gateway died or was
cut off and its lease ran out) every node of that site is treated as Silent: nobody
can vouch for it any more. The site's contact goes into ``site_contact.CONTACTS``,
from which the failover loop knows when the site's work is fenced. When the key comes
back, the site's node records are read again.

Enabled when ``$GIGAFAB_HEALTH_ETCD`` names the health etcd (``host:port``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
import kopf
from gigafab.agents.records import ETCD_CHANNEL, PREFIX
from gigafab.operator import audit, telemetry
from gigafab.operator.conditions import now_rfc3339
from gigafab.operator.kube import Kube
from gigafab.operator.node_health import TRUST_AFTER, Applied, condition_for, decide, taints_for
from gigafab.operator.site_contact import CONTACTS, DEFAULT_FENCE_AFTER, Contacts
from gigafab.operator.site_health import HEALTHY_GPUS
from gigafab.operator.state import Client

log = logging.getLogger("gigafab.health")
ENV = "GIGAFAB_HEALTH_ETCD"


class NodeHealthSync:
    """Keeps Nodes in step with the health recorded in etcd."""

    def __init__(self, kube: Kube, trust_after: float = TRUST_AFTER, contacts: Contacts = CONTACTS) -> None:
        self.kube = kube
        self.trust_after = trust_after
        self.contacts = contacts
        self.site_of: dict[str, str] = {}
        self.applied: dict[str, Applied] = {}
        self.reported: dict[str, tuple[str, str]] = {}
        self.reported_gpus: dict[str, int] = {}
        self.healthy_gpus: dict[str, int] = {}
        """The count on each Node: that of the report the applied state follows."""
        self.written: set[str] = set()
        self.unwritten: dict[str, Applied] = {}
        """Nodes whose last decision the apiserver did not take, with the state the Node showed before it."""

    def observe(self, document: dict[str, Any], now: float) -> None:
        node = document["node"]
        self.site_of[node] = document.get("site", "")
        self.contacts.node_heard(self.site_of[node], node, document["health"], document.get("lastReportAt"), time.time())
        self._take(document, now)

    def site_lost(self, site: str, now: float) -> None:
        """The site's gateway is gone: none of its nodes is vouched for any more."""
        for node, member_of in list(self.site_of.items()):
            if member_of == site:
                reason = f"the health gateway of site {site} is lost: nothing vouches for this node"
                self._take({"node": node, "health": "Silent", "reason": reason, "gpus": {}}, now)

    def _take(self, document: dict[str, Any], now: float) -> None:
        node = document["node"]
        self.reported[node] = (document["health"], document.get("reason", ""))
        self.reported_gpus[node] = sum(1 for health in (document.get("gpus") or {}).values() if health == "Healthy")
        self._decide(node, now)

    def recheck(self, now: float) -> None:
        for node, before in list(self.unwritten.items()):
            self._try_write(node, before)
        for node, applied in list(self.applied.items()):
            if applied.better_health is not None:
                self._decide(node, now)

    def _decide(self, node: str, now: float) -> None:
        health, reason = self.reported[node]
        before = self.applied.get(node, Applied())
        after = decide(before, health, reason, now, self.trust_after)
        self.applied[node] = after
        count = self.healthy_gpus.get(node)
        if after.health == health and after.better_health is None:  # the node is where its report says
            count = self.reported_gpus[node]
        if (after.health, after.reason, after.better_health, count) != (
            before.health,
            before.reason,
            before.better_health,
            self.healthy_gpus.get(node),
        ) or node not in self.written:
            if count is not None:
                self.healthy_gpus[node] = count
            self._try_write(node, self.unwritten.get(node, before))

    def _try_write(self, node: str, before: Applied) -> None:
        """Write the node's applied state; when the apiserver does not take it, keep it for ``recheck``."""
        try:
            self._write(node, self.applied[node], before)
        except Exception as failure:  # the apiserver away, restarting, not yet authorizing: try again
            if node not in self.unwritten:
                log.warning("health of %s not written to its Node, trying again: %r", node, failure)
            self.unwritten[node] = before
            return
        self.unwritten.pop(node, None)

    def rewrite(self, node: str) -> None:
        applied = self.applied[node]
        self._write(node, applied, applied)

    def _write(self, node: str, after: Applied, before: Applied) -> None:
        path = f"/api/v1/nodes/{node}"
        current = self.kube.get(path)
        if current is None:
            log.warning("health of unknown node %s ignored", node)
            return
        taints = taints_for(after.health, current["spec"].get("taints") or [])
        patch: dict[str, Any] = {"spec": {"taints": taints or None}}
        if node in self.healthy_gpus:
            patch["metadata"] = {"annotations": {HEALTHY_GPUS: str(self.healthy_gpus[node])}}
        self.kube.merge_patch(path, patch)
        condition = {
            **condition_for(after, self.trust_after),
            "lastHeartbeatTime": now_rfc3339(),
            "lastTransitionTime": now_rfc3339(),
        }
        self.kube.strategic_patch(f"{path}/status", {"status": {"conditions": [condition]}})
        self.written.add(node)
        if after.health != before.health:
            reference = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "uid": current["metadata"]["uid"]}}
            audit.verdict(
                reference,
                after.health == "Healthy",
                reason=f"Gpu{after.health}",
                message=f"{after.reason or after.health}; taints now {[t['key'] for t in taints]}",
            )


def _documents(items: Any) -> list[dict[str, Any]]:
    return [json.loads(item.value) for item in items if b"/nodes/" in item.key]


def _gateway_site(key: bytes) -> str | None:
    """The site of a ``.../sites/<site>/gateway`` key, else None."""
    parts = key.decode().rsplit("/", 2)
    return parts[1] if len(parts) == 3 and parts[2] == "gateway" else None


def _gateway_terms(value: bytes) -> tuple[float, float, bool]:
    """(lease ttl, fenceAfter, stopping) a gateway announces in its key; older gateways wrote only a name."""
    try:
        terms = json.loads(value)
        return float(terms["ttl"]), float(terms["fenceAfter"]), bool(terms.get("stopping"))
    except (ValueError, KeyError, TypeError):
        return 5.0, DEFAULT_FENCE_AFTER, False


async def _observe_site(client: aetcd.Client, sync: NodeHealthSync, site: str) -> None:
    for document in _documents(await client.get_prefix(f"{PREFIX}/{site}/nodes/".encode())):
        await asyncio.to_thread(sync.observe, document, time.monotonic())


RECONNECT_AFTER = 1.0
"""Seconds between attempts to reach the health etcd again after the watch broke."""


async def watch(endpoint: str, sync: NodeHealthSync) -> None:
    """``run`` for as long as the operator lives: when etcd goes away (restarted, cut off) the
    watch breaks; it reads everything again and resumes once etcd answers, so nothing
    recorded meanwhile is missed."""
    while True:
        try:
            await run(endpoint, sync)
        except Exception as failure:  # whatever broke the watch, it must come back
            log.warning("health etcd %s unreachable, retrying in %.0f s: %r", endpoint, RECONNECT_AFTER, failure)
        sync.contacts.view_stale()
        await asyncio.sleep(RECONNECT_AFTER)


PROBE_EVERY = 1.0
"""Seconds between the health watch's reads of etcd: a watch stream on an etcd that went away
can stay silent, so the watch checks it can still read, and starts over when it cannot."""


async def _probe(client: aetcd.Client, sync: NodeHealthSync, stop: Callable[[], Awaitable[None]]) -> None:
    while True:
        await asyncio.sleep(PROBE_EVERY)
        try:
            await asyncio.wait_for(client.get(f"{PREFIX}/".encode()), 2 * PROBE_EVERY)
        except Exception as failure:  # any failure to read means the view may be stale
            log.warning("health etcd stopped answering: %r", failure)
            sync.contacts.view_stale()
            with contextlib.suppress(Exception):  # ends the watch; telling etcd may fail too
                await stop()
            return


async def run(endpoint: str, sync: NodeHealthSync) -> None:
    """Read every node's health and gateway, then follow changes; raises when etcd goes away.

    A site with node records but no gateway key gets ``GATEWAY_GRACE`` to show one before
    it counts as lost: at the operator's start the gateways start too, and after etcd
    itself was away (restarted, its leases expired) every gateway needs a moment to see
    it back and take its key again. That is no site's fault, so it moves no work."""
    host, port = endpoint.rsplit(":", 1)
    client = aetcd.Client(host=host, port=int(port), options=ETCD_CHANNEL)
    prefix = f"{PREFIX}/".encode()
    tasks: list[asyncio.Task[None]] = []  # grace timers and the probe
    try:
        listed = await client.get_prefix(prefix)
        listed_at = time.monotonic()
        for document in _documents(listed):
            await asyncio.to_thread(sync.observe, document, time.monotonic())
        served = {site: item.value for item in listed if (site := _gateway_site(item.key)) is not None}
        for site, value in served.items():
            ttl, fence_after, _ = _gateway_terms(value)
            sync.contacts.gateway_up(site, ttl, fence_after)
        for site in {document["site"] for document in _documents(listed)} - set(served):
            tasks.append(asyncio.create_task(_lost_unless_served(sync, site, listed_at)))
        revision = listed.header.revision
        watch = await client.watch_prefix(prefix, start_revision=revision + 1)
        sync.contacts.view_current()
        tasks.append(asyncio.create_task(_probe(client, sync, watch.cancel)))
        log.info("watching %s from etcd revision %d", prefix.decode(), revision + 1)
        async for event in watch:
            site = _gateway_site(event.kv.key)
            if site is not None:
                await _gateway_changed(client, sync, site, event)
            elif event.kind == aetcd.EventKind.PUT and b"/nodes/" in event.kv.key:
                await asyncio.to_thread(sync.observe, json.loads(event.kv.value), time.monotonic())
    finally:
        for task in tasks:
            task.cancel()
        await client.close()


GATEWAY_GRACE = 15.0
"""Seconds a site found without a gateway (at the operator's start, or when etcd answers
again) gets to show one; longer than any gateway's ``fenceAfter`` plus margin, so a
gateway still without its key by then has had its agents fenced."""


async def _lost_unless_served(sync: NodeHealthSync, site: str, listed_at: float) -> None:
    await asyncio.sleep(GATEWAY_GRACE)
    if not sync.contacts.served_since(site, listed_at):
        log.warning("site %s has shown no health gateway for %.0f s", site, GATEWAY_GRACE)
        sync.contacts.gateway_lost(site, time.time() - GATEWAY_GRACE, expired=False)
        await asyncio.to_thread(sync.site_lost, site, time.monotonic())


async def _gateway_changed(client: aetcd.Client, sync: NodeHealthSync, site: str, event: Any) -> None:
    if event.kind == aetcd.EventKind.PUT:
        ttl, fence_after, stopping = _gateway_terms(event.kv.value)
        if stopping:
            sync.contacts.gateway_stopping(site)
            return
        returned = sync.contacts.lost(site)
        sync.contacts.gateway_up(site, ttl, fence_after)
        if returned:
            log.info("the health gateway of site %s is back", site)
            await _observe_site(client, sync, site)
        return
    log.warning("the health gateway of site %s is lost", site)
    sync.contacts.gateway_lost(site, time.time())
    await asyncio.to_thread(sync.site_lost, site, time.monotonic())


async def _recheck(sync: NodeHealthSync) -> None:
    while True:
        await asyncio.sleep(1.0)
        try:
            await asyncio.to_thread(sync.recheck, time.monotonic())
        except Exception:  # this loop is what retries: it must outlive any failure
            log.exception("health recheck failed; trying again in a second")


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    endpoint = os.environ.get(ENV)
    if not endpoint:
        log.info("no %s: the health plane is not watched", ENV)
        return
    sync = NodeHealthSync(Client.get(), float(os.environ.get("GIGAFAB_TRUST_AFTER", TRUST_AFTER)))
    memo["health_sync"] = sync
    memo["health_tasks"] = [asyncio.create_task(watch(endpoint, sync)), asyncio.create_task(_recheck(sync))]


@kopf.on.event("", "v1", "nodes")
@telemetry.reconciles("Node")
def node_taints_drifted(name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Put back health taints someone (or a re-applied manifest) removed or changed."""
    sync = memo.get("health_sync")
    if not isinstance(sync, NodeHealthSync) or name not in sync.written:
        return
    current = [dict(t) for t in spec.get("taints") or []]
    if _ours(current) != _ours(taints_for(sync.applied[name].health, current)):
        log.info("health taints of %s drifted; putting them back", name)
        sync.rewrite(name)


def _ours(taints: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((str(t["key"]), str(t["effect"])) for t in taints if str(t.get("key", "")).startswith("gigafab.nl/"))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("health_tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
