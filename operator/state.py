"""What the operator knows without asking the apiserver.

kopf indexes (see ``indexes.py``) are filled from watches before any handler runs
and kept current by kopf; ``View`` reads them, so handlers decide from memory and
only write.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from gigafab.operator.jurisdiction import Declared, judge
from gigafab.operator.kube import Kube
from gigafab.operator.sovereignty import Lawful, lawful_sites, site_view
from gigafab.operator.tenancy import Destination, TenantObjects, desired_objects, namespaces_of
from gigafab.operator.tenant_checks import Problem, find_problems

from gigafab.api.v1alpha1.tenant import TenantSpec

GROUP_PATH = "/apis/gigafab.nl/v1alpha1"
CLUSTER_NETWORKS_ENV = "GIGAFAB_CLUSTER_NETWORKS"
"""The cluster's own networks (pods, services, nodes), comma-separated CIDRs: no EgressDestination reaches
them (they go into the ``except`` of every ipBlock that contains them). The chart sets it from the value
``clusterNetworks``, the local plane from its own ranges."""


@functools.cache
def cluster_networks() -> tuple[str, ...]:
    """``$GIGAFAB_CLUSTER_NETWORKS`` as CIDRs; a bad entry stops the operator at start (main.configure)."""
    found = []
    for entry in os.environ.get(CLUSTER_NETWORKS_ENV, "").split(","):
        if not entry.strip():
            continue
        try:
            found.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError as error:
            raise ValueError(
                f"{CLUSTER_NETWORKS_ENV}: {entry.strip()!r} is not a CIDR; give the cluster's pod, service and node "
                "networks as comma-separated CIDRs such as 10.244.0.0/16,10.96.0.0/12"
            ) from error
    return tuple(found)


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
    destinations: kopf.Index[str, Declared]
    namespaces: kopf.Index[str, str]
    quotas: kopf.Index[str, dict[str, str]]
    sites: kopf.Index[str, dict[str, Any]]
    """By zone: {"name", "body"} of each Site (operator/sites.py)."""
    lawful_annotations: kopf.Index[str, str | None]
    """By tenant namespace: the lawful sites it carries."""

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> View:
        return cls(
            kwargs["tenant_index"],
            kwargs["egress_index"],
            kwargs["namespace_index"],
            kwargs["quota_index"],
            kwargs["site_index"],
            kwargs["lawful_index"],
        )

    def tenant(self, name: str) -> TenantRecord | None:
        value = first(self.tenants, name)
        return value if isinstance(value, TenantRecord) else None

    def declared(self) -> dict[str, Declared]:
        """Every EgressDestination as declared."""
        found = {name: first(self.destinations, name) for name in list(self.destinations)}
        return {name: value for name, value in found.items() if isinstance(value, Declared)}

    def destination_map(self, names: list[str]) -> dict[str, Destination]:
        """The named destinations that exist, each Accepted or not as judged among all (overlaps count)."""
        everyone = self.declared()
        found = {}
        for name in names:
            if name in everyone:
                declared = everyone[name]
                verdict = judge(declared, everyone.values())
                refusal = "" if verdict.status else verdict.reason
                found[name] = Destination(name, verdict.status, declared.cidrs, declared.ports, refusal)
        return found

    def lawful(self, name: str, spec: TenantSpec) -> Lawful:
        """Where tenant ``name``'s pods may run, from the Sites as they are now."""
        bodies = [entry["body"] for store in self.sites.values() for entry in store]
        return lawful_sites(name, spec, [site_view(body) for body in bodies])

    def plan(self, name: str, spec: TenantSpec) -> TenantObjects:
        """The objects tenant ``name`` should have now."""
        return desired_objects(
            name,
            spec,
            self.destination_map(list(spec.egress)),
            lawful_sites=self.lawful(name, spec).sites,
            cluster_networks=cluster_networks(),
        )

    def problems(self, name: str, spec: TenantSpec) -> list[Problem]:
        """Every reason not to reconcile tenant ``name`` now (``tenant_checks.find_problems``)."""
        namespaces = namespaces_of(name, spec)
        return find_problems(
            name,
            spec,
            namespace_owners=self.owners(namespaces),
            destinations=self.destination_map(list(spec.egress)),
            quota_used=self.quota_used(namespaces),
        )

    def carried_sites(self, namespace: str) -> str | None:
        """The lawful sites ``namespace`` carries now (None: no annotation, or not a tenant namespace)."""
        value = first(self.lawful_annotations, namespace)
        return value if isinstance(value, str) else None

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
