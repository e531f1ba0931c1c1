"""A real gateway's metrics endpoint, scraped over HTTP: a real agent's reports over mTLS (and
etcd behind the gateway) show up as reports and transitions, a report signed by another node as
a rejected call under its reason, and the agent as connected."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import aetcd
import grpc
import pytest
from gigafab.agents.agent import Agent
from gigafab.agents.records import site_prefix
from gigafab.agents.simulated import SimulatedBackend
from gigafab.agents.site_gateway import GatewayConfig, SiteGateway
from gigafab.agents.tls import AgentTls, GatewayTls
from prometheus_client.parser import text_string_to_metric_families

from gigafab.health.v1 import health_pb2, health_pb2_grpc
from gigafab.local.pki import Authority, node_identity
from tests.integration.test_health_chain import until

SITE = "eemshaven"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_reports_transitions_and_a_rejected_call_are_scraped_from_the_gateway(etcd_port: int, tmp_path: Path) -> None:
    pki = Authority(tmp_path)
    pki.ensure()
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    honest = pki.issue_client(node_identity("eemshaven-gpu-000", SITE))
    impostor = pki.issue_client(node_identity("eemshaven-gpu-001", SITE))
    site = (("site", SITE),)

    async def scenario() -> None:
        etcd = aetcd.Client(host="127.0.0.1", port=etcd_port)
        await etcd.delete_prefix(site_prefix(SITE).encode())
        tls = GatewayTls(served.cert, served.key, pki.pair.cert)
        gateway = SiteGateway(GatewayConfig(SITE, "127.0.0.1:0", tls, etcd_port=etcd_port, metrics_address="127.0.0.1:0"))
        port = await gateway.start()
        assert gateway.metrics is not None
        url = f"http://127.0.0.1:{gateway.metrics.server_port}/metrics"
        node = "eemshaven-gpu-000"
        agent = Agent(
            node, SITE, SimulatedBackend(node, 4), [f"127.0.0.1:{port}"], AgentTls(honest.cert, honest.key, pki.pair.cert), 0.1
        )
        running = asyncio.create_task(agent.run())

        async def reported() -> bool:
            metrics = await asyncio.to_thread(scrape, url)
            return (
                metrics[("gigafab_gateway_reports_total", site)] >= 3 and metrics[("gigafab_gateway_connected_agents", site)] == 1
            )

        await until(reported)

        credentials = grpc.ssl_channel_credentials(
            pki.pair.cert.read_bytes(), impostor.key.read_bytes(), impostor.cert.read_bytes()
        )
        options = [("grpc.ssl_target_name_override", "localhost")]
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
            speaks_for_another = health_pb2.ReportRequest(
                node=health_pb2.NodeIdentity(node=node, site=SITE, agent_version="test"),
                sequence=1_000_000,
                gpus=[health_pb2.GpuState(index=0, uuid="GPU-0", health=health_pb2.HEALTH_HEALTHY)],
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                [
                    answer
                    async for answer in health_pb2_grpc.HealthServiceStub(channel).Report(iter([speaks_for_another]), timeout=10)
                ]
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

        metrics = await asyncio.to_thread(scrape, url)
        assert metrics[("gigafab_gateway_rejected_calls_total", (("reason", "identity_mismatch"), *site))] == 1
        assert metrics[("gigafab_gateway_rejected_calls_total", (("reason", "wrong_site"), *site))] == 0
        assert metrics[("gigafab_gateway_transitions_total", (*site, ("to_state", "Healthy")))] == 5  # the node and its 4 GPUs
        assert metrics[("gigafab_gateway_transitions_total", (*site, ("to_state", "Failed")))] == 0
        running.cancel()
        await gateway.stop()
        await etcd.close()

    asyncio.run(scenario())
