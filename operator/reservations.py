"""GPUs taken on each site, as placement's snapshot counts them: held by pods, placed, or reserved.

A workload just placed holds no GPUs yet: its pods are not bound. Its **reservation**
counts its replicas as taken on the chosen site until they are bound, queued in Kueue,
or ``RESERVATION_SECONDS`` have passed, so two workloads placed a moment apart never
count the same free GPUs. Reservations live in memory only: after a restart the pods
are bound or the work is judged again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gigafab.operator.runner_pods import Key

RESERVATION_SECONDS = 30.0
"""Far longer than the scheduler takes to bind a placed copy's pods or Kueue to queue them; a reservation
left after that is stale (its Deployment gone, say) and would only hide free GPUs."""


@dataclass(frozen=True)
class Reservation:
    site: str
    epoch: int
    gpus: int
    replicas: int
    until: float


_reserved: dict[Key, Reservation] = {}


def reserve(key: Key, site: str, epoch: int, gpus: int, replicas: int) -> None:
    """``replicas`` of ``gpus`` GPUs of the workload ``key``'s epoch ``epoch``, just placed on ``site``."""
    _reserved[key] = Reservation(site, epoch, gpus, replicas, time.monotonic() + RESERVATION_SECONDS)


def release(key: Key) -> None:
    _reserved.pop(key, None)


def taken(indexes: Mapping[str, Any], deciding: Key) -> tuple[dict[str, int], dict[str, int], dict[str, list[tuple[int, int]]]]:
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
