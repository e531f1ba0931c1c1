"""AllocationPolicy handlers: each track's guaranteed, used, borrowed and lent GPUs in status.

The guarantees are the policy's shares of the healthy GPUs of the Active sites; use
is the GPUs placed for the GpuWorkloads of each track's tenants (``tracks.track_use``).
Recomputed when the policy changes and every 5 s (sites' health and placements change
all the time; the status is written only when it changed). Enforcement of the
guarantees (admission, lending and reclaim through Kueue) is not built yet; the Ready
condition says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from gigafab.operator import conditions
from gigafab.operator.conditions import Condition
from gigafab.operator.state import Client, custom_path, first
from gigafab.operator.tracks import Share, track_use

GROUP, VERSION, PLURAL = "gigafab.nl", "v1alpha1", "allocationpolicies"


def healthy_gpus(indexes: Mapping[str, Any]) -> int:
    """Healthy GPUs of the Active sites."""
    total = 0
    for store in indexes["site_index"].values():
        for entry in store:
            body = entry["body"]
            if (body.get("spec") or {}).get("lifecycle", "Active") == "Active":
                total += int((body.get("status") or {}).get("gpusHealthy") or 0)
    return total


def used_by_track(indexes: Mapping[str, Any]) -> dict[str, int]:
    """GPUs placed for the GpuWorkloads of each track's tenants."""
    used: dict[str, int] = {}
    for (namespace, _), store in indexes["workload_bodies"].items():
        for workload in store:
            status, spec = workload.get("status") or {}, workload.get("spec") or {}
            if not status.get("site") or status.get("phase") == "Pending":
                continue
            tenant = first(indexes["tenant_index"], first(indexes["namespace_index"], namespace) or "")
            if tenant is None:
                continue
            track = str(tenant.spec.get("track", ""))
            used[track] = used.get(track, 0) + int(spec.get("gpus", 0)) * int(spec.get("replicas", 1))
    return used


def refresh(body: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    shares = [Share(t["name"], int(t["share"]), int(t.get("priority", 0)), bool(t.get("lending", True))) for t in spec["tracks"]]
    healthy = healthy_gpus(indexes)
    use = track_use(shares, healthy, used_by_track(indexes))
    generation = int(meta.get("generation") or 0)
    ready = Condition(
        "Ready",
        True,
        "GuaranteesComputed",
        f"guarantees of {healthy} healthy GPU(s) computed; admission, lending and reclaim through Kueue are not built yet",
    )
    new = {
        "observedGeneration": generation,
        "healthyGpus": healthy,
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
def policy_changed(body: kopf.Body, **kwargs: Any) -> None:
    refresh(dict(body), kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=5.0)
def policy_resync(body: kopf.Body, **kwargs: Any) -> None:
    refresh(dict(body), kwargs)
