"""Chaos: etcd down for 30 s, a gateway SIGKILLed, the apiserver restarted.

Invariant: none of these is a lost site. Critical work keeps running where it runs
(same site, same epoch, no failover counted, never two copies), the health plane
resumes by itself (the operator's etcd watch and the gateway's lease come back), and
nothing is lost: a GPU that failed while etcd was down reaches its Node once etcd is
back, and its recovery after the faults does too.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from gigafab.local.components import operator_metrics_url
from tests.e2e.conftest import Kubectl, condition, eventually, tenant
from tests.e2e.test_failover import Timeline, phase, site_healthy
from tests.e2e.test_health_plane import inject, taints_are
from tests.e2e.test_telemetry import scrape, total
from tests.e2e.test_workloads import tenant_ready, workload

ETCD_DOWN = 30.0
FAILED = [("gigafab.nl/gpu-failed", "NoExecute")]

pytestmark = pytest.mark.usefixtures("workloads_removed")


def apiserver_answers(kubectl: Kubectl) -> None:
    assert kubectl.run("get", "--raw", "/readyz", check=False).returncode == 0, "apiserver not ready"


def failovers(kubectl: Kubectl) -> float:
    return total(scrape(operator_metrics_url(kubectl.plane.layout)), "gigafab_failovers_total")


@pytest.fixture
def plane_restored(kubectl: Kubectl) -> Iterator[None]:
    """Whatever happens, the plane's components run again afterwards."""
    yield
    for name in ("etcd", "kube-apiserver", "gateway-niemeyer"):
        if kubectl.plane.supervisor.pid_of(name) is None:
            kubectl.plane.restart(name)
    eventually(lambda: apiserver_answers(kubectl), timeout=90)
    inject(kubectl, "--reset", "--gpu=3")


@pytest.mark.usefixtures("plane_restored")
def test_etcd_down_30s_a_killed_gateway_and_a_restarted_apiserver_move_nothing_and_lose_nothing(
    kubectl: Kubectl, unique: str
) -> None:
    plane = kubectl.plane
    kubectl.apply(tenant(unique, allowedSites=["niemeyer", "de-halm"], quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("registry", unique, gpus=1, criticality="critical", sites=["niemeyer"]))
    eventually(lambda: phase(kubectl, unique, "registry", "Running", "niemeyer"), timeout=90)
    eventually(lambda: site_healthy(kubectl, "de-halm"), timeout=60)
    before = failovers(kubectl)

    with Timeline(kubectl, unique) as timeline:
        # 1. etcd down for 30 s; a GPU fails meanwhile, its gateway keeps the transition
        plane.supervisor.stop("etcd")
        down_at = time.monotonic()
        failed = inject(kubectl, "--xid=79", "--gpu=3")
        assert failed.returncode == 0, failed.stderr
        time.sleep(max(0.0, ETCD_DOWN - (time.monotonic() - down_at)))
        plane.restart("etcd")
        eventually(lambda: apiserver_answers(kubectl), timeout=90)
        eventually(lambda: taints_are(kubectl, FAILED), timeout=90)

        # 2. niemeyer's gateway SIGKILLed and started again, as its Deployment would
        pid = plane.supervisor.pid_of("gateway-niemeyer")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        plane.restart("gateway-niemeyer")

        # 3. the apiserver restarted
        plane.restart("kube-apiserver")
        eventually(lambda: apiserver_answers(kubectl), timeout=90)

        # health resumes: the GPU's recovery reaches the Node too
        assert inject(kubectl, "--reset", "--gpu=3").returncode == 0
        eventually(lambda: taints_are(kubectl, []), timeout=90)
        for site in ("niemeyer", "de-halm"):
            eventually(lambda site=site: site_healthy(kubectl, site), timeout=90)  # type: ignore[misc]
        time.sleep(5)  # a failover decided late would show now

    body = phase(kubectl, unique, "registry", "Running", "niemeyer")
    assert body["status"]["epoch"] == 1, "never moved"
    assert failovers(kubectl) == before, "no failover counted"
    events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=registry")["items"]
    assert "FailingOver" not in {event["reason"] for event in events}
    running = timeline.running_epochs()
    assert running
    assert all(epochs <= {1} for epochs in running), "only epoch 1 ever ran"
    assert condition(kubectl.get("site", "niemeyer"), "Healthy")["status"] == "True"
