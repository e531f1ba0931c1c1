"""The AllocationPolicy on the real plane: guarantees from the healthy GPUs, use by track.

Enforcement through Kueue (lending, reclaim, priority, power) is in ``test_tracks.py``."""

from __future__ import annotations

from typing import Any

import pytest
from gigafab.operator.allocation import usable_by_placement

from tests.e2e.conftest import Kubectl, condition, eventually, tenant
from tests.e2e.test_workloads import tenant_ready, workload

pytestmark = pytest.mark.usefixtures("workloads_removed")


def tracks(kubectl: Kubectl) -> tuple[int, dict[str, dict[str, Any]]]:
    status = kubectl.get("allocationpolicy", "default")["status"]
    return int(status["healthyGpus"]), {track["name"]: track for track in status["tracks"]}


def test_the_default_policy_guarantees_its_shares_of_the_healthy_gpus_and_counts_use_by_track(
    kubectl: Kubectl, unique: str
) -> None:
    def ready() -> None:
        assert condition(kubectl.get("allocationpolicy", "default"), "Ready")["reason"] == "QueuesApplied"

    eventually(ready)
    kubectl.apply(tenant(unique, track="euro-hpc", quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("climate", unique, gpus=2))

    def counted() -> tuple[int, dict[str, dict[str, Any]]]:
        healthy, by_track = tracks(kubectl)
        assert by_track["euro-hpc"]["usedGpus"] >= 2
        return healthy, by_track

    healthy, by_track = eventually(counted)
    sites = kubectl.get("sites")["items"]
    usable = [site for site in sites if usable_by_placement(site)]  # Active, in the EU, Healthy
    assert healthy == sum(site["status"].get("gpusHealthy", 0) for site in usable)
    assert sum(track["guaranteedGpus"] for track in by_track.values()) == healthy
    assert by_track["euro-hpc"]["guaranteedGpus"] == healthy // 2
    for track in by_track.values():
        assert track["borrowedGpus"] == max(0, track["usedGpus"] - track["guaranteedGpus"])
    lent = sum(track["lentGpus"] for track in by_track.values())
    assert lent <= sum(track["borrowedGpus"] for track in by_track.values())
