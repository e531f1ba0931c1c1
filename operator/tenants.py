"""Tenant handlers: fetch from memory → decide → apply → set conditions.

Policy for removal (docs/tenancy.md): a namespace dropped from a Tenant, or every
namespace of a deleted Tenant, is deleted only when no pod in it is Pending or
Running, unless the Tenant carries the annotation
``gigafab.nl/allow-delete-with-running-work: "true"``. Until then the namespace
stays, the Tenant says why (Ready=False, NamespaceRemovalBlocked), and a Warning
event is posted.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from gigafab.operator import audit, conditions, telemetry
from gigafab.operator.indexes import gpus_used
from gigafab.operator.kube import Kube, collection_path, namespace_path
from gigafab.operator.state import Client, TenantRecord, View, custom_path
from gigafab.operator.tenancy import MANAGED_BY, TENANT_LABEL, desired_objects, namespaces_of
from gigafab.operator.tenant_checks import Problem, find_problems
from pydantic import ValidationError

from gigafab.api.v1alpha1.tenant import TenantSpec

FORCE_ANNOTATION = "gigafab.nl/allow-delete-with-running-work"
RETRY_SECONDS = float(os.environ.get("GIGAFAB_RETRY_SECONDS", "10"))
log = logging.getLogger("gigafab.tenants")


def active_pods(kube: Kube, namespace: str) -> int:
    pods = kube.list(collection_path("v1", "Pod", namespace), fields="status.phase!=Succeeded,status.phase!=Failed")
    return len(pods)


def forced(record: TenantRecord) -> bool:
    return record.annotations.get(FORCE_ANNOTATION, "").lower() == "true"


def reconcile(record: TenantRecord, view: View, kube: Kube) -> bool:
    """Bring tenant ``record`` to its desired state; True when it is Ready."""
    try:
        spec = TenantSpec.model_validate(dict(record.spec))
    except ValidationError as invalid:
        return _not_ready(record, kube, Problem("InvalidSpec", str(invalid).splitlines()[0]), [])
    namespaces = namespaces_of(record.name, spec)
    destinations = view.destination_map(list(spec.egress))
    problems = find_problems(
        record.name,
        spec,
        namespace_owners=view.owners(namespaces),
        destinations=destinations,
        quota_used=view.quota_used(namespaces),
    )
    if problems:
        return _not_ready(record, kube, problems[0], namespaces, problems)
    plan = desired_objects(record.name, spec, destinations)
    for manifest in plan.objects:
        kube.ensure(manifest)
    blocked = _remove_dropped(record, view, kube, set(namespaces))
    wanted = [
        conditions.Condition(
            "Ready", True, "Reconciled", f"{len(namespaces)} namespace(s) with quota, access and network boundaries"
        )
    ]
    if blocked:
        wanted = [conditions.Condition("Ready", False, "NamespaceRemovalBlocked", blocked)]
    wanted.append(_egress_condition(plan.refused_egress))
    if plan.refused_egress and not _has_reason(record, "Egress", "DestinationRefused"):
        audit.warning(
            record.reference(),
            reason="EgressRefused",
            message=f"egress to {', '.join(plan.refused_egress)} refused: not an EU jurisdiction",
        )
    if _status_changed(record, wanted) and not blocked:
        audit.normal(record.reference(), reason="Reconciled", message=wanted[0].message)
    _write_status(record, kube, wanted, namespaces, view, spec)
    return not blocked


def _egress_condition(refused: list[str]) -> conditions.Condition:
    if refused:
        return conditions.Condition("Egress", False, "DestinationRefused", f"not allowed, outside the EU: {', '.join(refused)}")
    return conditions.Condition("Egress", True, "AllAccepted", "every named destination is allowed")


def _remove_dropped(record: TenantRecord, view: View, kube: Kube, keep: set[str]) -> str:
    """Delete namespaces the tenant no longer lists; a message if some must wait."""
    waiting = []
    for namespace in view.namespaces_of_tenant(record.name):
        if namespace in keep:
            continue
        running = active_pods(kube, namespace)
        if running and not forced(record):
            waiting.append(f"{namespace} ({running} pod(s) running)")
            continue
        kube.delete(namespace_path(namespace))
        audit.normal(
            record.reference(), reason="NamespaceDeleted", message=f"namespace {namespace} removed from the tenant and deleted"
        )
    if not waiting:
        return ""
    message = f"kept until their work ends: {', '.join(waiting)}; set annotation {FORCE_ANNOTATION}=true to delete anyway"
    if not _has_reason(record, "Ready", "NamespaceRemovalBlocked"):
        audit.warning(record.reference(), reason="NamespaceRemovalBlocked", message=message)
    return message


def _not_ready(
    record: TenantRecord, kube: Kube, problem: Problem, namespaces: list[str], problems: list[Problem] | None = None
) -> bool:
    message = "; ".join(p.message for p in problems or [problem])
    if not _has_reason(record, "Ready", problem.reason):
        audit.warning(record.reference(), reason=problem.reason, message=message)
    log.warning("tenant %s not ready: %s: %s", record.name, problem.reason, message)
    _write_status(record, kube, [conditions.Condition("Ready", False, problem.reason, message)], namespaces, None, None)
    return False


def _has_reason(record: TenantRecord, kind: str, reason: str) -> bool:
    return any(c.get("type") == kind and c.get("reason") == reason for c in record.status.get("conditions") or [])


def _status_changed(record: TenantRecord, wanted: list[conditions.Condition]) -> bool:
    current = {c.get("type"): c for c in record.status.get("conditions") or []}
    return any(
        current.get(c.type, {}).get("status") != c.status_text or current.get(c.type, {}).get("reason") != c.reason
        for c in wanted
    )


def _gpus_used(view: View, namespaces: list[str]) -> int:
    """GPUs requested by the tenant's pods, as its namespaces' quotas count them."""
    return sum(gpus_used(used) for used in view.quota_used(namespaces).values())


def _write_status(
    record: TenantRecord,
    kube: Kube,
    wanted: list[conditions.Condition],
    namespaces: list[str],
    view: View | None,
    spec: TenantSpec | None,
) -> None:
    """The one place Tenant status is written, and only when it changed."""
    status: dict[str, Any] = {
        "observedGeneration": record.generation,
        "namespaces": namespaces,
        "conditions": conditions.merge(record.status.get("conditions"), wanted, record.generation),
    }
    if spec is not None and view is not None:
        status["gpuQuota"] = spec.quota.gpus
        status["gpusUsed"] = _gpus_used(view, namespaces)
    if all(record.status.get(key) == value for key, value in status.items()):
        return
    kube.merge_patch(custom_path("tenants", record.name, subresource="status"), {"status": status})


# -- handlers ---------------------------------------------------------------


@kopf.on.event("", "v1", "resourcequotas", labels={TENANT_LABEL: kopf.PRESENT, **MANAGED_BY})
@telemetry.reconciles("ResourceQuota")
def quota_used_changed(labels: kopf.Labels, **kwargs: Any) -> None:
    """Keep a Tenant's ``status.gpusUsed`` current as its pods come and go."""
    view = View.of(kwargs)
    record = view.tenant(labels[TENANT_LABEL])
    if record is None or record.deleting or "gpusUsed" not in record.status:
        return
    used = _gpus_used(view, list(record.status.get("namespaces") or []))
    if used != record.status.get("gpusUsed"):
        Client.get().merge_patch(custom_path("tenants", record.name, subresource="status"), {"status": {"gpusUsed": used}})


@kopf.on.resume("gigafab.nl", "v1alpha1", "tenants")
@kopf.on.create("gigafab.nl", "v1alpha1", "tenants")
@kopf.on.update("gigafab.nl", "v1alpha1", "tenants")
@telemetry.reconciles("Tenant")
def tenant_changed(name: str, **kwargs: Any) -> None:
    view = View.of(kwargs)
    record = view.tenant(name)
    if record is None:
        raise kopf.TemporaryError("tenant not indexed yet", delay=1)
    if not reconcile(_fresh(record, kwargs), view, Client.get()):
        raise kopf.TemporaryError("tenant not ready; retrying", delay=RETRY_SECONDS)


def _fresh(record: TenantRecord, kwargs: dict[str, Any]) -> TenantRecord:
    """The record as of this handler's body (the index may trail by an event)."""
    body = kwargs["body"]
    return TenantRecord(
        record.name,
        record.uid,
        int(body["metadata"].get("generation") or 0),
        dict(body["spec"]),
        dict(body["metadata"].get("annotations") or {}),
        dict(body.get("status") or {}),
    )


@kopf.on.delete("gigafab.nl", "v1alpha1", "tenants")
@telemetry.reconciles("Tenant")
def tenant_deleted(name: str, **kwargs: Any) -> None:
    view = View.of(kwargs)
    kube = Client.get()
    record = _fresh(view.tenant(name) or TenantRecord(name, kwargs["uid"], 0, {}, {}, {}), kwargs)
    owned = view.namespaces_of_tenant(name)
    busy = {ns: active_pods(kube, ns) for ns in owned}
    busy = {ns: count for ns, count in busy.items() if count}
    if busy and not forced(record):
        message = (
            "deletion waits for running work in "
            + ", ".join(f"{ns} ({n} pod(s))" for ns, n in sorted(busy.items()))
            + f"; set annotation {FORCE_ANNOTATION}=true to delete anyway"
        )
        _not_ready(record, kube, Problem("DeletionBlocked", message), sorted(busy))
        raise kopf.TemporaryError(message, delay=RETRY_SECONDS)
    for namespace in owned:
        kube.delete(namespace_path(namespace))
    audit.normal(record.reference(), reason="Deleted", message="tenant namespaces deleted")
