"""A Site's status from the nodes of its zone, as a pure function.

A node counts only once its health agent has vouched for it: the operator keeps the number of
its Healthy GPUs in ``gigafab.nl/gpus-healthy`` from the node's record in the health plane
(``health_sync``). A Node without it (no agent ever reported for it, or none of its site's)
has no usable GPUs and does not make its Site Ready or Healthy, whatever its kubelet says.

A kubelet may write its own Node's zone label and annotations, so neither alone makes a node
count: the count is taken only from a Node that carries ``node-restriction.kubernetes.io/gigafab-site``
(which no kubelet may set on itself, and without which the operator writes no count), and the
Site counts only nodes whose label names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gigafab.operator.conditions import Condition

from gigafab.api.labels import SITE_NODE_LABEL


@dataclass(frozen=True)
class NodeSummary:
    """What a Site needs to know of one node."""

    name: str
    zone: str
    gpus: int
    ready: bool
    gpu_watts: int | None = None
    healthy_gpus: int | None = None
    """GPUs the health plane reports Healthy (``gigafab.nl/gpus-healthy``); None: no agent has vouched for it."""
    site: str | None = None
    """The Site the node's provisioner labelled it for (``SITE_NODE_LABEL``); None: not read from a Node."""

    @property
    def vouched(self) -> bool:
        """A health agent of the node's site has reported for it."""
        return self.healthy_gpus is not None

    @property
    def usable(self) -> bool:
        """Ready, not lost, and vouched for: the node can take work."""
        return self.ready and self.vouched


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
    healthy = (annotations or {}).get(HEALTHY_GPUS, "") if SITE_NODE_LABEL in labels else ""
    return NodeSummary(
        name=name,
        zone=labels.get(ZONE_LABEL, ""),
        gpus=int(allocatable.get(GPU_RESOURCE, 0) or 0),
        ready=ready and not spec.get("unschedulable", False) and not _lost(spec),
        gpu_watts=int(watts) if watts and watts.isdigit() else None,
        healthy_gpus=int(healthy) if healthy.isdigit() else None,
        site=labels.get(SITE_NODE_LABEL, ""),
    )


def usable_gpus(node: NodeSummary) -> int:
    """GPUs of a node that can take work: none on a lost, unready or unvouched node, else its Healthy ones."""
    if not node.usable or node.healthy_gpus is None:
        return 0
    return min(node.gpus, node.healthy_gpus)


def site_status(
    zone: str, lifecycle: str, nodes: Iterable[NodeSummary], *, site: str | None = None, gateway_lost: bool = False
) -> tuple[dict[str, Any], list[Condition]]:
    """Counts for status and the Ready and Healthy conditions of a site; ``site``: its name (a node of
    its zone labelled for another Site is vouched for by none of this site's agents); ``gateway_lost``:
    its health gateway's key is gone, so nothing vouches for its nodes whatever they last said."""
    members = [_for_site(node, site) for node in nodes if node.zone == zone]
    usable = [node for node in members if node.usable]
    counts = {
        "zone": zone,
        "nodes": len(members),
        "nodesReady": len(usable),
        "gpus": sum(node.gpus for node in members),
        "gpusHealthy": sum(usable_gpus(node) for node in usable),
    }
    unvouched = sum(1 for node in members if not node.vouched)
    return counts, [_readiness(zone, lifecycle, members, usable, unvouched), _health(members, usable, unvouched, gateway_lost)]


def _for_site(node: NodeSummary, site: str | None) -> NodeSummary:
    """``node`` as ``site`` sees it: unvouched when its provisioner labelled it for another Site."""
    if site is None or node.site is None or node.site == site:
        return node
    return replace(node, healthy_gpus=None)


def _unvouched(count: int) -> str:
    return f"no agent has vouched for {count} node(s)" if count else ""


def _readiness(zone: str, lifecycle: str, members: list[NodeSummary], usable: list[NodeSummary], unvouched: int) -> Condition:
    if lifecycle == "Planned":
        return Condition("Ready", False, "Planned", "the site is planned and takes no work yet")
    if not members:
        return Condition("Ready", False, "NoNodes", f"no node carries topology.kubernetes.io/zone={zone}")
    if not usable and any(node.ready and not node.vouched for node in members):
        return Condition("Ready", False, "NotVouched", f"{_unvouched(unvouched)}, and none of {len(members)} node(s) is usable")
    if not usable:
        return Condition("Ready", False, "NoReadyNodes", f"none of {len(members)} node(s) is ready")
    if lifecycle == "Draining":
        return Condition("Ready", False, "Draining", "the site is draining: no new work is placed here")
    gpus = sum(usable_gpus(node) for node in usable)
    ready = f"{len(usable)}/{len(members)} node(s) ready, {gpus} GPU(s) healthy"
    message = "; ".join(filter(None, [ready, _unvouched(unvouched)]))
    return Condition("Ready", True, "NodesReady", message)


def _health(members: list[NodeSummary], usable: list[NodeSummary], unvouched: int, gateway_lost: bool) -> Condition:
    if gateway_lost:
        message = "the site's health gateway is lost (its lease ran out): nothing vouches for its nodes"
        return Condition("Healthy", False, "GatewayLost", message)
    if not members:
        return Condition("Healthy", False, "NoNodes", "the site has no nodes")
    ready = f"{len(usable)}/{len(members)} node(s) ready"
    if 2 * len(usable) > len(members):
        return Condition("Healthy", True, "MostNodesReady", "; ".join(filter(None, [ready, _unvouched(unvouched)])))
    if unvouched and 2 * (len(usable) + unvouched) > len(members):  # most would be ready, had an agent vouched
        return Condition("Healthy", False, "NotVouched", f"only {ready}; {_unvouched(unvouched)}")
    return Condition("Healthy", False, "MostNodesLost", f"only {ready}")
