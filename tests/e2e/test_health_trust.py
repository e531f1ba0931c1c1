"""Whom the operator believes on the real plane (issue 19, findings 5 and 15).

- A gateway speaks only for the Nodes of its own site: records under niemeyer's prefix that name
  de-halm's nodes Silent taint nothing and move nothing; they are refused, counted and told.
- A deleted Node's records are deleted from etcd.
- A node no agent has vouched for is no capacity: its Site is not Ready and adds no quota; and the
  GPUs of a site placement would never use (outside the EU) are in no ClusterQueue.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aetcd
import pytest
from gigafab.agents.records import node_key
from gigafab.operator.conditions import status_of

from gigafab.local.components import operator_metrics_url
from gigafab.local.nodes import gpu_node, node_name
from tests.e2e.conftest import Kubectl, condition, eventually, quotas, tenant
from tests.e2e.lab_gateway import lab_gateway
from tests.e2e.test_failover import phase
from tests.e2e.test_telemetry import scrape, total
from tests.e2e.test_workloads import tenant_ready, workload

pytestmark = pytest.mark.usefixtures("workloads_removed")
REFUSED = "gigafab_health_records_refused_total"
FAILOVER_WINDOW = 15.0
"""Seconds the work is watched after the false records: believed, they moved it within about 10 s
(the silent taint's toleration of fenceAfter + 2 s, then 3 s without room)."""


def etcd(kubectl: Kubectl, *operations: tuple[str, bytes, bytes | None]) -> list[bytes | None]:
    """Run ``(op, key, value)`` operations (``put``, ``get``, ``delete``) against the plane's etcd, in order."""

    async def run() -> list[bytes | None]:
        client = aetcd.Client(host="127.0.0.1", port=kubectl.plane.layout.ports.etcd_client)
        found: list[bytes | None] = []
        try:
            for op, key, value in operations:
                if op == "put":
                    assert value is not None
                    await client.put(key, value)
                elif op == "delete":
                    await client.delete(key)
                else:
                    got = await client.get(key)
                    found.append(got.value if got is not None else None)
        finally:
            await client.close()
        return found

    return asyncio.run(run())


def refusals(kubectl: Kubectl, reason: str) -> float:
    return total(scrape(operator_metrics_url(kubectl.plane.layout)), REFUSED, reason=reason)


def silent_taints(kubectl: Kubectl, node: str) -> list[dict[str, Any]]:
    return [t for t in kubectl.get("node", node)["spec"].get("taints") or [] if t["key"] == "gigafab.nl/node-silent"]


def test_records_under_niemeyers_prefix_naming_de_halms_nodes_silent_move_nothing(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, allowedSites=["de-halm", "niemeyer"], quota={"gpus": 4, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("steady", unique, gpus=1, criticality="critical", sites=["de-halm"]))
    eventually(lambda: phase(kubectl, unique, "steady", "Running", "de-halm"), timeout=90)
    before = {reason: refusals(kubectl, reason) for reason in ("key_mismatch", "node_of_another_site")}
    victims = [node_name("de-halm", index) for index in range(2)]
    long_ago = time.time() - 60  # so long silent that their site's work would be fenced already
    # one names its node's true site in the value, the other repeats the key's: both are refused
    forged = [
        (node_key("niemeyer", victims[0]), {"node": victims[0], "site": "de-halm"}),
        (node_key("niemeyer", victims[1]), {"node": victims[1], "site": "niemeyer"}),
    ]
    try:
        silent = {"health": "Silent", "reason": "forged", "gpus": {}, "lastReportAt": long_ago}
        etcd(kubectl, *(("put", key, json.dumps({**who, **silent}).encode()) for key, who in forged))
        time.sleep(FAILOVER_WINDOW)
        for node in victims:
            assert silent_taints(kubectl, node) == [], f"{node} was tainted by another site's records"
        body = phase(kubectl, unique, "steady", "Running", "de-halm")
        assert body["status"]["epoch"] == 1, "the work stayed where it ran"
        assert condition(kubectl.get("site", "de-halm"), "Healthy")["status"] == "True"

        def refused_and_told() -> None:
            assert refusals(kubectl, "key_mismatch") >= before["key_mismatch"] + 1
            assert refusals(kubectl, "node_of_another_site") >= before["node_of_another_site"] + 1
            events = kubectl.get("events", "-n", "default", "--field-selector", "involvedObject.name=niemeyer")["items"]
            messages = [e["message"] for e in events if e["reason"] == "HealthRecordRefused" and e["type"] == "Warning"]
            assert any(f"Node {victims[1]} belongs to site de-halm" in message for message in messages), messages

        eventually(refused_and_told, timeout=30)
    finally:
        etcd(kubectl, *(("delete", key, None) for key, _ in forged))


def test_a_deleted_nodes_record_is_deleted_from_etcd(kubectl: Kubectl, unique: str) -> None:
    site, node = f"{unique}-p", node_name(f"{unique}-p", 0)
    kubectl.create(gpu_node(site, 0, gpus=8))
    try:
        with lab_gateway(kubectl.plane, site, node):

            def vouched() -> None:
                assert kubectl.get("node", node)["metadata"]["annotations"].get("gigafab.nl/gpus-healthy") == "8"

            eventually(vouched)
            assert etcd(kubectl, ("get", node_key(site, node), None)) != [None]
            kubectl.run("delete", "node", node)
            eventually(lambda: _gone(kubectl, node_key(site, node)), timeout=30)
    finally:
        kubectl.run("delete", "node", node, check=False)


def _gone(kubectl: Kubectl, key: bytes) -> None:
    assert etcd(kubectl, ("get", key, None)) == [None], f"{key.decode()} is still in etcd"


def lab_site(kubectl: Kubectl, name: str, jurisdiction: str = "NL") -> list[str]:
    body = {"jurisdiction": jurisdiction, "dataClasses": ["public", "internal"], "powerBudgetKW": 1000, "lifecycle": "Active"}
    kubectl.create(*(gpu_node(name, index, gpus=8) for index in range(2)))
    kubectl.apply({"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "metadata": {"name": name}, "spec": body})
    return [node_name(name, index) for index in range(2)]


def remove_lab_site(kubectl: Kubectl, name: str, nodes: list[str]) -> None:
    kubectl.run("delete", "site", name, "--wait=false", check=False)
    kubectl.run("delete", "node", *nodes, check=False)


def test_nodes_no_agent_vouched_for_add_nothing_until_one_does(kubectl: Kubectl, unique: str) -> None:
    site = f"{unique}-v"
    nodes = lab_site(kubectl, site)
    try:

        def not_vouched() -> None:
            body = kubectl.get("site", site)
            ready, healthy = condition(body, "Ready"), condition(body, "Healthy")
            assert (ready["status"], ready["reason"]) == ("False", "NotVouched")
            assert "no agent has vouched for 2 node(s)" in ready["message"]
            assert (healthy["status"], healthy["reason"]) == ("False", "NotVouched")
            assert (body["status"]["gpus"], body["status"]["gpusHealthy"], body["status"]["nodesReady"]) == (16, 0, 0)
            quotas(kubectl, site, {"euro-hpc": 0, "national": 0, "regional": 0})

        eventually(not_vouched)
        with lab_gateway(kubectl.plane, site, *nodes):
            eventually(lambda: quotas(kubectl, site, {"euro-hpc": 8, "national": 4, "regional": 4}))
            assert condition(kubectl.get("site", site), "Ready")["reason"] == "NodesReady"
    finally:
        remove_lab_site(kubectl, site, nodes)


def test_the_gpus_of_a_site_outside_the_eu_are_in_no_cluster_queue(kubectl: Kubectl, unique: str) -> None:
    site = f"{unique}-ch"
    nodes = lab_site(kubectl, site, jurisdiction="CH")
    try:
        with lab_gateway(kubectl.plane, site, *nodes):

            def healthy_but_unused() -> None:
                body = kubectl.get("site", site)
                assert condition(body, "Healthy")["status"] == "True"
                assert body["status"]["gpusHealthy"] == 16, "its nodes are vouched for"
                quotas(kubectl, site, {"euro-hpc": 0, "national": 0, "regional": 0})
                policy = kubectl.get("allocationpolicy", "default")["status"]
                counted = sum(
                    s["status"].get("gpusHealthy", 0)
                    for s in kubectl.get("sites")["items"]
                    if s["spec"]["jurisdiction"] != "CH" and s["spec"].get("lifecycle", "Active") == "Active"
                    if status_of((s.get("status") or {}).get("conditions"), "Healthy") == "True"
                )
                assert policy["healthyGpus"] == counted, "the tracks are guaranteed none of its GPUs"

            eventually(healthy_but_unused)
    finally:
        remove_lab_site(kubectl, site, nodes)
