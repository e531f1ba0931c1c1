"""Site handlers: status from the nodes in the site's zone."""

from __future__ import annotations

from typing import Any

import kopf
from gigafab.operator import audit, conditions, telemetry
from gigafab.operator.site_contact import CONTACTS
from gigafab.operator.site_health import ZONE_LABEL, NodeSummary, node_summary, site_status
from gigafab.operator.state import Client, custom_path


@kopf.index("", "v1", "nodes", labels={ZONE_LABEL: kopf.PRESENT})
def node_index(
    name: str, labels: kopf.Labels, annotations: kopf.Annotations, status: kopf.Status, spec: kopf.Spec, **_: Any
) -> dict[str, NodeSummary]:
    summary = node_summary(name, dict(labels), dict(status), dict(spec), dict(annotations))
    return {summary.zone: summary}


@kopf.index("gigafab.nl", "v1alpha1", "sites")
def site_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    spec = body.get("spec") or {}
    return {str(spec.get("zone") or name): {"name": name, "body": dict(body)}}


def refresh(body: dict[str, Any], nodes: kopf.Index[str, NodeSummary]) -> None:
    """Compute the Site's status and write it if it changed."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    zone = str(spec.get("zone") or meta["name"])
    generation = int(meta.get("generation") or 0)
    lifecycle, members = str(spec.get("lifecycle", "Active")), list(nodes.get(zone, []))
    counts, wanted = site_status(zone, lifecycle, members, site=meta["name"], gateway_lost=CONTACTS.lost(meta["name"]))
    telemetry.site_observed(meta["name"], healthy_gpus=counts["gpusHealthy"])
    new = {
        **counts,
        "observedGeneration": generation,
        "conditions": conditions.merge(status.get("conditions"), wanted, generation),
    }
    terms = CONTACTS.terms(meta["name"])
    if terms is not None:  # kept for a restarted operator that finds the gateway gone (health_watch.start)
        new["healthGateway"] = {"fenceAfterSeconds": terms[1], "leaseTtlSeconds": terms[0]}
    if all(status.get(key) == value for key, value in new.items()):
        return
    Client.get().merge_patch(custom_path("sites", meta["name"], subresource="status"), {"status": new})
    previous = conditions.status_of(status.get("conditions"), "Ready")
    ready = wanted[0]
    if previous != ready.status_text:
        audit.verdict(body, ready.status, reason=ready.reason, message=ready.message)


@kopf.on.resume("gigafab.nl", "v1alpha1", "sites")
@kopf.on.create("gigafab.nl", "v1alpha1", "sites")
@kopf.on.update("gigafab.nl", "v1alpha1", "sites")
@telemetry.reconciles("Site")
def site_changed(body: kopf.Body, **kwargs: Any) -> None:
    refresh(dict(body), kwargs["node_index"])


@kopf.timer("gigafab.nl", "v1alpha1", "sites", interval=30, idle=10)
@telemetry.reconciles("Site")
def site_resync(body: kopf.Body, **kwargs: Any) -> None:
    refresh(dict(body), kwargs["node_index"])


@kopf.on.event("", "v1", "nodes", labels={ZONE_LABEL: kopf.PRESENT})
@telemetry.reconciles("Node")
def node_changed(labels: kopf.Labels, **kwargs: Any) -> None:
    zone = labels.get(ZONE_LABEL, "")
    for entry in kwargs["site_index"].get(zone, []):
        refresh(entry["body"], kwargs["node_index"])
