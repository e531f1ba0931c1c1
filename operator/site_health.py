"""A Site's status from the nodes of its zone, as a pure function."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gigafab.operator.conditions import Condition


@dataclass(frozen=True)
class NodeSummary:
    """What a Site needs to know of one node."""

    name: str
    zone: str
    gpus: int
    ready: bool
    gpu_watts: int | None = None
    healthy_gpus: int | None = None
    """GPUs the health plane reports Healthy (``gigafab.nl/gpus-healthy``); None: all of them."""


ZONE_LABEL = "topology.kubernetes.io/zone"
"""The node label that says which site (zone) a node belongs to."""
GPU_RESOURCE = "nvidia.com/gpu"
LOST_TAINTS = frozenset({"gigafab.nl/gpu-failed", "gigafab.nl/node-silent"})
HEALTHY_GPUS = "gigafab.nl/gpus-healthy"
"""Node annotation the operator keeps from the health plane: how many of its GPUs are Healthy."""


def _lost(spec: Mapping[str, Any]) -> bool:
    """A node the health plane reports Failed or Silent (its NoExecute taints)."""
    return any(taint.get("key") in LOST_TAINTS for taint in spec.get("taints") or [])


def node_summary(
    name: str,
    labels: Mapping[str, str],
    status: Mapping[str, Any],
    spec: Mapping[str, Any],
    annotations: Mapping[str, str] | None = None,
) -> NodeSummary:
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    allocatable = status.get("allocatable") or {}
    watts = labels.get("gigafab.nl/gpu-power-watts")
    healthy = (annotations or {}).get(HEALTHY_GPUS, "")
    return NodeSummary(
        name=name,
        zone=labels.get(ZONE_LABEL, ""),
        gpus=int(allocatable.get(GPU_RESOURCE, 0) or 0),
        ready=ready and not spec.get("unschedulable", False) and not _lost(spec),
        gpu_watts=int(watts) if watts and watts.isdigit() else None,
        healthy_gpus=int(healthy) if healthy.isdigit() else None,
    )


def usable_gpus(node: NodeSummary) -> int:
    """GPUs of a node that can take work: none on a lost or unready node, else its Healthy ones."""
    if not node.ready:
        return 0
    return node.gpus if node.healthy_gpus is None else min(node.gpus, node.healthy_gpus)


def site_status(
    zone: str, lifecycle: str, nodes: Iterable[NodeSummary], *, gateway_lost: bool = False
) -> tuple[dict[str, Any], list[Condition]]:
    """Counts for status and the Ready and Healthy conditions of a site; ``gateway_lost``: its health
    gateway's key is gone, so nothing vouches for its nodes whatever they last said."""
    members = [node for node in nodes if node.zone == zone]
    ready = [node for node in members if node.ready]
    counts = {
        "zone": zone,
        "nodes": len(members),
        "nodesReady": len(ready),
        "gpus": sum(node.gpus for node in members),
        "gpusHealthy": sum(usable_gpus(node) for node in ready),
    }
    if lifecycle == "Planned":
        readiness = Condition("Ready", False, "Planned", "the site is planned and takes no work yet")
    elif not members:
        readiness = Condition("Ready", False, "NoNodes", f"no node carries topology.kubernetes.io/zone={zone}")
    elif not ready:
        readiness = Condition("Ready", False, "NoReadyNodes", f"none of {len(members)} node(s) is ready")
    elif lifecycle == "Draining":
        readiness = Condition("Ready", False, "Draining", "the site is draining: no new work is placed here")
    else:
        readiness = Condition(
            "Ready", True, "NodesReady", f"{len(ready)}/{len(members)} node(s) ready, {counts['gpusHealthy']} GPU(s) healthy"
        )
    if gateway_lost:
        message = "the site's health gateway is lost (its lease ran out): nothing vouches for its nodes"
        healthy = Condition("Healthy", False, "GatewayLost", message)
    elif not members:
        healthy = Condition("Healthy", False, "NoNodes", "the site has no nodes")
    elif 2 * len(ready) > len(members):
        healthy = Condition("Healthy", True, "MostNodesReady", f"{len(ready)}/{len(members)} node(s) ready")
    else:
        healthy = Condition("Healthy", False, "MostNodesLost", f"only {len(ready)}/{len(members)} node(s) ready")
    return counts, [readiness, healthy]
