"""The health gateway of one site: a grpc.aio server that takes agents' reports over mTLS.

Each agent holds one ``Report`` stream. The gateway checks that the client
certificate's common name is the node the report speaks for and that the
certificate is one of this site's nodes (organization ``gigafab:site:<site>``, see
``tls.site_group``), that the report names this site and that its sequence is not implausibly far
ahead of the gateway's clock (``ledger.check_sequence``), keeps the latest state in its ledger and hands the transitions
to a sink (etcd, in the running system). It acknowledges a stream's first report and
every report whose change has been recorded; a report that repeats the last state is
taken silently (at 10,000 agents an answer to each would cost as much as the reports
themselves). Whatever it refuses is counted by reason, and the stream is ended with
the matching gRPC status; the server itself keeps serving everyone else. Reports,
refusals, transitions and open streams are plain counts on the hot path; the
gateway's metrics (``gigafab.telemetry.metrics``) read them when scraped.

While ``fence_reason`` is set (the gateway lost etcd, see ``records``) every report is
answered with a ``Fence`` directive; once it is cleared, each stream that was told to
fence gets an acknowledgement, which lifts the agent's fence.
"""

from __future__ import annotations

import collections
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from gigafab.agents.arrivals import Arrivals
from gigafab.agents.fencing import FENCE_AFTER_HEADER
from gigafab.agents.ledger import Delays, GpuReport, Lag, Ledger, Refused, Transition, check_sequence
from gigafab.agents.tls import GatewayTls, certificate_sites, site_group
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2_grpc
from grpc_health.v1 import health_pb2 as checks_pb2

from gigafab.health.v1 import health_pb2
from gigafab.health.v1 import health_pb2_grpc as service
from gigafab.telemetry.tracing import span

MAX_REPORT_BYTES = 64 * 1024
"""A report of a node with 8 GPUs is under 2 KiB; anything near this is not a report.
Larger frames are refused (and counted) before they are decoded."""
MAX_FRAME_BYTES = 1024 * 1024
"""gRPC itself drops frames above this without the gateway seeing them (not counted)."""
MAX_DETAILS = 256
"""Characters of a refusal's message sent as the call's status details. The message may quote the report
(its node, its site: anything up to 64 KiB), and a gRPC client drops a status whose trailers pass 16 KiB:
it would see RESOURCE_EXHAUSTED instead of the refusal."""

SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_FRAME_BYTES),
    ("grpc.max_send_message_length", MAX_REPORT_BYTES),
    # Reports are small and steady: bandwidth-delay probing would answer each with a PING
    # frame and cost a third of the gateway's CPU at 10,000 agents.
    ("grpc.http2.bdp_probe", 0),
    # a second gateway started on the same address must fail, not silently share the port
    ("grpc.so_reuseport", 0),
    # gRPC core cancels new calls beyond 1000 not yet taken by the server; when a whole
    # site reconnects at once (a restarted gateway), ten thousand streams arrive together.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
    # ... and cancels those it has not taken within 30 s; under such a storm, wait longer
    # rather than make every agent reconnect and try again.
    ("grpc.server_max_unrequested_time_in_server", 300),
    # agents that fence keep their stream under keepalive (a PING every second or more);
    # the default policy would call that abuse and close their connections
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
)
ARRIVALS_FORGOTTEN = 30.0
"""Seconds after which a connection that opened no stream is no longer counted as waiting, for a gateway
without ``fence_after``; with one, that: an agent not taken by then has fenced, its node is rightly Silent."""
Sink = Callable[[Sequence[Transition]], Awaitable[bool | None]]
"""Records transitions; False when they could not be recorded now."""
HEALTH_NAMES = {
    health_pb2.HEALTH_HEALTHY: "Healthy",
    health_pb2.HEALTH_DEGRADED: "Degraded",
    health_pb2.HEALTH_FAILED: "Failed",
}
STATUS_OF = {
    "identity_mismatch": grpc.StatusCode.PERMISSION_DENIED,
    "wrong_site": grpc.StatusCode.PERMISSION_DENIED,
    "replayed_sequence": grpc.StatusCode.INVALID_ARGUMENT,
    "implausible_sequence": grpc.StatusCode.INVALID_ARGUMENT,
    "malformed": grpc.StatusCode.INVALID_ARGUMENT,
    "oversized": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "fence_mismatch": grpc.StatusCode.FAILED_PRECONDITION,
}


class Listener(Protocol):
    """Where a gateway takes its agents' connections: a grpc.aio server, or the edge (``edge.EdgeServer``)."""

    async def stop(self, grace: float | None) -> None: ...

    async def wait_for_termination(self, timeout: float | None = None) -> bool: ...


class Oversized(ValueError):
    """A frame larger than any report."""


def parse_report(frame: bytes) -> health_pb2.ReportRequest:
    """The request deserializer: refuses oversized frames before decoding them."""
    if len(frame) > MAX_REPORT_BYTES:
        raise Oversized(f"a frame of {len(frame)} bytes is not a report (at most {MAX_REPORT_BYTES})")
    return health_pb2.ReportRequest.FromString(frame)


def details(refusal: Exception) -> str:
    """A refusal's message, cut to ``MAX_DETAILS`` characters."""
    message = str(refusal)
    return message if len(message) <= MAX_DETAILS else f"{message[:MAX_DETAILS]}... ({len(message)} characters)"


def gpu_reports(request: health_pb2.ReportRequest) -> list[GpuReport]:
    reports = []
    for gpu in request.gpus:
        if gpu.health not in HEALTH_NAMES:
            raise Refused("malformed", f"GPU {gpu.index} has no health")
        reports.append(GpuReport(gpu.index, HEALTH_NAMES[gpu.health], gpu.health_reason))
    return reports


@dataclass(frozen=True)
class Speaker:
    """Who holds a stream: its certificate's node and sites, and the fencing it declared."""

    node: str
    sites: frozenset[str]
    fence_after: float | None = None
    """Seconds the agent waits without contact before it fences (``FENCE_AFTER_HEADER``); None: not said."""
    resumed: bool = False
    """Its connection resumed an earlier TLS session (no certificate signed or verified in its handshake)."""


def speaker_from(node: str, certificate: bytes | None, declared: str | bytes | None, resumed: bool = False) -> Speaker:
    """Who holds a stream: its certificate's common name ``node``, the certificate (PEM: its sites), the
    ``FENCE_AFTER_HEADER`` it sent, and whether its connection resumed a TLS session."""
    try:
        fence_after = None if declared is None else float(declared)
    except ValueError:
        fence_after = float("inf")  # unreadable: as good as never fencing
    return Speaker(node, certificate_sites(certificate) if certificate else frozenset(), fence_after, resumed)


def speaker_of(context: grpc.aio.ServicerContext) -> Speaker:
    peer = context.auth_context()
    names, pems = peer.get("x509_common_name", []), peer.get("x509_pem_cert", [])
    declared = dict(context.invocation_metadata() or ()).get(FENCE_AFTER_HEADER)
    resumed = peer.get("ssl_session_reused") == [b"true"]
    return speaker_from(names[0].decode() if names else "", pems[0] if pems else None, declared, resumed)


def frame_refusal(error: DecodeError | Oversized) -> Refused:
    """The refusal of a frame that is no report: too large, or not a ``ReportRequest``."""
    if isinstance(error, Oversized):
        return Refused("oversized", str(error))
    return Refused("malformed", f"not a ReportRequest: {error}")


def check_speaker(node: str, speaker: Speaker, site: str, fence_after: float | None = None) -> None:
    """A node speaks only for itself (certificate CN), only at a gateway of its own site (its O),
    and fences no later than this gateway promised the operator."""
    if node != speaker.node:
        raise Refused("identity_mismatch", f"certificate of {speaker.node!r} cannot report for {node!r}")
    if site not in speaker.sites:
        raise Refused("wrong_site", f"certificate of {speaker.node!r} is no node of site {site} (no O={site_group(site)})")
    if fence_after is not None and speaker.fence_after is not None and speaker.fence_after > fence_after:
        raise Refused(
            "fence_mismatch",
            f"agent of {node} fences after {speaker.fence_after:g} s without contact, but this gateway promised the "
            f"operator {fence_after:g} s: its work could still run when it is started elsewhere; "
            "give agents and gateway the same --fence-after",
        )


class HealthGateway(service.HealthServiceServicer):
    """The ``HealthService`` of one site."""

    def __init__(
        self, ledger: Ledger, sink: Sink, clock: Callable[[], float] = time.monotonic, fence_after: float | None = None
    ) -> None:
        self.ledger = ledger
        self.arrivals = Arrivals(forget_after=fence_after or ARRIVALS_FORGOTTEN, clock=clock)
        """Connections whose handshake began and whose stream has not started (``serve`` counts them)."""
        self.fence_after = fence_after
        """What this gateway promised the operator; agents that fence later are refused (None: not checked)."""
        self.sink = sink
        self.clock = clock
        self.refused: collections.Counter[str] = collections.Counter()
        self.reports = 0
        self.transitions: collections.Counter[str] = collections.Counter()
        """Transitions of nodes and GPUs seen, by the state they lead to."""
        self.streams = 0
        """Report streams open now: one per connected agent."""
        self.opened: collections.Counter[str] = collections.Counter()
        """Report streams opened, by their connection's TLS handshake: ``full`` or ``resumed``."""
        self.latencies: collections.deque[float] = collections.deque(maxlen=100_000)
        """Seconds from a report's ``sent_at`` to its state in the ledger (latest reports)."""
        self.fence_reason: str | None = None
        """Set while the site's agents must fence (the gateway has no contact with etcd)."""
        self.lag = Lag()
        """How far behind the gateway runs (measured by the silence sweep: ``behind``)."""
        self.delays = Delays()
        """How long the reports read now took from their agents (``sent_at``) to the ledger."""

    @property
    def lag_seconds(self) -> float:
        return self.lag.seconds

    def behind(self, late: float, now: float) -> float:
        """Seconds the gateway is behind at ``now``, its timer having run ``late``: the most, recently, of
        that, of the edge's own lateness (``Edge``) and of how long the reports it reads took to reach it."""
        return self.lag.late(max(late, self.delays.take()), now)

    @property
    def connections_waiting(self) -> int:
        return self.arrivals.pending

    async def Report(
        self, request_iterator: AsyncIterator[health_pb2.ReportRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.ReportResponse]:
        stream = Stream(self, speaker_of(context))
        try:
            async for request in request_iterator:
                try:
                    transitions = stream.take(request)
                except Refused as refusal:
                    await context.abort(STATUS_OF[refusal.reason], details(refusal))
                recorded = await self.record(transitions) if transitions else True
                answer = stream.answer(request, transitions, recorded)
                if answer is not None:
                    yield answer
        except (DecodeError, Oversized) as bad:  # a frame that is no report ends the stream
            unreadable = stream.refuse(frame_refusal(bad))
            await context.abort(STATUS_OF[unreadable.reason], details(unreadable))
        finally:
            stream.close()

    async def record(self, transitions: Sequence[Transition]) -> bool:
        """Count ``transitions`` and hand them to the sink; False when they could not be recorded now."""
        self.transitions.update(transition.after for transition in transitions)
        with span("gateway.record", site=self.ledger.site, transitions=len(transitions)):
            return await self.sink(transitions) is not False


class Stream:
    """One agent's Report stream, as the gateway takes it: whichever way its frames arrive (grpc.aio's
    ``Report``, or the compiled edge: ``edge``), its reports are checked, taken into the ledger, counted
    and answered here, and nowhere else."""

    def __init__(self, gateway: HealthGateway, holder: Speaker) -> None:
        self.gateway, self.holder = gateway, holder
        self.first = True
        """No report of this stream was taken yet."""
        self.told_to_fence = False
        gateway.arrivals.taken()
        gateway.streams += 1
        gateway.opened["resumed" if holder.resumed else "full"] += 1

    def take(self, request: health_pb2.ReportRequest) -> list[Transition]:
        """Check ``request`` and take it into the ledger; the transitions it makes (to record). Raises
        ``Refused`` (counted) for a report the gateway will not take: the stream must then end."""
        gateway, node = self.gateway, request.node
        try:
            check_speaker(node.node, self.holder, gateway.ledger.site, gateway.fence_after)
            check_sequence(node.node, request.sequence, time.time_ns() // 1000)
            now = gateway.clock()
            signature = tuple([gpu.health for gpu in request.gpus])
            if gateway.ledger.heard(node.node, node.site, request.sequence, signature, now):
                transitions = []
            else:
                transitions = gateway.ledger.observe(node.node, node.site, request.sequence, gpu_reports(request), now, signature)
        except Refused as refusal:
            raise self.refuse(refusal) from None
        gateway.reports += 1
        sent = request.sent_at
        if sent.seconds:
            delay = time.time() - sent.seconds - sent.nanos / 1e9
            gateway.latencies.append(delay)
            gateway.delays.note(node.node, delay)
        return transitions

    def take_frame(self, frame: bytes) -> tuple[health_pb2.ReportRequest, list[Transition]]:
        """``take`` for a frame as it came off the wire (the edge's): a frame that is no report is a
        ``Refused`` (counted) too."""
        try:
            request = parse_report(frame)
        except (DecodeError, Oversized) as bad:
            raise self.refuse(frame_refusal(bad)) from None
        return request, self.take(request)

    def refuse(self, refusal: Refused) -> Refused:
        """Count ``refusal``; returns it."""
        self.gateway.refused[refusal.reason] += 1
        return refusal

    def answer(
        self, request: health_pb2.ReportRequest, transitions: Sequence[Transition], recorded: bool
    ) -> health_pb2.ReportResponse | None:
        """What to answer a report taken: a ``Fence`` while the site's agents must fence; an acknowledgement
        of the stream's first report, of a change recorded, and of the first report after a fence; else nothing."""
        if self.gateway.fence_reason is not None:
            self.told_to_fence = True
            return health_pb2.ReportResponse(fence=health_pb2.Fence(reason=self.gateway.fence_reason))
        if (transitions and recorded) or self.first or self.told_to_fence:
            self.first = self.told_to_fence = False
            return health_pb2.ReportResponse(ack=health_pb2.Acknowledgement(sequence=request.sequence))
        return None

    def close(self) -> None:
        """The stream ended."""
        self.gateway.streams -= 1
        if not self.first:  # it reported here: until it does again it may be reconnecting
            self.gateway.ledger.closed(self.holder.node)


ACCEPT_LOOPS = 4
"""gRPC servers a gateway runs on its one port. grpc.aio takes new calls one at a time per server,
between the event loop's other work: with 10,000 agents streaming that was some 25 calls a second,
and a thousand agents reconnecting at once waited up to 44 s for their new stream
(bench/reconnect_storm.py). Servers sharing the port (SO_REUSEPORT: the kernel spreads new
connections over them) each take calls, in the same process, for the same ledger."""


def _port_taken(address: str) -> bool:
    """Something listens on ``address`` (tried without SO_REUSEPORT, so our own sharing does not hide it)."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return True
    return False


async def serve_shared(
    gateway: HealthGateway, address: str, tls: GatewayTls, loops: int = ACCEPT_LOOPS
) -> tuple[list[grpc.aio.Server], int]:
    """``serve`` on ``loops`` servers sharing ``address``'s port (one when the port is 0: chosen by the
    system, it could not be shared). Refuses an address another program (a second gateway) listens on."""
    if loops <= 1 or address.endswith(":0"):
        server, port = await serve(gateway, address, tls)
        return [server], port
    if _port_taken(address):
        raise OSError(f"{address} is already in use: is another gateway serving this site here?")
    servers = []
    for _ in range(loops):
        server, port = await serve(gateway, address, tls, share_port=True)
        servers.append(server)
    return servers, port


async def serve(
    gateway: HealthGateway, address: str, tls: GatewayTls, *, share_port: bool = False
) -> tuple[grpc.aio.Server, int]:
    """Start the gateway (and the standard gRPC health service) on ``address``; returns the bound port.
    ``share_port``: with SO_REUSEPORT, for ``serve_shared``."""
    options = [(name, 1 if share_port and name == "grpc.so_reuseport" else value) for name, value in SERVER_OPTIONS]
    server = grpc.aio.server(options=options)
    reports = grpc.stream_stream_rpc_method_handler(
        gateway.Report, request_deserializer=parse_report, response_serializer=health_pb2.ReportResponse.SerializeToString
    )
    methods = grpc.method_handlers_generic_handler("gigafab.health.v1.HealthService", {"Report": reports})
    server.add_generic_rpc_handlers((methods,))
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_secure_port(address, tls.credentials(handshake=gateway.arrivals.connecting))
    await server.start()
    await checks.set("gigafab.health.v1.HealthService", checks_pb2.HealthCheckResponse.SERVING)
    return server, port
