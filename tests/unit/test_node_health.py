"""Node health to taints: worse at once, better only after a quiet period."""

from __future__ import annotations

import pytest
from gigafab.operator.node_health import DEGRADED, FAILED, HEALTHY, SILENT, Applied, condition_for, decide, taints_for


@pytest.mark.parametrize(
    ("health", "taints"),
    [
        (DEGRADED, [("gigafab.nl/gpu-degraded", "NoSchedule")]),
        (FAILED, [("gigafab.nl/gpu-failed", "NoExecute")]),
        # work tolerates the NoExecute one until its node has fenced; NoSchedule keeps new pods off meanwhile
        (SILENT, [("gigafab.nl/node-silent", "NoExecute"), ("gigafab.nl/node-silent", "NoSchedule")]),
    ],
)
def test_each_unhealthy_state_has_its_taints(health: str, taints: list[tuple[str, str]]) -> None:
    assert [(t["key"], t["effect"]) for t in taints_for(health, [])] == taints


def test_foreign_taints_are_kept_and_ours_replaced() -> None:
    existing = [
        {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"},
        {"key": "gigafab.nl/gpu-degraded", "value": "true", "effect": "NoSchedule"},
    ]
    assert [t["key"] for t in taints_for(FAILED, existing)] == ["kwok.x-k8s.io/node", "gigafab.nl/gpu-failed"]
    assert [t["key"] for t in taints_for(HEALTHY, existing)] == ["kwok.x-k8s.io/node"]


def test_worse_is_applied_at_once() -> None:
    assert decide(Applied(), FAILED, "XID 79", now=0.0) == Applied(FAILED, "XID 79")
    assert decide(Applied(DEGRADED), SILENT, "quiet", now=0.0).health == SILENT


def test_better_is_trusted_only_after_the_quiet_period() -> None:
    failed = Applied(FAILED, "XID 79")
    waiting = decide(failed, HEALTHY, "", now=100.0, trust_after=30)
    assert (waiting.health, waiting.better_health) == (FAILED, HEALTHY)
    assert decide(waiting, HEALTHY, "", now=129.0, trust_after=30).health == FAILED
    assert decide(waiting, HEALTHY, "", now=130.0, trust_after=30).health == HEALTHY


def test_a_flapping_gpu_does_not_flap_the_taint() -> None:
    applied = Applied(FAILED, "XID 79")
    healths = []
    for second in range(600):
        applied = decide(applied, HEALTHY if second % 20 < 10 else FAILED, "flap", now=float(second), trust_after=30)
        healths.append(applied.health)
    assert set(healths) == {FAILED}


def test_condition_says_why() -> None:
    assert condition_for(Applied(FAILED, "GPU 3: XID 79"))["status"] == "False"
    assert condition_for(Applied())["status"] == "True"
    assert "trusted after" in condition_for(Applied(FAILED, "x", 1.0, HEALTHY))["message"]


def test_a_fault_soon_after_being_trusted_doubles_the_quiet_period_unless_the_operator_remembers_nothing() -> None:
    """The relapse memory (``$GIGAFAB_RELAPSE_MEMORY``): with the default hour, a node that fails again a minute
    after it was trusted waits twice as long the next time; with none, every fault is judged on its own."""
    trusted = Applied(HEALTHY, "", trusted_at=1000.0)
    assert decide(trusted, FAILED, "XID 79", now=1060.0, trust_after=2).relapses == 1
    assert decide(trusted, FAILED, "XID 79", now=1060.0, trust_after=2, memory=0.0).relapses == 0
