"""The operator's health watch against a real etcd: records are taken by their key, a bad record
stops nothing, and a deleted Node's records are deleted. The Node API is the unit tests' stand-in
(``NodeApi``); the whole chain on a real apiserver is tests/e2e/test_health_trust.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import cast

import aetcd
import pytest
from gigafab.agents.records import gateway_key, node_key
from gigafab.operator import health_watch
from gigafab.operator.health_sync import NodeHealthSync
from gigafab.operator.kube import Kube
from gigafab.operator.site_contact import Contacts
from gigafab.operator.state import Client

from tests.unit.test_health_sync import NODE, NodeApi

SITE = "de-halm"


def record(health: str, node: str = NODE, site: str = SITE) -> bytes:
    return json.dumps({"node": node, "site": site, "health": health, "reason": health, "gpus": {"0": health}}).encode()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.1)


def watching(port: int, api: NodeApi, scenario: Callable[[aetcd.Client, NodeHealthSync], Awaitable[None]]) -> None:
    """Run ``scenario`` while the operator's watch and its recheck loop follow the etcd on ``port``."""

    async def main() -> None:
        client = aetcd.Client(host="127.0.0.1", port=port)
        await client.delete_prefix(b"/gigafab/")
        await client.put(gateway_key(SITE), json.dumps({"identity": "g", "ttl": 5, "fenceAfter": 4}).encode())
        sync = NodeHealthSync(cast(Kube, api), trust_after=2.0, contacts=Contacts())
        tasks = [
            asyncio.create_task(health_watch.watch(f"127.0.0.1:{port}", sync)),
            asyncio.create_task(health_watch._recheck(sync)),
        ]
        try:
            await scenario(client, sync)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.delete_prefix(b"/gigafab/")
            await client.close()

    asyncio.run(main())


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> NodeApi:
    stand_in = NodeApi()
    monkeypatch.setattr(Client, "kube", stand_in)
    return stand_in


def test_a_malformed_record_stops_nothing_and_the_next_one_is_applied(etcd_port: int, api: NodeApi) -> None:
    async def scenario(client: aetcd.Client, sync: NodeHealthSync) -> None:
        await client.put(node_key(SITE, "de-halm-gpu-009"), b"{not json")  # listed at the start
        await asyncio.sleep(1.0)
        await client.put(node_key(SITE, "de-halm-gpu-008"), b"[]")  # and one while watching
        await client.put(node_key(SITE, NODE), record("Failed"))
        await until(lambda: api.taints() == ["gigafab.nl/gpu-failed"])

    watching(etcd_port, api, scenario)
    assert [e["reason"] for e in api.events].count("HealthRecordRefused") == 1, "one event for the site's reason, at most"


def test_a_deleted_nodes_records_are_deleted_from_etcd(etcd_port: int, api: NodeApi) -> None:
    async def scenario(client: aetcd.Client, sync: NodeHealthSync) -> None:
        await client.put(node_key(SITE, NODE), record("Healthy"))
        await client.put(node_key("niemeyer", NODE), record("Silent", site="niemeyer"))  # refused, held
        await until(lambda: api.annotations().get("gigafab.nl/gpus-healthy") == "1")
        del api.nodes[NODE]
        sync.node_changed(NODE, SITE, deleted=True)
        await until(lambda: NODE not in sync.records, timeout=5)

        async def gone() -> bool:
            return all([await client.get(node_key(site, NODE)) is None for site in (SITE, "niemeyer")])

        for _ in range(50):
            if await gone():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the records of the deleted Node are still in etcd")

    watching(etcd_port, api, scenario)
