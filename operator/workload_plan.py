"""From what the operator holds in memory to placement inputs and back to objects: pure functions.

``site_views`` turns Sites, the node index and the GPUs already in use into the
snapshot ``placement.place`` judges; ``runner_for`` turns a decision into the Deployment
that keeps the workload's replicas running on the chosen site (required node
affinity to its zone, the GPU request, owner reference, the placement epoch as a
label). Its pods do not tolerate the health plane's NoExecute taints, so a GPU or
node failure evicts them at once and the Deployment starts replacements on the
site's healthy nodes. The strategy is Recreate: a replica is never started while
its old copy still runs. Its pods' grace period is capped (``MAX_GRACE_SECONDS``):
a move waits for the old copy's pods to go.

A replica holds ``replica_gpus``: the workload's ``gpus`` (the operator's limit on the
first container) plus whatever GPUs the template's other containers ask for, as the
scheduler counts a pod; room, power and quotas count them all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from gigafab.agents.fencing import WORKLOAD_LABEL
from gigafab.operator.conditions import status_of
from gigafab.operator.placement import SiteView, free_gpus_by_node
from gigafab.operator.quantity import quantity
from gigafab.operator.queues import runner_labels
from gigafab.operator.site_health import GPU_RESOURCE, ZONE_LABEL, NodeSummary, usable_gpus

from gigafab.api.v1alpha1 import API_VERSION, GpuWorkload, GpuWorkloadSpec, SiteSpec

EPOCH_LABEL = "gigafab.nl/epoch"
SITE_LABEL = "gigafab.nl/site"
SILENT_TAINT = "gigafab.nl/node-silent"
MAX_GRACE_SECONDS = 30
"""The longest ``terminationGracePeriodSeconds`` a copy's pods get (a tenant's shorter one is kept).
Every move but one from a lost site waits until the old copy's pods are gone, and a pod may take its
whole grace period to go: a template asking for hours would hold the move, and a draining site, that
long. 30 s is Kubernetes' own default, time for a process to write a checkpoint on SIGTERM, and about
what a move from a lost site waits for its fence (``fenceAfter``, 30 s by default)."""


def site_views(
    sites: Iterable[Mapping[str, Any]],
    nodes: Mapping[str, Iterable[NodeSummary]],
    gpus_in_use: Mapping[str, int],
    placed_gpus: Mapping[str, int],
    reserved: Mapping[str, Iterable[tuple[int, int]]] | None = None,
) -> list[SiteView]:
    """One ``SiteView`` per Site body: ``nodes`` by zone, GPUs in use by node, GPUs placed by site, and
    ``reserved`` replicas by site (``(gpus, replicas)`` of work just placed whose pods are not bound yet)."""
    views = []
    for body in sites:
        name = str(body["metadata"]["name"])
        spec = SiteSpec.from_body(body.get("spec"))
        members = list(nodes.get(spec.zone or name, ()))
        watts = gpu_watts(spec, members)
        views.append(
            SiteView(
                name=name,
                lifecycle=str(spec.lifecycle),
                healthy=status_of((body.get("status") or {}).get("conditions"), "Healthy") == "True",
                jurisdiction=spec.jurisdiction,
                data_classes=frozenset(str(data) for data in spec.data_classes),
                power_limit_kw=float(spec.effective_power_kw),
                placed_power_kw=placed_gpus.get(name, 0) * watts / 1000,
                gpu_watts=watts,
                free_gpus=take(
                    free_gpus_by_node(usable_gpus(node) - gpus_in_use.get(node.name, 0) for node in members),
                    (reserved or {}).get(name, ()),
                ),
            )
        )
    return views


def gpu_watts(spec: SiteSpec, members: Iterable[NodeSummary]) -> int:
    """Power per GPU on a site: the highest ``gigafab.nl/gpu-power-watts`` of its nodes, or the Site's default."""
    return max([node.gpu_watts for node in members if node.gpu_watts] or [spec.gpu_power_watts])


def take(free: Mapping[int, int], replicas: Iterable[tuple[int, int]]) -> dict[int, int]:
    """The free-GPU histogram after ``(gpus, count)`` replicas each took the fullest node that holds them
    (best fit, as the scheduler's bin packing would); replicas that fit nowhere take nothing."""
    left = dict(free)
    for gpus, count in replicas:
        for _ in range(count):
            fitting = [size for size, nodes in left.items() if nodes and size >= gpus]
            if not fitting:
                break
            size = min(fitting)
            left[size] -= 1
            if size - gpus:
                left[size - gpus] = left.get(size - gpus, 0) + 1
    return {size: nodes for size, nodes in left.items() if nodes}


def pod_gpus(pod_spec: Mapping[str, Any]) -> int:
    """GPUs a pod holds, as the scheduler counts them: its containers' and sidecars' limits together, or an
    init container's (with the sidecars started before it) when that is more. Raises ValueError for a GPU
    limit that is not a whole number (the apiserver refuses such a pod; a template may still hold one)."""
    sidecars = peak = 0
    for index, container in enumerate(pod_spec.get("initContainers") or []):
        gpus = _gpus(container, f"initContainers[{index}]")
        if container.get("restartPolicy") == "Always":  # a sidecar: runs beside the containers
            sidecars += gpus
        else:
            peak = max(peak, sidecars + gpus)
    containers = pod_spec.get("containers") or []
    return max(peak, sidecars + sum(_gpus(container, f"containers[{index}]") for index, container in enumerate(containers)))


def _gpus(container: Mapping[str, Any], where: str) -> int:
    """A container's GPU limit (the device plugin's count; a request, if given, must equal it)."""
    limit = ((container.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE, 0) or 0
    try:
        count = quantity(limit)
    except (ValueError, TypeError) as bad:
        raise ValueError(f"{where} asks for {GPU_RESOURCE} {limit!r}, which is not a quantity") from bad
    if count != int(count) or count < 0:
        raise ValueError(f"{where} asks for {GPU_RESOURCE} {limit!r}: GPUs come in whole numbers")
    return int(count)


def replica_gpus(spec: GpuWorkloadSpec) -> int:
    """GPUs one replica holds: ``spec.gpus`` on the first container plus what the template's other
    containers ask for. Raises ValueError, naming the container, for a GPU limit that is not a whole number."""
    pod = copy.deepcopy(spec.template.get("spec") or {})
    _ask_gpus(pod, spec.gpus)
    try:
        return pod_gpus(pod)
    except ValueError as bad:
        raise ValueError(f"spec.template.spec.{bad}") from bad


def _ask_gpus(pod: dict[str, Any], gpus: int) -> None:
    """Put the workload's ``gpus`` on the pod's first container (its request too, if it names one)."""
    containers = pod.get("containers") or []
    if not containers:
        return
    resources = containers[0].setdefault("resources", {})
    resources["limits"] = {**(resources.get("limits") or {}), GPU_RESOURCE: gpus}
    if GPU_RESOURCE in (resources.get("requests") or {}):
        resources["requests"] = {**resources["requests"], GPU_RESOURCE: gpus}


def grace_seconds(pod: Mapping[str, Any]) -> int:
    """The pod's ``terminationGracePeriodSeconds``, capped at ``MAX_GRACE_SECONDS`` (absent: the cap,
    which is Kubernetes' default)."""
    asked = pod.get("terminationGracePeriodSeconds")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 0:
        return min(asked, MAX_GRACE_SECONDS)
    return MAX_GRACE_SECONDS


def runner_name(workload: str, epoch: int) -> str:
    return f"{workload}-e{epoch}"


def runner_for(
    body: Mapping[str, Any],
    zone: str,
    site: str,
    epoch: int,
    *,
    track: str | None = None,
    held: bool = False,
    silent_grace: int = 0,
) -> dict[str, Any]:
    """The Deployment that runs every replica of the GpuWorkload ``body`` on ``site`` (zone ``zone``).

    ``track``: the tenant's allocation track; its pods queue in Kueue (the namespace's LocalQueue, at
    the track's priority) and run once the track's quota on the site admits them.
    ``held``: created with no replicas, started once the old copy is surely stopped.
    ``silent_grace``: seconds its pods stay on a node the health plane reports Silent
    (that node's agent fences its work by then); a failed GPU evicts them at once.
    Its pods get at most ``MAX_GRACE_SECONDS`` to stop."""
    meta = body["metadata"]
    workload = GpuWorkload.model_validate({"spec": body["spec"]})
    template = copy.deepcopy(workload.spec.template)
    labels = {WORKLOAD_LABEL: meta["name"], EPOCH_LABEL: str(epoch), SITE_LABEL: site, **(runner_labels(track) if track else {})}
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    pod = template.setdefault("spec", {})
    pod["restartPolicy"] = "Always"  # what a Deployment requires
    pod["terminationGracePeriodSeconds"] = grace_seconds(pod)
    _ask_gpus(pod, workload.spec.gpus)
    term = {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}
    if silent_grace:
        pod["tolerations"] = [
            *(pod.get("tolerations") or []),
            {"key": SILENT_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": silent_grace},
        ]
    pod["affinity"] = {
        **(pod.get("affinity") or {}),
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": runner_name(meta["name"], epoch),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "GpuWorkload",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 0 if held else workload.spec.replicas,
            "selector": {"matchLabels": {WORKLOAD_LABEL: meta["name"], EPOCH_LABEL: str(epoch)}},
            "strategy": {"type": "Recreate"},
            "template": template,
        },
    }
