"""The operator killed and restarted converges, with no duplicate objects, and forgets nothing of the
health plane that it cannot read back (issue 19, finding 14): a node in its quiet period stays
untrusted, and a site whose gateway is gone is fenced on its own terms."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

from gigafab.agents.ledger import FAILED, HEALTHY
from gigafab.operator.conditions import seconds_of

from gigafab.local import components
from gigafab.local.nodes import gpu_node, node_name
from tests.e2e.conftest import Kubectl, eventually, tenant
from tests.e2e.lab_gateway import LabGateway, lab_gateway
from tests.e2e.test_failover import phase, site_healthy
from tests.e2e.test_tenants import ready
from tests.e2e.test_workloads import tenant_ready, workload


def managed_objects(kubectl: Kubectl, namespace: str) -> list[str]:
    names = []
    for kind in ("resourcequotas", "limitranges", "networkpolicies", "rolebindings"):
        items = kubectl.get(kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=gigafab")["items"]
        names.extend(f"{kind}/{item['metadata']['name']}" for item in items)
    return sorted(names)


def restart_operator(kubectl: Kubectl, while_down: Callable[[], None] = lambda: None) -> float:
    """SIGKILL the operator, do ``while_down``, start it again; returns when it was started (wall clock)."""
    plane = kubectl.plane
    pid = plane.supervisor.pid_of("gigafab-operator")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    plane.supervisor.stop("gigafab-operator")  # reaps it and clears its pid file
    while_down()
    started = time.time()
    plane.supervisor.start(components.operator(plane.layout))
    return started


def test_sigkill_and_restart_converges_without_duplicates(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, members=[{"name": "a", "role": "admin"}]))
    ready(kubectl, unique)
    before = managed_objects(kubectl, unique)

    def while_down() -> None:  # a new tenant, and a managed object deleted by hand
        kubectl.apply(tenant(f"{unique}-late"))
        kubectl.run("delete", "networkpolicy", "gigafab-default-deny", "-n", unique)

    restart_operator(kubectl, while_down)
    ready(kubectl, f"{unique}-late")

    def converged() -> None:
        assert managed_objects(kubectl, unique) == before

    eventually(converged)
    assert len(before) == len(set(before)) == 5


def gpu_condition(kubectl: Kubectl, node: str) -> dict[str, Any]:
    conditions = kubectl.get("node", node)["status"].get("conditions") or []
    return next(c for c in conditions if c["type"] == "GigafabGpuHealthy")


def failed_taint(kubectl: Kubectl, node: str) -> bool:
    return any(t["key"] == "gigafab.nl/gpu-failed" for t in kubectl.get("node", node)["spec"].get("taints") or [])


RELAPSES = 5
"""Relapses of the node before the restart: its quiet period is then 2 s × 2⁵ = 64 s (the e2e plane's
GIGAFAB_TRUST_AFTER is 2 s), long enough to restart the operator within it."""


def test_a_node_in_its_quiet_period_stays_untrusted_across_a_restart(kubectl: Kubectl, unique: str) -> None:
    site = f"{unique}-q"
    node = node_name(site, 0)
    kubectl.create(gpu_node(site, 0, gpus=8))
    try:
        with lab_gateway(kubectl.plane, site, node) as gateway:
            for _ in range(RELAPSES + 1):  # failed, looks healthy, failed again: a relapse each time
                gateway.report(node, [FAILED] + [HEALTHY] * 7, reason="XID 79")
                gateway.report(node, [HEALTHY] * 8)

            def waiting_out_a_long_quiet_period() -> None:
                condition = gpu_condition(kubectl, node)
                assert condition["reason"] == "Failed"
                assert f"trusted after 64 s quiet (doubled for each of {RELAPSES} relapse(s))" in condition["message"]

            eventually(waiting_out_a_long_quiet_period, timeout=30)
            restarted_at = restart_operator(kubectl)

            def decided_again_by_the_new_operator() -> None:
                condition = gpu_condition(kubectl, node)
                assert (seconds_of(condition["lastHeartbeatTime"]) or 0) >= restarted_at - 1, "not yet decided again"
                assert failed_taint(kubectl, node), "trusted at once after the restart"
                assert condition["reason"] == "Failed"
                assert f"doubled for each of {RELAPSES} relapse(s)" in condition["message"]

            eventually(decided_again_by_the_new_operator, timeout=90)
            eventually(lambda: _trusted(kubectl, node), timeout=120)  # once its quiet period is over
    finally:
        kubectl.run("delete", "node", node, check=False)


def _trusted(kubectl: Kubectl, node: str) -> None:
    assert not failed_taint(kubectl, node)
    assert gpu_condition(kubectl, node)["reason"] == "Healthy"


FAR_FENCE = 60.0
"""The lab site's fenceAfter: longer than the 30 s a restarted operator used to assume."""


def test_a_site_whose_gateway_went_while_the_operator_was_away_is_fenced_on_its_own_terms(kubectl: Kubectl, unique: str) -> None:
    site = f"{unique}-f"
    nodes = [node_name(site, index) for index in range(2)]
    spec = {"jurisdiction": "NL", "dataClasses": ["public", "internal"], "powerBudgetKW": 1000, "lifecycle": "Active"}
    kubectl.create(*(gpu_node(site, index, gpus=8) for index in range(2)))
    kubectl.apply({"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "metadata": {"name": site}, "spec": spec})
    gateway = LabGateway(kubectl.plane, site, fence_after=FAR_FENCE).start()
    try:
        gateway.vouch(*nodes)
        eventually(lambda: site_healthy(kubectl, site), timeout=60)

        def terms_kept() -> None:  # what a restarted operator reads when the gateway's key is gone
            assert kubectl.get("site", site)["status"]["healthGateway"]["fenceAfterSeconds"] == FAR_FENCE

        eventually(terms_kept, timeout=60)
        kubectl.apply(tenant(unique, allowedSites=[site, "niemeyer"], quota={"gpus": 4, "cpu": "8", "memory": "32Gi"}))
        eventually(lambda: tenant_ready(kubectl, unique))
        kubectl.apply(workload("far", unique, gpus=1, criticality="critical", sites=[site]))
        eventually(lambda: phase(kubectl, unique, "far", "Running", site), timeout=90)
        restarted_at = restart_operator(kubectl, while_down=gateway.stop)  # its key goes with its lease
        moved = eventually(lambda: phase(kubectl, unique, "far", "Running", "niemeyer"), timeout=240)
        assert moved["status"]["placements"][-1]["fromSite"] == site
        events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=far")["items"]
        failing_over = next(e for e in events if e["reason"] == "FailingOver")["message"]
        starts_after = seconds_of(re.search(r"starting after (\S+Z):", failing_over).group(1))  # type: ignore[union-attr]
        assert starts_after is not None
        assert starts_after >= restarted_at + FAR_FENCE, f"fenced on a default, not on the site's {FAR_FENCE:g} s"
    finally:
        gateway.stop()
        kubectl.run("delete", "gpuworkloads", "--all", "-n", unique, "--wait=false", check=False)
        kubectl.run("delete", "site", site, "--wait=false", check=False)
        kubectl.run("delete", "node", *nodes, check=False)
