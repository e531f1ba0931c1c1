"""The operator's side of the health plane: etcd → ``health_sync.NodeHealthSync`` → Nodes.

On startup it reads every record under ``/gigafab/health/v1/sites/`` and then watches from
the revision after that read, so after a restart it resumes exactly where etcd is. Records
go to the sync (``health_sync``), which applies each only to a Node of its key's site and
refuses the rest; a second loop (``recheck``, every second) re-decides nodes waiting out
their quiet period, writes decisions the apiserver did not take, and takes Node events.

It also watches each site's ``gateway`` key. When a key goes (the gateway died or was
cut off and its lease ran out) every node of that site is treated as Silent: nobody
can vouch for it any more. The site's contact goes into ``site_contact.CONTACTS``,
from which the failover loop knows when the site's work is fenced. When the key comes
back, the site's node records are read again. Before the first read, the terms each
gateway last announced (its ``fenceAfter``) are taken from the Sites' status, where
``sites.refresh`` keeps them: a site whose gateway is gone when the operator starts is
fenced on its own terms, not on a default.

When a Node is deleted its records are deleted from etcd (``_purge``).

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
from gigafab.operator import telemetry
from gigafab.operator.health_records import gateway_site, key_parts
from gigafab.operator.health_sync import NodeHealthSync
from gigafab.operator.kube import Kube
from gigafab.operator.node_health import MEMORY, TRUST_AFTER, taints_for
from gigafab.operator.site_contact import Contacts
from gigafab.operator.state import GROUP_PATH, Client

from gigafab.api.labels import SITE_NODE_LABEL

log = logging.getLogger("gigafab.health")
ENV = "GIGAFAB_HEALTH_ETCD"


def _gateway_site(key: bytes) -> str | None:
    return gateway_site(key.decode(errors="replace"))


def _record_sites(items: Any) -> set[str]:
    """The sites that have node records among listed ``items``."""
    return {parts[0] for item in items if (parts := key_parts(item.key.decode(errors="replace"))) is not None}


def _gateway_terms(value: bytes) -> tuple[float, float, bool] | None:
    """(lease ttl, fenceAfter, stopping) a gateway announces in its key; None when it says none."""
    try:
        terms = json.loads(value)
        return float(terms["ttl"]), float(terms["fenceAfter"]), bool(terms.get("stopping"))
    except (ValueError, KeyError, TypeError):
        return None


def _gateway_up(contacts: Contacts, site: str, value: bytes) -> None:
    """The site's gateway holds its key; a key without terms keeps the terms known before."""
    terms = _gateway_terms(value)
    if terms is None:
        log.warning("the health gateway key of site %s announces no ttl and fenceAfter; keeping the terms known", site)
        ttl, fence_after = contacts.terms(site) or (5.0, contacts.fence_after(site))
    else:
        ttl, fence_after, _ = terms
    contacts.gateway_up(site, ttl, fence_after)


async def _observe(sync: NodeHealthSync, items: Any) -> None:
    """Every node record (and anything else but gateway keys) among ``items``, in order."""
    for item in items:
        if _gateway_site(item.key) is None:
            await asyncio.to_thread(sync.observe, item.key, item.value, time.monotonic())


async def _observe_site(client: aetcd.Client, sync: NodeHealthSync, site: str) -> None:
    await _observe(sync, await client.get_prefix(f"{PREFIX}/{site}/nodes/".encode()))


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
        served = {site: item.value for item in listed if (site := _gateway_site(item.key)) is not None}
        for site, value in served.items():  # first: a record of a site that lost its gateway is taken as Silent
            _gateway_up(sync.contacts, site, value)
        await _observe(sync, listed)
        for site in _record_sites(listed) - set(served):
            tasks.append(asyncio.create_task(_lost_unless_served(sync, site, listed_at)))
        revision = listed.header.revision
        watch = await client.watch_prefix(prefix, start_revision=revision + 1)
        sync.contacts.view_current()
        tasks.append(asyncio.create_task(_probe(client, sync, watch.cancel)))
        tasks.append(asyncio.create_task(_purge(client, sync)))
        log.info("watching %s from etcd revision %d", prefix.decode(), revision + 1)
        async for event in watch:
            site = _gateway_site(event.kv.key)
            if site is not None:
                await _gateway_changed(client, sync, site, event)
            elif event.kind == aetcd.EventKind.PUT:
                await asyncio.to_thread(sync.observe, event.kv.key, event.kv.value, time.monotonic())
            else:
                await asyncio.to_thread(sync.record_deleted, event.kv.key)
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
        terms = _gateway_terms(event.kv.value)
        if terms is not None and terms[2]:
            sync.contacts.gateway_stopping(site)
            return
        returned = sync.contacts.lost(site)
        _gateway_up(sync.contacts, site, event.kv.value)
        if returned:
            log.info("the health gateway of site %s is back", site)
            await _observe_site(client, sync, site)
        return
    log.warning("the health gateway of site %s is lost", site)
    sync.contacts.gateway_lost(site, time.time())
    await asyncio.to_thread(sync.site_lost, site, time.monotonic())


PURGE_EVERY = 1.0
"""Seconds between the watch's deletions of deleted Nodes' records."""


async def _purge(client: aetcd.Client, sync: NodeHealthSync) -> None:
    """Delete from etcd the records of Nodes that were deleted (``NodeHealthSync.take_purges``).

    The operator writes etcd here, and only here: records are the gateways'. A later change makes
    the operator read-only on the health prefix (docs/security.md, etcd); the purge then moves to
    whoever keeps write rights there (the site's gateway, told by a deletion it watches)."""
    while True:
        await asyncio.sleep(PURGE_EVERY)
        keys = sync.take_purges()
        for key in sorted(keys):
            try:
                await client.delete(key)
            except Exception as failure:  # etcd away: kept, and deleted once the watch is back
                log.warning("record %s of a deleted Node not deleted yet: %r", key.decode(), failure)
                sync.purge_later(keys)
                break
            log.info("deleted the health record %s: its Node is gone", key.decode())
            keys = keys - {key}


async def _recheck(sync: NodeHealthSync) -> None:
    while True:
        await asyncio.sleep(1.0)
        try:
            await asyncio.to_thread(sync.recheck, time.monotonic())
        except Exception:  # this loop is what retries: it must outlive any failure
            log.exception("health recheck failed; trying again in a second")


def remember_gateway_terms(kube: Kube, contacts: Contacts) -> None:
    """Each site's gateway terms as its Site's status keeps them (``sites.refresh`` writes them)."""
    for site in kube.list(f"{GROUP_PATH}/sites"):
        terms = (site.get("status") or {}).get("healthGateway") or {}
        if terms.get("fenceAfterSeconds") is not None:
            ttl = float(terms.get("leaseTtlSeconds") or 5.0)
            contacts.remember(site["metadata"]["name"], ttl, float(terms["fenceAfterSeconds"]))


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    endpoint = os.environ.get(ENV)
    if not endpoint:
        log.info("no %s: the health plane is not watched", ENV)
        return
    sync = NodeHealthSync(
        Client.get(),
        float(os.environ.get("GIGAFAB_TRUST_AFTER", TRUST_AFTER)),
        relapse_memory=float(os.environ.get("GIGAFAB_RELAPSE_MEMORY", MEMORY)),
    )
    try:
        await asyncio.to_thread(remember_gateway_terms, sync.kube, sync.contacts)
    except Exception as failure:  # before the first read of etcd: a lost site must be fenced on its terms
        raise kopf.TemporaryError(f"the Sites' gateway terms are not readable yet: {failure!r}", delay=1.0) from failure
    memo["health_sync"] = sync
    memo["health_tasks"] = [asyncio.create_task(watch(endpoint, sync)), asyncio.create_task(_recheck(sync))]


@kopf.on.event("", "v1", "nodes")
@telemetry.reconciles("Node")
def node_health_event(name: str, type: str | None, labels: kopf.Labels, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Tell the health sync which site the Node belongs to (or that it is gone), and put back health
    taints someone (or a re-applied manifest) removed or changed."""
    sync = memo.get("health_sync")
    if not isinstance(sync, NodeHealthSync):
        return
    sync.node_changed(name, labels.get(SITE_NODE_LABEL), deleted=type == "DELETED")
    applied = sync.applied.get(name)
    if type == "DELETED" or name not in sync.written or applied is None:
        return
    current = [dict(t) for t in spec.get("taints") or []]
    if _ours(current) != _ours(taints_for(applied.health, current)):
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
