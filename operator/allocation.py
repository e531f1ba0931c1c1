"""AllocationPolicy handlers: Kueue's queues for the tracks, and each track's GPUs in status.

Every 2 s (and when the policy changes) the operator derives, from the healthy GPUs
of each site placement may use (``healthy_by_site``), every track's nominal quota per site (``queues.site_quotas``)
and applies Kueue's ResourceFlavors, WorkloadPriorityClasses and ClusterQueues
(``queues.track_objects``) when they changed: a failed GPU or a lost site shrinks
the quotas within seconds. The status shows per track the guaranteed GPUs (its
quotas added up), the GPUs placed for its tenants' GpuWorkloads, and what it
borrows and lends (``tracks.track_use``). Kueue enforces them: it admits, lends and
takes back; the operator only says what each track is owed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from gigafab.operator import conditions, telemetry
from gigafab.operator.borrowing import Held
from gigafab.operator.conditions import Condition
from gigafab.operator.kube import Kube, collection_path
from gigafab.operator.queues import KUEUE_API, MANAGED_BY, site_quotas, track_objects
from gigafab.operator.site_health import ZONE_LABEL
from gigafab.operator.state import Client, custom_path, first
from gigafab.operator.tracks import shares_of, track_use
from kubernetes.client.exceptions import ApiException

from gigafab.api.v1alpha1.common import EU_MEMBER_STATES

GROUP, VERSION, PLURAL = "gigafab.nl", "v1alpha1", "allocationpolicies"
PRUNED_KINDS = ("ClusterQueue", "WorkloadPriorityClass", "ResourceFlavor")
"""Cluster-wide Kueue objects the policy owns, in the order stale ones are removed."""
MANAGED_BY_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED_BY.items())
log = logging.getLogger("gigafab.allocation")


def usable_by_placement(body: Mapping[str, Any]) -> bool:
    """Whether placement may put new work on the Site at all, whatever the work: Active, under EU law, and
    Healthy (its health plane vouches for most of its nodes). The rest of ``placement``'s rules depend on
    the work (its data class, its tenant) or on what is placed already."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    return (
        spec.get("lifecycle", "Active") == "Active"
        and spec.get("jurisdiction") in EU_MEMBER_STATES
        and conditions.status_of(status.get("conditions"), "Healthy") == "True"
    )


def healthy_by_site(indexes: Mapping[str, Any]) -> dict[str, int]:
    """Healthy GPUs of every Site that placement may use; every other Site counts none. Kueue's nominal
    quotas and the tracks' guarantees are made of these: a GPU outside the EU, of a site not Active, or of
    a site its health plane does not vouch for could never be given to the work it would be promised to,
    and Kueue would admit onto it work that no placement put there."""
    healthy: dict[str, int] = {}
    for store in indexes["site_index"].values():
        for entry in store:
            body = entry["body"]
            usable = usable_by_placement(body)
            healthy[entry["name"]] = int((body.get("status") or {}).get("gpusHealthy") or 0) if usable else 0
    return healthy


def zones(indexes: Mapping[str, Any]) -> dict[str, str]:
    return {entry["name"]: zone for zone, store in indexes["site_index"].items() for entry in store}


def track_of(namespace: str, indexes: Mapping[str, Any]) -> str:
    """The allocation track of the tenant that owns ``namespace`` ("" for none)."""
    tenant = first(indexes["tenant_index"], first(indexes["namespace_index"], namespace) or "")
    return str(tenant.spec.get("track") or "") if tenant is not None else ""


def held_gpus(indexes: Mapping[str, Any]) -> list[Held]:
    """GPUs held on nodes by the pods of every GpuWorkload, with their site and track."""
    site_of_zone = {zone: site for site, zone in zones(indexes).items()}
    site_of_node = {node.name: site_of_zone.get(zone, zone) for zone, store in indexes["node_index"].items() for node in store}
    held = []
    for (namespace, name), store in indexes["runner_pod_index"].items():
        track = track_of(namespace, indexes)
        for pod in store:
            if pod.node and pod.phase not in ("Succeeded", "Failed") and pod.node in site_of_node:
                held.append(Held((namespace, name), pod.node, site_of_node[pod.node], track, pod.gpus, pod.created))
    return held


def used_by_track(indexes: Mapping[str, Any]) -> dict[str, int]:
    """GPUs held on nodes by the GpuWorkloads of each track's tenants (queued work holds none)."""
    used: dict[str, int] = {}
    for pod in held_gpus(indexes):
        used[pod.track] = used.get(pod.track, 0) + pod.gpus
    return used


QUOTAS: dict[str, dict[str, int]] = {}
"""The nominal GPUs of every track on every site, as last given to Kueue (placement foresees reclaim
with them)."""
PRIORITIES: dict[str, int] = {}
"""Each track's priority, as last read from the policy."""
_applied: dict[tuple[str, str], Mapping[str, Any]] = {}
"""What was last applied to Kueue, by (kind, name): only changes are sent."""


_pruned: dict[str, frozenset[tuple[str, str]]] = {}
"""``wanted``: the objects wanted when stale ones were last removed (none yet since the start: absent)."""


def sync_queues(objects: list[dict[str, Any]]) -> None:
    """Apply the Kueue objects that changed, then remove gigafab's that are no longer wanted: the flavor
    of a deleted Site, the queue and priority class of a track taken out of the policy. Removal runs
    when the wanted set changes (and once after a start, for what went while the operator was away);
    ClusterQueues are applied first, so a flavor is no longer in use when it goes."""
    client = Client.get()
    for manifest in objects:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if _applied.get(key) != manifest:
            client.apply(manifest)
            _applied[key] = manifest
    wanted = frozenset((manifest["kind"], manifest["metadata"]["name"]) for manifest in objects)
    if _pruned.get("wanted") != wanted:
        prune(client, wanted)
        _pruned["wanted"] = wanted


def forget_applied() -> None:
    """Kueue did not take what was sent: send and prune everything again next time."""
    _applied.clear()
    _pruned.clear()


def prune(client: Kube, wanted: frozenset[tuple[str, str]]) -> None:
    for kind in PRUNED_KINDS:
        path = collection_path(KUEUE_API, kind)
        for item in client.list(path, labels=MANAGED_BY_SELECTOR):
            name = item["metadata"]["name"]
            if (kind, name) not in wanted and not item["metadata"].get("deletionTimestamp"):
                log.info("removing Kueue %s %s: no Site or track of the policy needs it any more", kind, name)
                client.delete(f"{path}/{name}")
                _applied.pop((kind, name), None)


def refresh(body: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    shares = shares_of(spec)
    healthy = healthy_by_site(indexes)
    quotas = site_quotas(shares, healthy)
    QUOTAS.clear()
    QUOTAS.update(quotas)
    PRIORITIES.clear()
    PRIORITIES.update({share.name: share.priority for share in shares})
    guaranteed = {track: sum(by_site.values()) for track, by_site in quotas.items()}
    use = track_use(shares, guaranteed, used_by_track(indexes))
    generation = int(meta.get("generation") or 0)
    total = sum(healthy.values())
    try:
        sync_queues(track_objects(shares, healthy, zones(indexes), ZONE_LABEL))
        ready = Condition(
            "Ready",
            True,
            "QueuesApplied",
            f"Kueue ClusterQueues of {len(shares)} track(s) in cohort gigafab hold their shares of {total} healthy "
            f"GPU(s) on {sum(1 for gpus in healthy.values() if gpus)} site(s)",
        )
    except ApiException as failure:
        forget_applied()
        why = f"applying Kueue's queues failed ({failure.status}): {failure.reason}"
        ready = Condition("Ready", False, "KueueUnavailable", why)
    new = {
        "observedGeneration": generation,
        "healthyGpus": total,
        "tracks": [
            {"name": t.name, "guaranteedGpus": t.guaranteed, "usedGpus": t.used, "borrowedGpus": t.borrowed, "lentGpus": t.lent}
            for t in use
        ],
        "conditions": conditions.merge(status.get("conditions"), [ready], generation),
    }
    if all(status.get(key) == value for key, value in new.items()):
        return
    Client.get().merge_patch(custom_path(PLURAL, meta["name"], subresource="status"), {"status": new})


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@telemetry.reconciles("AllocationPolicy")
def policy_changed(body: kopf.Body, **kwargs: Any) -> None:
    refresh(dict(body), kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=2.0)
@telemetry.reconciles("AllocationPolicy")
def policy_resync(body: kopf.Body, **kwargs: Any) -> None:
    refresh(dict(body), kwargs)
