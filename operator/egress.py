"""EgressDestination handlers: accept EU jurisdictions, refuse the rest and overlapping claims, tell tenants.

A destination's verdict depends on the others (an EU claim on a range a non-EU destination
also claims is refused, ``jurisdiction.py``), so any change of one re-judges them all; each
status is written only when it changed, and the tenants naming a destination whose verdict
changed are reconciled again, so their NetworkPolicies follow at once.
"""

from __future__ import annotations

from typing import Any

import kopf
from gigafab.operator import audit, conditions, telemetry
from gigafab.operator.jurisdiction import judge_all
from gigafab.operator.state import Client, View, custom_path
from gigafab.operator.tenants import reconcile


@kopf.on.resume("gigafab.nl", "v1alpha1", "egressdestinations")
@kopf.on.create("gigafab.nl", "v1alpha1", "egressdestinations")
@kopf.on.update("gigafab.nl", "v1alpha1", "egressdestinations")
@telemetry.reconciles("EgressDestination")
def destination_changed(name: str, body: kopf.Body, status: kopf.Status, meta: kopf.Meta, reason: str, **kwargs: Any) -> None:
    view = View.of(kwargs)
    verdicts = judge_all(view.declared())
    if name in verdicts:
        generation = int(meta.get("generation") or 0)
        verdict = verdicts[name]
        merged = conditions.merge(status.get("conditions"), [verdict], generation)
        if status.get("conditions") != merged or status.get("observedGeneration") != generation:
            Client.get().merge_patch(
                custom_path("egressdestinations", name, subresource="status"),
                {"status": {"observedGeneration": generation, "conditions": merged}},
            )
            audit.verdict(body, verdict.status, reason=verdict.reason, message=verdict.message)
            _refresh_tenants(name, view)
        elif reason == "update":
            _refresh_tenants(name, view)
    _rejudge_others(name, view, verdicts)


def _rejudge_others(changed: str, view: View, verdicts: dict[str, conditions.Condition]) -> None:
    """Write the verdict of every other destination that ``changed`` turned (an overlap made or undone)."""
    for name, declared in view.declared().items():
        verdict = verdicts.get(name)
        if name == changed or verdict is None or declared.written == (verdict.status_text, verdict.reason):
            continue
        found = Client.get().get(custom_path("egressdestinations", name))
        if found is None:
            continue
        status = found.get("status") or {}
        generation = int(found["metadata"].get("generation") or 0)
        merged = conditions.merge(status.get("conditions"), [verdict], generation)
        if status.get("conditions") == merged:
            continue  # the index had not seen the last write yet
        Client.get().merge_patch(
            custom_path("egressdestinations", name, subresource="status"),
            {"status": {"observedGeneration": generation, "conditions": merged}},
        )
        audit.verdict(found, verdict.status, reason=verdict.reason, message=f"{verdict.message} (after {changed} changed)")
        _refresh_tenants(name, view)


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
        view = View.of(kwargs)
        _refresh_tenants(name, view)
        _rejudge_others(name, view, judge_all(view.declared()))
