"""Drift repair: a managed object deleted or edited by hand is put back.

Every object the operator writes for a tenant carries the managed-by and tenant
labels. A watch on each such kind compares what it sees with what the tenant's
desired state says and re-applies only when they differ, so the operator's own
writes cost no second write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from gigafab.operator import audit, telemetry
from gigafab.operator.kube import namespace_path, object_path
from gigafab.operator.quantity import quantity
from gigafab.operator.revocation import narrowed_binding, narrowed_boundary
from gigafab.operator.state import Client, TenantRecord, View
from gigafab.operator.tenancy import MANAGED_BY, TENANT_LABEL, Manifest
from pydantic import ValidationError

from gigafab.api.v1alpha1.tenant import TenantSpec

log = logging.getLogger("gigafab.drift")
HANDS_OFF = frozenset({"InvalidSpec", "NamespaceConflict", "UnknownEgressDestination", "QuotaBelowUse", "DeletionBlocked"})
CHILDREN = (
    ("", "v1", "resourcequotas"),
    ("", "v1", "limitranges"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("", "v1", "namespaces"),
    ("kueue.x-k8s.io", "v1beta2", "localqueues"),
)


def covers(observed: Any, desired: Any) -> bool:
    """True when every field of ``desired`` is present with the same value in ``observed``."""
    if isinstance(desired, Mapping):
        return isinstance(observed, Mapping) and all(covers(observed.get(key), value) for key, value in desired.items())
    if isinstance(desired, list):
        return isinstance(observed, list) and len(observed) == len(desired) and all(map(covers, observed, desired))
    if isinstance(desired, str) and isinstance(observed, str) and desired != observed:
        return _same_quantity(observed, desired)
    return bool(observed == desired)


def _same_quantity(left: str, right: str) -> bool:
    try:
        return quantity(left) == quantity(right)
    except ValueError:
        return False


def _essence(manifest: Manifest) -> dict[str, Any]:
    return {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}


def held(record: TenantRecord, spec: TenantSpec, view: View) -> bool:
    """Whether a problem holds the tenant: its status says so, or the problem is there already (its status
    may trail the object that changed, and drift must not grant what the tenant's reconcile holds back)."""
    said = any(c.get("type") == "Ready" and c.get("reason") in HANDS_OFF for c in record.status.get("conditions") or [])
    return said or bool(view.problems(record.name, spec))


def counterpart(kind: str, name: str, namespace: str | None, spec: TenantSpec, tenant: str, view: View) -> Manifest | None:
    """The object of ``kind`` named so that the tenant wants now, or None."""
    for manifest in view.plan(tenant, spec).objects:
        meta = manifest["metadata"]
        if manifest["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return manifest
    return None


def _namespace_active(namespace: str | None) -> bool:
    if namespace is None:
        return True
    found = Client.get().get(namespace_path(namespace))
    return found is not None and not found["metadata"].get("deletionTimestamp")


def _tenant_of(body: kopf.Body, view: View) -> tuple[TenantRecord, TenantSpec] | None:
    tenant = (body["metadata"].get("labels") or {}).get(TENANT_LABEL)
    record = view.tenant(tenant) if tenant else None
    if record is None or record.deleting:
        return None
    try:
        return record, TenantSpec.model_validate(dict(record.spec))
    except ValidationError:
        return None


def repair(event: Mapping[str, Any], body: kopf.Body, kind: str, view: View) -> None:
    found = _tenant_of(body, view)
    if found is None:
        return
    record, spec = found
    meta = body["metadata"]
    desired = counterpart(kind, meta["name"], meta.get("namespace"), spec, record.name, view)
    gone = event.get("type") == "DELETED"
    if held(record, spec, view):
        if not gone:
            _narrow(dict(body), kind, desired, record)  # a tenant with a problem gets nothing new, loses what it lost
        return
    if desired is None or (not gone and covers(dict(body), _essence(desired))):
        return
    if gone and kind == "Namespace":
        return  # a deleted namespace is the tenant handler's decision, not drift
    if gone and not _namespace_active(meta.get("namespace")):
        return  # its namespace is going away with everything in it
    Client.get().apply(desired)
    what = f"{kind} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")
    how = "deleted" if gone else "edited"
    log.info("repaired drift of %s (tenant %s, %s)", what, record.name, how)
    audit.normal(record.reference(), reason="DriftRepaired", message=f"{what} was {how} by hand; put back")


def _narrow(observed: dict[str, Any], kind: str, desired: Manifest | None, record: TenantRecord) -> None:
    """Under a problem: a RoleBinding or the boundary policy narrowed to what the tenant still grants."""
    meta = observed["metadata"]
    what = f"{kind} {meta.get('namespace', '')}/{meta['name']}"
    if kind == "RoleBinding":
        narrowed = narrowed_binding(observed, desired)
        if narrowed is None:
            Client.get().delete(object_path({**observed, "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind}))
        elif narrowed["subjects"] != observed.get("subjects"):
            Client.get().apply(narrowed)
        else:
            return
    elif kind == "NetworkPolicy" and desired is not None and desired["spec"].get("egress") is not None:
        policy = narrowed_boundary(observed, desired)
        if policy["spec"] == observed.get("spec"):
            return
        Client.get().apply(policy)
    else:
        return
    audit.normal(record.reference(), reason="AccessRevoked", message=f"{what} narrowed to what the tenant still grants")


def _register() -> None:
    for group, version, plural in CHILDREN:
        kind = {
            "resourcequotas": "ResourceQuota",
            "limitranges": "LimitRange",
            "networkpolicies": "NetworkPolicy",
            "rolebindings": "RoleBinding",
            "namespaces": "Namespace",
            "localqueues": "LocalQueue",
        }[plural]

        @telemetry.reconciles(kind, handler=f"drift-{plural}")
        def handler(event: Mapping[str, Any], body: kopf.Body, _kind: str = kind, **kwargs: Any) -> None:
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                repair(event, body, _kind, View.of(kwargs))

        kopf.on.event(group, version, plural, labels={**MANAGED_BY, TENANT_LABEL: kopf.PRESENT}, id=f"drift-{plural}")(handler)


_register()
