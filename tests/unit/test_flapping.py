"""A GPU flapping for 10 minutes of simulated time: its work moves once and never back.

The chain is the real one with the clock passed in: the agent's report every second →
the gateway's ``Ledger`` (transitions only) → the operator's ``decide`` (worse at
once, better after a quiet period that doubles with each relapse) → ``taints_for`` on
the Node. Only Kubernetes is modelled: a pod on a node with a NoExecute taint of ours
is evicted and rescheduled on an untainted node, and the scheduler prefers the
flapping node whenever it is untainted (the worst case). Invariants: the work that
ran on the flapping GPU moves exactly once; no workload moves twice; and however the
GPU flaps, its node is trusted again at most twice in the 10 minutes (30 s, then
60 s of quiet; the next wait is 120 s), so little new work can be drawn onto it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from gigafab.agents.ledger import GpuReport, Ledger
from gigafab.operator import node_health
from gigafab.operator.node_health import FAILED, HEALTHY, Applied, decide, taints_for
from hypothesis import given, settings
from hypothesis import strategies as st

SECONDS = 600
NODES = ("de-halm-gpu-000", "de-halm-gpu-001", "de-halm-gpu-002")
FLAPPING = NODES[0]


@dataclass
class Cluster:
    """Nodes with our taints, and which node each workload runs on."""

    taints: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {node: [] for node in NODES})
    running_on: dict[str, str] = field(default_factory=dict)
    moves: dict[str, int] = field(default_factory=dict)
    trusted_again: int = 0

    def schedulable(self) -> list[str]:
        return [node for node in NODES if not self.taints[node]]  # the flapping node first: the worst case

    def start(self, workload: str) -> None:
        self.running_on[workload] = self.schedulable()[0]
        self.moves.setdefault(workload, 0)

    def evict(self) -> None:
        for workload, node in self.running_on.items():
            if any(taint["effect"] == "NoExecute" for taint in self.taints[node]):
                self.running_on[workload] = self.schedulable()[0]
                self.moves[workload] += 1


def flap(dwells: list[int]) -> list[str]:
    """The GPU's health each second: healthy for 10 s, then Failed and Healthy by turns for
    ``dwells`` seconds each, over and over until the 10 minutes are up."""
    states = [HEALTHY] * 10
    failing = True
    while len(states) < SECONDS:
        for dwell in dwells:
            states += [FAILED if failing else HEALTHY] * dwell
            failing = not failing
    return states[:SECONDS]


def simulate(states: list[str], arrivals_every: int = 60) -> Cluster:
    ledger, cluster = Ledger("de-halm", silent_after=3.0), Cluster()
    applied = {node: Applied() for node in NODES}
    cluster.start("critical")
    for second in range(SECONDS):
        now = float(second)
        for node in NODES:
            health = states[second] if node == FLAPPING else HEALTHY
            transitions = ledger.observe(node, "de-halm", second + 1, [GpuReport(0, health, "XID 79")], now)
            reported = next((t.after for t in transitions if t.gpu is None), ledger.nodes[node].health)
            before = applied[node]
            applied[node] = decide(before, reported, "", now)  # every second: a transition or the quiet-period recheck
            if before.health != HEALTHY and applied[node].health == HEALTHY:
                cluster.trusted_again += 1
            cluster.taints[node] = taints_for(applied[node].health, [])
        cluster.evict()
        if second and second % arrivals_every == 0:
            cluster.start(f"arrival-{second}")
    return cluster


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=40))
def test_a_flapping_gpu_moves_its_work_once_and_is_trusted_again_at_most_twice(dwells: list[int]) -> None:
    cluster = simulate(flap(dwells))
    assert cluster.moves["critical"] == 1, "the work on the flapping GPU left it once, and never came back to leave again"
    assert max(cluster.moves.values()) <= 1, "no workload moved twice"
    assert cluster.trusted_again <= 2
    assert sum(cluster.moves.values()) <= 1 + cluster.trusted_again


def test_without_the_doubling_a_slow_flap_would_draw_work_back_again_and_again(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = flap([40])  # 40 s failed, 40 s healthy: each quiet spell outlasts 30 s
    assert simulate(slow).trusted_again <= 2
    monkeypatch.setattr(node_health, "MAX_DOUBLINGS", 0)
    undamped = simulate(slow, arrivals_every=20)
    assert undamped.trusted_again >= 6, "the check above can fail: a constant quiet period re-trusts it every cycle"
    assert sum(undamped.moves.values()) > 1 + 2


def test_a_relapse_doubles_the_quiet_period_and_a_long_good_spell_forgets_it() -> None:
    failed = decide(Applied(), FAILED, "XID 79", now=0.0)
    looks_well = decide(failed, HEALTHY, "", now=10.0)
    relapsed = decide(looks_well, FAILED, "XID 79", now=20.0)
    assert relapsed.relapses == 1
    assert node_health.quiet_period(relapsed) == 60
    waiting = decide(relapsed, HEALTHY, "", now=30.0)
    assert decide(waiting, HEALTHY, "", now=89.0).health == FAILED
    trusted = decide(waiting, HEALTHY, "", now=90.0)
    assert (trusted.health, trusted.trusted_at) == (HEALTHY, 90.0)
    assert decide(trusted, FAILED, "XID 79", now=100.0).relapses == 2, "worse again soon after being trusted"
    assert decide(trusted, FAILED, "XID 79", now=90.0 + node_health.MEMORY).relapses == 0, "an hour well: afresh"
    assert "doubled for each of 1 relapse(s)" in node_health.condition_for(waiting)["message"]
