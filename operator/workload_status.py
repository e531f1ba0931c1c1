"""What a GpuWorkload's status says, written whole: Running, Queued, Waiting, Pending.

``report_running`` turns the pods of the current copy into the phase and the Running
condition (an Event for each change); ``note_hold`` says why work stays where it is;
``pending`` why it is placed nowhere. Each writes only what changed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gigafab.operator import audit, conditions
from gigafab.operator.allocation import track_of
from gigafab.operator.conditions import Condition, seconds_of
from gigafab.operator.placement import Decision
from gigafab.operator.runner_pods import Key
from gigafab.operator.state import Client

GROUP, VERSION, PLURAL = "gigafab.nl", "v1alpha1", "gpuworkloads"
_running: dict[Key, int] = {}
"""The epoch last reported Running per workload (pod events come faster than the status echoes)."""


def forget(key: Key) -> None:
    """The workload stopped running (suspended, or placed nowhere)."""
    _running.pop(key, None)


def report_running(workload: dict[str, Any], indexes: Mapping[str, Any], decided: int) -> None:
    """Running once every replica of the current epoch runs (unless ``decided``, the epoch last placed, is newer);
    Queued while Kueue holds some; back to Placed when some stopped."""
    meta, status = workload["metadata"], workload.get("status") or {}
    if not status.get("site") or status.get("phase") == "Pending":
        return
    epoch = int(status.get("epoch") or 0)
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    pods = indexes["runner_pod_index"].get((meta["namespace"], meta["name"]), [])
    running = sum(1 for pod in pods if pod.epoch == epoch and pod.phase == "Running" and not pod.deleting)
    generation = int(meta.get("generation") or 0)
    key = (meta["namespace"], meta["name"])
    if running >= replicas and status.get("phase") != "Running" and _running.get(key) != epoch and epoch >= decided:
        _running[key] = epoch
        move = status.get("move")
        message = f"{running}/{replicas} replica(s) of epoch {epoch} running on {status['site']}"
        if move:
            taken = time.time() - (seconds_of(str(move.get("since"))) or time.time())
            message += f", {taken:.1f} s after leaving {move['fromSite']}"
        wanted = [Condition("Running", True, "Running", message)]
        merged = conditions.merge(status.get("conditions"), wanted, generation)
        merge_status(workload, {"phase": "Running", "move": None, "conditions": merged})
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
        merge_status(workload, {"phase": "Placed", "conditions": conditions.merge(status.get("conditions"), wanted, generation)})
        audit.normal(workload, "Queued", message)
    elif running < replicas and _running.get(key) == epoch:
        del _running[key]
        if conditions.reason_of(status.get("conditions"), "Running") == "Waiting":  # says more already
            merge_status(workload, {"phase": "Placed"})
            return
        message = f"{running}/{replicas} replica(s) of epoch {epoch} running on {status['site']}"
        wanted = [Condition("Running", False, "ReplicasNotRunning", message)]
        merge_status(workload, {"phase": "Placed", "conditions": conditions.merge(status.get("conditions"), wanted, generation)})


def note_hold(workload: dict[str, Any], reason: str) -> None:
    status = workload.get("status") or {}
    if conditions.find(status.get("conditions"), "Running").get("message") == reason:
        return
    generation = int(workload["metadata"].get("generation") or 0)
    wanted = [Condition("Running", False, "Waiting", reason)]
    merge_status(workload, {"conditions": conditions.merge(status.get("conditions"), wanted, generation)})
    audit.warning(workload, "Waiting", reason)


def pending(body: dict[str, Any], decision: Decision | None, message: str, *, reason: str = "NoSiteFits") -> None:
    _running.pop((body["metadata"]["namespace"], body["metadata"]["name"]), None)
    status = body.get("status") or {}
    placed = conditions.find(status.get("conditions"), "Placed")
    if status.get("phase") == "Pending" and placed.get("status") == "False" and placed.get("message") == message:
        return  # nothing new to say
    write_status(body, decision, {"phase": "Pending", "move": None}, Condition("Placed", False, reason, message))
    audit.warning(body, reason, message)


def write_status(body: dict[str, Any], decision: Decision | None, fields: dict[str, Any], placed: Condition) -> None:
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
    merge_status(body, patch)


def merge_status(body: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    meta = body["metadata"]
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}/status"
    Client.get().merge_patch(path, {"status": patch})
