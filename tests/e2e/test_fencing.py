"""The watchdog on the real plane: a site's agents killed, their nodes stopped by the watchdog.

Each site runs ``gigafab watchdog`` beside its agents (in the site's network namespace). When the
site's agents process is killed (SIGKILL: no clean stop, no last word), the gateway sees their
streams end and reports the nodes Silent, and the operator moves the site's critical work once
the nodes would have fenced. Nothing of the agents can fence any more: the watchdog must have
stopped every node of the site (a fence with the reason ``watchdog expired``) before the moved
copy may start. Restarted, the agents find their nodes fenced on the host and start fenced until
the gateway acknowledges them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from gigafab.agents.watchdog import EXPIRED_REASON, pet_path

from gigafab.local.health import agent_state, fence_log
from gigafab.local.layout import SITES
from gigafab.local.nodes import node_name
from tests.e2e.conftest import Kubectl, eventually, tenant
from tests.e2e.test_failover import phase, seconds, site_healthy
from tests.e2e.test_workloads import tenant_ready, workload

SITE, REFUGE = "de-halm", "niemeyer"

pytestmark = pytest.mark.usefixtures("workloads_removed")


def entries(log: Path, since: float) -> list[dict[str, object]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [entry for entry in map(json.loads, lines) if float(entry["at"]) >= since]


def test_each_site_runs_a_watchdog_beside_its_agents_and_every_node_is_petted(kubectl: Kubectl) -> None:
    running = kubectl.plane.supervisor.running()
    layout = kubectl.plane.layout
    for site in SITES:
        assert f"watchdog-{site}" in running
        for index in range(2):
            pets = pet_path(agent_state(layout, site), node_name(site, index))
            eventually(lambda pets=pets: time.time() < json.loads(pets.read_text())["expires"])  # type: ignore[misc]


def test_a_killed_sites_agents_have_their_nodes_stopped_by_the_watchdog_before_the_work_moves_and_restart_fenced(
    kubectl: Kubectl, unique: str
) -> None:
    plane = kubectl.plane
    kubectl.apply(tenant(unique, allowedSites=[SITE, REFUGE], quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("ledger", unique, gpus=1, criticality="critical", sites=[SITE]))
    eventually(lambda: phase(kubectl, unique, "ledger", "Running", SITE), timeout=90)
    nodes = {node_name(SITE, index) for index in range(2)}
    log = fence_log(plane.layout, SITE)
    pid = plane.supervisor.pid_of(f"agents-{SITE}")
    assert pid is not None
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    try:
        body = eventually(lambda: phase(kubectl, unique, "ledger", "Running", REFUGE), timeout=90)
        assert body["status"]["epoch"] == 2
        events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=ledger")["items"]
        failing_over = next(e for e in events if e["reason"] == "FailingOver")["message"]
        starts_after = seconds(re.search(r"starting after (\S+Z):", failing_over).group(1))  # type: ignore[union-attr]
        stopped = {e["node"]: float(str(e["at"])) for e in entries(log, killed_at) if e["reason"] == EXPIRED_REASON}
        assert set(stopped) == nodes, "the watchdog stopped every node of the site: no agent was left to"
        assert max(stopped.values()) < starts_after, "before the moved copy could start"
    finally:
        restarted_at = time.time()
        plane.restart(f"agents-{SITE}")

    def started_fenced_and_lifted() -> None:
        since = [(e["node"], e["event"], str(e["reason"])) for e in entries(log, restarted_at)]
        for node in nodes:
            assert (node, "fenced", f"fenced before the agent started: {EXPIRED_REASON}") in since, since
            assert (node, "lifted", "") in since, since

    eventually(started_fenced_and_lifted, timeout=30)
    eventually(lambda: site_healthy(kubectl, SITE), timeout=90)
