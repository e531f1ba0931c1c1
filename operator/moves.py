"""A new copy held until the old one has surely stopped: the ``status.move`` record and its release.

Every new epoch of a workload that ran before starts *held* (its Deployment with no
replicas): a move away from a site (failover, draining, a power cap), and work placed
again after a power cap suspended it. ``record`` writes down what the hold waits for:
``startsAfter``, the old site's fence deadline when part of it is lost (its agents have
stopped their work by then), and ``awaitOldCopies`` (``failover.awaits_old_copies``):
whether the old copy's pods on that site must also be seen to go. ``old_pods`` turns the
pods of older epochs still in the API into ``failover.OldPod`` for ``failover.may_start``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from gigafab.operator.conditions import now_rfc3339, rfc3339
from gigafab.operator.failover import Cause, OldPod, awaits_old_copies
from gigafab.operator.runner_pods import RunnerPod
from gigafab.operator.site_contact import CONTACTS

SUSPENDED = "placed again after a suspension"


def record(site: str, why: str, cause: Cause) -> dict[str, Any]:
    """``status.move`` for a new copy that follows one on ``site``, which it leaves because ``why``."""
    fenced = CONTACTS.fenced_at(site)
    return {
        "fromSite": site,
        "reason": why[:1024],
        "since": now_rfc3339(),
        "startsAfter": rfc3339(fenced if fenced is not None else time.time()),
        "awaitOldCopies": awaits_old_copies(cause, fenced),
        "released": False,
    }


def old_pods(pods: Iterable[RunnerPod], epoch: int, move: Mapping[str, Any]) -> list[OldPod]:
    """The pods of epochs before ``epoch`` that may still run, as ``failover.may_start`` judges them."""
    lost_site = "" if move.get("awaitOldCopies") else str(move.get("fromSite") or "")
    return [
        OldPod(
            on_lost_site=bool(lost_site) and pod.site == lost_site,
            node_fenced_at=CONTACTS.node_fenced_at(pod.site, pod.node) if pod.node else None,
        )
        for pod in pods
        if pod.epoch < epoch and not pod.finished
    ]


def released_because(move: Mapping[str, Any]) -> str:
    """Why a held copy may start now, for its ``Fenced`` event."""
    if move.get("awaitOldCopies"):
        return f"the old copy's pods have stopped (on {move['fromSite']}: gone, or on a node its agent has fenced)"
    return f"{move['fromSite']} is fenced since {move['startsAfter']} (last contact plus fenceAfter plus margin)"
