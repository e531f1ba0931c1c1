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
(no replicas) until ``failover.may_start``: the old site's work is fenced (its last
contact plus fenceAfter plus a margin, see ``site_contact``) and, on a reachable site,
the old pods are gone. The destination site's timer starts it. Phase FailingOver
until every replica of the new copy runs, then Running.

Every decision is an Event on the GpuWorkload and a structured log line (``audit``):
Placed, NoSiteFits, FailingOver, Waiting, Fenced (the new copy starts), Running,
Queued (Kueue holds it), Suspended (no site has power for it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import kopf
from gigafab.agents.fencing import WORKLOAD_LABEL
from gigafab.operator import allocation, audit, conditions, telemetry
from gigafab.operator.allocation import held_gpus, track_of, used_by_track, zones
from gigafab.operator.borrowing import reclaimable
from gigafab.operator.conditions import Condition, now_rfc3339, rfc3339, seconds_of
from gigafab.operator.failover import Situation, Step, assess, may_start, move_order
from gigafab.operator.placement import Decision, TenantView, WorkloadView, place
from gigafab.operator.site_contact import CONTACTS
from gigafab.operator.state import Client, first
from gigafab.operator.tracks import Waiting, admission_order
from gigafab.operator.workload_plan import EPOCH_LABEL, pod_gpus, runner_for, runner_name, site_views

from gigafab.api.v1alpha1 import GpuWorkloadSpec, SiteSpec

GROUP, VERSION, PLURAL = "gigafab.nl", "v1alpha1", "gpuworkloads"
Key = tuple[str, str]
"""(namespace, name) of a GpuWorkload."""
RESERVATION_SECONDS = 30.0
ADMISSION_GATE = "kueue.x-k8s.io/admission"


@dataclass(frozen=True)
class RunnerPod:
    """A pod of some epoch of a GpuWorkload."""

    epoch: int
    node: str | None
    phase: str
    unschedulable_since: float | None
    deleting: bool
    gpus: int
    """GPUs it asks for (it holds them on its node once bound, until it finishes)."""
    created: float = 0.0
    """Its creationTimestamp (epoch seconds)."""
    queued: bool = False
    """Kueue holds it (scheduling gate) until its track's quota admits it."""


@dataclass(frozen=True)
class Reservation:
    site: str
    epoch: int
    gpus: int
    replicas: int
    until: float


_placing = threading.Lock()
_reserved: dict[Key, Reservation] = {}
_epochs: dict[Key, int] = {}
"""The epoch last decided per workload: a decision taken on an older view of it is dropped."""
_running: dict[Key, int] = {}
"""The epoch last reported Running per workload (pod events come faster than the status echoes)."""


@kopf.index("", "v1", "pods", labels={WORKLOAD_LABEL: kopf.PRESENT})
def runner_pod_index(
    namespace: str | None, labels: kopf.Labels, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> dict[Key, RunnerPod]:
    """Pods of every epoch, by workload."""
    unschedulable = next(
        (
            seconds_of(str(c.get("lastTransitionTime") or ""))
            for c in status.get("conditions") or []
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        ),
        None,
    )
    pod = RunnerPod(
        epoch=int(labels.get(EPOCH_LABEL, "0") or 0),
        node=spec.get("nodeName"),
        phase=str(status.get("phase") or "Pending"),
        unschedulable_since=unschedulable,
        deleting=bool(meta.get("deletionTimestamp")),
        gpus=pod_gpus(dict(spec)),
        created=seconds_of(str(meta.get("creationTimestamp") or "")) or 0.0,
        queued=any(gate.get("name") == ADMISSION_GATE for gate in spec.get("schedulingGates") or []),
    )
    return {(str(namespace), labels[WORKLOAD_LABEL]): pod}


@kopf.index(GROUP, VERSION, PLURAL)
def workload_index(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, tuple[Key, int, int]]:
    """Placed work by site: (workload, epoch, GPUs)."""
    site = status.get("site")
    if not site:
        return {}
    gpus = int(spec.get("gpus", 0)) * int(spec.get("replicas", 1))
    return {str(site): ((str(namespace), name), int(status.get("epoch") or 0), gpus)}


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
        telemetry.resume_failover(body, indexes, leaving, lost, partial(place_workload, body, indexes, leaving=(leaving, why)))


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
            gpus = int(spec.get("gpus", 0)) * int(spec.get("replicas", 1))
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
    short_of_gpus = _short_of_gpus(name, kwargs)
    candidates = sorted(
        (w for key, _, _ in placed if (w := first(bodies, key)) is not None),
        key=lambda w: move_order(str((w.get("spec") or {}).get("criticality", "standard")), w["metadata"]["name"]),
    )
    for workload in candidates:
        status, spec = workload.get("status") or {}, workload.get("spec") or {}
        if status.get("phase") == "Pending":
            continue  # judged by pending_retry
        _report_running(workload, kwargs)  # pod events may have come before the status they depend on
        situation = Situation(
            site=name,
            criticality=str(spec.get("criticality", "standard")),
            failover=(spec.get("failover") or {}).get("enabled"),
            moving=bool(status.get("move")),
            site_lost=lost,
            site_draining=draining,
            unschedulable_for=_unschedulable_for(workload, kwargs, now, short_of_gpus),
        )
        verdict = assess(situation)
        if verdict.step is Step.MOVE:
            since = telemetry.trouble_since(verdict.cause, name, body, situation.unschedulable_for, now)
            move = partial(place_workload, workload, kwargs, leaving=(name, verdict.reason))
            telemetry.fail_over(workload, kwargs, name, verdict.cause, since, move)
            if draining:
                return
        elif verdict.step is Step.HOLD:
            _note_hold(workload, verdict.reason)


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
    body: dict[str, Any], indexes: Mapping[str, Any], leaving: tuple[str, str] | None = None, *, shedding: bool = False
) -> bool:
    """Judge ``body`` and start it on the chosen site; ``leaving``: (site, why) it moves away from.

    ``shedding``: it leaves because its site's power cap was lowered: that site is judged with the
    work's own power still on it, and when no other site takes it, it is suspended (its copies
    stopped, Pending until a site has room and power). True when it was placed somewhere new."""
    with telemetry.placing(body, indexes, leaving), _placing:
        return _place(body, indexes, leaving, shedding)


def _place(body: dict[str, Any], indexes: Mapping[str, Any], leaving: tuple[str, str] | None, shedding: bool = False) -> bool:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if int((body.get("status") or {}).get("epoch") or 0) < _epochs.get(key, 0):
        return False  # decided on an older view of it: another decision was taken meanwhile
    spec = GpuWorkloadSpec.from_body(body.get("spec"))
    tenant_name = first(indexes["namespace_index"], meta["namespace"]) or ""
    record = first(indexes["tenant_index"], tenant_name) if tenant_name else None
    if record is None:
        _pending(body, None, f"namespace {meta['namespace']} belongs to no Tenant; GpuWorkloads run in tenant namespaces")
        return False
    tenant_spec = record.spec
    status = body.get("status") or {}
    workload = WorkloadView(
        name=meta["name"],
        gpus=spec.gpus,
        replicas=spec.replicas,
        data_class=str(spec.data_class or tenant_spec.get("dataClass", "internal")),
        preferred_sites=tuple(spec.sites),
        current_site=status.get("site"),
    )
    sites = [entry["body"] for store in indexes["site_index"].values() for entry in store]
    track = str(tenant_spec.get("track") or "") if allocation.QUOTAS else ""  # no policy, no queues
    in_use, placed, reserved = _in_use(indexes, key)
    wanted = spec.gpus * spec.replicas
    if shedding and leaving is not None:  # its own power still weighs on the site it leaves
        placed[leaving[0]] = placed.get(leaving[0], 0) + wanted
    if track:  # Kueue takes borrowed GPUs back for a track within its quota
        for node, gpus in reclaimable(held_gpus(indexes), allocation.QUOTAS, track, wanted, zones(indexes)).items():
            in_use[node] = in_use.get(node, 0) - gpus
    views = site_views(sites, indexes["node_index"], in_use, placed, reserved)
    decision = place(views, workload, TenantView(tenant_name, frozenset(tenant_spec.get("allowedSites") or [])))
    telemetry.placement_decided(decision)
    if decision.site is None and shedding and leaving is not None:
        _suspend(body, decision, f"{leaving[1]}; no other site takes it: {decision.message}")
        return False
    if decision.site is None:
        _pending(body, decision, decision.message if leaving is None else f"{leaving[1]}; {decision.message}")
        return False
    if leaving is not None and decision.site == leaving[0]:
        if status.get("phase") == "Pending":  # its site came back before the work could move
            _write_status(body, decision, {"phase": "Placed"}, Condition("Placed", True, "Placed", decision.message))
            _report_running({**body, "status": {**status, "phase": "Placed"}}, indexes)  # its pods may run already
        return False
    chosen = next(site for site in sites if site["metadata"]["name"] == decision.site)
    zone = SiteSpec.from_body(chosen.get("spec")).zone or decision.site
    epoch = int(status.get("epoch") or 0) + 1
    fields, held = _move_fields(leaving)
    client = Client.get()
    _delete_copies(meta, below=epoch)  # every older copy goes before the new one may start
    grace = int(CONTACTS.fence_after(decision.site) + CONTACTS.margin)
    client.ensure(runner_for(body, zone, decision.site, epoch, track=track or None, held=held, silent_grace=grace))
    _reserved[key] = Reservation(decision.site, epoch, spec.gpus, spec.replicas, time.monotonic() + RESERVATION_SECONDS)
    _epochs[key] = epoch
    origin = {"fromSite": leaving[0]} if leaving else {}
    reason = decision.message if leaving is None else f"moved from {leaving[0]} ({leaving[1]}): {decision.message}"
    history = [*(status.get("placements") or [])[-31:], {"site": decision.site, "epoch": epoch, "at": now_rfc3339(), **origin}]
    history[-1]["reason"] = reason[:1024]
    _write_status(
        body,
        decision,
        {"site": decision.site, "epoch": epoch, "placements": history, **fields},
        Condition("Placed", True, "Placed", reason),
    )
    if leaving is None:
        audit.normal(body, "Placed", f"epoch {epoch}: {decision.message}")
    else:
        starts = fields["move"]["startsAfter"]
        audit.warning(body, "FailingOver", f"epoch {epoch} on {decision.site}, starting after {starts}: {reason}")
    return True


def _suspend(body: dict[str, Any], decision: Decision, message: str) -> None:
    """Stop every copy and wait, Pending, until a site has room and power for it (``pending_retry``)."""
    meta, status = body["metadata"], body.get("status") or {}
    key = (meta["namespace"], meta["name"])
    _delete_copies(meta, below=int(status.get("epoch") or 0) + 1)
    _running.pop(key, None)
    _reserved.pop(key, None)
    _write_status(
        body, decision, {"phase": "Pending", "site": None, "move": None}, Condition("Placed", False, "Suspended", message)
    )
    audit.warning(body, "Suspended", message)


def _delete_copies(meta: Mapping[str, Any], below: int) -> None:
    """Delete the Deployments of every epoch of the workload before ``below``."""
    client = Client.get()
    for epoch in range(1, below):
        client.delete(f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{runner_name(meta['name'], epoch)}")


def _move_fields(leaving: tuple[str, str] | None) -> tuple[dict[str, Any], bool]:
    """Status fields for a new placement, and whether its copy is held."""
    if leaving is None:
        return {"phase": "Placed", "move": None}, False
    site, why = leaving
    fenced = CONTACTS.fenced_at(site)
    move = {
        "fromSite": site,
        "reason": why[:1024],
        "since": now_rfc3339(),
        "startsAfter": rfc3339(fenced if fenced is not None else time.time()),
        "awaitOldCopies": fenced is None,
        "released": False,
    }
    return {"phase": "FailingOver", "move": move}, True


def _release(workload: dict[str, Any], move: Mapping[str, Any], indexes: Mapping[str, Any], now: float) -> None:
    """Start a held copy once the old one has surely stopped."""
    meta, status = workload["metadata"], workload.get("status") or {}
    epoch = int(status.get("epoch") or 0)
    pods = indexes["runner_pod_index"].get((meta["namespace"], meta["name"]), [])
    old = sum(1 for pod in pods if pod.epoch < epoch)
    if not may_start(now, seconds_of(str(move["startsAfter"])) or 0.0, bool(move.get("awaitOldCopies")), old):
        return
    if move.get("awaitOldCopies"):
        why = f"the copies on {move['fromSite']} are gone"
    else:
        why = f"{move['fromSite']} is fenced since {move['startsAfter']} (last contact plus fenceAfter plus margin)"
    audit.normal(workload, "Fenced", f"epoch {epoch} starts on {status.get('site')}: {why}")
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{runner_name(meta['name'], epoch)}"
    Client.get().merge_patch(path, {"spec": {"replicas": replicas}})
    _merge_status(workload, {"move": {**move, "released": True}})


def _report_running(workload: dict[str, Any], indexes: Mapping[str, Any]) -> None:
    meta, status = workload["metadata"], workload.get("status") or {}
    if not status.get("site") or status.get("phase") == "Pending":
        return
    epoch = int(status.get("epoch") or 0)
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    pods = indexes["runner_pod_index"].get((meta["namespace"], meta["name"]), [])
    running = sum(1 for pod in pods if pod.epoch == epoch and pod.phase == "Running" and not pod.deleting)
    generation = int(meta.get("generation") or 0)
    key = (meta["namespace"], meta["name"])
    if running >= replicas and status.get("phase") != "Running" and _running.get(key) != epoch and epoch >= _epochs.get(key, 0):
        _running[key] = epoch
        move = status.get("move")
        message = f"{running}/{replicas} replica(s) of epoch {epoch} running on {status['site']}"
        if move:
            taken = time.time() - (seconds_of(str(move.get("since"))) or time.time())
            message += f", {taken:.1f} s after leaving {move['fromSite']}"
        wanted = [Condition("Running", True, "Running", message)]
        merged = conditions.merge(status.get("conditions"), wanted, generation)
        _merge_status(workload, {"phase": "Running", "move": None, "conditions": merged})
        audit.normal(workload, "Running", message)
    elif running < replicas and (queued := sum(1 for pod in pods if pod.epoch == epoch and pod.queued and not pod.deleting)):
        if conditions.reason_of(status.get("conditions"), "Running") == "Queued":
            return
        _running.pop(key, None)
        track = track_of(meta["namespace"], indexes)
        message = (
            f"{queued}/{replicas} replica(s) of epoch {epoch} wait in Kueue for GPUs of the {track} track's quota "
            f"on {status['site']}"
        )
        wanted = [Condition("Running", False, "Queued", message)]
        _merge_status(workload, {"phase": "Placed", "conditions": conditions.merge(status.get("conditions"), wanted, generation)})
        audit.normal(workload, "Queued", message)
    elif running < replicas and _running.get(key) == epoch:
        del _running[key]
        if conditions.reason_of(status.get("conditions"), "Running") == "Waiting":  # says more already
            _merge_status(workload, {"phase": "Placed"})
            return
        message = f"{running}/{replicas} replica(s) of epoch {epoch} running on {status['site']}"
        wanted = [Condition("Running", False, "ReplicasNotRunning", message)]
        _merge_status(workload, {"phase": "Placed", "conditions": conditions.merge(status.get("conditions"), wanted, generation)})


def _note_hold(workload: dict[str, Any], reason: str) -> None:
    status = workload.get("status") or {}
    if conditions.find(status.get("conditions"), "Running").get("message") == reason:
        return
    generation = int(workload["metadata"].get("generation") or 0)
    wanted = [Condition("Running", False, "Waiting", reason)]
    _merge_status(workload, {"conditions": conditions.merge(status.get("conditions"), wanted, generation)})
    audit.warning(workload, "Waiting", reason)


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


def _unschedulable_for(workload: dict[str, Any], indexes: Mapping[str, Any], now: float, short_of_gpus: bool) -> float | None:
    """How long a pod of the workload's current epoch has waited for room that is not there: the scheduler
    found no node for it, or Kueue holds it while its site is ``short_of_gpus`` (its healthy GPUs no longer
    hold the work placed there). A GPU or node failed, so the site's quotas shrank (``allocation``), and Kueue
    would hold the pod for ever; whether Kueue or the scheduler saw the failure first is a race."""
    meta, status = workload["metadata"], workload.get("status") or {}
    epoch = int(status.get("epoch") or 0)
    pods = [pod for pod in indexes["runner_pod_index"].get((meta["namespace"], meta["name"]), []) if pod.epoch == epoch]
    waiting = [pod.unschedulable_since for pod in pods if pod.unschedulable_since is not None]
    if short_of_gpus:
        waiting += [pod.created for pod in pods if pod.queued and pod.created]
    return now - min(waiting) if waiting else None


def _short_of_gpus(site: str, indexes: Mapping[str, Any]) -> bool:
    """The work placed on ``site`` asks for more GPUs than it has healthy."""
    placed: int = sum(gpus for _, _, gpus in indexes["workload_index"].get(site, []))
    return placed > allocation.healthy_by_site(indexes).get(site, 0)


def _in_use(indexes: Mapping[str, Any], deciding: Key) -> tuple[dict[str, int], dict[str, int], dict[str, list[tuple[int, int]]]]:
    """GPUs in use by node, placed GPUs by site, and reserved replicas by site (work placed a moment ago)."""
    in_use: dict[str, int] = {}
    for store in indexes["runner_pod_index"].values():
        for pod in store:
            if pod.node and pod.phase not in ("Succeeded", "Failed"):
                in_use[pod.node] = in_use.get(pod.node, 0) + pod.gpus
    placed: dict[str, int] = {}
    seen: set[tuple[Key, int]] = set()
    for site, store in indexes["workload_index"].items():
        for key, epoch, gpus in store:
            if key != deciding:
                placed[site] = placed.get(site, 0) + gpus
            seen.add((key, epoch))
    reserved: dict[str, list[tuple[int, int]]] = {}
    now = time.monotonic()
    for key, held in list(_reserved.items()):
        pods = [pod for pod in indexes["runner_pod_index"].get(key, []) if pod.epoch == held.epoch]
        bound = sum(1 for pod in pods if pod.node)
        queued = sum(1 for pod in pods if pod.queued and not pod.node)  # Kueue decides when they get GPUs
        if held.until < now or bound + queued >= held.replicas or key not in indexes["workload_bodies"]:
            del _reserved[key]  # bound or queued, stale, or deleted
            continue
        if key == deciding:
            continue
        if (key, held.epoch) not in seen:
            placed[held.site] = placed.get(held.site, 0) + held.gpus * held.replicas
        reserved.setdefault(held.site, []).append((held.gpus, held.replicas - bound - queued))
    return in_use, placed, reserved


def _pending(body: dict[str, Any], decision: Decision | None, message: str) -> None:
    _running.pop((body["metadata"]["namespace"], body["metadata"]["name"]), None)
    status = body.get("status") or {}
    placed = conditions.find(status.get("conditions"), "Placed")
    if status.get("phase") == "Pending" and placed.get("status") == "False" and placed.get("message") == message:
        return  # nothing new to say
    _write_status(body, decision, {"phase": "Pending", "move": None}, Condition("Placed", False, "NoSiteFits", message))
    audit.warning(body, "NoSiteFits", message)


def _write_status(body: dict[str, Any], decision: Decision | None, fields: dict[str, Any], placed: Condition) -> None:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    status = body.get("status") or {}
    ranked = decision.verdicts if decision else ()
    verdicts = [{"site": v.site, "verdict": str(v.rule), "reason": v.reason[:1024]} for v in ranked]
    patch = {
        **fields,
        "observedGeneration": generation,
        "verdicts": verdicts,
        "conditions": conditions.merge(status.get("conditions"), [placed], generation),
    }
    _merge_status(body, patch)


def _merge_status(body: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    meta = body["metadata"]
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}/status"
    Client.get().merge_patch(path, {"status": patch})
