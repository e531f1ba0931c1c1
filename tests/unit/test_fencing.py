"""Fencing: when a node stops its gigafab work by itself, and how (simulated and CRI runtimes).

The last two tests run a real agent against a real gateway over gRPC/mTLS on loopback.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gigafab.agents.agent import Agent
from gigafab.agents.fencing import CriRuntime, Fence, SimulatedRuntime
from gigafab.agents.gateway import HealthGateway, serve
from gigafab.agents.ledger import Ledger
from gigafab.agents.simulated import Fault, SimulatedBackend
from gigafab.agents.tls import AgentTls, GatewayTls

from gigafab.local.pki import Authority, node_identity

SITE = "eemshaven"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_node_fences_when_contact_has_been_lost_for_fence_after_counting_the_blind_time() -> None:
    clock = Clock()
    runtime = SimulatedRuntime("n1", clock=clock)
    fence = Fence(runtime, fence_after=4.0, clock=clock)
    fence.connected()
    clock.now = 200.0
    fence.check()
    assert runtime.fenced_at is None, "a live stream never fences"
    fence.disconnected()  # noticed at 200: the stream may have been dead since 198
    clock.now = 201.9
    fence.check()
    assert runtime.fenced_at is None
    clock.now = 202.0
    fence.check()
    assert runtime.fenced_at == 202.0, "fenced 4 s after the last moment the stream was known alive"
    clock.now = 205.0
    fence.connected()
    assert runtime.fenced_at is None
    assert [event["event"] for event in runtime.events] == ["fenced", "lifted"]


def test_a_new_agent_that_never_reaches_a_gateway_fences_and_a_gateway_order_fences_at_once() -> None:
    clock = Clock()
    lonely = SimulatedRuntime("n1", clock=clock)
    fence = Fence(lonely, fence_after=4.0, clock=clock)
    clock.now += 4.0
    fence.check()
    assert lonely.fenced_at == clock.now
    ordered = SimulatedRuntime("n2", clock=clock)
    Fence(ordered, fence_after=4.0, clock=clock).ordered("gateway lost etcd")
    assert ordered.events[0]["reason"] == "gateway lost etcd"


def test_the_simulated_runtime_appends_its_fences_to_a_json_lines_log(tmp_path: Path) -> None:
    log = tmp_path / "fences.jsonl"
    clock = Clock()
    runtime = SimulatedRuntime("n1", log, clock)
    runtime.fence("no gateway")
    runtime.fence("still fenced")  # idempotent while fenced
    runtime.lift()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [
        {"node": "n1", "event": "fenced", "at": 100.0, "reason": "no gateway"},
        {"node": "n1", "event": "lifted", "at": 100.0, "reason": ""},
    ]


class FakeCrictl:
    """Stands in for the container runtime's CLI: no container runtime runs here."""

    def __init__(self, sandboxes: list[str], fail: str | None = None) -> None:
        self.sandboxes, self.fail = sandboxes, fail
        self.calls: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(command))
        if command[1] == "pods":
            return subprocess.CompletedProcess(command, 0, "".join(f"{s}\n" for s in self.sandboxes), "")
        if command[2] == self.fail:
            return subprocess.CompletedProcess(command, 1, "", "rpc error: context deadline exceeded")
        self.sandboxes.remove(command[2])
        return subprocess.CompletedProcess(command, 0, "", "")


def test_on_a_real_node_fencing_stops_every_ready_gigafab_sandbox_through_crictl() -> None:
    crictl = FakeCrictl(["aaa111", "bbb222"])
    runtime = CriRuntime("/usr/bin/crictl", crictl)
    runtime.fence("no gateway")
    assert crictl.calls == [
        ["/usr/bin/crictl", "pods", "--label", "gigafab.nl/workload", "--state", "ready", "--quiet"],
        ["/usr/bin/crictl", "stopp", "aaa111"],
        ["/usr/bin/crictl", "stopp", "bbb222"],
    ]
    assert runtime.stopped == ["aaa111", "bbb222"]
    runtime.fence("still fenced")  # the kubelet started nothing again: nothing to stop
    assert crictl.calls[-1][1] == "pods"


def test_a_sandbox_crictl_cannot_stop_is_an_error_not_a_silent_success() -> None:
    runtime = CriRuntime("crictl", FakeCrictl(["aaa111"], fail="aaa111"))
    with pytest.raises(RuntimeError, match="crictl stopp aaa111 failed: rpc error"):
        runtime.fence("no gateway")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    authority = Authority(tmp_path_factory.mktemp("pki"))
    authority.ensure()
    return authority


async def until(predicate: object, seconds: float) -> bool:
    for _ in range(int(seconds * 20)):
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


@asynccontextmanager
async def connected_agent(
    pki: Authority, node: str, fence_after: float
) -> AsyncIterator[tuple[HealthGateway, Agent, SimulatedRuntime]]:
    """A real gateway on loopback and a fencing agent streaming to it."""

    async def record(transitions: object) -> bool:
        return True

    gateway = HealthGateway(Ledger(SITE), record)
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    server, port = await serve(gateway, "127.0.0.1:0", GatewayTls(served.cert, served.key, pki.pair.cert))
    pair = pki.issue_client(node_identity(node, SITE))
    runtime = SimulatedRuntime(node)
    fence = Fence(runtime, fence_after)
    tls = AgentTls(pair.cert, pair.key, pki.pair.cert)
    agent = Agent(node, SITE, SimulatedBackend(node, 2), [f"127.0.0.1:{port}"], tls, 0.2, fence)
    running = asyncio.create_task(agent.run())
    try:
        assert await until(lambda: agent.connected, 10)
        yield gateway, agent, runtime
    finally:
        running.cancel()
        await server.stop(None)


def test_an_agent_fences_on_its_gateways_order_and_is_lifted_when_the_gateway_has_contact_again(pki: Authority) -> None:
    async def main() -> None:
        async with connected_agent(pki, "eemshaven-gpu-000", fence_after=30.0) as (gateway, _, runtime):
            gateway.fence_reason = "gateway of eemshaven has had no contact with etcd for 3.0 s"
            assert await until(lambda: runtime.fenced_at is not None, 5), "the next report is answered with Fence"
            assert "no contact with etcd" in str(runtime.events[0]["reason"])
            gateway.fence_reason = None
            assert await until(lambda: runtime.fenced_at is None, 5), "an acknowledgement lifts the fence"

    asyncio.run(main())


def test_an_agent_whose_gateway_is_gone_fences_after_fence_after(pki: Authority) -> None:
    async def main() -> None:
        async with connected_agent(pki, "eemshaven-gpu-001", fence_after=2.0) as (_, agent, runtime):
            await asyncio.sleep(3.0)
            assert runtime.fenced_at is None, "connected: no fence however long"
            backend = agent.backend
            assert isinstance(backend, SimulatedBackend)
            backend.inject(Fault.SILENT)  # the node's link goes down
            assert await until(lambda: runtime.fenced_at is not None, 5)
            backend.inject(Fault.RESET)
            assert await until(lambda: runtime.fenced_at is None, 10), "reconnected and acknowledged: lifted"

    asyncio.run(main())
