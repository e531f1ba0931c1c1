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
from gigafab.operator.kube import namespace_path
from gigafab.operator.quantity import quantity
from gigafab.operator.state import Client, View
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


def counterpart(kind: str, name: str, namespace: str | None, tenant: str, view: View) -> Manifest | None:
    record = view.tenant(tenant)
    if record is None or record.deleting:
        return None
    try:
        spec = TenantSpec.model_validate(dict(record.spec))
    except ValidationError:
        return None
    if any(c.get("type") == "Ready" and c.get("reason") in HANDS_OFF for c in record.status.get("conditions") or []):
        return None  # a tenant with a problem is left untouched until it is solved
    plan = view.plan(tenant, spec)
    for manifest in plan.objects:
        meta = manifest["metadata"]
        if manifest["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return manifest
    return None


def _namespace_active(namespace: str | None) -> bool:
    if namespace is None:
        return True
    found = Client.get().get(namespace_path(namespace))
    return found is not None and not found["metadata"].get("deletionTimestamp")


def repair(event: Mapping[str, Any], body: kopf.Body, kind: str, view: View) -> None:
    meta = body["metadata"]
    tenant = (meta.get("labels") or {}).get(TENANT_LABEL)
    if not tenant:
        return
    desired = counterpart(kind, meta["name"], meta.get("namespace"), tenant, view)
    if desired is None:
        return
    gone = event.get("type") == "DELETED"
    if not gone and covers(dict(body), _essence(desired)):
        return
    if gone and kind == "Namespace":
        return  # a deleted namespace is the tenant handler's decision, not drift
    if gone and not _namespace_active(meta.get("namespace")):
        return  # its namespace is going away with everything in it
    Client.get().apply(desired)
    record = view.tenant(tenant)
    what = f"{kind} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")
    log.info("repaired drift of %s (tenant %s, %s)", what, tenant, "deleted" if gone else "edited")
    if record is not None:
        audit.normal(
            record.reference(), reason="DriftRepaired", message=f"{what} was {'deleted' if gone else 'edited'} by hand; put back"
        )


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
