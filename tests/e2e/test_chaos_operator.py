"""Chaos: the operator SIGKILLed mid-reconcile 50 times while tenants and workloads are applied.

Invariant: whatever moment the operator dies in, once it runs again the cluster converges
to exactly what the resources ask for: every Tenant Ready with one set of its objects,
every GpuWorkload Running as one Deployment of one epoch, nothing left of what was
deleted (no orphan namespace, Deployment, pod or queue), and at no moment two epochs of
one workload running at once.

The kills land at a random moment 0-1.5 s after the operator is ready (the seed is
printed), while a second thread creates a tenant with a workload, changes one and
deletes one every second or so: most kills cut a handler short.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from gigafab.local import components
from tests.e2e.chaos import Overlaps
from tests.e2e.conftest import Kubectl, condition, eventually, tenant
from tests.e2e.test_workloads import workload

KILLS = 50
OPERATOR = "gigafab-operator"
TENANT_OBJECTS = {
    "resourcequotas": {"gigafab-quota"},
    "limitranges": {"gigafab-limits"},
    "networkpolicies": {"gigafab-default-deny", "gigafab-tenant-boundary"},
    "rolebindings": {"gigafab-admin"},
    "localqueues.kueue.x-k8s.io": {"gigafab"},
}


@dataclass
class Churn:
    """Tenants created, changed and deleted in rounds, each with one 1-GPU workload."""

    kubectl: Kubectl
    prefix: str
    live: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rounds: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    failure: str = ""

    def run(self) -> None:
        try:
            self._rounds()
        except AssertionError as failure:  # a refused apply: the test must say so, not stop churning quietly
            self.failure = str(failure)

    def _submit(self, namespace: str) -> None:
        """The tenant's workload, once the operator (between kills) has made its namespace."""
        deadline = time.monotonic() + 120
        while True:
            answer = self.kubectl.apply(workload("job", namespace, gpus=1, criticality="standard"), check=False)
            if answer.returncode == 0:
                return
            assert "not found" in answer.stderr, answer.stderr
            assert time.monotonic() < deadline, f"namespace {namespace} never made"
            time.sleep(0.5)

    def _rounds(self) -> None:
        while not self.stop.is_set():
            name = f"{self.prefix}-{self.rounds}"
            self.kubectl.apply(tenant(name, members=[{"name": f"{name}-owner", "role": "admin"}]))
            self._submit(name)
            self.live.append(name)
            if self.rounds % 3 == 1:  # a change: more quota, a second member
                members = [{"name": f"{name}-owner", "role": "admin"}, {"name": f"{name}-guest", "role": "viewer"}]
                self.kubectl.apply(tenant(self.live[-2], members=members, quota={"gpus": 6, "cpu": "8", "memory": "32Gi"}))
            if len(self.live) > 4:  # a deletion: its workload first, then the tenant
                gone = self.live.pop(0)
                self.kubectl.run("delete", "gpuworkload", "job", "-n", gone, "--wait=false")
                self.kubectl.run("delete", "tenant", gone, "--wait=false")
                self.deleted.append(gone)
            self.rounds += 1
            self.stop.wait(1.0)


@pytest.fixture
def operator_restored(kubectl: Kubectl) -> Iterator[None]:
    yield
    kubectl.plane.supervisor.start(components.operator(kubectl.plane.layout))


def kill_operator(kubectl: Kubectl, rng: random.Random) -> None:
    """Start the operator, let it work for a random moment, SIGKILL it."""
    supervisor = kubectl.plane.supervisor
    pid = supervisor.start(components.operator(kubectl.plane.layout))
    time.sleep(rng.uniform(0.0, 1.5))
    os.kill(pid, signal.SIGKILL)
    supervisor.stop(OPERATOR)  # reaps it and clears its pid file


def managed(kubectl: Kubectl, kind: str, namespace: str) -> list[str]:
    found = kubectl.get(kind, "-n", namespace)
    return sorted(item["metadata"]["name"] for item in (found or {"items": []})["items"])


def converged_tenant(kubectl: Kubectl, name: str) -> None:
    body = kubectl.get("tenant", name)
    state = condition(body, "Ready")
    assert (state["status"], state["observedGeneration"]) == ("True", body["metadata"]["generation"]), state
    for kind, names in TENANT_OBJECTS.items():
        found = managed(kubectl, kind, name)
        if kind == "rolebindings":
            wanted = {f"gigafab-{member['role']}" for member in body["spec"].get("members", [])}
            assert set(found) == wanted, (name, kind, found)
        else:
            assert set(found) == names, (name, kind, found)


def converged_workload(kubectl: Kubectl, namespace: str) -> None:
    body = kubectl.get("gpuworkload", "job", "-n", namespace)
    status = (body or {}).get("status") or {}
    assert status.get("phase") == "Running", (namespace, status.get("phase"))
    runners = managed(kubectl, "deployments", namespace)
    assert runners == [f"job-e{status['epoch']}"], (namespace, runners)
    pods = kubectl.get("pods", "-n", namespace, "-l", "gigafab.nl/workload=job")["items"]
    epochs = {pod["metadata"]["labels"]["gigafab.nl/epoch"] for pod in pods}
    assert epochs == {str(status["epoch"])}, (namespace, epochs)


def gone(kubectl: Kubectl, name: str) -> None:
    assert kubectl.get("tenant", name) is None, f"tenant {name} still there"
    assert kubectl.get("namespace", name) is None, f"namespace {name} still there"


def orphans(kubectl: Kubectl, prefix: str, live: set[str]) -> list[str]:
    """Objects in (or being) a namespace of this test's tenants that no longer exist."""
    found = []
    for kind in ("namespaces", *TENANT_OBJECTS, "deployments", "pods"):
        for item in (kubectl.get(kind, "-A") or {"items": []})["items"]:
            meta = item["metadata"]
            owner = meta.get("namespace") or meta["name"]
            if owner.startswith(prefix) and owner not in live:
                found.append(f"{kind}/{owner}/{meta['name']}")
    return found


@pytest.mark.usefixtures("operator_restored")
def test_operator_killed_mid_reconcile_50_times_converges_with_nothing_duplicated_or_orphaned(
    kubectl: Kubectl, unique: str
) -> None:
    seed = int(os.environ.get("GIGAFAB_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"chaos seed {seed} (GIGAFAB_CHAOS_SEED={seed} repeats it)")
    rng = random.Random(seed)
    churn = Churn(kubectl, unique)
    applier = threading.Thread(target=churn.run, daemon=True)
    with Overlaps(kubectl, unique) as overlaps:
        applier.start()
        try:
            for _ in range(KILLS):
                kill_operator(kubectl, rng)
        finally:
            kubectl.plane.supervisor.start(components.operator(kubectl.plane.layout))  # for good: the last round finishes
            churn.stop.set()
            applier.join()
        assert churn.failure == ""
        for name in churn.live:
            eventually(lambda name=name: converged_tenant(kubectl, name), timeout=120)  # type: ignore[misc]
            eventually(lambda name=name: converged_workload(kubectl, name), timeout=120)  # type: ignore[misc]
        for name in churn.deleted:
            eventually(lambda name=name: gone(kubectl, name), timeout=120)  # type: ignore[misc]
    assert orphans(kubectl, unique, set(churn.live)) == []
    assert overlaps.samples > 0
    assert overlaps.found == [], "two epochs of one workload ran at once"
    print(
        f"operator chaos: {KILLS} SIGKILLs, {churn.rounds} tenants+workloads created, {len(churn.deleted)} deleted; "
        f"0 duplicated, 0 orphaned, 0 overlaps in {overlaps.samples} samples"
    )
    for name in churn.live:
        kubectl.run("delete", "gpuworkload", "job", "-n", name, "--wait=false")
        kubectl.run("delete", "tenant", name, "--wait=false")
