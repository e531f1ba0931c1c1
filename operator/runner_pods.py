"""The pods of every copy of every GpuWorkload, as the operator remembers them, and what they wait for.

``runner_pod_index`` keeps, per workload, each pod of each epoch: where it runs, whether
it is going, the GPUs it holds, and why the scheduler or Kueue holds it back. ``waits``
reads a workload's current copy from it: how long a replica has waited for GPUs its
site no longer has (failover moves the work) and how long one has been unschedulable
for any other reason (the work stays, and says why: ``scheduling``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from gigafab.agents.fencing import WORKLOAD_LABEL
from gigafab.operator import allocation
from gigafab.operator.conditions import seconds_of
from gigafab.operator.scheduling import summary, waits_for_gpus
from gigafab.operator.site_health import NodeSummary
from gigafab.operator.workload_plan import EPOCH_LABEL, SITE_LABEL, pod_gpus

Key = tuple[str, str]
"""(namespace, name) of a GpuWorkload."""
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
    site: str = ""
    """The site its copy was placed on (its ``gigafab.nl/site`` label)."""
    unschedulable: str = ""
    """Why the scheduler found no node for it (its PodScheduled=False message), while it has none."""

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@kopf.index("", "v1", "pods", labels={WORKLOAD_LABEL: kopf.PRESENT})
def runner_pod_index(
    namespace: str | None, labels: kopf.Labels, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> dict[Key, RunnerPod]:
    """Pods of every epoch, by workload."""
    refused = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        ),
        None,
    )
    pod = RunnerPod(
        epoch=int(labels.get(EPOCH_LABEL, "0") or 0),
        node=spec.get("nodeName"),
        phase=str(status.get("phase") or "Pending"),
        unschedulable_since=seconds_of(str(refused.get("lastTransitionTime") or "")) if refused else None,
        deleting=bool(meta.get("deletionTimestamp")),
        gpus=pod_gpus(dict(spec)),
        created=seconds_of(str(meta.get("creationTimestamp") or "")) or 0.0,
        queued=any(gate.get("name") == ADMISSION_GATE for gate in spec.get("schedulingGates") or []),
        site=labels.get(SITE_LABEL, ""),
        unschedulable=str(refused.get("message") or "") if refused else "",
    )
    return {(str(namespace), labels[WORKLOAD_LABEL]): pod}


@dataclass(frozen=True)
class Waits:
    """What the replicas of a workload's current copy wait for, in seconds (None: none waits so)."""

    for_gpus: float | None = None
    """The oldest waits for GPUs its site lacks: unschedulable for want of them, or held by Kueue while the
    site is short of GPUs."""
    blocked_for: float | None = None
    """The oldest is unschedulable for another reason."""
    blocked_by: str = ""
    """The scheduler's reason for that one."""


def waits(workload: Mapping[str, Any], indexes: Mapping[str, Any], now: float, site: SiteNodes) -> Waits:
    """How long the current copy's replicas have waited, and for what, on ``site``.

    A pod the scheduler refused waits for GPUs only when ``scheduling.waits_for_gpus`` says so; a pod Kueue
    holds waits for them while the site is ``short`` of GPUs (its healthy GPUs no longer hold the work placed
    there). A GPU or node failed, so the site's quotas shrank (``allocation``), and Kueue would hold the pod
    for ever; whether Kueue or the scheduler saw the failure first is a race."""
    meta, status = workload["metadata"], workload.get("status") or {}
    epoch = int(status.get("epoch") or 0)
    pods = [pod for pod in indexes["runner_pod_index"].get((meta["namespace"], meta["name"]), []) if pod.epoch == epoch]
    for_gpus: list[float] = []
    blocked: list[tuple[float, str]] = []
    for pod in pods:
        if pod.unschedulable_since is None or pod.deleting:
            continue
        if waits_for_gpus(pod.unschedulable, site.nodes, site.lost):
            for_gpus.append(pod.unschedulable_since)
        else:
            blocked.append((pod.unschedulable_since, summary(pod.unschedulable)))
    if site.short:
        for_gpus += [pod.created for pod in pods if pod.queued and pod.created]
    oldest = min(blocked, default=None)
    return Waits(
        for_gpus=now - min(for_gpus) if for_gpus else None,
        blocked_for=now - oldest[0] if oldest else None,
        blocked_by=oldest[1] if oldest else "",
    )


@dataclass(frozen=True)
class SiteNodes:
    """What ``waits`` needs to know of a site: its nodes, how many of them are lost, whether it is short of GPUs."""

    nodes: int
    lost: int
    short: bool


def site_nodes(site: str, members: Iterable[NodeSummary], indexes: Mapping[str, Any]) -> SiteNodes:
    """``members``: the site's nodes. Lost: not ready, failed or silent to the health plane, or cordoned (no usable
    GPUs, as placement counts them). Short: the work placed on the site asks for more GPUs than it has healthy."""
    nodes = list(members)
    placed: int = sum(gpus for _, _, gpus in indexes["workload_index"].get(site, []))
    short = placed > allocation.healthy_by_site(indexes).get(site, 0)
    return SiteNodes(nodes=len(nodes), lost=sum(1 for node in nodes if not node.ready), short=short)
