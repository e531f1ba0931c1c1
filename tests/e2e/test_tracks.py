"""Allocation tracks enforced by Kueue on the real plane: lending, reclaim, priority, power caps.

Each test has its own lab site (two fresh 8-GPU fake nodes: 16 GPUs, so the default
policy gives euro-hpc 8, national 4 and regional 4 there) and tenants allowed only on
it, so nothing else of the session competes for its GPUs. A lab gateway (``lab_gateway``)
vouches for its nodes in etcd, as a site's health gateway does for nodes whose agents report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from gigafab.agents.ledger import DEGRADED, FAILED, HEALTHY

from gigafab.local.nodes import gpu_node, node_name
from tests.e2e.conftest import Kubectl, condition, eventually, quotas, tenant
from tests.e2e.lab_gateway import LabGateway, lab_gateway
from tests.e2e.test_failover import phase, site_healthy
from tests.e2e.test_workloads import tenant_ready, workload

pytestmark = pytest.mark.usefixtures("workloads_removed")


@contextmanager
def lab_site(kubectl: Kubectl, name: str, **spec: Any) -> Iterator[str]:
    with vouched_lab_site(kubectl, name, **spec) as (site, _):
        yield site


@contextmanager
def vouched_lab_site(kubectl: Kubectl, name: str, **spec: Any) -> Iterator[tuple[str, LabGateway]]:
    """A lab site of two 8-GPU nodes, and the lab gateway that vouches for them."""
    body = {"jurisdiction": "NL", "dataClasses": ["public", "internal"], "powerBudgetKW": 1000, "lifecycle": "Active", **spec}
    nodes = [node_name(name, index) for index in range(2)]
    kubectl.create(*(gpu_node(name, index, gpus=8) for index in range(2)))
    kubectl.apply({"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "metadata": {"name": name}, "spec": body})
    try:
        with lab_gateway(kubectl.plane, name, *nodes) as gateway:
            eventually(lambda: site_healthy(kubectl, name), timeout=60)
            eventually(lambda: quotas(kubectl, name, {"euro-hpc": 8, "national": 4, "regional": 4}))
            yield name, gateway
    finally:
        kubectl.run("delete", "site", name, "--wait=false", check=False)
        kubectl.run("delete", "node", *nodes, check=False)


def usage(kubectl: Kubectl, track: str, site: str) -> tuple[int, int]:
    """(GPUs in use, of which borrowed) of a track on a site, as Kueue counts them."""
    queue = kubectl.get("clusterqueues.v1beta2.kueue.x-k8s.io", track)
    for flavor in queue["status"].get("flavorsUsage") or []:
        if flavor["name"] == site:
            gpu = flavor["resources"][0]
            return int(gpu.get("total", 0)), int(gpu.get("borrowed", 0))
    return 0, 0


def members(kubectl: Kubectl, namespace: str, names: list[str], site: str) -> tuple[list[str], list[str]]:
    """(Running, Queued) among ``names``."""
    running, queued = [], []
    for name in names:
        body = kubectl.get("gpuworkload", name, "-n", namespace)
        status = body.get("status") or {}
        if status.get("phase") == "Running" and status.get("site") == site:
            running.append(name)
        elif any(c["type"] == "Running" and c["reason"] == "Queued" for c in status.get("conditions") or []):
            queued.append(name)
    return running, queued


def track_tenant(kubectl: Kubectl, name: str, track: str, site: str) -> None:
    kubectl.apply(tenant(name, track=track, allowedSites=[site], quota={"gpus": 32, "cpu": "16", "memory": "64Gi"}))
    eventually(lambda: tenant_ready(kubectl, name))


def submit(kubectl: Kubectl, namespace: str, prefix: str, count: int, site: str, **spec: Any) -> list[str]:
    names = [f"{prefix}-{index}" for index in range(count)]
    kubectl.apply(*(workload(name, namespace, gpus=2, sites=[site], **spec) for name in names))
    return names


def test_an_idle_euro_hpc_share_is_lent_and_taken_back_and_every_track_gets_its_guarantee(kubectl: Kubectl, unique: str) -> None:
    with lab_site(kubectl, f"{unique}-s") as site:
        euro, national, regional = (f"{unique}-{track}" for track in ("e", "n", "r"))
        for name, track in ((euro, "euro-hpc"), (national, "national"), (regional, "regional")):
            track_tenant(kubectl, name, track, site)
        borrowers = submit(kubectl, national, "nat", 6, site)

        def all_national_running() -> None:
            assert len(members(kubectl, national, borrowers, site)[0]) == 6
            assert usage(kubectl, "national", site) == (12, 8), "4 of its own, 8 lent by the idle tracks"

        eventually(all_national_running, timeout=90)
        owners = submit(kubectl, euro, "eu", 4, site)

        def taken_back() -> None:
            assert len(members(kubectl, euro, owners, site)[0]) == 4
            running, queued = members(kubectl, national, borrowers, site)
            assert (len(running), len(queued)) == (4, 2), "two borrowers preempted, waiting in Kueue"
            assert usage(kubectl, "euro-hpc", site) == (8, 0)

        eventually(taken_back, timeout=90)
        late = submit(kubectl, regional, "reg", 2, site)

        def every_track_at_its_guarantee() -> None:
            assert len(members(kubectl, regional, late, site)[0]) == 2
            assert len(members(kubectl, national, borrowers, site)[0]) == 2
            shares = {track: usage(kubectl, track, site)[0] for track in ("euro-hpc", "national", "regional")}
            assert shares == {"euro-hpc": 8, "national": 4, "regional": 4}

        eventually(every_track_at_its_guarantee, timeout=90)
        preempted = next(name for name in borrowers if name in members(kubectl, national, borrowers, site)[1])
        body = kubectl.get("gpuworkload", preempted, "-n", national)
        assert "wait in Kueue for GPUs of the national track's quota" in condition(body, "Running")["message"]


def test_when_gpus_are_scarce_the_regional_track_is_served_first(kubectl: Kubectl, unique: str) -> None:
    with lab_site(kubectl, f"{unique}-s") as site:
        euro, national, regional = (f"{unique}-{track}" for track in ("e", "n", "r"))
        for name, track in ((euro, "euro-hpc"), (national, "national"), (regional, "regional")):
            track_tenant(kubectl, name, track, site)
        for namespace, prefix, count in ((euro, "eu", 4), (national, "nat", 2), (regional, "reg", 2)):
            names = submit(kubectl, namespace, prefix, count, site)
            eventually(lambda ns=namespace, names=names: assert_running(kubectl, ns, names, site), timeout=90)  # type: ignore[misc]
        # the site is full; the national tenant asks first, then the regional one
        kubectl.apply(workload("nat-more", national, gpus=2, sites=[site]))
        eventually(lambda: phase(kubectl, national, "nat-more", "Pending"))
        kubectl.apply(workload("reg-more", regional, gpus=2, sites=[site]))
        eventually(lambda: phase(kubectl, regional, "reg-more", "Pending"))
        kubectl.run("delete", "gpuworkload", "eu-0", "-n", euro)  # two GPUs come free
        eventually(lambda: phase(kubectl, regional, "reg-more", "Running", site), timeout=60)

        def regional_borrows_them() -> None:
            assert usage(kubectl, "regional", site) == (6, 2)
            assert usage(kubectl, "national", site) == (4, 0)

        eventually(regional_borrows_them)
        # the national work waits: Pending in gigafab, or placed and Queued in Kueue, never running
        body = kubectl.get("gpuworkload", "nat-more", "-n", national)
        assert body["status"]["phase"] in ("Pending", "Placed"), "the two free GPUs went to the regional track"
        assert not [
            pod
            for pod in kubectl.get("pods", "-n", national, "-l", "gigafab.nl/workload=nat-more")["items"]
            if pod["spec"].get("nodeName")
        ]


def assert_running(kubectl: Kubectl, namespace: str, names: list[str], site: str) -> None:
    assert members(kubectl, namespace, names, site)[0] == names


def test_quotas_shrink_with_the_healthy_gpus_of_a_site(kubectl: Kubectl, unique: str) -> None:
    with vouched_lab_site(kubectl, f"{unique}-s") as (site, gateway):
        # the health plane reports half the GPUs of a node Degraded, then six of the other node's
        gateway.report(node_name(site, 0), [HEALTHY] * 4 + [DEGRADED] * 4, reason="XID 63")
        eventually(lambda: quotas(kubectl, site, {"euro-hpc": 6, "national": 3, "regional": 3}))
        gateway.report(node_name(site, 1), [HEALTHY] * 2 + [DEGRADED] * 6, reason="XID 63")
        eventually(lambda: quotas(kubectl, site, {"euro-hpc": 3, "national": 1, "regional": 2}))
        # the other node Failed: one node of two is no longer Healthy, so placement puts no work there
        gateway.report(node_name(site, 1), [FAILED] * 8, reason="XID 79")
        eventually(lambda: quotas(kubectl, site, {"euro-hpc": 0, "national": 0, "regional": 0}))
        gateway.report(node_name(site, 1), [HEALTHY] * 8)  # reset, and trusted after its quiet period
        eventually(lambda: quotas(kubectl, site, {"euro-hpc": 6, "national": 3, "regional": 3}))
        kubectl.run("patch", "site", site, "--type=merge", "-p", json.dumps({"spec": {"lifecycle": "Draining"}}))
        eventually(lambda: quotas(kubectl, site, {"euro-hpc": 0, "national": 0, "regional": 0}))


def test_a_deleted_site_leaves_no_flavor_behind(kubectl: Kubectl, unique: str) -> None:
    """Its GPUs leave every track's ClusterQueue and its ResourceFlavor goes (allocation.prune); other
    sites' flavors stay."""
    flavor = "resourceflavors.v1beta2.kueue.x-k8s.io"
    with lab_site(kubectl, f"{unique}-gone") as site:
        assert kubectl.get(flavor, site)["spec"]["nodeLabels"] == {"topology.kubernetes.io/zone": site}
        kubectl.run("delete", "site", site)

        def gone() -> None:
            for track in ("euro-hpc", "national", "regional"):
                queue = kubectl.get("clusterqueues.v1beta2.kueue.x-k8s.io", track)
                assert site not in {f["name"] for f in queue["spec"]["resourceGroups"][0]["flavors"]}
            assert kubectl.get(flavor, site) is None

        eventually(gone, timeout=60)
    assert kubectl.get(flavor, "niemeyer") is not None


def test_a_lowered_power_cap_sheds_preemptible_then_borrowed_work_and_suspends_what_fits_nowhere(
    kubectl: Kubectl, unique: str
) -> None:
    with lab_site(kubectl, f"{unique}-a") as first, lab_site(kubectl, f"{unique}-b") as second:
        kubectl.apply(
            tenant(unique, track="regional", allowedSites=[first, second], quota={"gpus": 32, "cpu": "16", "memory": "64Gi"})
        )
        eventually(lambda: tenant_ready(kubectl, unique))
        # regional's quota on a site is 4 GPUs: crit and std use it, bor borrows, pre is preemptible
        for name, criticality in (("crit", "critical"), ("std", "standard"), ("bor", "standard"), ("pre", "preemptible")):
            kubectl.apply(workload(name, unique, gpus=2, criticality=criticality, sites=[first, second]))
            eventually(lambda name=name: phase(kubectl, unique, name, "Running", first), timeout=60)  # type: ignore[misc]
            # the newest pods borrow, and creation times have whole seconds: each starts in a later second
            time.sleep(1.0)
        eventually(lambda: draw(kubectl, first, 5.6))
        kubectl.run("patch", "site", first, "--type=merge", "-p", '{"spec": {"powerCapKW": 3}}')
        for name in ("pre", "bor"):
            moved = eventually(lambda name=name: phase(kubectl, unique, name, "Running", second), timeout=60)  # type: ignore[misc]
            assert f"site {first} draws 5.6 kW, above its power cap of 3 kW" in moved["status"]["placements"][-1]["reason"]
        for name in ("crit", "std"):
            assert kubectl.get("gpuworkload", name, "-n", unique)["status"]["site"] == first
        eventually(lambda: draw(kubectl, first, 2.8))
        events = kubectl.get("events", "-n", unique)["items"]
        reasons = {e["involvedObject"]["name"]: e["message"] for e in events if e["reason"] == "FailingOver"}
        assert "preemptible work goes first" in reasons["pre"]
        assert "borrowed from another track" in reasons["bor"]
        # the second site's cap leaves room for neither, and the first has no headroom: suspended
        kubectl.run("patch", "site", second, "--type=merge", "-p", '{"spec": {"powerCapKW": 1}}')
        for name in ("pre", "bor"):
            body = eventually(lambda name=name: phase(kubectl, unique, name, "Pending"), timeout=60)  # type: ignore[misc]
            assert condition(body, "Placed")["reason"] in ("Suspended", "NoSiteFits")
            assert kubectl.get("deployment", f"{name}-e2", "-n", unique) is None
        eventually(lambda: draw(kubectl, second, 0.0))
        suspended = [e for e in kubectl.get("events", "-n", unique)["items"] if e["reason"] == "Suspended"]
        assert {e["involvedObject"]["name"] for e in suspended} == {"pre", "bor"}
        # critical work is moved, not stopped, where a lawful site has room
        kubectl.run("patch", "site", second, "--type=merge", "-p", '{"spec": {"powerCapKW": 100}}')
        kubectl.run("patch", "site", first, "--type=merge", "-p", '{"spec": {"powerCapKW": 0}}')
        eventually(lambda: phase(kubectl, unique, "crit", "Running", second), timeout=60)
        eventually(lambda: draw(kubectl, first, 0.0))


def draw(kubectl: Kubectl, site: str, kw: float) -> None:
    assert kubectl.get("site", site)["status"].get("powerDrawKW") == kw


def test_a_tenant_that_changes_track_queues_in_its_new_track(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, track="national"))
    eventually(lambda: tenant_ready(kubectl, unique))

    def queue_of_namespace() -> str:
        local = kubectl.get("localqueues.v1beta2.kueue.x-k8s.io", "gigafab", "-n", unique)
        assert local is not None, "no LocalQueue yet"
        return str(local["spec"]["clusterQueue"])

    assert eventually(queue_of_namespace) == "national"
    kubectl.apply(tenant(unique, track="euro-hpc"))

    def moved() -> None:
        assert queue_of_namespace() == "euro-hpc", "Kueue forbids changing it in place: the operator replaces it"

    eventually(moved)
