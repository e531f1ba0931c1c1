"""The NetworkPolicies the operator generates, judged by an independent analyzer.

Three tenants on the real plane: a clinic (two namespaces; an EU store on TCP 443 and a US
cloud, which is refused), a lab (one namespace; an EU archive on every port) and a studio
(no egress). Each namespace gets two pods, kube-system a DNS pod. The Namespaces, Pods
and NetworkPolicies are read back from the apiserver and handed to np-guard's
``k8snetpolicy``; its answer, not the operator's code, says what may reach what.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gigafab.api.v1alpha1.common import EU_MEMBER_STATES
from gigafab.local.netpol import Addresses, Connection, PortRange, Workload, analyse
from tests.e2e.conftest import Kubectl, condition, destination, eventually, tenant
from tests.e2e.test_tenants import ready

TENANT_LABEL = "gigafab.nl/tenant"
DNS_LABELS = {"k8s-app": "kube-dns"}
DNS_PORTS = (PortRange("TCP", 53, 53), PortRange("UDP", 53, 53))
PODS = ("worker", "notebook")
CLINIC_STORE = "192.0.2.0/25"
LAB_ARCHIVE = "198.51.100.0/24"
US_CLOUD = "203.0.113.0/24"
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Allowed:
    """An Accepted EU EgressDestination as read back: its networks and ports (none: all)."""

    name: str
    cidrs: tuple[str, ...]
    ports: tuple[PortRange, ...]

    def admits(self, connection: Connection) -> bool:
        assert isinstance(connection.dst, Addresses)
        return connection.dst.within(self.cidrs) and (not self.ports or connection.only(self.ports))


@dataclass(frozen=True)
class Scene:
    """The tenants' world as the apiserver holds it, and the analyzer's verdict on it."""

    names: dict[str, str]
    """Role in this test (clinic, lab, studio, ...) to the name it has on the plane."""
    objects: list[dict[str, Any]]
    owners: dict[str, str]
    """Namespace to tenant, from the namespaces' labels."""
    allowed: dict[str, list[Allowed]]
    """Tenant to its Accepted EU destinations."""
    connections: list[Connection]

    def pods(self) -> list[Workload]:
        return [Workload(o["metadata"]["namespace"], o["metadata"]["name"]) for o in self.objects if o["kind"] == "Pod"]

    def pods_of(self, role: str) -> list[Workload]:
        return [pod for pod in self.pods() if self.owners.get(pod.namespace) == self.names[role]]

    def policies(self) -> int:
        return sum(1 for o in self.objects if o["kind"] == "NetworkPolicy")

    def between(self, src: Workload, dst: Workload | str) -> list[Connection]:
        return [c for c in self.connections if c.src == src and (c.dst == dst or str(c.dst) == dst)]


def owner(scene: Scene, peer: Workload | Addresses) -> str | None:
    return scene.owners.get(peer.namespace) if isinstance(peer, Workload) else None


def is_dns(scene: Scene, peer: Workload | Addresses) -> bool:
    return isinstance(peer, Workload) and peer in dns_pods(scene.objects)


def dns_pods(objects: Sequence[dict[str, Any]]) -> set[Workload]:
    return {
        Workload(o["metadata"]["namespace"], o["metadata"]["name"])
        for o in objects
        if o["kind"] == "Pod"
        and o["metadata"]["namespace"] == "kube-system"
        and DNS_LABELS.items() <= (o["metadata"].get("labels") or {}).items()
    }


def cross_tenant(scene: Scene, connections: Sequence[Connection]) -> list[Connection]:
    """Connections from a pod of one tenant to a pod of another."""
    found = []
    for connection in connections:
        src, dst = owner(scene, connection.src), owner(scene, connection.dst)
        if src is not None and dst is not None and src != dst:
            found.append(connection)
    return found


def outside_eu_and_dns(scene: Scene, connections: Sequence[Connection]) -> list[Connection]:
    """Connections from a tenant's pod to anything but its own pods, DNS on port 53 and its
    Accepted EU destinations (within their CIDRs and on their ports)."""
    return [c for c in connections if owner(scene, c.src) is not None and not _permitted(scene, c)]


def _permitted(scene: Scene, connection: Connection) -> bool:
    tenant_name = owner(scene, connection.src)
    if isinstance(connection.dst, Addresses):
        return any(allowed.admits(connection) for allowed in scene.allowed.get(str(tenant_name), []))
    if is_dns(scene, connection.dst):
        return connection.only(DNS_PORTS)
    return owner(scene, connection.dst) == tenant_name


def strip(body: dict[str, Any]) -> dict[str, Any]:
    """What the analyzer reads of an object as the apiserver returned it."""
    meta = body["metadata"]
    kept = {key: meta[key] for key in ("name", "namespace", "labels") if key in meta}
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": kept, "spec": body.get("spec") or {}}


def pod(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "registry.example/app:1"}], "tolerations": [KWOK_TOLERATION]},
    }


def permissive(namespace: str, direction: str) -> dict[str, Any]:
    """A NetworkPolicy that opens ``direction`` (Ingress or Egress) of every pod in ``namespace``."""
    rule = "ingress" if direction == "Ingress" else "egress"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"allow-all-{rule}", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": [direction], rule: [{}]},
    }


def accepted_eu(kubectl: Kubectl, names: Sequence[str]) -> list[Allowed]:
    """The destinations among ``names`` that are Accepted and in an EU member state, as read back."""
    found = []
    for name in names:
        body = kubectl.get("egressdestination", name)
        if condition(body, "Accepted")["status"] == "True" and body["spec"]["jurisdiction"] in EU_MEMBER_STATES:
            ports = tuple(PortRange(p.get("protocol", "TCP"), p["port"], p["port"]) for p in body["spec"].get("ports", []))
            found.append(Allowed(name, tuple(body["spec"]["cidrs"]), ports))
    return found


def boundary_blocks(kubectl: Kubectl, namespace: str) -> set[str]:
    policy = kubectl.get("networkpolicy", "gigafab-tenant-boundary", "-n", namespace)
    assert policy is not None, f"no boundary in {namespace} yet"
    return {peer["ipBlock"]["cidr"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer}


def create_world(kubectl: Kubectl, names: dict[str, str]) -> dict[str, list[str]]:
    """Destinations, tenants and their pods; returns each tenant's namespaces."""
    kubectl.apply(
        destination(names["clinic-store"], "NL", CLINIC_STORE, ports=[{"port": 443}]),
        destination(names["lab-archive"], "DE", LAB_ARCHIVE),
        destination(names["us-cloud"], "US", US_CLOUD),
    )
    namespaces = {
        "clinic": [f"{names['clinic']}-a", f"{names['clinic']}-b"],
        "lab": [names["lab"]],
        "studio": [names["studio"]],
    }
    kubectl.apply(
        tenant(names["clinic"], namespaces=namespaces["clinic"], egress=[names["clinic-store"], names["us-cloud"]]),
        tenant(names["lab"], egress=[names["lab-archive"]]),
        tenant(names["studio"]),
    )
    for role in namespaces:
        ready(kubectl, names[role])
    eventually(lambda: _expect(boundary_blocks(kubectl, namespaces["clinic"][0]) == {CLINIC_STORE}))
    eventually(lambda: _expect(boundary_blocks(kubectl, namespaces["lab"][0]) == {LAB_ARCHIVE}))
    pods = [pod(name, ns, {"app": name}) for ns in itertools.chain(*namespaces.values()) for name in PODS]
    kubectl.create(*pods, pod(names["dns"], "kube-system", DNS_LABELS), pod(names["bystander"], "default", {"app": "web"}))
    return namespaces


def _expect(fact: bool) -> None:
    assert fact


def read_back(kubectl: Kubectl, namespaces: Sequence[str], names: dict[str, str]) -> list[dict[str, Any]]:
    """Every Namespace and NetworkPolicy of the plane, the tenants' pods, the DNS pod and a
    pod of no tenant."""
    objects = [strip(o) for o in kubectl.get("namespaces")["items"]]
    objects += [strip(o) for o in kubectl.get("networkpolicies", "-A")["items"]]
    objects += [strip(o) for ns in namespaces for o in kubectl.get("pods", "-n", ns)["items"]]
    objects.append(strip(kubectl.get("pod", names["dns"], "-n", "kube-system")))
    objects.append(strip(kubectl.get("pod", names["bystander"], "-n", "default")))
    return objects


@pytest.fixture(scope="module")
def scene(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    prefix = "np" + uuid.uuid4().hex[:5]
    roles = ("clinic", "lab", "studio", "clinic-store", "lab-archive", "us-cloud", "dns", "bystander")
    names = {role: f"{prefix}-{role}" for role in roles}
    namespaces = create_world(kubectl, names)
    objects = read_back(kubectl, list(itertools.chain(*namespaces.values())), names)
    owners = {
        o["metadata"]["name"]: o["metadata"]["labels"][TENANT_LABEL]
        for o in objects
        if o["kind"] == "Namespace" and TENANT_LABEL in (o["metadata"].get("labels") or {})
    }
    allowed = {
        names["clinic"]: accepted_eu(kubectl, [names["clinic-store"], names["us-cloud"]]),
        names["lab"]: accepted_eu(kubectl, [names["lab-archive"]]),
        names["studio"]: [],
    }
    connections = analyse(objects, folder=tmp_path_factory.mktemp("netpol-input"))
    yield Scene(names, objects, owners, allowed, connections)
    _remove(kubectl, names, namespaces)


def _remove(kubectl: Kubectl, names: dict[str, str], namespaces: dict[str, list[str]]) -> None:
    for namespace in itertools.chain(*namespaces.values()):
        kubectl.run("delete", "pods", "--all", "-n", namespace, "--wait=false", check=False)
    kubectl.run("delete", "pod", names["dns"], "-n", "kube-system", "--wait=false", check=False)
    kubectl.run("delete", "pod", names["bystander"], "-n", "default", "--wait=false", check=False)
    kubectl.run("delete", "tenants", names["clinic"], names["lab"], names["studio"], "--wait=false", check=False)
    destinations = (names["clinic-store"], names["lab-archive"], names["us-cloud"])
    kubectl.run("delete", "egressdestinations", *destinations, "--wait=false", check=False)


def test_the_world_is_as_the_tenants_asked(scene: Scene) -> None:
    names = scene.names
    assert set(scene.owners.values()) >= {names["clinic"], names["lab"], names["studio"]}
    assert [a.name for a in scene.allowed[names["clinic"]]] == [names["clinic-store"]]  # the US cloud is refused
    assert [a.name for a in scene.allowed[names["lab"]]] == [names["lab-archive"]]
    assert len(scene.pods_of("clinic")) == 4
    assert len(scene.pods_of("lab")) == len(scene.pods_of("studio")) == 2
    assert len(dns_pods(scene.objects)) == 1
    assert Workload("default", scene.names["bystander"]) in scene.pods()
    assert scene.connections, "the analyzer found no connection at all"


def test_no_tenant_pod_reaches_another_tenant_in_either_direction(scene: Scene) -> None:
    assert cross_tenant(scene, scene.connections) == []


def test_tenant_pods_accept_connections_from_their_own_tenant_only(scene: Scene) -> None:
    inbound = [c for c in scene.connections if owner(scene, c.dst) is not None]
    assert inbound, "no connection into any tenant pod"
    assert [c for c in inbound if owner(scene, c.src) != owner(scene, c.dst)] == []


def test_egress_leaves_only_for_accepted_eu_destinations_and_dns(scene: Scene) -> None:
    assert outside_eu_and_dns(scene, scene.connections) == []
    outward = [c.dst for c in scene.connections if owner(scene, c.src) is not None and isinstance(c.dst, Addresses)]
    assert not [addresses for addresses in outward if addresses.everywhere or addresses.overlaps(US_CLOUD)]
    assert {str(addresses) for addresses in outward} == {CLINIC_STORE, LAB_ARCHIVE}


def test_every_tenant_pod_reaches_dns_on_port_53_only(scene: Scene) -> None:
    (dns,) = dns_pods(scene.objects)
    for pod_ in itertools.chain(*(scene.pods_of(role) for role in ("clinic", "lab", "studio"))):
        (connection,) = scene.between(pod_, dns)
        assert connection.allows("UDP", 53)
        assert connection.allows("TCP", 53)
        assert connection.only(DNS_PORTS), connection


def test_tenant_pods_reach_each_other_across_their_namespaces(scene: Scene) -> None:
    for role in ("clinic", "lab", "studio"):
        for src, dst in itertools.permutations(scene.pods_of(role), 2):
            (connection,) = scene.between(src, dst)
            assert connection.everything, connection
    namespaces = {pod_.namespace for pod_ in scene.pods_of("clinic")}
    assert len(namespaces) == 2


def test_tenants_reach_their_own_eu_destination_on_its_ports(scene: Scene) -> None:
    for pod_ in scene.pods_of("clinic"):
        (store,) = scene.between(pod_, CLINIC_STORE)
        assert store.allows("TCP", 443)
        assert not store.allows("TCP", 80)
        assert scene.between(pod_, LAB_ARCHIVE) == []
    for pod_ in scene.pods_of("lab"):
        (archive,) = scene.between(pod_, LAB_ARCHIVE)
        assert archive.everything
        assert scene.between(pod_, CLINIC_STORE) == []
    studio = scene.pods_of("studio")
    assert not [c for c in scene.connections if c.src in studio and isinstance(c.dst, Addresses)]


def test_a_permissive_policy_added_to_the_input_is_flagged(scene: Scene, tmp_path: Path) -> None:
    studio, clinic = scene.names["studio"], f"{scene.names['clinic']}-a"
    opened = analyse([*scene.objects, permissive(studio, "Egress"), permissive(clinic, "Ingress")], folder=tmp_path)
    leaks = outside_eu_and_dns(scene, opened)
    assert {owner(scene, c.src) for c in leaks} == {studio}
    leaked_to = [c.dst for c in leaks if isinstance(c.dst, Addresses)]
    assert any(addresses.overlaps("8.8.8.8/32") for addresses in leaked_to)
    assert any(addresses.overlaps(US_CLOUD) for addresses in leaked_to)
    crossing = cross_tenant(scene, opened)
    assert crossing
    assert {(owner(scene, c.src), owner(scene, c.dst)) for c in crossing} == {(studio, scene.names["clinic"])}


def widened(body: dict[str, Any]) -> dict[str, Any]:
    """A tenant boundary as a regressed operator might write it: its own-tenant peers select every namespace."""
    if body["kind"] != "NetworkPolicy" or body["metadata"]["name"] != "gigafab-tenant-boundary":
        return body
    spec = copy.deepcopy(body["spec"])
    for rule in spec.get("ingress", []):
        rule["from"] = [_any_namespace(peer) for peer in rule.get("from", [])]
    for rule in spec.get("egress", []):
        rule["to"] = [_any_namespace(peer) for peer in rule.get("to", [])]
    return {**body, "spec": spec}


def _any_namespace(peer: dict[str, Any]) -> dict[str, Any]:
    labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
    return {"namespaceSelector": {}} if TENANT_LABEL in labels else peer


def test_a_boundary_that_selects_every_namespace_is_flagged(scene: Scene, tmp_path: Path) -> None:
    opened = analyse([widened(body) for body in scene.objects], folder=tmp_path)
    crossing = cross_tenant(scene, opened)
    pairs = {(owner(scene, c.src), owner(scene, c.dst)) for c in crossing}
    tenants = [scene.names[role] for role in ("clinic", "lab", "studio")]
    assert pairs == set(itertools.permutations(tenants, 2))
    assert Workload("default", scene.names["bystander"]) in {c.dst for c in outside_eu_and_dns(scene, opened)}


def test_summary(scene: Scene) -> None:
    crossing, outside = cross_tenant(scene, scene.connections), outside_eu_and_dns(scene, scene.connections)
    pairs = len(scene.pods()) * (len(scene.pods()) - 1)
    print(
        f"\nnetpol: {scene.policies()} policies, {pairs} pod pairs analysed, "
        f"{len(crossing)} cross-tenant, {len(outside)} outside EU+DNS"
    )
    assert (crossing, outside) == ([], [])
