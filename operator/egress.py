"""EgressDestination handlers: accept EU jurisdictions, refuse the rest, tell tenants."""

from __future__ import annotations

from typing import Any

import kopf
from gigafab.operator import audit, conditions, telemetry
from gigafab.operator.jurisdiction import egress_acceptance
from gigafab.operator.state import Client, View, custom_path
from gigafab.operator.tenants import reconcile


@kopf.on.resume("gigafab.nl", "v1alpha1", "egressdestinations")
@kopf.on.create("gigafab.nl", "v1alpha1", "egressdestinations")
@kopf.on.update("gigafab.nl", "v1alpha1", "egressdestinations")
@telemetry.reconciles("EgressDestination")
def destination_changed(
    name: str, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, reason: str, **kwargs: Any
) -> None:
    generation = int(meta.get("generation") or 0)
    verdict = egress_acceptance(str(spec.get("jurisdiction", "")))
    merged = conditions.merge(status.get("conditions"), [verdict], generation)
    changed = status.get("conditions") != merged or status.get("observedGeneration") != generation
    if changed:
        Client.get().merge_patch(
            custom_path("egressdestinations", name, subresource="status"),
            {"status": {"observedGeneration": generation, "conditions": merged}},
        )
        audit.verdict(body, verdict.status, reason=verdict.reason, message=verdict.message)
    if changed or reason == "update":
        _refresh_tenants(name, View.of(kwargs))


def _refresh_tenants(destination: str, view: View) -> None:
    """Re-reconcile the tenants that name this destination, so policies follow it."""
    for _tenant, store in list(view.tenants.items()):
        for record in store:
            # a tenant not reconciled yet is about to be, by its own handler
            if destination in (record.spec.get("egress") or []) and "observedGeneration" in record.status:
                reconcile(record, view, Client.get())


@kopf.on.event("gigafab.nl", "v1alpha1", "egressdestinations")
@telemetry.reconciles("EgressDestination")
def destination_deleted(name: str, event: kopf.RawEvent, **kwargs: Any) -> None:
    if event.get("type") == "DELETED":
        _refresh_tenants(name, View.of(kwargs))
