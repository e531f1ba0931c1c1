"""kopf indexes: the operator's memory of tenants, destinations, namespaces and quotas."""

from __future__ import annotations

from typing import Any

import kopf
from gigafab.operator.jurisdiction import egress_acceptance
from gigafab.operator.state import TenantRecord
from gigafab.operator.tenancy import GPU_REQUESTS, MANAGED_BY, TENANT_LABEL, Destination

from gigafab.api.v1alpha1.egress import EgressDestinationSpec


@kopf.index("gigafab.nl", "v1alpha1", "tenants")
def tenant_index(name: str, uid: str, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, TenantRecord]:
    generation = int(meta.get("generation") or 0)
    deleting = meta.get("deletionTimestamp") is not None
    return {name: TenantRecord(name, uid, generation, dict(spec), dict(meta.annotations), dict(status), deleting)}


@kopf.index("gigafab.nl", "v1alpha1", "egressdestinations")
def egress_index(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Destination]:
    try:
        parsed = EgressDestinationSpec.model_validate(dict(spec))
    except ValueError:
        return {name: Destination(name, False, ())}
    accepted = egress_acceptance(parsed.jurisdiction).status
    ports = tuple((port.port, str(port.protocol)) for port in parsed.ports or ())
    return {name: Destination(name, accepted, tuple(parsed.cidrs), ports)}


@kopf.index("", "v1", "namespaces")
def namespace_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, str]:
    return {name: labels.get(TENANT_LABEL, "")}


@kopf.index("", "v1", "resourcequotas", labels=MANAGED_BY)
def quota_index(namespace: str | None, status: kopf.Status, **_: Any) -> dict[str, dict[str, str]]:
    used = dict(status.get("used") or {})
    return {namespace or "": {key: str(value) for key, value in used.items()}}


def gpus_used(used: dict[str, str]) -> int:
    return int(float(used.get(GPU_REQUESTS, "0")))
