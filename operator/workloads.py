"""GpuWorkload handlers: place work on a lawful site, run it there, move it when the site fails.

Placement: a GpuWorkload without a site is judged by ``placement.place`` against a
snapshot built from memory (Sites, nodes by zone, GPUs held by gigafab pods, GPUs
placed by site, and reservations of work placed a moment ago whose pods are not bound
yet). Placements are made one at a time (a lock), so two workloads judged together
never count the same free GPUs. When a site fits, the Deployment of the new epoch is
created there; when none fits, the workload stays Pending with every site's reason
and a hint, and is judged again every 10 s.

Failover: a timer per Site (every second) looks at the work placed there and asks
``failover.assess`` what to do. A move goes through placement like new work, with a
new epoch: the old epoch's Deployment is deleted and the new one is created *held*
(no replicas, ``moves``) until ``failover.may_start``: the old site's work is fenced
(its last contact plus fenceAfter plus a margin, see ``site_contact``) and the old
pods have stopped (gone, unless the site is lost). Work a power cap suspended is held
the same way when it is placed again. The destination site's timer starts it. Phase
FailingOver until every replica of the new copy runs, then Running.

Every decision is an Event on the GpuWorkload and a structured log line (``audit``):
Placed, NoSiteFits, FailingOver, Waiting, Fenced (the new copy starts), Running,
Queued (Kueue holds it), Suspended (no site has power for it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import kopf
from gigafab.agents.fencing import WORKLOAD_LABEL
from gigafab.operator import allocation, audit, moves, reservations, telemetry, workload_status
from gigafab.operator.allocation import held_gpus, track_of, used_by_track, zones
from gigafab.operator.borrowing import reclaimable
from gigafab.operator.conditions import Condition, now_rfc3339, seconds_of
from gigafab.operator.failover import Cause, Situation, Step, assess, may_start, move_order
from gigafab.operator.placement import Decision, TenantView, WorkloadView, place
from gigafab.operator.runner_pods import Key, site_nodes, waits
from gigafab.operator.site_contact import CONTACTS
from gigafab.operator.state import Client, first
from gigafab.operator.tracks import Waiting, admission_order
from gigafab.operator.workload_plan import replica_gpus, runner_for, runner_name, site_views
from gigafab.operator.workload_status import GROUP, PLURAL, VERSION, merge_status, note_hold, pending, write_status

from gigafab.api.v1alpha1 import GpuWorkloadSpec, SiteSpec

_placing = threading.Lock()
_epochs: dict[Key, int] = {}
"""The epoch last decided per workload: a decision taken on an older view of it is dropped."""


@kopf.index(GROUP, VERSION, PLURAL)
def workload_index(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, tuple[Key, int, int]]:
    """Placed work by site: (workload, epoch, GPUs of all its replicas)."""
    site = status.get("site")
    if not site:
        return {}
    return {str(site): ((str(namespace), name), int(status.get("epoch") or 0), workload_gpus(spec))}


def workload_gpus(spec: Mapping[str, Any]) -> int:
    """GPUs of every replica of a workload (``replica_gpus``); a template whose GPU limits are not whole
    numbers counts ``gpus`` alone (it is refused placement, saying why)."""
    parsed = GpuWorkloadSpec.from_body(spec)
    try:
        return replica_gpus(parsed) * parsed.replicas
    except ValueError:
        return parsed.gpus * parsed.replicas


@kopf.index(GROUP, VERSION, PLURAL)
def workload_bodies(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(str(namespace), name): dict(body)}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@telemetry.reconciles("GpuWorkload")
def workload_changed(body: kopf.Body, **kwargs: Any) -> None:
    if not (body.get("status") or {}).get("site"):
        place_workload(dict(body), kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=10, idle=5)
@telemetry.reconciles("GpuWorkload")
def pending_retry(body: kopf.Body, **kwargs: Any) -> None:
    if not allocation.QUOTAS:  # with an AllocationPolicy, retry_pending judges them in priority order
        retry(dict(body), kwargs)


def retry(body: dict[str, Any], indexes: Mapping[str, Any]) -> None:
    """Judge a Pending workload again."""
    if (body.get("status") or {}).get("phase") == "Pending":
        leaving = str((body.get("status") or {}).get("site") or "")
        if not leaving:
            place_workload(body, indexes)
            return
        lost = _site_lost(leaving, indexes)
        why = f"site {leaving} is lost" if lost else f"it could not stay on site {leaving}"
        cause = Cause.SITE_LOST if lost else Cause.NO_ROOM
        move = partial(place_workload, body, indexes, leaving=(leaving, why), cause=cause)
        telemetry.resume_failover(body, indexes, leaving, lost, move)


@kopf.timer("gigafab.nl", "v1alpha1", "allocationpolicies", interval=2.0)
@telemetry.reconciles("AllocationPolicy")
def pending_by_priority(**kwargs: Any) -> None:
    retry_pending(kwargs)


_sweeping = threading.Lock()


def retry_pending(indexes: Mapping[str, Any]) -> None:
    """One sweep at a time; a sweep asked for while one runs is left to the next."""
    if _sweeping.acquire(blocking=False):
        try:
            _retry_pending(allocation.PRIORITIES, indexes)
        finally:
            _sweeping.release()


def _retry_pending(priorities: Mapping[str, int], indexes: Mapping[str, Any]) -> None:
    """Judge every Pending workload again, in ``tracks.admission_order``."""
    bodies: dict[Key, dict[str, Any]] = {}
    waiting = []
    for key, store in indexes["workload_bodies"].items():
        for body in store:
            if (body.get("status") or {}).get("phase") != "Pending":
                continue
            spec, meta = body.get("spec") or {}, body["metadata"]
            gpus = workload_gpus(spec)
            track = track_of(meta["namespace"], indexes)
            waiting.append(
                Waiting(key, track, gpus, str(spec.get("criticality", "standard")), str(meta.get("creationTimestamp") or ""))
            )
            bodies[key] = body
    guaranteed = {track: sum(by_site.values()) for track, by_site in allocation.QUOTAS.items()}
    for item in admission_order(waiting, priorities, used_by_track(indexes), guaranteed):
        retry(bodies[item.key], indexes)


@kopf.timer(GROUP, VERSION, "sites", interval=1.0)
@telemetry.reconciles("Site")
def site_failover(name: str, body: kopf.Body, **kwargs: Any) -> None:
    """Start held copies bound here, and move work away from here when the site is in trouble."""
    now = time.time()
    placed = list(kwargs["workload_index"].get(name, []))
    bodies = kwargs["workload_bodies"]
    for key, _, _ in placed:
        workload = first(bodies, key)
        move = ((workload or {}).get("status") or {}).get("move")
        if workload is not None and move and not move.get("released"):
            _release(workload, move, kwargs, now)
    lost = _site_lost(name, kwargs)
    draining = (body.get("spec") or {}).get("lifecycle") == "Draining"
    if draining and _moving_from(name, kwargs):
        draining = False  # one at a time: the next leaves once the last one runs elsewhere
    zone = SiteSpec.from_body(body.get("spec")).zone or name
    nodes = site_nodes(name, kwargs["node_index"].get(zone, []), kwargs)
    candidates = sorted(
        (w for key, _, _ in placed if (w := first(bodies, key)) is not None),
        key=lambda w: move_order(str((w.get("spec") or {}).get("criticality", "standard")), w["metadata"]["name"]),
    )
    for workload in candidates:
        status, spec = workload.get("status") or {}, workload.get("spec") or {}
        if status.get("phase") == "Pending":
            continue  # judged by pending_retry
        _report_running(workload, kwargs)  # pod events may have come before the status they depend on
        waited = waits(workload, kwargs, now, nodes)
        situation = Situation(
            site=name,
            criticality=str(spec.get("criticality", "standard")),
            failover=(spec.get("failover") or {}).get("enabled"),
            moving=bool(status.get("move")),
            site_lost=lost,
            site_draining=draining,
            unschedulable_for=waited.for_gpus,
            blocked_for=waited.blocked_for,
            blocked_by=waited.blocked_by,
        )
        verdict = assess(situation)
        if verdict.step is Step.MOVE:
            since = telemetry.trouble_since(verdict.cause, name, body, situation.unschedulable_for, now)
            move = partial(place_workload, workload, kwargs, leaving=(name, verdict.reason), cause=verdict.cause)
            telemetry.fail_over(workload, kwargs, name, verdict.cause, since, move)
            if draining:
                return
        elif verdict.step is Step.HOLD:
            note_hold(workload, verdict.reason)


@kopf.on.event("", "v1", "pods", labels={WORKLOAD_LABEL: kopf.PRESENT})
@telemetry.reconciles("Pod")
def runner_pod_changed(namespace: str | None, labels: kopf.Labels, type: str | None, **kwargs: Any) -> None:
    """Running when every replica of the current copy runs; GPUs freed by a pod that is gone go to the
    Pending work at once (in priority order), not at the next sweep."""
    workload = first(kwargs["workload_bodies"], (str(namespace), labels[WORKLOAD_LABEL]))
    if workload is not None:
        _report_running(workload, kwargs)
    if type == "DELETED" and allocation.PRIORITIES:
        retry_pending(kwargs)


def place_workload(
    body: dict[str, Any],
    indexes: Mapping[str, Any],
    leaving: tuple[str, str] | None = None,
    *,
    cause: Cause = Cause.NONE,
    shedding: bool = False,
) -> bool:
    """Judge ``body`` and start it on the chosen site; ``leaving``: (site, why) it moves away from, because
    of ``cause`` (which says whether the new copy waits for the old one's pods to be seen to go).

    ``shedding``: it leaves because its site's power cap was lowered: that site is judged with the
    work's own power still on it, and when no other site takes it, it is suspended (its copies
    stopped, Pending until a site has room and power). True when it was placed somewhere new."""
    with telemetry.placing(body, indexes, leaving), _placing:
        return _place(body, indexes, leaving, Cause.POWER_CAP if shedding else cause, shedding)


def _place(
    body: dict[str, Any], indexes: Mapping[str, Any], leaving: tuple[str, str] | None, cause: Cause, shedding: bool
) -> bool:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if int((body.get("status") or {}).get("epoch") or 0) < _epochs.get(key, 0):
        return False  # decided on an older view of it: another decision was taken meanwhile
    spec = GpuWorkloadSpec.from_body(body.get("spec"))
    tenant_name = first(indexes["namespace_index"], meta["namespace"]) or ""
    record = first(indexes["tenant_index"], tenant_name) if tenant_name else None
    if record is None:
        pending(body, None, f"namespace {meta['namespace']} belongs to no Tenant; GpuWorkloads run in tenant namespaces")
        return False
    try:
        per_replica = replica_gpus(spec)
    except ValueError as bad:
        pending(body, None, f"{bad}; fix the template (ask for GPUs with spec.gpus)", reason="InvalidTemplate")
        return False
    track = str(record.spec.get("track") or "") if allocation.QUOTAS else ""  # no policy, no queues
    shed_from = leaving[0] if shedding and leaving is not None else None
    decision = _judge(body, spec, per_replica, (tenant_name, record.spec), track, indexes, shed_from)
    status = body.get("status") or {}
    if decision.site is None:
        if shed_from is not None and leaving is not None:
            _suspend(body, decision, f"{leaving[1]}; no other site takes it: {decision.message}")
        else:
            pending(body, decision, decision.message if leaving is None else f"{leaving[1]}; {decision.message}")
        return False
    if leaving is not None and decision.site == leaving[0]:
        if status.get("phase") == "Pending":  # its site came back before the work could move
            write_status(body, decision, {"phase": "Placed"}, Condition("Placed", True, "Placed", decision.message))
            _report_running({**body, "status": {**status, "phase": "Placed"}}, indexes)  # its pods may run already
        return False
    _start(body, decision, (per_replica, spec.replicas, track), leaving, cause, indexes)
    return True


def _judge(
    body: Mapping[str, Any],
    spec: GpuWorkloadSpec,
    per_replica: int,
    tenant: tuple[str, Mapping[str, Any]],
    track: str,
    indexes: Mapping[str, Any],
    shed_from: str | None,
) -> Decision:
    """Placement's decision for the workload ``body`` of ``tenant`` (name, spec) on a snapshot of memory.
    ``shed_from``: the site whose lowered power cap sheds it (its own power still weighs on it there)."""
    meta, status = body["metadata"], body.get("status") or {}
    tenant_name, tenant_spec = tenant
    workload = WorkloadView(
        name=meta["name"],
        gpus=per_replica,
        replicas=spec.replicas,
        data_class=str(spec.data_class or tenant_spec.get("dataClass", "internal")),
        preferred_sites=tuple(spec.sites),
        current_site=status.get("site"),
    )
    sites = [entry["body"] for store in indexes["site_index"].values() for entry in store]
    in_use, placed, reserved = reservations.taken(indexes, (meta["namespace"], meta["name"]))
    wanted = per_replica * spec.replicas
    if shed_from is not None:
        placed[shed_from] = placed.get(shed_from, 0) + wanted
    if track:  # Kueue takes borrowed GPUs back for a track within its quota
        for node, gpus in reclaimable(held_gpus(indexes), allocation.QUOTAS, track, wanted, zones(indexes)).items():
            in_use[node] = in_use.get(node, 0) - gpus
    views = site_views(sites, indexes["node_index"], in_use, placed, reserved)
    decision = place(views, workload, TenantView(tenant_name, frozenset(tenant_spec.get("allowedSites") or [])))
    telemetry.placement_decided(decision)
    return decision


def _start(
    body: dict[str, Any],
    decision: Decision,
    copy: tuple[int, int, str],
    leaving: tuple[str, str] | None,
    cause: Cause,
    indexes: Mapping[str, Any],
) -> None:
    """Create the new epoch's copy on the chosen site (``copy``: GPUs per replica, replicas, track), held when
    an older copy may still run, and write the placement to status."""
    meta, status = body["metadata"], body.get("status") or {}
    key = (meta["namespace"], meta["name"])
    per_replica, replicas, track = copy
    site = str(decision.site)
    chosen = next(entry["body"] for store in indexes["site_index"].values() for entry in store if entry["name"] == site)
    zone = SiteSpec.from_body(chosen.get("spec")).zone or site
    epoch = int(status.get("epoch") or 0) + 1
    fields = _move_fields(leaving, cause, status, indexes)
    _delete_copies(meta, below=epoch)  # every older copy goes before the new one may start
    grace = int(CONTACTS.fence_after(site) + CONTACTS.margin)
    held = fields["move"] is not None
    Client.get().ensure(runner_for(body, zone, site, epoch, track=track or None, held=held, silent_grace=grace))
    reservations.reserve(key, site, epoch, per_replica, replicas)
    _epochs[key] = epoch
    origin = {"fromSite": leaving[0]} if leaving else {}
    reason = decision.message if leaving is None else f"moved from {leaving[0]} ({leaving[1]}): {decision.message}"
    history = [*(status.get("placements") or [])[-31:], {"site": site, "epoch": epoch, "at": now_rfc3339(), **origin}]
    history[-1]["reason"] = reason[:1024]
    placed = Condition("Placed", True, "Placed", reason)
    write_status(body, decision, {"site": site, "epoch": epoch, "placements": history, **fields}, placed)
    if leaving is None:
        after = f", held until the copy of epoch {epoch - 1} has stopped ({moves.SUSPENDED})" if held else ""
        audit.normal(body, "Placed", f"epoch {epoch}: {decision.message}{after}")
    else:
        starts = fields["move"]["startsAfter"]
        audit.warning(body, "FailingOver", f"epoch {epoch} on {site}, starting after {starts}: {reason}")


def _suspend(body: dict[str, Any], decision: Decision, message: str) -> None:
    """Stop every copy and wait, Pending, until a site has room and power for it (``pending_retry``)."""
    meta, status = body["metadata"], body.get("status") or {}
    key = (meta["namespace"], meta["name"])
    _delete_copies(meta, below=int(status.get("epoch") or 0) + 1)
    workload_status.forget(key)
    reservations.release(key)
    write_status(
        body, decision, {"phase": "Pending", "site": None, "move": None}, Condition("Placed", False, "Suspended", message)
    )
    audit.warning(body, "Suspended", message)


def _delete_copies(meta: Mapping[str, Any], below: int) -> None:
    """Delete the Deployments of every epoch of the workload before ``below``."""
    client = Client.get()
    for epoch in range(1, below):
        client.delete(f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{runner_name(meta['name'], epoch)}")


def _move_fields(
    leaving: tuple[str, str] | None, cause: Cause, status: Mapping[str, Any], indexes: Mapping[str, Any]
) -> dict[str, Any]:
    """Status fields for a new placement; with a ``move`` its copy is held until the old one has stopped:
    when it moves away from ``leaving``, and when it ran before (a power cap suspended it: its last copy's
    pods may still be going)."""
    if leaving is not None:
        return {"phase": "FailingOver", "move": moves.record(*leaving, cause)}
    last = str(((status.get("placements") or [{}])[-1]).get("site") or "")
    if not int(status.get("epoch") or 0) or not last:
        return {"phase": "Placed", "move": None}
    again = Cause.SITE_LOST if _site_lost(last, indexes) else Cause.POWER_CAP
    return {"phase": "Placed", "move": moves.record(last, moves.SUSPENDED, again)}


def _release(workload: dict[str, Any], move: Mapping[str, Any], indexes: Mapping[str, Any], now: float) -> None:
    """Start a held copy once the old one has surely stopped."""
    meta, status = workload["metadata"], workload.get("status") or {}
    epoch = int(status.get("epoch") or 0)
    pods = indexes["runner_pod_index"].get((meta["namespace"], meta["name"]), [])
    if not may_start(now, seconds_of(str(move["startsAfter"])) or 0.0, moves.old_pods(pods, epoch, move)):
        return
    audit.normal(workload, "Fenced", f"epoch {epoch} starts on {status.get('site')}: {moves.released_because(move)}")
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{runner_name(meta['name'], epoch)}"
    Client.get().merge_patch(path, {"spec": {"replicas": replicas}})
    merge_status(workload, {"move": {**move, "released": True}})


def _site_lost(site: str, indexes: Mapping[str, Any]) -> bool:
    """Its gateway is gone, or most of its nodes are Silent."""
    zone = next((zone for zone, store in indexes["site_index"].items() for entry in store if entry["name"] == site), site)
    return CONTACTS.unreachable(site, len(indexes["node_index"].get(zone, [])))


def _moving_from(site: str, indexes: Mapping[str, Any]) -> bool:
    """Some workload is on its way from ``site`` (not yet running elsewhere)."""
    for store in indexes["workload_bodies"].values():
        for workload in store:
            move = (workload.get("status") or {}).get("move")
            if move and move.get("fromSite") == site:
                return True
    return False


def _report_running(workload: dict[str, Any], indexes: Mapping[str, Any]) -> None:
    meta = workload["metadata"]
    workload_status.report_running(workload, indexes, _epochs.get((meta["namespace"], meta["name"]), 0))
