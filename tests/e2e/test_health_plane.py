"""The health plane of the local plane, end to end: `gigafab fault inject` into a
simulated agent → gRPC/mTLS → the site's gateway → etcd → the operator → a taint and
a condition on the Node, and one node fewer ready on the Site."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from gigafab.local.health import control_url
from tests.e2e.conftest import Kubectl, eventually

SITE, NODE = "de-halm", "de-halm-gpu-001"
TRUSTED = 90.0
"""Seconds to wait for a recovered node to be trusted: the tests fail and reset the same node again
and again, and every relapse within an hour doubles its quiet period (2 s here, at most 64 s)."""


def inject(kubectl: Kubectl, *fault: str, node: str = NODE) -> subprocess.CompletedProcess[str]:
    url = control_url(kubectl.plane.layout, SITE)
    return subprocess.run(
        [sys.executable, "-m", "gigafab", "fault", "inject", f"--node={node}", f"--control={url}", *fault],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def our_taints(kubectl: Kubectl) -> list[tuple[str, str]]:
    taints = kubectl.get("node", NODE)["spec"].get("taints") or []
    return sorted((t["key"], t["effect"]) for t in taints if t["key"].startswith("gigafab.nl/"))


def gpu_condition(kubectl: Kubectl) -> dict[str, Any]:
    conditions = kubectl.get("node", NODE)["status"].get("conditions") or []
    return next((c for c in conditions if c["type"] == "GigafabGpuHealthy"), {})


def taints_are(kubectl: Kubectl, expected: list[tuple[str, str]]) -> None:
    assert our_taints(kubectl) == expected


def ready_nodes(kubectl: Kubectl, count: int) -> None:
    assert kubectl.get("site", SITE)["status"]["nodesReady"] == count


def test_health_plane_runs_a_gateway_and_agents_per_site(kubectl: Kubectl) -> None:
    running = kubectl.plane.supervisor.running()
    for site in ("niemeyer", "de-halm", "eemshaven"):
        assert f"gateway-{site}" in running
        assert f"agents-{site}" in running


def test_failed_gpu_taints_its_node_until_reset_and_trusted(kubectl: Kubectl) -> None:
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
    answer = inject(kubectl, "--xid=79", "--gpu=3")
    assert answer.returncode == 0, answer.stderr

    def failed() -> None:
        taints_are(kubectl, [("gigafab.nl/gpu-failed", "NoExecute")])
        condition = gpu_condition(kubectl)
        assert (condition["status"], condition["reason"]) == ("False", "Failed")
        assert "XID 79" in condition["message"]
        ready_nodes(kubectl, 1)

    eventually(failed, timeout=30)
    assert inject(kubectl, "--reset", "--gpu=3").returncode == 0
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
    eventually(lambda: ready_nodes(kubectl, 2), timeout=TRUSTED)
    assert gpu_condition(kubectl)["status"] == "True"


@pytest.mark.parametrize(
    ("fault", "taints"),
    [
        ("--xid=63", [("gigafab.nl/gpu-degraded", "NoSchedule")]),
        ("--silent", [("gigafab.nl/node-silent", "NoExecute"), ("gigafab.nl/node-silent", "NoSchedule")]),
    ],
)
def test_degraded_and_silent_nodes_are_tainted(kubectl: Kubectl, fault: str, taints: list[tuple[str, str]]) -> None:
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
    assert inject(kubectl, fault).returncode == 0
    eventually(lambda: taints_are(kubectl, taints), timeout=30)
    assert inject(kubectl, "--reset").returncode == 0
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)


def test_a_degraded_gpu_is_subtracted_from_the_sites_healthy_gpus_one_by_one(kubectl: Kubectl) -> None:
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
    gpus = kubectl.get("site", SITE)["status"]["gpus"]
    eventually(lambda: healthy_gpus(kubectl, gpus), timeout=30)
    assert inject(kubectl, "--xid=63", "--gpu=2").returncode == 0

    def one_fewer() -> None:
        assert kubectl.get("node", NODE)["metadata"]["annotations"]["gigafab.nl/gpus-healthy"] == "7"
        healthy_gpus(kubectl, gpus - 1)
        ready_nodes(kubectl, 2)  # a Degraded node still runs what it has

    eventually(one_fewer, timeout=30)
    assert inject(kubectl, "--reset", "--gpu=2").returncode == 0
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
    eventually(lambda: healthy_gpus(kubectl, gpus), timeout=30)


def healthy_gpus(kubectl: Kubectl, count: int) -> None:
    assert kubectl.get("site", SITE)["status"]["gpusHealthy"] == count


def test_application_xid_changes_nothing(kubectl: Kubectl) -> None:
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
    assert inject(kubectl, "--xid=13").returncode == 0
    assert inject(kubectl, "--xid=79", node="de-halm-gpu-000").returncode == 0  # a marker that did travel
    eventually(lambda: _tainted("de-halm-gpu-000", kubectl), timeout=30)
    taints_are(kubectl, [])
    assert inject(kubectl, "--reset", node="de-halm-gpu-000").returncode == 0


def _tainted(node: str, kubectl: Kubectl) -> None:
    taints = kubectl.get("node", node)["spec"].get("taints") or []
    assert any(t["key"] == "gigafab.nl/gpu-failed" for t in taints)


def test_fault_inject_refuses_unknown_nodes_and_faults(kubectl: Kubectl) -> None:
    answer = inject(kubectl, "--xid=79", node="de-halm-gpu-099")
    assert answer.returncode == 1
    assert "no agent for node" in answer.stderr
    answer = inject(kubectl, "--xid=79", "--gpu=42")
    assert answer.returncode == 1
    assert "cannot inject" in answer.stderr


def test_removed_health_taint_is_put_back(kubectl: Kubectl) -> None:
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
    assert inject(kubectl, "--xid=79").returncode == 0
    eventually(lambda: taints_are(kubectl, [("gigafab.nl/gpu-failed", "NoExecute")]), timeout=30)
    kubectl.run("taint", "node", NODE, "gigafab.nl/gpu-failed-")
    eventually(lambda: taints_are(kubectl, [("gigafab.nl/gpu-failed", "NoExecute")]), timeout=30)
    assert inject(kubectl, "--reset").returncode == 0
    eventually(lambda: taints_are(kubectl, []), timeout=TRUSTED)
