"""Failover on the real plane: a site cut off in its network namespace, fencing, draining, power.

A site is cut with ``gigafab local cut``: the host side of its veth pair goes down, so
its gateway loses etcd while gateway and agents go on talking inside the site. The
operator sees the gateway's lease go, waits until the site's agents have fenced, and
starts the work elsewhere with a new epoch. Each test puts the plane back as it was.

Moves away from a reachable site (draining, no room, a power cap) must wait for the old
copy's pods to go. kwok would delete them at once and hide any overlap, so those tests
give their pods the annotation ``gigafab.nl/kwok-delete-after-ms``: a deleted pod stays,
Running and terminating, that long (as a container slow to stop), and an overlap is a
moment the apiserver shows pods of two epochs Running, terminating or not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from gigafab.operator.conditions import seconds_of

from gigafab.local.components import operator_metrics_url
from gigafab.local.health import control_url, fence_log
from gigafab.local.nodes import DELETE_AFTER_ANNOTATION, gpu_node, node_name
from tests.e2e.conftest import Kubectl, PodPoller, condition, eventually, quotas, tenant
from tests.e2e.lab_gateway import RUNNING, lab_gateway
from tests.e2e.test_telemetry import scrape, total
from tests.e2e.test_workloads import tenant_ready, workload

pytestmark = pytest.mark.usefixtures("workloads_removed")


def gigafab(kubectl: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI against the test plane (its state folder and shifted ports)."""
    command = [sys.executable, "-m", "gigafab", *args]
    env = {**os.environ, **kubectl.plane.layout.environment()}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)


def site_healthy(kubectl: Kubectl, site: str) -> None:
    assert condition(kubectl.get("site", site), "Healthy")["status"] == "True"


@contextmanager
def cut(kubectl: Kubectl, site: str) -> Iterator[float]:
    """The site cut off for the block; afterwards reconnected and Healthy again."""
    answer = gigafab(kubectl, "local", "cut", site)
    assert answer.returncode == 0, answer.stderr
    try:
        yield time.time()
    finally:
        assert gigafab(kubectl, "local", "restore", site).returncode == 0
        eventually(lambda: site_healthy(kubectl, site), timeout=90)


Sample = tuple[int, str, bool, str, str]
"""A pod as polled: epoch, phase, deleting, node, workload."""


class Timeline(PodPoller):
    """Polls the workload pods of a namespace: (time, [(epoch, phase, deleting, node, workload)]) samples."""

    every = 0.2

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        super().__init__(kubectl, "-n", namespace)
        self.samples: list[tuple[float, list[Sample]]] = []

    def take(self, pods: list[dict[str, Any]]) -> None:
        seen = [
            (
                int(pod["metadata"]["labels"]["gigafab.nl/epoch"]),
                str(pod["status"].get("phase")),
                bool(pod["metadata"].get("deletionTimestamp")),
                str(pod["spec"].get("nodeName", "")),
                str(pod["metadata"]["labels"]["gigafab.nl/workload"]),
            )
            for pod in pods
        ]
        self.samples.append((time.time(), seen))

    def running_epochs(self) -> list[set[int]]:
        return [{epoch for epoch, phase, deleting, *_ in pods if phase == "Running" and not deleting} for _, pods in self.samples]

    def overlaps(self) -> list[tuple[float, list[Sample]]]:
        """Samples with pods of two epochs of one workload Running: a terminating pod runs until it is gone."""
        found = []
        for at, pods in self.samples:
            epochs: dict[str, set[int]] = {}
            for epoch, phase, _, _, name in pods:
                if phase == "Running":
                    epochs.setdefault(name, set()).add(epoch)
            if any(len(seen) > 1 for seen in epochs.values()):
                found.append((at, pods))
        return found

    def seen_terminating(self, epoch: int) -> bool:
        """A pod of ``epoch`` was seen Running after its deletion (the test's pods linger: the check can fail)."""
        return any(e == epoch and phase == "Running" and deleting for _, pods in self.samples for e, phase, deleting, *_ in pods)


def lingering(body: dict[str, Any], milliseconds: int, grace: int | None = None) -> dict[str, Any]:
    """The workload ``body`` whose pods, once deleted, stay ``milliseconds`` before they go (``grace``: the
    template's terminationGracePeriodSeconds; kwok lets a pod go at the end of it at the latest)."""
    template = body["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("annotations", {})[DELETE_AFTER_ANNOTATION] = str(milliseconds)
    if grace is not None:
        template["spec"]["terminationGracePeriodSeconds"] = grace
    return body


def never_two_copies(timeline: Timeline, old_epoch: int) -> None:
    assert timeline.seen_terminating(old_epoch), "the old copy's pod lingered, terminating, while the move waited"
    overlaps = timeline.overlaps()
    assert not overlaps, f"pods of two epochs ran at once: {overlaps[:3]}"


def seconds(stamp: str) -> float:
    parsed = seconds_of(stamp)
    assert parsed is not None, f"not an RFC 3339 time: {stamp!r}"
    return parsed


def fences(kubectl: Kubectl, site: str, since: float) -> dict[str, float]:
    """The first fence of each node of ``site`` after ``since``."""
    path = fence_log(kubectl.plane.layout, site)
    found: dict[str, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        if entry["event"] == "fenced" and entry["at"] >= since:
            found.setdefault(entry["node"], entry["at"])
    return found


@contextmanager
def health_certified(kubectl: Kubectl, site: str) -> Iterator[None]:
    before = kubectl.get("site", site)["spec"]["dataClasses"]
    kubectl.run("patch", "site", site, "--type=merge", "-p", json.dumps({"spec": {"dataClasses": [*before, "health"]}}))
    try:
        yield
    finally:
        kubectl.run("patch", "site", site, "--type=merge", "-p", json.dumps({"spec": {"dataClasses": before}}))


def phase(kubectl: Kubectl, namespace: str, name: str, wanted: str, site: str | None = None) -> dict[str, Any]:
    body = kubectl.get("gpuworkload", name, "-n", namespace)
    assert body is not None, f"no gpuworkload {namespace}/{name}"
    status = body.get("status") or {}  # none yet: the operator has not judged it, so wait (AssertionError)
    assert status.get("phase") == wanted, status.get("phase")
    if site is not None:
        assert status.get("site") == site
    return dict(body)


def test_losing_its_site_moves_health_work_to_the_other_certified_site_after_fencing_never_running_twice(
    kubectl: Kubectl, unique: str
) -> None:
    quota = {"gpus": 8, "cpu": "8", "memory": "32Gi"}
    kubectl.apply(tenant(unique, dataClass="health", allowedSites=["niemeyer", "de-halm"], quota=quota))
    eventually(lambda: tenant_ready(kubectl, unique))
    with health_certified(kubectl, "de-halm"):
        kubectl.apply(workload("cohort", unique, gpus=2, criticality="critical", sites=["niemeyer"]))
        eventually(lambda: phase(kubectl, unique, "cohort", "Running", "niemeyer"), timeout=90)
        metrics = operator_metrics_url(kubectl.plane.layout)
        lost = {"site": "niemeyer", "reason": "site_lost"}
        failovers = total(scrape(metrics), "gigafab_failovers_total", **lost)
        with Timeline(kubectl, unique) as timeline:
            with cut(kubectl, "niemeyer") as cut_at:
                moved = eventually(lambda: phase(kubectl, unique, "cohort", "Running", "de-halm"), timeout=90)
                after = scrape(metrics)
                fenced = fences(kubectl, "niemeyer", since=cut_at)
                healthy = condition(kubectl.get("site", "niemeyer"), "Healthy")
                assert (healthy["status"], healthy["reason"]) == ("False", "GatewayLost")
                eventually(lambda: quotas(kubectl, "niemeyer", {"euro-hpc": 0, "national": 0, "regional": 0}))
            time.sleep(5)  # niemeyer is back and Healthy: its old copy must not return

        status = moved["status"]
        assert status["epoch"] == 2
        assert total(after, "gigafab_failovers_total", **lost) >= failovers + 1, "counted, with the reason site_lost"
        assert total(after, "gigafab_failover_duration_seconds_count", **lost) == total(after, "gigafab_failovers_total", **lost)
        last = status["placements"][-1]
        assert (last["site"], last["fromSite"], last["epoch"]) == ("de-halm", "niemeyer", 2)
        verdicts = {v["site"]: v["verdict"] for v in status["verdicts"]}
        assert (verdicts["niemeyer"], verdicts["eemshaven"]) == ("NotHealthy", "NotCertified"), "nowhere else"

        # fencing: both niemeyer nodes stopped their work before the new copy could start
        events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=cohort")["items"]
        reasons = [event["reason"] for event in events]
        assert {"FailingOver", "Fenced", "Running"} <= set(reasons), reasons
        failing_over = next(e for e in events if e["reason"] == "FailingOver")["message"]
        starts_after = seconds(re.search(r"starting after (\S+Z):", failing_over).group(1))  # type: ignore[union-attr]
        assert set(fenced) == {"niemeyer-gpu-000", "niemeyer-gpu-001"}, fenced
        assert max(fenced.values()) < starts_after, (fenced, starts_after)
        second = kubectl.get("pods", "-n", unique, "-l", "gigafab.nl/epoch=2")["items"]
        assert second
        assert all(seconds(pod["metadata"]["creationTimestamp"]) >= int(starts_after) for pod in second)

        # the invariant, as the apiserver saw it throughout: never two epochs running at once
        running = timeline.running_epochs()
        assert all(len(epochs) <= 1 for epochs in running)
        started = running.index({2})
        assert all(1 not in epochs for epochs in running[started:]), "the old copy never came back, not even after restore"
        assert kubectl.get("deployment", "cohort-e1", "-n", unique) is None
        assert phase(kubectl, unique, "cohort", "Running", "de-halm")["status"]["epoch"] == 2, "stays: what runs well"


def test_with_no_certified_site_left_health_work_waits_pending_and_says_why(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, dataClass="health", quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("registry", unique, gpus=1, criticality="critical"))
    eventually(lambda: phase(kubectl, unique, "registry", "Running", "niemeyer"), timeout=90)
    with cut(kubectl, "niemeyer"):
        body = eventually(lambda: phase(kubectl, unique, "registry", "Pending"), timeout=60)
        placed = condition(body, "Placed")
        assert (placed["status"], placed["reason"]) == ("False", "NoSiteFits")
        assert placed["message"].startswith("site niemeyer is lost; fits on no site")
        assert "that site recovered" in placed["message"], "the hint says what would make it fit"
        verdicts = {v["site"]: v["verdict"] for v in body["status"]["verdicts"]}
        assert verdicts["de-halm"] == "NotCertified"
        assert kubectl.get("deployment", "registry-e2", "-n", unique) is None, "nothing started anywhere else"
    body = eventually(lambda: phase(kubectl, unique, "registry", "Running", "niemeyer"), timeout=90)
    assert body["status"]["epoch"] == 1, "its own site came back: the same placement runs again"


def test_a_power_cap_that_leaves_no_room_refuses_placement(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}, allowedSites=["niemeyer"]))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.run("patch", "site", "niemeyer", "--type=merge", "-p", '{"spec": {"powerCapKW": 1}}')
    try:
        kubectl.apply(workload("capped", unique, gpus=2))
        body = eventually(lambda: phase(kubectl, unique, "capped", "Pending"))
        verdicts = {v["site"]: v for v in body["status"]["verdicts"]}
        assert verdicts["niemeyer"]["verdict"] == "NoPowerHeadroom"
        assert "of 1 kW" in verdicts["niemeyer"]["reason"]
        assert "power headroom there" in condition(body, "Placed")["message"]
        assert kubectl.get("deployment", "capped-e1", "-n", unique) is None
    finally:
        kubectl.run("patch", "site", "niemeyer", "--type=json", "-p", '[{"op": "remove", "path": "/spec/powerCapKW"}]')
    eventually(lambda: phase(kubectl, unique, "capped", "Running", "niemeyer"), timeout=90)


def test_draining_moves_work_away_one_workload_at_a_time(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    names = ("first", "second")
    for name in names:  # a tenant's template asking for an hour to stop: capped, or the drain would take that long
        kubectl.apply(lingering(workload(name, unique, gpus=1, sites=["de-halm", "niemeyer"]), 4000, grace=3600))
    for name in names:
        eventually(lambda name=name: phase(kubectl, unique, name, "Running", "de-halm"), timeout=90)  # type: ignore[misc]
    pods = kubectl.get("pods", "-n", unique, "-l", "gigafab.nl/workload")["items"]
    assert {pod["spec"]["terminationGracePeriodSeconds"] for pod in pods} == {30}
    with Timeline(kubectl, unique) as timeline:
        kubectl.run("patch", "site", "de-halm", "--type=merge", "-p", '{"spec": {"lifecycle": "Draining"}}')
        try:
            moved = {}
            for name in names:
                moved[name] = eventually(lambda name=name: phase(kubectl, unique, name, "Running", "niemeyer"), timeout=120)  # type: ignore[misc]
        finally:
            kubectl.run("patch", "site", "de-halm", "--type=merge", "-p", '{"spec": {"lifecycle": "Active"}}')
    never_two_copies(timeline, old_epoch=1)
    events = kubectl.get("events", "-n", unique)["items"]

    def when(name: str, reason: str) -> str:
        found = next(e for e in events if e["involvedObject"]["name"] == name and e["reason"] == reason)
        return str(found["firstTimestamp"] or "")

    first, second = sorted(names, key=lambda name: when(name, "FailingOver"))
    assert when(second, "FailingOver") >= when(first, "Running"), "the second left only once the first ran elsewhere"
    for body in moved.values():
        assert body["status"]["placements"][-1]["fromSite"] == "de-halm"
        assert "site de-halm is draining" in body["status"]["placements"][-1]["reason"]


@contextmanager
def lab_sites(kubectl: Kubectl, unique: str) -> Iterator[tuple[str, str]]:
    """Two extra Active sites of two fresh 8-GPU fake nodes each, for work nothing else shares; a lab
    gateway each vouches for their nodes (``lab_gateway.RUNNING``)."""
    names = (f"{unique}-a", f"{unique}-b")
    spec = {"jurisdiction": "NL", "dataClasses": ["public", "internal"], "powerBudgetKW": 1000, "lifecycle": "Active"}
    kubectl.create(*(gpu_node(site, index, gpus=8) for site in names for index in range(2)))
    kubectl.apply(*({"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "metadata": {"name": n}, "spec": spec} for n in names))
    try:
        with ExitStack() as gateways:
            for site in names:
                gateways.enter_context(lab_gateway(kubectl.plane, site, node_name(site, 0), node_name(site, 1)))
                eventually(lambda site=site: site_healthy(kubectl, site), timeout=60)  # type: ignore[misc]
            yield names
    finally:
        kubectl.run("delete", "site", *names, "--wait=false", check=False)
        kubectl.run("delete", "node", *(node_name(site, index) for site in names for index in range(2)), check=False)


def test_a_failed_node_that_leaves_no_room_in_its_site_moves_the_work_to_another_site(kubectl: Kubectl, unique: str) -> None:
    with lab_sites(kubectl, unique) as (first, second):
        kubectl.apply(tenant(unique, allowedSites=[first, second], quota={"gpus": 32, "cpu": "8", "memory": "32Gi"}))
        eventually(lambda: tenant_ready(kubectl, unique))
        kubectl.apply(
            lingering(workload("wide", unique, gpus=8, replicas=2, criticality="critical", sites=[first, second]), 6000)
        )
        eventually(lambda: phase(kubectl, unique, "wide", "Running", first), timeout=90)
        failed = node_name(first, 0)
        with Timeline(kubectl, unique) as timeline:
            RUNNING[first].report(failed, ["Failed"] + ["Healthy"] * 7, reason="XID 79")  # a GPU of a node failed
            body = eventually(lambda: phase(kubectl, unique, "wide", "Running", second), timeout=120)
        never_two_copies(timeline, old_epoch=1)
        assert body["status"]["epoch"] == 2
        last = body["status"]["placements"][-1]
        assert last["fromSite"] == first
        assert f"no room left in site {first} after a failure" in last["reason"]
        assert kubectl.get("deployment", "wide-e1", "-n", unique) is None
        kubectl.run("delete", "gpuworkload", "wide", "-n", unique)


def test_most_nodes_of_a_site_silent_move_its_critical_work_after_the_agents_fenced_themselves(
    kubectl: Kubectl, unique: str
) -> None:
    kubectl.apply(tenant(unique, allowedSites=["de-halm", "niemeyer"], quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    for name, criticality in (("ledger", "critical"), ("batch", "standard"), ("scratch", "preemptible")):
        kubectl.apply(workload(name, unique, gpus=1, criticality=criticality, sites=["de-halm"]))
        eventually(lambda name=name: phase(kubectl, unique, name, "Running", "de-halm"), timeout=90)  # type: ignore[misc]
    url = control_url(kubectl.plane.layout, "de-halm")
    nodes = [node_name("de-halm", index) for index in range(2)]
    silenced_at = time.time()
    try:
        for node in nodes:  # their links go down; the gateway stays up and reports them Silent
            silence = gigafab(kubectl, "fault", "inject", f"--node={node}", "--silent", f"--control={url}")
            assert silence.returncode == 0, silence.stderr
        body = eventually(lambda: phase(kubectl, unique, "ledger", "Running", "niemeyer"), timeout=90)
        assert body["status"]["epoch"] == 2
        assert body["status"]["placements"][-1]["reason"].startswith("moved from de-halm (site de-halm is lost)")
        fenced = fences(kubectl, "de-halm", since=silenced_at)
        events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=ledger")["items"]
        failing_over = next(e for e in events if e["reason"] == "FailingOver")["message"]
        starts_after = seconds(re.search(r"starting after (\S+Z):", failing_over).group(1))  # type: ignore[union-attr]
        assert set(fenced) == set(nodes), "each agent fenced its own node: no gateway told it"
        assert max(fenced.values()) < starts_after
        standard = eventually(lambda: phase(kubectl, unique, "batch", "Running", "niemeyer"), timeout=60)
        assert standard["status"]["epoch"] == 2, "standard work moves too, where room is left"
        waiting = kubectl.get("gpuworkload", "scratch", "-n", unique)
        assert (waiting["status"]["site"], waiting["status"]["epoch"]) == ("de-halm", 1), "preemptible work waits"
        running = condition(waiting, "Running")
        assert (running["status"], running["reason"]) == ("False", "Waiting")
        assert "preemptible work waits for it to return" in running["message"]
    finally:
        for node in nodes:
            gigafab(kubectl, "fault", "inject", f"--node={node}", "--reset", "--gpu=0", f"--control={url}")
    eventually(lambda: site_healthy(kubectl, "de-halm"), timeout=90)
    eventually(lambda: phase(kubectl, unique, "scratch", "Running", "de-halm"), timeout=90)  # back where it waited


def tainted_silent(kubectl: Kubectl, node: str, wanted: bool = True) -> None:
    taints = kubectl.get("node", node)["spec"].get("taints") or []
    assert any(t["key"] == "gigafab.nl/node-silent" for t in taints) is wanted


def test_draining_a_site_with_a_silent_node_still_waits_for_the_old_copy_on_its_reachable_node(
    kubectl: Kubectl, unique: str
) -> None:
    """A Silent node gives its site a fence deadline, but only that node's agent fences: a copy on the
    site's other node must be seen to go before the moved copy starts (the old rule started it at the
    deadline, while the old pod still ran)."""
    kubectl.apply(tenant(unique, allowedSites=["de-halm", "niemeyer"], quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(lingering(workload("steady", unique, gpus=1, sites=["de-halm", "niemeyer"]), 20000))
    eventually(lambda: phase(kubectl, unique, "steady", "Running", "de-halm"), timeout=90)
    (running,) = kubectl.get("pods", "-n", unique, "-l", "gigafab.nl/workload=steady")["items"]
    other = next(node_name("de-halm", i) for i in range(2) if node_name("de-halm", i) != running["spec"]["nodeName"])
    url = control_url(kubectl.plane.layout, "de-halm")
    try:
        assert gigafab(kubectl, "fault", "inject", f"--node={other}", "--silent", f"--control={url}").returncode == 0
        eventually(lambda: tainted_silent(kubectl, other), timeout=60)  # the operator knows it is Silent
        with Timeline(kubectl, unique) as timeline:
            kubectl.run("patch", "site", "de-halm", "--type=merge", "-p", '{"spec": {"lifecycle": "Draining"}}')
            try:
                moved = eventually(lambda: phase(kubectl, unique, "steady", "Running", "niemeyer"), timeout=120)
            finally:
                kubectl.run("patch", "site", "de-halm", "--type=merge", "-p", '{"spec": {"lifecycle": "Active"}}')
    finally:
        gigafab(kubectl, "fault", "inject", f"--node={other}", "--reset", "--gpu=0", f"--control={url}")
        eventually(lambda: tainted_silent(kubectl, other, wanted=False), timeout=90)
    eventually(lambda: site_healthy(kubectl, "de-halm"), timeout=90)
    assert moved["status"]["epoch"] == 2
    never_two_copies(timeline, old_epoch=1)
    events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=steady")["items"]
    fenced = next(e for e in events if e["reason"] == "Fenced")["message"]
    assert "the old copy's pods have stopped" in fenced, fenced


def suspended(kubectl: Kubectl, namespace: str, name: str) -> None:
    """Suspended: the event stays; the condition may already say NoSiteFits (judged again, the cap still low)."""
    phase(kubectl, namespace, name, "Pending")
    events = kubectl.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    assert "Suspended" in {event["reason"] for event in events}


def test_work_suspended_by_a_power_cap_and_placed_again_starts_only_once_its_old_copy_has_stopped(
    kubectl: Kubectl, unique: str
) -> None:
    with lab_sites(kubectl, unique) as (first, _):
        kubectl.apply(tenant(unique, allowedSites=[first], quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
        eventually(lambda: tenant_ready(kubectl, unique))
        kubectl.apply(lingering(workload("shed", unique, gpus=2), 25000))
        eventually(lambda: phase(kubectl, unique, "shed", "Running", first), timeout=90)
        with Timeline(kubectl, unique) as timeline:
            kubectl.run("patch", "site", first, "--type=merge", "-p", '{"spec": {"powerCapKW": 1}}')
            eventually(lambda: suspended(kubectl, unique, "shed"), timeout=60)
            kubectl.run("patch", "site", first, "--type=json", "-p", '[{"op": "remove", "path": "/spec/powerCapKW"}]')
            again = eventually(lambda: phase(kubectl, unique, "shed", "Running", first), timeout=120)
        assert again["status"]["epoch"] == 2
        never_two_copies(timeline, old_epoch=1)
        events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=shed")["items"]
        placed = [e["message"] for e in events if e["reason"] == "Placed" and e["message"].startswith("epoch 2")]
        assert placed, [e["message"] for e in events]
        assert "held until the copy of epoch 1 has stopped" in placed[0], placed
        kubectl.run("delete", "gpuworkload", "shed", "-n", unique)


def test_a_replica_short_of_cpu_stays_on_its_site_and_says_why_instead_of_moving(kubectl: Kubectl, unique: str) -> None:
    """Too little CPU is no shortage of GPUs: another site would not help, so the work must not move (the
    old rule took the site for full and tried to move the work every second, silently)."""
    kubectl.apply(tenant(unique, allowedSites=["de-halm", "niemeyer"], quota={"gpus": 8, "cpu": "400", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    body = workload("hungry", unique, gpus=1, sites=["de-halm", "niemeyer"])
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "200"}, "limits": {"cpu": "200"}}
    kubectl.apply(body)  # every node has 128 CPUs

    def waiting() -> dict[str, Any]:
        found = kubectl.get("gpuworkload", "hungry", "-n", unique)
        running = condition(found, "Running")
        assert (running["status"], running["reason"]) == ("False", "Waiting"), running
        return dict(found)

    found = eventually(waiting, timeout=60)
    message = condition(found, "Running")["message"]
    assert message.startswith("a replica cannot be scheduled on site de-halm, not for want of GPUs"), message
    assert "Insufficient cpu" in message, "the scheduler's own words"
    assert (found["status"]["site"], found["status"]["epoch"], found["status"]["phase"]) == ("de-halm", 1, "Placed")
    events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=hungry")["items"]
    assert "FailingOver" not in {event["reason"] for event in events}
    assert kubectl.get("deployment", "hungry-e2", "-n", unique) is None


def test_gpus_other_containers_ask_for_count_in_the_sites_power_draw(kubectl: Kubectl, unique: str) -> None:
    with lab_sites(kubectl, unique) as (first, _):
        kubectl.apply(tenant(unique, allowedSites=[first], quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
        eventually(lambda: tenant_ready(kubectl, unique))
        body = workload("pair", unique, gpus=1, replicas=2)
        sidecar = {"name": "decoder", "image": "registry.example/decode:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}
        body["spec"]["template"]["spec"]["containers"].append(sidecar)
        kubectl.apply(body)
        eventually(lambda: phase(kubectl, unique, "pair", "Running", first), timeout=90)

        def draws() -> None:  # 2 replicas of 1 + 1 GPUs at the nodes' 700 W a GPU
            assert kubectl.get("site", first)["status"].get("powerDrawKW") == 2.8

        eventually(draws, timeout=30)
        kubectl.run("delete", "gpuworkload", "pair", "-n", unique)
