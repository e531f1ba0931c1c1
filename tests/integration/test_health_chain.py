"""Agent → gateway → etcd over real gRPC (mTLS) and a real etcd: faults and silence
become transitions in etcd; healthy reports write nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import aetcd
from gigafab.agents.agent import Agent
from gigafab.agents.records import node_key
from gigafab.agents.simulated import Fault, SimulatedBackend
from gigafab.agents.site_gateway import GatewayConfig, SiteGateway
from gigafab.agents.tls import AgentTls, GatewayTls

from gigafab.local.pki import Authority, Pair, node_identity

SITE = "de-halm"


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def certificates(directory: Path, node: str) -> tuple[Authority, Pair, Pair]:
    """A health CA, the gateway's serving pair and ``node``'s client pair."""
    pki = Authority(directory)
    pki.ensure()
    return pki, pki.issue_server("gateway", ("localhost", "127.0.0.1")), pki.issue_client(node_identity(node, SITE))


def test_fault_and_silence_reach_etcd_as_transitions(etcd_port: int, tmp_path: Path) -> None:
    node = "de-halm-gpu-000"
    pki, served, client_pair = certificates(tmp_path, node)

    async def scenario() -> None:
        gateway = SiteGateway(
            GatewayConfig(
                SITE, "127.0.0.1:0", GatewayTls(served.cert, served.key, pki.pair.cert), etcd_port=etcd_port, silent_after=1.0
            )
        )
        port = await gateway.start()
        backend = SimulatedBackend(node, count=8)
        agent = Agent(
            node, SITE, backend, [f"127.0.0.1:{port}"], AgentTls(client_pair.cert, client_pair.key, pki.pair.cert), interval=0.1
        )
        running = asyncio.create_task(agent.run())
        etcd = aetcd.Client(host="127.0.0.1", port=etcd_port)

        async def stored() -> dict[str, object] | None:
            item = await etcd.get(node_key(SITE, node))
            return json.loads(item.value) if item else None

        async def health_is(expected: str) -> bool:
            document = await stored()
            return document is not None and document["health"] == expected

        await until(lambda: health_is("Healthy"))
        writes = gateway.records.writes
        await asyncio.sleep(0.5)  # five more healthy reports
        assert gateway.records.writes == writes
        assert agent.acknowledged > 0

        backend.inject(Fault.XID, gpu=3, xid=79)
        agent.poke()
        await until(lambda: health_is("Failed"))
        document = await stored()
        assert document is not None
        assert document["gpus"]["3"] == "Failed"
        assert document["gpuReasons"]["3"] == "XID 79"

        backend.inject(Fault.SILENT)
        await until(lambda: health_is("Silent"))
        silent = await stored()
        assert silent is not None
        assert silent["changedAt"] - silent["lastReportAt"] >= 1.0, "Silent only after silent_after without a report"
        backend.inject(Fault.RESET, gpu=3)
        agent.poke()
        await until(lambda: health_is("Healthy"))

        running.cancel()
        await etcd.close()
        await gateway.stop()

    asyncio.run(scenario())


def test_an_agent_with_several_gateway_addresses_reports_to_whichever_serves(etcd_port: int, tmp_path: Path) -> None:
    node = "de-halm-gpu-001"
    pki, served, client_pair = certificates(tmp_path, node)
    tls = GatewayTls(served.cert, served.key, pki.pair.cert)

    async def scenario() -> None:
        etcd = aetcd.Client(host="127.0.0.1", port=etcd_port)
        await etcd.delete_prefix(b"/gigafab/")
        first = SiteGateway(GatewayConfig(SITE, "127.0.0.1:0", tls, etcd_port=etcd_port))
        first_port = await first.start()
        standby = SiteGateway(GatewayConfig(SITE, "127.0.0.1:0", tls, etcd_port=etcd_port))
        backend = SimulatedBackend(node, count=2)
        addresses = ["127.0.0.1:1", f"127.0.0.1:{first_port}", "127.0.0.1:0"]  # nothing listens on the first
        agent = Agent(node, SITE, backend, addresses, AgentTls(client_pair.cert, client_pair.key, pki.pair.cert), 0.1)
        running = asyncio.create_task(agent.run())

        async def health_is(expected: str) -> bool:
            item = await etcd.get(node_key(SITE, node))
            return item is not None and json.loads(item.value)["health"] == expected

        await until(lambda: health_is("Healthy"))
        await first.stop()  # the site's gateway goes away; a standby takes the site on another port
        agent.gateways[2] = f"127.0.0.1:{await standby.start()}"
        backend.inject(Fault.XID, gpu=1, xid=79)
        agent.poke()
        await until(lambda: health_is("Failed"), timeout=20)
        assert standby.service.reports > 0
        running.cancel()
        await standby.stop()
        await etcd.close()

    asyncio.run(scenario())
