"""The gateway over real gRPC on loopback with mTLS: it takes good reports and refuses,
with the right status and a count, everything else, while serving good agents on."""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from gigafab.agents.agent import Agent
from gigafab.agents.edge import EdgeLost, serve_edge
from gigafab.agents.fencing import FENCE_AFTER_HEADER
from gigafab.agents.gateway import HealthGateway, Listener, serve, serve_shared
from gigafab.agents.ledger import Ledger, Transition
from gigafab.agents.simulated import Fault, SimulatedBackend
from gigafab.agents.tls import AgentTls, GatewayTls, site_group
from grpc_health.v1 import health_pb2 as checks_pb2
from grpc_health.v1 import health_pb2_grpc as checks_grpc

from gigafab.health.v1 import health_pb2, health_pb2_grpc
from gigafab.local.pki import Authority, ClientIdentity, Pair

SITE = "de-halm"
Start = Callable[[HealthGateway, GatewayTls], Awaitable[tuple[Listener, int]]]
"""Serves a gateway on a free port of loopback; returns what stops it, and the port."""


@pytest.fixture(params=["grpc.aio", "edge"])
def start(request: pytest.FixtureRequest) -> Start:
    """Every test runs on both ways the gateway takes connections: grpc.aio, and the compiled edge."""
    if request.param == "edge":
        binary = request.getfixturevalue("edge_binary")

        async def through_edge(gateway: HealthGateway, tls: GatewayTls) -> tuple[Listener, int]:
            return await serve_edge(gateway, "127.0.0.1:0", tls, binary)

        return through_edge

    async def in_process(gateway: HealthGateway, tls: GatewayTls) -> tuple[Listener, int]:
        return await serve(gateway, "127.0.0.1:0", tls)

    return in_process


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    authority = Authority(tmp_path_factory.mktemp("pki"))
    authority.ensure()
    return authority


def agent_cert(pki: Authority, node: str, sites: tuple[str, ...] = (SITE,)) -> Pair:
    """``node``'s certificate, a node of ``sites`` (its organizations)."""
    groups = tuple(site_group(site) for site in sites)
    return pki.issue_client(ClientIdentity(f"agent-{node}-{'-'.join(sites)}", node, groups))


def report(node: str, sequence: int, gpu_health: int = health_pb2.HEALTH_HEALTHY, site: str = SITE) -> health_pb2.ReportRequest:
    return health_pb2.ReportRequest(
        node=health_pb2.NodeIdentity(node=node, site=site, agent_version="test"),
        sequence=sequence,
        gpus=[health_pb2.GpuState(index=0, uuid="GPU-0", health=gpu_health, health_reason="XID 79")],
    )


class Recorder:
    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    async def __call__(self, transitions: Sequence[Transition]) -> None:
        self.transitions.extend(transitions)


def channel(port: int, pki: Authority, client: Pair | None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.pair.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", "localhost")])


async def exchange(
    port: int, pki: Authority, client: Pair | None, *requests: object, metadata: tuple[tuple[str, str], ...] = ()
) -> list[health_pb2.ReportResponse]:
    async with channel(port, pki, client) as chan:
        stub = health_pb2_grpc.HealthServiceStub(chan)
        return [answer async for answer in stub.Report(iter(requests), timeout=10, metadata=metadata)]


async def scenario(
    pki: Authority, start: Start, body: object, fence_after: float | None = None
) -> tuple[HealthGateway, Recorder]:
    recorder = Recorder()
    gateway = HealthGateway(Ledger(SITE), recorder, fence_after=fence_after)
    server_pair = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    server, port = await start(gateway, GatewayTls(server_pair.cert, server_pair.key, pki.pair.cert))
    try:
        await body(port)  # type: ignore[operator]
    finally:
        await server.stop(None)
    return gateway, recorder


def test_first_and_changed_reports_are_acknowledged_and_only_transitions_recorded(pki: Authority, start: Start) -> None:
    node = agent_cert(pki, "de-halm-gpu-000")

    async def body(port: int) -> None:
        answers = await exchange(
            port,
            pki,
            node,
            report("de-halm-gpu-000", 1),
            report("de-halm-gpu-000", 2),
            report("de-halm-gpu-000", 3, health_pb2.HEALTH_FAILED),
            report("de-halm-gpu-000", 4, health_pb2.HEALTH_FAILED),
        )
        assert [a.ack.sequence for a in answers] == [1, 3]

    gateway, recorder = asyncio.run(scenario(pki, start, body))
    assert [(t.gpu, t.after) for t in recorder.transitions] == [
        (0, "Healthy"),
        (None, "Healthy"),
        (0, "Failed"),
        (None, "Failed"),
    ]
    assert gateway.reports == 4


@pytest.mark.parametrize(
    ("speaker", "requests", "code", "reason"),
    [
        ("de-halm-gpu-001", [report("de-halm-gpu-002", 1)], grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch"),
        # a node of another site, reporting for itself but to this site's gateway, under either site's name
        (("niemeyer-gpu-000", "niemeyer"), [report("niemeyer-gpu-000", 1)], grpc.StatusCode.PERMISSION_DENIED, "wrong_site"),
        (
            ("niemeyer-gpu-000", "niemeyer"),
            [report("niemeyer-gpu-000", 1, site="niemeyer")],
            grpc.StatusCode.PERMISSION_DENIED,
            "wrong_site",
        ),
        # a certificate of the health CA that is no node of any site (no gigafab:site organization)
        (("de-halm-gpu-005",), [report("de-halm-gpu-005", 1)], grpc.StatusCode.PERMISSION_DENIED, "wrong_site"),
        (
            "de-halm-gpu-003",
            [report("de-halm-gpu-003", 5), report("de-halm-gpu-003", 5)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "replayed_sequence",
        ),
        (
            "de-halm-gpu-004",
            [report("de-halm-gpu-004", 1, gpu_health=health_pb2.HEALTH_UNSPECIFIED)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "malformed",
        ),
        ("de-halm-gpu-012", [report("de-halm-gpu-012", 2**64 - 1)], grpc.StatusCode.INVALID_ARGUMENT, "implausible_sequence"),
    ],
)
def test_refused_reports_get_their_status_and_the_gateway_serves_on(
    pki: Authority,
    start: Start,
    speaker: str | tuple[str, ...],
    requests: list[health_pb2.ReportRequest],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    name, *sites = (speaker, SITE) if isinstance(speaker, str) else speaker  # (node, its sites...)
    certificate = agent_cert(pki, name, tuple(sites))
    good = agent_cert(pki, "de-halm-gpu-009")

    async def body(port: int) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await exchange(port, pki, certificate, *requests)
        assert refused.value.code() == code
        answers = await exchange(port, pki, good, report("de-halm-gpu-009", 1))
        assert answers[0].ack.sequence == 1

    gateway, _ = asyncio.run(scenario(pki, start, body))
    assert gateway.refused[reason] == 1


def test_a_thief_cannot_lock_a_node_out_with_its_sequence(pki: Authority, start: Start) -> None:
    """Someone holding a node's certificate sends sequence 2^64-1: refused (``implausible_sequence``), and the
    node's last sequence does not move, so its real agent goes on reporting. A sequence pushed ahead within
    what a fast clock may explain is taken, and then shuts the real agent out ("replayed") only until the
    agent's clock, which its sequence follows, has passed it."""
    node = "de-halm-gpu-013"
    pair = agent_cert(pki, node)

    async def body(port: int, gateway: HealthGateway) -> None:
        agent = Agent(
            node, SITE, SimulatedBackend(node, 2), [f"127.0.0.1:{port}"], AgentTls(pair.cert, pair.key, pki.pair.cert), 0.1
        )
        running = asyncio.create_task(agent.run())
        try:
            await eventually_true(lambda: node in gateway.ledger.nodes)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await exchange(port, pki, pair, report(node, 2**64 - 1))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            taken = gateway.ledger.nodes[node].sequence
            assert taken < 2**63, "a refused sequence never becomes the node's last"
            await eventually_true(lambda: gateway.ledger.nodes[node].sequence > taken + 5)
            assert gateway.refused == {"implausible_sequence": 1}

            ahead = time.time_ns() // 1000 + 2_000_000  # two seconds ahead: a clock may be that fast
            await exchange(port, pki, pair, report(node, ahead))
            await eventually_true(lambda: gateway.refused["replayed_sequence"] > 0)
            await eventually_true(lambda: gateway.ledger.nodes[node].sequence > ahead, timeout=15.0)
            await eventually_true(lambda: agent.connected)
        finally:
            running.cancel()

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE), Recorder())
        served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
        server, port = await start(gateway, GatewayTls(served.cert, served.key, pki.pair.cert))
        try:
            await body(port, gateway)
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_no_client_certificate_is_refused(pki: Authority, start: Start) -> None:
    async def body(port: int) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await exchange(port, pki, None, report("de-halm-gpu-000", 1))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        answers = await exchange(port, pki, agent_cert(pki, "de-halm-gpu-000"), report("de-halm-gpu-000", 1))
        assert len(answers) == 1

    _, recorder = asyncio.run(scenario(pki, start, body))
    assert {t.node for t in recorder.transitions} == {"de-halm-gpu-000"}


def test_oversized_and_garbage_frames_are_refused(pki: Authority, start: Start) -> None:
    node = agent_cert(pki, "de-halm-gpu-005")

    async def body(port: int) -> None:
        async with channel(port, pki, node) as chan:
            raw = chan.stream_stream(
                "/gigafab.health.v1.HealthService/Report", request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            for frame, code in (
                (b"\xff" * 200_000, grpc.StatusCode.RESOURCE_EXHAUSTED),  # refused by the gateway, counted
                (b"\xff" * 2_000_000, grpc.StatusCode.RESOURCE_EXHAUSTED),  # refused by gRPC itself
                (b"\x0a\xff\xff\xff\xff\x0f", grpc.StatusCode.INVALID_ARGUMENT),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    [answer async for answer in raw(iter([frame]), timeout=10)]
                assert refused.value.code() == code
        answers = await exchange(port, pki, node, report("de-halm-gpu-005", 1))
        assert len(answers) == 1

    gateway, _ = asyncio.run(scenario(pki, start, body))
    assert (gateway.refused["malformed"], gateway.refused["oversized"]) == (1, 1)


def test_standard_health_service_says_serving(pki: Authority, start: Start) -> None:
    node = agent_cert(pki, "de-halm-gpu-006")

    async def body(port: int) -> None:
        async with channel(port, pki, node) as chan:
            answer = await checks_grpc.HealthStub(chan).Check(
                checks_pb2.HealthCheckRequest(service="gigafab.health.v1.HealthService"), timeout=10
            )
            assert answer.status == checks_pb2.HealthCheckResponse.SERVING

    asyncio.run(scenario(pki, start, body))


def test_a_certificate_from_another_ca_is_refused(pki: Authority, start: Start, tmp_path: Path) -> None:
    stranger = Authority(tmp_path)
    stranger.ensure()
    forged = stranger.issue_client(ClientIdentity("agent-x", "de-halm-gpu-000"))

    async def body(port: int) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await exchange(port, pki, forged, report("de-halm-gpu-000", 1))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    _, recorder = asyncio.run(scenario(pki, start, body))
    assert recorder.transitions == []


def test_certificates_are_reloaded_when_they_change_on_disk(pki: Authority, start: Start, tmp_path: Path) -> None:
    other = Authority(tmp_path / "other", "another-ca")
    other.ensure()
    newcomer = other.issue_client(ClientIdentity("agent-new", "de-halm-gpu-007", (site_group(SITE),)))
    trusted = tmp_path / "trusted-ca.crt"
    trusted.write_bytes(pki.pair.cert.read_bytes())
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE), Recorder())
        server, port = await start(gateway, GatewayTls(served.cert, served.key, trusted))
        try:
            with pytest.raises(grpc.aio.AioRpcError):
                await exchange(port, pki, newcomer, report("de-halm-gpu-007", 1))
            trusted.write_bytes(pki.pair.cert.read_bytes() + other.pair.cert.read_bytes())
            os.utime(trusted, (time.time() + 5, time.time() + 5))
            answers = await exchange(port, pki, newcomer, report("de-halm-gpu-007", 2))
            assert answers[0].ack.sequence == 2
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_repeated_reports_take_the_fast_path_and_a_change_does_not(pki: Authority, start: Start) -> None:
    node = agent_cert(pki, "de-halm-gpu-010")
    observed: list[int] = []

    class CountingLedger(Ledger):
        def observe(self, *args: Any, **kwargs: Any) -> list[Transition]:
            observed.append(args[2])
            return super().observe(*args, **kwargs)

    async def main() -> None:
        gateway = HealthGateway(CountingLedger(SITE), Recorder())
        served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
        server, port = await start(gateway, GatewayTls(served.cert, served.key, pki.pair.cert))
        try:
            repeated = [report("de-halm-gpu-010", sequence) for sequence in range(1, 6)]
            await exchange(port, pki, node, *repeated, report("de-halm-gpu-010", 6, health_pb2.HEALTH_FAILED))
        finally:
            await server.stop(None)
        assert gateway.ledger.nodes["de-halm-gpu-010"].sequence == 6

    asyncio.run(main())
    assert observed == [1, 6], "only the first report and the change are decoded into GPU reports"


def test_a_refusal_quoting_a_huge_report_reaches_the_agent_with_its_own_status(pki: Authority, start: Start) -> None:
    """A refusal's message quotes the report's node or site; cut short, so that the client gets the refusal
    and not a status trailer over gRPC's 16 KiB limit (which it would see as RESOURCE_EXHAUSTED)."""
    node = agent_cert(pki, "de-halm-gpu-011")

    async def body(port: int) -> None:
        for request in (report("x" * 60_000, 1), report("de-halm-gpu-011", 1, site="\x1f" * 10_000)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await exchange(port, pki, node, request)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert len(refused.value.details() or "") < 1_000

    gateway, _ = asyncio.run(scenario(pki, start, body))
    assert (gateway.refused["identity_mismatch"], gateway.refused["wrong_site"]) == (1, 1)


@pytest.mark.parametrize(("declared", "taken"), [("4", True), ("2.5", True), ("30", False), ("soon", False), (None, True)])
def test_an_agent_that_would_fence_later_than_the_gateway_promised_is_refused(
    pki: Authority, start: Start, declared: str | None, taken: bool
) -> None:
    node = f"de-halm-gpu-02{len(declared or '')}"
    metadata = () if declared is None else ((FENCE_AFTER_HEADER, declared),)

    async def body(port: int) -> None:
        if taken:
            answers = await exchange(port, pki, agent_cert(pki, node), report(node, 1), metadata=metadata)
            assert answers[0].ack.sequence == 1
            return
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await exchange(port, pki, agent_cert(pki, node), report(node, 1), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "promised the operator 4 s" in str(refused.value.details())

    gateway, recorder = asyncio.run(scenario(pki, start, body, fence_after=4.0))
    assert gateway.refused["fence_mismatch"] == (0 if taken else 1)
    assert bool(recorder.transitions) == taken


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_servers_sharing_the_port_all_serve_and_a_second_gateway_is_refused(pki: Authority) -> None:
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    tls = GatewayTls(served.cert, served.key, pki.pair.cert)
    address = f"127.0.0.1:{free_port()}"

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE), Recorder())
        servers, port = await serve_shared(gateway, address, tls, loops=3)
        try:
            assert len(servers) == 3
            nodes = [f"de-halm-gpu-03{index}" for index in range(6)]
            answers = await asyncio.gather(*(exchange(port, pki, agent_cert(pki, node), report(node, 1)) for node in nodes))
            assert [answer[0].ack.sequence for answer in answers] == [1] * 6
            assert set(gateway.ledger.nodes) >= set(nodes), "one ledger behind every server"
            with pytest.raises(OSError, match="another gateway"):
                await serve_shared(HealthGateway(Ledger(SITE), Recorder()), address, tls, loops=3)
        finally:
            await asyncio.gather(*(server.stop(None) for server in servers))

    asyncio.run(main())


async def eventually_true(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


def test_a_connection_waits_from_its_handshake_to_its_stream_and_only_closed_nodes_are_allowed_that(
    pki: Authority,
    start: Start,
) -> None:
    """The gateway counts a connection as waiting from the start of its handshake (a raw TCP connection that
    never speaks TLS is one) until a Report stream starts; a node whose stream ended is allowed that wait
    before it is Silent, one whose stream stays open and quiet is not."""
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    tls = GatewayTls(served.cert, served.key, pki.pair.cert)
    closed, quiet, late = "de-halm-gpu-040", "de-halm-gpu-041", "de-halm-gpu-042"

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE, silent_after=0.5), Recorder(), fence_after=30.0)
        server, port = await start(gateway, tls)
        stay = asyncio.Event()

        async def open_and_quiet() -> Any:
            yield report(quiet, 1)
            await stay.wait()

        try:
            await exchange(port, pki, agent_cert(pki, closed), report(closed, 1))  # reports, then its stream ends
            async with channel(port, pki, agent_cert(pki, quiet)) as chan:
                stream = health_pb2_grpc.HealthServiceStub(chan).Report(open_and_quiet(), timeout=10)
                assert (await stream.read()).ack.sequence == 1
                assert gateway.arrivals.pending == 0
                hanging = socket.create_connection(("127.0.0.1", port))  # a handshake that never goes on
                try:
                    await eventually_true(lambda: gateway.arrivals.pending == 1)
                    await exchange(port, pki, agent_cert(pki, late), report(late, 1))
                    assert gateway.arrivals.pending == 1, "one handshake began and one stream started since"
                    now = time.monotonic() + 1.0
                    waiting = gateway.arrivals.waiting(now)
                    assert waiting > 0.5
                    silent = gateway.ledger.sweep(now, reconnecting=waiting)
                    assert quiet in {t.node for t in silent}
                    assert closed not in {t.node for t in silent}, "its new connection may be the one waiting"
                    later = now + 31.0
                    assert closed in {t.node for t in gateway.ledger.sweep(later, reconnecting=gateway.arrivals.waiting(later))}
                    assert gateway.arrivals.pending == 0, "a connection that opened no stream is forgotten"
                finally:
                    hanging.close()
                stay.set()
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_reports_that_arrive_late_hold_back_the_silence_of_nodes_by_as_long(pki: Authority, start: Start) -> None:
    """Reports held up on their way in (sent 6 s before the gateway takes them) put the gateway 6 s behind,
    though its own timer is on time: a node heard from 4 s ago is not Silent then (its next report may be on
    its way), and is Silent once the allowance has passed."""
    nodes = [f"de-halm-gpu-{index:03d}" for index in range(80, 83)]

    def sent_long_ago(node: str) -> health_pb2.ReportRequest:
        late = report(node, 1)
        late.sent_at.FromNanoseconds(time.time_ns() - 6_000_000_000)
        return late

    async def body(port: int) -> None:
        for node in nodes:
            await exchange(port, pki, agent_cert(pki, node), sent_long_ago(node))

    gateway, _ = asyncio.run(scenario(pki, start, body))
    now = time.monotonic() + 4.0
    behind = gateway.behind(0.0, now)
    assert 5.5 < behind < 6.5
    assert gateway.ledger.sweep(now, behind=behind) == []
    later = now + 6.0
    assert {t.node for t in gateway.ledger.sweep(later, behind=gateway.behind(0.0, later))} == set(nodes)


def test_an_agent_that_reconnects_resumes_its_tls_session_and_a_new_agent_shakes_hands_in_full(
    pki: Authority, start: Start
) -> None:
    """The agent keeps its gateways' TLS sessions: when its link comes back it resumes one (no certificate
    signed or verified), the gateway still knows it by its certificate, and counts the stream as resumed.
    An agent without that session (a restarted one) makes a full handshake."""
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    tls = GatewayTls(served.cert, served.key, pki.pair.cert)
    node = "de-halm-gpu-070"
    pair = agent_cert(pki, node)

    def agent_of(port: int) -> Agent:
        return Agent(
            node, SITE, SimulatedBackend(node, 2), [f"127.0.0.1:{port}"], AgentTls(pair.cert, pair.key, pki.pair.cert), 0.1
        )

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE), Recorder())
        server, port = await start(gateway, tls)
        agent = agent_of(port)
        running = asyncio.create_task(agent.run())
        try:
            await eventually_true(lambda: agent.connected and gateway.streams == 1)
            backend = agent.backend
            assert isinstance(backend, SimulatedBackend)
            backend.inject(Fault.SILENT)  # its link goes down: the stream ends
            await eventually_true(lambda: gateway.streams == 0)
            backend.inject(Fault.RESET)
            await eventually_true(lambda: agent.connected and gateway.streams == 1)
            assert gateway.opened == {"full": 1, "resumed": 1}
            running.cancel()
            await eventually_true(lambda: gateway.streams == 0)
            restarted = agent_of(port)
            running = asyncio.create_task(restarted.run())
            await eventually_true(lambda: restarted.connected and gateway.streams == 1)
            assert gateway.opened == {"full": 2, "resumed": 1}, "a restarted agent has no session to resume"
            assert gateway.refused == {}
            assert gateway.ledger.nodes[node].health == "Healthy"
        finally:
            running.cancel()
            await server.stop(None)

    asyncio.run(main())


def test_the_edge_refuses_an_address_in_use_and_its_end_ends_the_gateway(pki: Authority, edge_binary: Path) -> None:
    """A second gateway's edge on a taken address fails with the reason, as grpc.aio's servers do; an edge
    that dies under a serving gateway is no silent loss: waiting on it raises, so the gateway exits."""
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    tls = GatewayTls(served.cert, served.key, pki.pair.cert)
    address = f"127.0.0.1:{free_port()}"

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE), Recorder())
        edge, port = await serve_edge(gateway, address, tls, edge_binary)
        with pytest.raises(OSError, match="another gateway"):
            await serve_edge(HealthGateway(Ledger(SITE), Recorder()), address, tls, edge_binary)
        answers = await exchange(port, pki, agent_cert(pki, "de-halm-gpu-050"), report("de-halm-gpu-050", 1))
        assert answers[0].ack.sequence == 1, "the first edge serves on"
        edge.process.kill()
        with pytest.raises(EdgeLost, match="exited"):
            await edge.wait_for_termination(timeout=10)
        await edge.stop(None)

    asyncio.run(main())


class ThreadAgent:
    """An agent reporting every 0.2 s on one stream, in a thread of its own: it goes on while the
    gateway's event loop (this test's) stalls. Its answers, and at last its stream's status, queue up."""

    def __init__(self, pki: Authority, port: int, node: str) -> None:
        self.pki, self.port, self.node = pki, port, node
        self.answers: queue.Queue[health_pb2.ReportResponse | grpc.StatusCode] = queue.Queue()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _reports(self) -> Any:
        for sequence in itertools.count(1):
            if self.done.is_set():
                return
            yield report(self.node, sequence)
            time.sleep(0.2)

    def _run(self) -> None:
        pair = agent_cert(self.pki, self.node)
        credentials = grpc.ssl_channel_credentials(self.pki.pair.cert.read_bytes(), pair.key.read_bytes(), pair.cert.read_bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(f"127.0.0.1:{self.port}", credentials, options=options) as chan:
            call = chan.stream_stream(
                "/gigafab.health.v1.HealthService/Report",
                request_serializer=health_pb2.ReportRequest.SerializeToString,
                response_deserializer=health_pb2.ReportResponse.FromString,
            )
            try:
                for answer in call(self._reports(), timeout=30):
                    self.answers.put(answer)
            except grpc.RpcError as ended:
                self.answers.put(ended.code())

    def taken(self) -> list[health_pb2.ReportResponse | grpc.StatusCode]:
        got = []
        while not self.answers.empty():
            got.append(self.answers.get())
        return got

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)


def directives(answers: list[health_pb2.ReportResponse | grpc.StatusCode]) -> list[str]:
    return [a.WhichOneof("directive") if isinstance(a, health_pb2.ReportResponse) else a.name for a in answers]


def test_the_edge_fences_the_agents_of_a_gateway_that_stalls_and_ends_their_streams_when_it_is_back(
    pki: Authority, edge_binary: Path
) -> None:
    """A stalled gateway renews no lease, and the operator moves the site's work fenceAfter after its last
    contact; the edge, which keeps answering the agents, must then tell them to fence. Until then (the
    gateway beats, its word still holds) it tells them nothing; when the gateway is back it ends the
    streams it fenced, and the agents' next stream is the gateway's to acknowledge."""
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    tls = GatewayTls(served.cert, served.key, pki.pair.cert)
    node = "de-halm-gpu-060"

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE), Recorder())
        edge, port = await serve_edge(gateway, "127.0.0.1:0", tls, edge_binary, lambda: time.monotonic() + 0.5)
        agent = ThreadAgent(pki, port, node)
        try:
            await asyncio.sleep(2.0)  # beating
            assert directives(agent.taken()) == ["ack"]
            time.sleep(2.5)  # the gateway stalls: no beat, and its word runs out
            await asyncio.sleep(1.0)  # back: it beats again
            assert gateway.lag.seconds > 1.0, "what waited in the socket meanwhile counts as the gateway's lag"
            stalled = agent.taken()
            assert directives(stalled) == ["fence", "UNAVAILABLE"], "fenced once; ended once the gateway is back"
            assert "unresponsive" in stalled[0].fence.reason  # type: ignore[union-attr]
            again = await exchange(port, pki, agent_cert(pki, node), report(node, 1_000))
            assert again[0].ack.sequence == 1_000, "the agent's new stream is acknowledged: its fence lifted"
        finally:
            agent.stop()
            await edge.stop(None)

    asyncio.run(main())


def test_the_edge_leaves_fencing_to_a_gateway_that_beats(pki: Authority, edge_binary: Path) -> None:
    """A gateway that beats but vouches for nothing more (out of contact with etcd) decides itself what its
    agents hear (its ``fence_reason``); the edge adds no fence of its own, and neither does a stall shorter
    than the edge's patience of a second while the gateway's word holds."""
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    tls = GatewayTls(served.cert, served.key, pki.pair.cert)
    word = [time.monotonic() - 1.0]

    async def main() -> None:
        gateway = HealthGateway(Ledger(SITE), Recorder())
        edge, port = await serve_edge(gateway, "127.0.0.1:0", tls, edge_binary, lambda: word[0])
        agent = ThreadAgent(pki, port, "de-halm-gpu-061")
        try:
            await asyncio.sleep(2.0)  # its word ran out long ago, but it beats
            word[0] = time.monotonic() + 60
            await asyncio.sleep(0.5)
            time.sleep(2.0)  # a stall, with its word holding
            await asyncio.sleep(0.5)
            assert directives(agent.taken()) == ["ack"]
        finally:
            agent.stop()
            await edge.stop(None)

    asyncio.run(main())
