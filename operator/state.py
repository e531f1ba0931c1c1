"""What the operator knows without asking the apiserver.

kopf indexes (see ``indexes.py``) are filled from watches before any handler runs
and kept current by kopf; ``View`` reads them, so handlers decide from memory and
only write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from gigafab.operator.kube import Kube
from gigafab.operator.tenancy import Destination

GROUP_PATH = "/apis/gigafab.nl/v1alpha1"


@dataclass(frozen=True)
class TenantRecord:
    """A Tenant as last seen: enough to reconcile it and to post its events."""

    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    annotations: Mapping[str, str]
    status: Mapping[str, Any]
    deleting: bool = False

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": "gigafab.nl/v1alpha1", "kind": "Tenant", "metadata": {"name": self.name, "uid": self.uid}}


def first(index: kopf.Index[Any, Any], key: Any) -> Any | None:
    store = index.get(key)
    if store is None:
        return None
    for value in store:
        return value
    return None


@dataclass(frozen=True)
class View:
    """The indexes a tenant decision reads."""

    tenants: kopf.Index[str, TenantRecord]
    destinations: kopf.Index[str, Destination]
    namespaces: kopf.Index[str, str]
    quotas: kopf.Index[str, dict[str, str]]

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> View:
        return cls(kwargs["tenant_index"], kwargs["egress_index"], kwargs["namespace_index"], kwargs["quota_index"])

    def tenant(self, name: str) -> TenantRecord | None:
        value = first(self.tenants, name)
        return value if isinstance(value, TenantRecord) else None

    def destination_map(self, names: list[str]) -> dict[str, Destination]:
        found = {name: first(self.destinations, name) for name in names}
        return {name: value for name, value in found.items() if isinstance(value, Destination)}

    def owners(self, names: list[str]) -> dict[str, str | None]:
        return {name: first(self.namespaces, name) for name in names}

    def namespaces_of_tenant(self, tenant: str) -> list[str]:
        return sorted(name for name, store in self.namespaces.items() if tenant in store)

    def quota_used(self, names: list[str]) -> dict[str, dict[str, str]]:
        return {name: first(self.quotas, name) or {} for name in names}


class Client:
    """The operator's one Kubernetes client, connected at startup."""

    kube: Kube | None = None

    @classmethod
    def get(cls) -> Kube:
        if cls.kube is None:
            cls.kube = Kube.connect()
        return cls.kube


def custom_path(plural: str, name: str, *, subresource: str | None = None) -> str:
    path = f"{GROUP_PATH}/{plural}/{name}"
    return f"{path}/{subresource}" if subresource else path
