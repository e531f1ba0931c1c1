"""Transitions into a real etcd (built from its Go module, see hack/etcd), under the gateway's lease."""

from __future__ import annotations

import asyncio
import json

import aetcd
import pytest
from gigafab.agents.ledger import FAILED, HEALTHY, GpuReport, Ledger
from gigafab.agents.records import EtcdRecords, LeaseLost, gateway_key, node_key

SITE = "niemeyer"
OK = [GpuReport(0, HEALTHY), GpuReport(1, HEALTHY)]


def run(port: int, scenario: object) -> object:
    async def main() -> object:
        client = aetcd.Client(host="127.0.0.1", port=port)
        try:
            return await scenario(client)  # type: ignore[operator]
        finally:
            await client.close()

    return asyncio.run(main())


def test_only_transitions_are_written_under_a_held_gateway_key(etcd_port: int) -> None:
    async def scenario(client: aetcd.Client) -> None:
        await client.delete_prefix(b"/gigafab/")
        ledger = Ledger(SITE)
        records = EtcdRecords(client, ledger, "gateway-a", ttl=2)
        await records.start()
        held = json.loads((await client.get(gateway_key(SITE))).value)
        assert held == {"identity": "gateway-a", "ttl": 2, "fenceAfter": 4.0}
        for sequence in range(1, 20):
            transitions = ledger.observe("n1", SITE, sequence, OK, now=float(sequence))
            if transitions:
                await records(transitions)
        assert records.writes == 1
        await records(ledger.observe("n1", SITE, 20, [GpuReport(0, FAILED, "XID 79"), GpuReport(1, HEALTHY)], now=20.0))
        stored = json.loads((await client.get(node_key(SITE, "n1"))).value)
        assert (stored["health"], stored["gpus"]["0"], stored["gpuReasons"]["0"]) == (FAILED, FAILED, "XID 79")
        await asyncio.sleep(3)  # longer than the TTL: the lease is being kept alive
        assert (await client.get(gateway_key(SITE))) is not None
        await records.stop()
        assert (await client.get(gateway_key(SITE))) is None
        assert (await client.get(node_key(SITE, "n1"))) is not None

    run(etcd_port, scenario)


def test_a_restarted_gateway_writes_no_false_transition(etcd_port: int) -> None:
    async def scenario(client: aetcd.Client) -> None:
        await client.delete_prefix(b"/gigafab/")
        first = EtcdRecords(client, Ledger(SITE), "gateway-a")
        await first.start()
        await first(first.ledger.observe("n1", SITE, 1, OK, now=0.0))
        await first.stop()
        second = EtcdRecords(client, Ledger(SITE), "gateway-b")
        await second.start()
        assert second.ledger.nodes["n1"].gpus == {0: HEALTHY, 1: HEALTHY}
        assert second.ledger.observe("n1", SITE, 1, OK, now=1.0) == []
        await second.stop()

    run(etcd_port, scenario)


def test_a_gateway_that_lost_its_key_cannot_write(etcd_port: int) -> None:
    async def scenario(client: aetcd.Client) -> None:
        await client.delete_prefix(b"/gigafab/")
        old = EtcdRecords(client, Ledger(SITE), "gateway-old")
        await old.start()
        new = EtcdRecords(client, Ledger(SITE), "gateway-new")
        await new.start()
        assert await old(old.ledger.observe("n1", SITE, 1, OK, now=0.0)) is False
        assert (await client.get(node_key(SITE, "n1"))) is None
        assert old.dirty == {"n1"}, "what could not be written is kept for later"
        with pytest.raises(LeaseLost):
            await old._refresh()  # its lease lives, but the key is the new gateway's: never overwritten
        await old.stop(revoke=False)
        await new.stop()

    run(etcd_port, scenario)


def test_transitions_arriving_together_are_group_committed_in_transactions_etcd_accepts(etcd_port: int) -> None:
    async def scenario(client: aetcd.Client) -> None:
        await client.delete_prefix(b"/gigafab/")
        ledger = Ledger(SITE, silent_after=3.0)
        records = EtcdRecords(client, ledger, "gateway-a")
        await records.start()
        nodes = [f"n{index:03d}" for index in range(250)]  # more than etcd's 128 operations per transaction
        await asyncio.gather(*(records(ledger.observe(node, SITE, 1, OK, now=0.0)) for node in nodes))
        assert 3 <= records.writes <= 6, "250 nodes reported together go in a few transactions, not 250"
        stored = await client.get_prefix(f"/gigafab/health/v1/sites/{SITE}/nodes/".encode())
        assert len(stored) == 250
        writes = records.writes
        await records(ledger.sweep(now=10.0))  # the whole site falls silent at once
        assert records.writes == writes + 3
        stored = await client.get_prefix(f"/gigafab/health/v1/sites/{SITE}/nodes/".encode())
        silent = [json.loads(item.value)["health"] for item in stored]
        assert silent == ["Silent"] * 250
        await records.stop()

    run(etcd_port, scenario)


def test_each_node_of_a_group_commit_keeps_its_own_reasons(etcd_port: int) -> None:
    async def scenario(client: aetcd.Client) -> None:
        await client.delete_prefix(b"/gigafab/")
        ledger = Ledger(SITE)
        records = EtcdRecords(client, ledger, "gateway-a")
        await records.start()
        nodes = [f"n{index:03d}" for index in range(150)]
        failing = {node: [GpuReport(0, HEALTHY), GpuReport(1, FAILED, f"XID {index}")] for index, node in enumerate(nodes)}
        await asyncio.gather(*(records(ledger.observe(node, SITE, 1, gpus, now=0.0)) for node, gpus in failing.items()))
        assert records.writes <= 4, "written together"
        for index, node in enumerate(nodes):
            stored = json.loads((await client.get(node_key(SITE, node))).value)
            assert stored["gpuReasons"] == {"1": f"XID {index}"}
            assert stored["reason"] == f"GPU 1: XID {index}"
        await records.stop()

    run(etcd_port, scenario)


def test_a_gateway_whose_lease_expired_takes_its_key_again_and_writes_what_it_kept(etcd_port: int) -> None:
    async def scenario(client: aetcd.Client) -> None:
        await client.delete_prefix(b"/gigafab/")
        ledger = Ledger(SITE)
        records = EtcdRecords(client, ledger, "gateway-a", ttl=2)
        await records.start()
        await records(ledger.observe("n1", SITE, 1, OK, now=0.0))
        assert records.lease is not None
        await client.revoke_lease(records.lease.id)  # as if cut off for longer than the TTL
        assert (await client.get(gateway_key(SITE))) is None
        assert await records(ledger.observe("n1", SITE, 2, [GpuReport(0, FAILED, "XID 79"), GpuReport(1, HEALTHY)], 1.0)) is False
        assert records.fence_reason(records.contact + 3.0) is not None, "out of contact near fenceAfter: fence"
        await asyncio.sleep(2.5)  # the keeper finds the lease gone, takes the key again and writes everything
        assert json.loads((await client.get(gateway_key(SITE))).value)["identity"] == "gateway-a"
        stored = json.loads((await client.get(node_key(SITE, "n1"))).value)
        assert stored["health"] == FAILED
        assert records.dirty == set()
        assert records.fence_reason(records.contact) is None
        await records.stop()

    run(etcd_port, scenario)
