"""Tenant handlers: fetch from memory → decide → apply → set conditions.

Policy for removal (docs/tenancy.md): a namespace dropped from a Tenant, or every
namespace of a deleted Tenant, is deleted only when nothing in it would be lost with
it (``tenant_checks.removal_blockers``: a pod Pending or Running, a
PersistentVolumeClaim, a GpuWorkload that has not Failed), unless the Tenant carries
the annotation ``gigafab.nl/allow-delete-with-running-work: "true"``. Until then the
namespace stays, the Tenant says why (Ready=False, NamespaceRemovalBlocked or
DeletionBlocked, naming what blocks), and a Warning event is posted.

Policy for problems: a Tenant with a problem (``tenant_checks.find_problems``) gets
nothing new until it is solved, but what takes rights away is applied at once
(``revocation.py``): removed members lose their RoleBindings, deleted or refused
destinations leave its NetworkPolicies, sites that may no longer hold its data leave
its namespaces' lawful sites.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from gigafab.operator import audit, conditions, telemetry
from gigafab.operator.drift import held
from gigafab.operator.indexes import gpus_used
from gigafab.operator.kube import Kube, collection_path, namespace_path, object_path
from gigafab.operator.revocation import narrowed_sites, revocations
from gigafab.operator.sovereignty import Lawful, no_lawful_site
from gigafab.operator.state import Client, TenantRecord, View, custom_path
from gigafab.operator.tenancy import BOUNDARY, MANAGED_BY, TENANT_LABEL, TenantObjects, namespaces_of
from gigafab.operator.tenant_checks import Problem, removal_blockers
from pydantic import ValidationError

from gigafab.api.labels import LAWFUL_SITES_ANNOTATION
from gigafab.api.v1alpha1.tenant import TenantSpec

FORCE_ANNOTATION = "gigafab.nl/allow-delete-with-running-work"
RETRY_SECONDS = float(os.environ.get("GIGAFAB_RETRY_SECONDS", "10"))
log = logging.getLogger("gigafab.tenants")


def blockers(kube: Kube, namespace: str) -> list[str]:
    """What deleting ``namespace`` would destroy (``removal_blockers``), read from the apiserver."""
    pods = kube.list(collection_path("v1", "Pod", namespace), fields="status.phase!=Succeeded,status.phase!=Failed")
    claims = kube.list(collection_path("v1", "PersistentVolumeClaim", namespace))
    workloads = kube.list(collection_path("gigafab.nl/v1alpha1", "GpuWorkload", namespace))
    return removal_blockers(pods, claims, workloads)


def forced(record: TenantRecord) -> bool:
    return record.annotations.get(FORCE_ANNOTATION, "").lower() == "true"


def reconcile(record: TenantRecord, view: View, kube: Kube) -> bool:
    """Bring tenant ``record`` to its desired state; True when it is Ready."""
    try:
        spec = TenantSpec.model_validate(dict(record.spec))
    except ValidationError as invalid:
        return _not_ready(record, kube, Problem("InvalidSpec", str(invalid).splitlines()[0]), [])
    namespaces = namespaces_of(record.name, spec)
    lawful = view.lawful(record.name, spec)
    plan = view.plan(record.name, spec)
    problems = view.problems(record.name, spec)
    if problems:
        _revoke(record, view, kube, plan, lawful, problems[0])
        return _not_ready(record, kube, problems[0], namespaces, problems)
    for manifest in plan.objects:
        kube.ensure(manifest)
    _remove_unbound(record, kube, plan)
    blocked = _remove_dropped(record, view, kube, set(namespaces))
    wanted = [
        conditions.Condition(
            "Ready", True, "Reconciled", f"{len(namespaces)} namespace(s) with quota, access and network boundaries"
        )
    ]
    if blocked:
        wanted = [conditions.Condition("Ready", False, "NamespaceRemovalBlocked", blocked)]
    wanted.append(_egress_condition(plan.refused_egress, view))
    wanted.append(_sites_condition(record, spec, lawful))
    if plan.refused_egress and not _has_reason(record, "Egress", "DestinationRefused"):
        audit.warning(record.reference(), reason="EgressRefused", message=f"egress refused: {wanted[-2].message}")
    if _status_changed(record, wanted) and not blocked:
        audit.normal(record.reference(), reason="Reconciled", message=wanted[0].message)
    _write_status(record, kube, wanted, namespaces, view, spec)
    return not blocked


def _revoke(record: TenantRecord, view: View, kube: Kube, plan: TenantObjects, lawful: Lawful, problem: Problem) -> None:
    """While ``problem`` holds everything else, take away in the tenant's own namespaces what it no longer grants."""
    owners = view.owners(plan.namespaces)
    taken = []
    for namespace in (ns for ns in plan.namespaces if owners.get(ns) == record.name):
        desired = [m for m in plan.objects if m["metadata"].get("namespace") == namespace]
        path = collection_path("rbac.authorization.k8s.io/v1", "RoleBinding", namespace)
        bindings = kube.list(path, labels=_selector(record))
        boundary = kube.get(object_path(_boundary_ref(namespace)))
        apply, delete = revocations(bindings, boundary, desired)
        for manifest in apply:
            kube.apply(manifest)
            taken.append(f"{manifest['kind']} {namespace}/{manifest['metadata']['name']} narrowed")
        for name in delete:
            kube.delete(f"{path}/{name}")
            taken.append(f"RoleBinding {namespace}/{name} removed")
        carried = view.carried_sites(namespace)
        kept = narrowed_sites(carried, lawful.sites)
        if carried is not None and kept != carried:
            kube.merge_patch(namespace_path(namespace), {"metadata": {"annotations": {LAWFUL_SITES_ANNOTATION: kept}}})
            taken.append(f"namespace {namespace} lawful sites {carried or '(none)'} → {kept or '(none)'}")
    if taken:
        message = f"revoked while {problem.reason} holds the rest: {'; '.join(taken)}"
        log.info("tenant %s: %s", record.name, message)
        audit.normal(record.reference(), reason="AccessRevoked", message=message)


def _boundary_ref(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": BOUNDARY, "namespace": namespace}}


def _selector(record: TenantRecord) -> str:
    return ",".join(f"{key}={value}" for key, value in {**MANAGED_BY, TENANT_LABEL: record.name}.items())


def _remove_unbound(record: TenantRecord, kube: Kube, plan: TenantObjects) -> None:
    """Delete the RoleBindings of roles no member holds any more (the others were just rewritten)."""
    wanted = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in plan.objects if m["kind"] == "RoleBinding"}
    for namespace in plan.namespaces:
        path = collection_path("rbac.authorization.k8s.io/v1", "RoleBinding", namespace)
        for binding in kube.list(path, labels=_selector(record)):
            name = binding["metadata"]["name"]
            if (namespace, name) not in wanted:
                kube.delete(f"{path}/{name}")
                message = f"RoleBinding {namespace}/{name} removed: no member holds its role"
                audit.normal(record.reference(), reason="AccessRevoked", message=message)


def _sites_condition(record: TenantRecord, spec: TenantSpec, lawful: Lawful) -> conditions.Condition:
    """Where the tenant's pods may run; a Warning when nowhere (every pod of it is refused until then)."""
    if lawful.sites:
        return conditions.Condition("Sites", True, "Lawful", f"pods run only on {', '.join(lawful.sites)}")
    message = no_lawful_site(record.name, spec, lawful)
    if not _has_reason(record, "Sites", "NoLawfulSite"):
        audit.warning(record.reference(), reason="NoLawfulSite", message=message)
    return conditions.Condition("Sites", False, "NoLawfulSite", message)


def _egress_condition(refused: list[str], view: View) -> conditions.Condition:
    if refused:
        found = view.destination_map(refused)
        named = ", ".join(f"{name} ({found[name].refusal})" if name in found else name for name in refused)
        return conditions.Condition("Egress", False, "DestinationRefused", f"not allowed: {named}")
    return conditions.Condition("Egress", True, "AllAccepted", "every named destination is allowed")


def _remove_dropped(record: TenantRecord, view: View, kube: Kube, keep: set[str]) -> str:
    """Delete namespaces the tenant no longer lists; a message if some must wait."""
    waiting = []
    for namespace in view.namespaces_of_tenant(record.name):
        if namespace in keep:
            continue
        found = [] if forced(record) else blockers(kube, namespace)
        if found:
            waiting.append(f"{namespace} ({'; '.join(found)})")
            continue
        kube.delete(namespace_path(namespace))
        audit.normal(
            record.reference(), reason="NamespaceDeleted", message=f"namespace {namespace} removed from the tenant and deleted"
        )
    if not waiting:
        return ""
    message = (
        f"kept until their work and data are gone: {', '.join(waiting)}; set annotation {FORCE_ANNOTATION}=true to delete anyway"
    )
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


@kopf.on.event("gigafab.nl", "v1alpha1", "sites")
@telemetry.reconciles("Site", handler="tenant_sites")
def sites_changed(**kwargs: Any) -> None:
    """A Site came, went or changed: tenants whose namespaces no longer carry their lawful sites are reconciled,
    so a site that may no longer hold a tenant's data takes no new pod of it (and a new lawful one does)."""
    view = View.of(kwargs)
    for store in list(view.tenants.values()):
        for record in store:
            if record.deleting or "observedGeneration" not in record.status:
                continue  # a tenant not reconciled yet is about to be, by its own handler
            if _sites_stale(record, view):
                reconcile(record, view, Client.get())


def _sites_stale(record: TenantRecord, view: View) -> bool:
    """Whether a namespace of ``record`` carries other lawful sites than it should (with a problem open: more)."""
    try:
        spec = TenantSpec.model_validate(dict(record.spec))
    except ValidationError:
        return False
    lawful = view.lawful(record.name, spec)
    frozen = held(record, spec, view)
    for namespace in view.namespaces_of_tenant(record.name):
        carried = view.carried_sites(namespace)
        if carried != (narrowed_sites(carried, lawful.sites) if frozen else lawful.annotation):
            return True
    return False


@kopf.on.delete("gigafab.nl", "v1alpha1", "tenants")
@telemetry.reconciles("Tenant")
def tenant_deleted(name: str, **kwargs: Any) -> None:
    view = View.of(kwargs)
    kube = Client.get()
    record = _fresh(view.tenant(name) or TenantRecord(name, kwargs["uid"], 0, {}, {}, {}), kwargs)
    owned = view.namespaces_of_tenant(name)
    busy = {} if forced(record) else {ns: blockers(kube, ns) for ns in owned}
    busy = {ns: found for ns, found in busy.items() if found}
    if busy:
        message = (
            "deletion waits for the work and data in "
            + ", ".join(f"{ns} ({'; '.join(found)})" for ns, found in sorted(busy.items()))
            + f"; set annotation {FORCE_ANNOTATION}=true to delete anyway"
        )
        _not_ready(record, kube, Problem("DeletionBlocked", message), sorted(busy))
        raise kopf.TemporaryError(message, delay=RETRY_SECONDS)
    for namespace in owned:
        kube.delete(namespace_path(namespace))
    audit.normal(record.reference(), reason="Deleted", message="tenant namespaces deleted")
