"""The health plane into Kubernetes: a simulated agent's fault, through a real gateway
and the plane's etcd, becomes a taint and a condition on its Node and shrinks its Site."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gigafab.agents.agent import Agent, AgentTls
from gigafab.agents.gateway import GatewayTls
from gigafab.agents.simulated import Fault, SimulatedBackend
from gigafab.agents.site_gateway import GatewayConfig, SiteGateway

from gigafab.local.pki import Authority, ClientIdentity
from gigafab.local.plane import Plane
from tests.e2e.conftest import Kubectl, eventually

SITE, NODE = "de-halm", "de-halm-gpu-001"


class HealthSite:
    """A gateway and one agent on a private event loop in a thread."""

    def __init__(self, plane: Plane, pki_dir: Path) -> None:
        pki = Authority(pki_dir)
        pki.ensure()
        served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
        agent_pair = pki.issue_client(ClientIdentity(NODE, NODE))
        self.loop = asyncio.new_event_loop()
        self.gateway = SiteGateway(
            GatewayConfig(
                SITE,
                "127.0.0.1:0",
                GatewayTls(served.cert, served.key, pki.pair.cert),
                etcd_port=plane.layout.ports.etcd_client,
                silent_after=1.0,
            )
        )
        self.backend = SimulatedBackend(NODE, count=8)
        self.tls = AgentTls(agent_pair.cert, agent_pair.key, pki.pair.cert)
        self.agent: Agent | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> HealthSite:
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(30)
        self.agent = Agent(NODE, SITE, self.backend, [f"127.0.0.1:{port}"], self.tls, interval=0.2)
        self.task = asyncio.run_coroutine_threadsafe(self.agent.run(), self.loop)
        return self

    def inject(self, fault: Fault, **where: Any) -> None:
        def act() -> None:
            self.backend.inject(fault, **where)
            assert self.agent is not None
            self.agent.poke()

        self.loop.call_soon_threadsafe(act)

    def __exit__(self, *_: object) -> None:
        self.task.cancel()
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def health_site(plane: Plane, tmp_path: Path) -> Iterator[HealthSite]:
    with HealthSite(plane, tmp_path) as site:
        yield site


def our_taints(kubectl: Kubectl) -> list[tuple[str, str]]:
    taints = kubectl.get("node", NODE)["spec"].get("taints") or []
    return sorted((t["key"], t["effect"]) for t in taints if t["key"].startswith("gigafab.nl/"))


def gpu_condition(kubectl: Kubectl) -> dict[str, Any]:
    conditions = kubectl.get("node", NODE)["status"].get("conditions") or []
    return next((c for c in conditions if c["type"] == "GigafabGpuHealthy"), {})


def test_failed_gpu_taints_its_node_until_reset_and_trusted(kubectl: Kubectl, health_site: HealthSite) -> None:
    def healthy() -> None:
        assert gpu_condition(kubectl).get("status") == "True"
        assert our_taints(kubectl) == []

    eventually(healthy)
    health_site.inject(Fault.XID, gpu=2, xid=79)

    def failed() -> None:
        assert our_taints(kubectl) == [("gigafab.nl/gpu-failed", "NoExecute")]
        condition = gpu_condition(kubectl)
        assert (condition["status"], condition["reason"]) == ("False", "Failed")
        assert "XID 79" in condition["message"]
        assert kubectl.get("site", SITE)["status"]["nodesReady"] == 1

    eventually(failed, timeout=30)
    health_site.inject(Fault.RESET, gpu=2)
    eventually(healthy, timeout=30)
    eventually(lambda: _assert_ready_nodes(kubectl, 2), timeout=30)


def test_silent_agent_taints_its_node(kubectl: Kubectl, health_site: HealthSite) -> None:
    eventually(lambda: _assert_condition(kubectl, "True"))
    health_site.inject(Fault.SILENT)
    eventually(lambda: _assert_taints(kubectl, [("gigafab.nl/node-silent", "NoExecute")]), timeout=30)
    health_site.inject(Fault.RESET, gpu=0)
    eventually(lambda: _assert_taints(kubectl, []), timeout=30)


def _assert_ready_nodes(kubectl: Kubectl, count: int) -> None:
    assert kubectl.get("site", SITE)["status"]["nodesReady"] == count


def _assert_condition(kubectl: Kubectl, status: str) -> None:
    assert gpu_condition(kubectl).get("status") == status


def _assert_taints(kubectl: Kubectl, taints: list[tuple[str, str]]) -> None:
    assert our_taints(kubectl) == taints
