"""kopf indexes: the operator's memory of tenants, destinations, namespaces and quotas."""

from __future__ import annotations

from typing import Any

import kopf
from gigafab.operator.jurisdiction import Declared
from gigafab.operator.state import TenantRecord
from gigafab.operator.tenancy import GPU_REQUESTS, MANAGED_BY, TENANT_LABEL
from pydantic import ValidationError

from gigafab.api.labels import LAWFUL_SITES_ANNOTATION
from gigafab.api.v1alpha1.egress import EgressDestinationSpec


@kopf.index("gigafab.nl", "v1alpha1", "tenants")
def tenant_index(name: str, uid: str, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, TenantRecord]:
    generation = int(meta.get("generation") or 0)
    deleting = meta.get("deletionTimestamp") is not None
    return {name: TenantRecord(name, uid, generation, dict(spec), dict(meta.annotations), dict(status), deleting)}


@kopf.index("gigafab.nl", "v1alpha1", "egressdestinations")
def egress_index(name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, Declared]:
    """Each destination as declared: whether it is Accepted depends on the others too (jurisdiction.judge)."""
    written = next(
        ((str(c.get("status")), str(c.get("reason"))) for c in status.get("conditions") or [] if c.get("type") == "Accepted"),
        None,
    )
    try:
        parsed = EgressDestinationSpec.model_validate(dict(spec))
    except ValidationError as invalid:
        problem = invalid.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        why = f"spec.{where}: {problem['msg']}"
        return {name: Declared(name, str(spec.get("jurisdiction", "")), (), invalid=why, written=written)}
    ports = tuple((port.port, str(port.protocol)) for port in parsed.ports or ())
    return {name: Declared(name, parsed.jurisdiction, tuple(parsed.cidrs), ports, written=written)}


@kopf.index("", "v1", "namespaces")
def namespace_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, str]:
    return {name: labels.get(TENANT_LABEL, "")}


@kopf.index("", "v1", "namespaces", labels={TENANT_LABEL: kopf.PRESENT})
def lawful_index(name: str, annotations: kopf.Annotations, **_: Any) -> dict[str, str | None]:
    """The lawful sites each tenant namespace carries (None: no annotation), to see when Sites changed them."""
    return {name: annotations.get(LAWFUL_SITES_ANNOTATION)}


@kopf.index("", "v1", "resourcequotas", labels=MANAGED_BY)
def quota_index(namespace: str | None, status: kopf.Status, **_: Any) -> dict[str, dict[str, str]]:
    used = dict(status.get("used") or {})
    return {namespace or "": {key: str(value) for key, value in used.items()}}


def gpus_used(used: dict[str, str]) -> int:
    return int(float(used.get(GPU_REQUESTS, "0")))
