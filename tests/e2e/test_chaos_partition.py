"""Chaos: one site's agents and gateway partitioned in their network namespace, then back.

Invariant: the site's work stops on the site (each agent fences its own node) before
any copy starts elsewhere; critical and standard work then runs on the other site
under a new epoch; when the site returns, the stale copies are gone for good (no
Deployment or pod of the old epoch left, none started again), and at no moment do
two epochs of one workload run at once.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.chaos import Overlaps
from tests.e2e.conftest import Kubectl, eventually, tenant
from tests.e2e.test_failover import cut, fences, health_certified, phase, seconds
from tests.e2e.test_workloads import tenant_ready, workload

SITE, REFUGE = "niemeyer", "de-halm"
WORK = {"ledger": "critical", "imaging": "critical", "batch": "standard"}

pytestmark = pytest.mark.usefixtures("workloads_removed")


def starts_after(kubectl: Kubectl, namespace: str, name: str) -> float:
    """The moment the operator said the moved copy may start (its FailingOver event)."""
    events = kubectl.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    message = next(event["message"] for event in events if event["reason"] == "FailingOver")
    return seconds(re.search(r"starting after (\S+Z):", message).group(1))  # type: ignore[union-attr]


def no_stale_copies(kubectl: Kubectl, namespace: str) -> None:
    """No Deployment and no live pod of the first epoch is left."""
    runners = [d["metadata"]["name"] for d in kubectl.get("deployments", "-n", namespace)["items"]]
    pods = kubectl.get("pods", "-n", namespace, "-l", "gigafab.nl/epoch=1")["items"]
    left = [name for name in runners if name.endswith("-e1")]
    left += [pod["metadata"]["name"] for pod in pods if not pod["metadata"].get("deletionTimestamp")]
    assert left == [], left


def test_a_partitioned_site_is_fenced_then_failed_over_and_its_stale_copies_never_return(kubectl: Kubectl, unique: str) -> None:
    quota = {"gpus": 8, "cpu": "8", "memory": "32Gi"}
    kubectl.apply(tenant(unique, dataClass="health", allowedSites=[SITE, REFUGE], quota=quota))
    eventually(lambda: tenant_ready(kubectl, unique))
    with health_certified(kubectl, REFUGE):
        for name, criticality in WORK.items():
            kubectl.apply(workload(name, unique, gpus=1, criticality=criticality, sites=[SITE]))
        for name in WORK:
            eventually(lambda name=name: phase(kubectl, unique, name, "Running", SITE), timeout=90)  # type: ignore[misc]
        with Overlaps(kubectl, unique) as overlaps:
            with cut(kubectl, SITE) as cut_at:
                moved = {
                    name: eventually(lambda name=name: phase(kubectl, unique, name, "Running", REFUGE), timeout=90)  # type: ignore[misc]
                    for name in WORK
                }
                fenced = fences(kubectl, SITE, since=cut_at)
            # the site is back and Healthy (``cut`` waits for it): give a stale copy every chance to return
            time.sleep(10)
            eventually(lambda: no_stale_copies(kubectl, unique))

    assert set(fenced) == {f"{SITE}-gpu-000", f"{SITE}-gpu-001"}, "every node of the site fenced itself"
    for name, body in moved.items():
        assert body["status"]["epoch"] == 2, name
        assert max(fenced.values()) < starts_after(kubectl, unique, name), f"{name} started elsewhere before the site fenced"
    assert overlaps.found == [], "two epochs of one workload ran at once"
    assert overlaps.returned == set(), "a stale copy ran again"
    assert {copy[1]: history for copy, history in overlaps.history.items()} == {name: [1, 2] for name in WORK}
    for name in WORK:
        assert phase(kubectl, unique, name, "Running", REFUGE)["status"]["epoch"] == 2, "stays where it runs well"
