"""What a Tenant owns, as a pure function: namespaces, quotas, access, boundaries, its queue.

``desired_objects`` turns a Tenant (the EgressDestinations it names, the sites where its
pods may run and the cluster's own networks) into the Kubernetes objects of each of its
namespaces. The handlers only apply the result.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from gigafab.operator.quantity import quantity
from gigafab.operator.queues import local_queue

from gigafab.api.labels import LAWFUL_SITES_ANNOTATION
from gigafab.api.v1alpha1.tenant import TenantSpec

TENANT_LABEL = "gigafab.nl/tenant"
TRACK_LABEL = "gigafab.nl/track"
DATA_CLASS_LABEL = "gigafab.nl/data-class"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gigafab"}
GPU_REQUESTS = "requests.nvidia.com/gpu"
ROLES = ("admin", "member", "viewer")
DEFAULT_DENY = "gigafab-default-deny"
BOUNDARY = "gigafab-tenant-boundary"
POD_SECURITY = {
    "pod-security.kubernetes.io/enforce": "baseline",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}
"""Pod Security Standards of a tenant namespace (the apiserver's PodSecurity admission): no privileged,
host-network, host-path or added-capability pods; a member is warned where a pod misses the restricted level."""

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Destination:
    """An EgressDestination as the tenancy decision needs it."""

    name: str
    accepted: bool
    cidrs: tuple[str, ...]
    ports: tuple[tuple[int, str], ...] = ()
    refusal: str = ""
    """When not accepted: the reason (OutsideEU, OverlapsNonEU, ...), for the tenant's Egress condition."""


@dataclass
class TenantObjects:
    """Everything one Tenant should have, namespace by namespace."""

    namespaces: list[str]
    objects: list[Manifest] = field(default_factory=list)
    refused_egress: list[str] = field(default_factory=list)


def namespaces_of(name: str, spec: TenantSpec) -> list[str]:
    return list(spec.namespaces) or [name]


def labels_for(name: str, spec: TenantSpec) -> dict[str, str]:
    return {**MANAGED_BY, TENANT_LABEL: name, TRACK_LABEL: spec.track, DATA_CLASS_LABEL: spec.data_class}


def desired_objects(
    name: str,
    spec: TenantSpec,
    destinations: Mapping[str, Destination],
    *,
    lawful_sites: Sequence[str] = (),
    cluster_networks: Sequence[str] = (),
) -> TenantObjects:
    """The objects of every namespace of tenant ``name``; unknown destinations are skipped.

    ``lawful_sites``: where the tenant's pods may run (operator/sovereignty.py), written on each namespace;
    ``cluster_networks``: the cluster's own pod, service and node networks, never reachable through an
    EgressDestination (they go into the ``except`` of each ipBlock that contains them)."""
    namespaces = namespaces_of(name, spec)
    allowed = [destinations[d] for d in spec.egress if d in destinations and destinations[d].accepted]
    result = TenantObjects(
        namespaces, refused_egress=[d for d in spec.egress if d in destinations and not destinations[d].accepted]
    )
    labels = labels_for(name, spec)
    for index, namespace in enumerate(namespaces):
        result.objects.append(_namespace(namespace, labels, lawful_sites))
        result.objects.append(_quota(namespace, labels, spec, index, len(namespaces)))
        result.objects.append(_limit_range(namespace, labels))
        result.objects.extend(_role_bindings(namespace, labels, spec))
        result.objects.append(_default_deny(namespace, labels))
        result.objects.append(_boundary(namespace, labels, name, allowed, cluster_networks))
        result.objects.append(local_queue(namespace, str(spec.track), labels))
    return result


def _namespace(namespace: str, labels: Mapping[str, str], lawful_sites: Sequence[str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {**labels, **POD_SECURITY},
            "annotations": {LAWFUL_SITES_ANNOTATION: ",".join(sorted(lawful_sites))},
        },
    }


def share(total: Decimal, parts: int, index: int, unit: Decimal = Decimal(1)) -> Decimal:
    """Part ``index`` of ``total`` split over ``parts`` in whole ``unit``s; the first get the remainder."""
    units = (total / unit).to_integral_value(rounding=ROUND_FLOOR)
    base, rest = divmod(int(units), parts)
    return (base + (1 if index < rest else 0)) * unit


def _quantity(value: str | int, parts: int, index: int, *, milli: bool) -> str:
    portion = share(quantity(value), parts, index, Decimal("0.001") if milli else Decimal(1))
    if milli:
        millis = int(portion * 1000)
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    return _bytes(int(portion))


def _bytes(amount: int) -> str:
    for suffix, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if amount and amount % size == 0:
            return f"{amount // size}{suffix}"
    return str(amount)


def quota_hard(spec: TenantSpec, index: int = 0, parts: int = 1) -> dict[str, str]:
    """The ResourceQuota of one of ``parts`` namespaces: the tenant's quota split evenly."""
    hard = {GPU_REQUESTS: str(int(share(Decimal(spec.quota.gpus), parts, index)))}
    if spec.quota.cpu is not None:
        hard["requests.cpu"] = _quantity(spec.quota.cpu, parts, index, milli=True)
    if spec.quota.memory is not None:
        hard["requests.memory"] = _quantity(spec.quota.memory, parts, index, milli=False)
    return hard


def _meta(name: str, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def _quota(namespace: str, labels: Mapping[str, str], spec: TenantSpec, index: int, parts: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta("gigafab-quota", namespace, labels),
        "spec": {"hard": quota_hard(spec, index, parts)},
    }


def _limit_range(namespace: str, labels: Mapping[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta("gigafab-limits", namespace, labels),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": {"cpu": "100m", "memory": "256Mi"},
                    "default": {"cpu": "1", "memory": "1Gi"},
                }
            ]
        },
    }


def _role_bindings(namespace: str, labels: Mapping[str, str], spec: TenantSpec) -> list[Manifest]:
    bindings = []
    for role in ROLES:
        subjects = [
            {"kind": member.kind, "name": member.name, "apiGroup": "rbac.authorization.k8s.io"}
            for member in spec.members
            if member.role == role
        ]
        if subjects:
            bindings.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": _meta(f"gigafab-{role}", namespace, labels),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"gigafab-tenant-{role}"},
                    "subjects": subjects,
                }
            )
    return bindings


def role_binding_names(spec: TenantSpec) -> set[str]:
    return {f"gigafab-{role}" for role in ROLES if any(member.role == role for member in spec.members)}


def _default_deny(namespace: str, labels: Mapping[str, str]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(DEFAULT_DENY, namespace, labels),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def _boundary(
    namespace: str, labels: Mapping[str, str], tenant: str, allowed: Sequence[Destination], cluster_networks: Sequence[str]
) -> Manifest:
    own = {"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}
    dns = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    egress: list[dict[str, Any]] = [{"to": [own]}, dns]
    for destination in sorted(allowed, key=lambda d: d.name):
        blocks = ip_blocks(destination.cidrs, cluster_networks)
        if not blocks:
            continue  # a rule with no peer would allow every address: a destination wholly inside the cluster gets none
        rule: dict[str, Any] = {"to": [{"ipBlock": block} for block in blocks]}
        if destination.ports:
            rule["ports"] = [{"protocol": protocol, "port": port} for port, protocol in destination.ports]
        egress.append(rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(BOUNDARY, namespace, labels),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": [own]}], "egress": egress},
    }


def ip_blocks(cidrs: Sequence[str], cluster_networks: Sequence[str]) -> list[dict[str, Any]]:
    """The ipBlocks of a destination's ``cidrs`` with the cluster's own networks taken out.

    A cluster network inside a CIDR goes into its ``except``; a CIDR inside a cluster network (or equal to
    one) is left out whole, since an ipBlock may only except strict subsets of itself."""
    own = [ipaddress.ip_network(network, strict=False) for network in cluster_networks]
    blocks = []
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        meeting = [other for other in own if other.version == network.version and other.overlaps(network)]
        if any(network.subnet_of(other) for other in meeting):  # type: ignore[arg-type]
            continue
        block: dict[str, Any] = {"cidr": cidr}
        if meeting:
            block["except"] = sorted({str(other) for other in meeting})
        blocks.append(block)
    return blocks
