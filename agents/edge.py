"""The gateway's compiled edge: ``gigafab-edge`` (Go, ``agents/edge``) terminates the agents'
mTLS, HTTP/2 and gRPC, and this module takes each of its Report streams' frames with the same
``gateway.Stream`` as grpc.aio's ``HealthGateway.Report`` does.

grpc.aio alone costs about a core at 10,000 agents reporting once a second, whatever the
handler does (``bench/grpc_floor.py``); the edge carries those frames in a compiled
process, so the gateway's Python does only the gateway's own work: a report that repeats
its node's state is taken in the socket's callback, with no task woken for it. Nothing of
what the gateway decides moves to the edge: it passes each stream's frames undecoded, with
the client certificate and the declared fencing of the stream's holder, and sends back the
answers and the status the gateway gives.

The two processes talk over a socket pair (the edge inherits its end) in frames: a
9-byte header (payload length, kind, stream: ``>IBI``) and the payload. From the edge:

- ``L`` listening (the port); ``H`` a connection was accepted (its TLS handshake begins);
- ``O`` a stream opened (JSON: node, certificate, fenceAfter, resumed); ``M`` one of its frames;
  ``C`` the agent ended it or went away;
- ``G`` how late the edge's own timer ran, at worst, in the last quarter second, and when
  this frame was queued (``>IQ``: milliseconds; microseconds since 1970). The agents'
  frames waited that long for a CPU in the edge, and as long as this frame took to arrive
  in the queue to the gateway; the gateway allows for both before it declares a node
  Silent, as for its own lag (its event loop can be on time while a backlog waits in the
  socket).

From the gateway: ``A`` an encoded answer; ``E`` end the stream (a status code, ``>I``,
and its details); ``B`` a beat (``>I``: for how many milliseconds more the gateway
vouches for the site). The edge exits when the gateway closes the socket.

The edge keeps the site's fencing promise when the gateway cannot. A gateway process that
stops (frozen, its event loop hung) renews no lease, and the operator starts the site's
work elsewhere ``fenceAfter`` after its last contact; the agents, whose stream and
keepalives the edge keeps answering, would not know. So the gateway beats four times a
second with the moment its own ``fence_reason`` would start (``records.vouched_until``);
once that moment has passed without a beat for a second, the edge tells every agent to
fence, and when the gateway beats again it ends those streams: the agents reconnect and
the gateway, on their new stream, acknowledges them (lifting the fence) or fences them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from gigafab.agents.gateway import STATUS_OF, HealthGateway, Stream, details, speaker_from
from gigafab.agents.ledger import Refused, Transition
from gigafab.agents.tls import GatewayTls

from gigafab.health.v1 import health_pb2

HEADER = struct.Struct(">IBI")
UINT32 = struct.Struct(">I")
LATENESS = struct.Struct(">IQ")
LISTENING, HANDSHAKE, OPEN, MESSAGE, CLOSED, LAG, ANSWER, END, BEAT = (kind.encode() for kind in "LHOMCGAEB")
START_SECONDS = 30.0
"""How long the edge may take to listen (it loads its certificates first)."""
BEAT_SECONDS = 0.25
"""How often the gateway tells its edge until when it vouches for the site; the edge takes a second
without a beat for a gateway that no longer serves (``agents/edge/vouch.go``)."""
UNLIMITED = 0xFFFF_FFFF
"""A beat's credit (milliseconds) that sets no limit: a gateway that promised the operator nothing."""
log = logging.getLogger("gigafab.gateway.edge")


class EdgeLost(RuntimeError):
    """The edge process ended while the gateway was serving."""


class EdgeStream:
    """One agent's Report stream at the edge. Its frames are taken as they arrive, in the socket's
    callback: a report that repeats its node's state is taken and needs no answer, with no task woken
    for it. A report that changes something waits for its record (``HealthGateway.record``) before it
    is answered, and the stream's later frames wait behind it, as on a grpc.aio stream; but their
    arrival counts (``Ledger.waiting``): a node is not declared Silent because etcd is slow to take
    the record of its last change (after a storm of Silents, thousands of nodes recover at once)."""

    def __init__(self, ident: int, stream: Stream) -> None:
        self.ident, self.stream = ident, stream
        self.waiting: collections.deque[bytes] | None = None
        """Frames behind a report whose record is under way (None: none under way)."""
        self.closing = False
        """The agent ended its stream; it ends once the frames waiting are taken."""


class Edge(asyncio.Protocol):
    """The gateway's end of the socket: frames in, taken by each stream's ``gateway.Stream``, answers out."""

    def __init__(self, gateway: HealthGateway, vouched_until: Callable[[], float] | None = None) -> None:
        self.gateway = gateway
        self.vouched_until = vouched_until
        """Until when (monotonic) the gateway vouches for its site (None: no limit, it promised nothing)."""
        self.streams: dict[int, EdgeStream] = {}
        self.listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._records: set[asyncio.Task[None]] = set()
        self._beating: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._beating = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while self._transport is not None and not self._transport.is_closing():
            credit = UNLIMITED
            if self.vouched_until is not None:
                credit = max(0, min(UNLIMITED - 1, int((self.vouched_until() - time.monotonic()) * 1000)))
            self._send(BEAT, 0, UINT32.pack(credit))
            await asyncio.sleep(BEAT_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._beating is not None:
            self._beating.cancel()
        for ident in list(self.streams):
            self._end(ident, grpc.StatusCode.UNAVAILABLE, "")
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.listening.done():
            self.listening.set_exception(EdgeLost("the edge closed its socket before it listened"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER.size:
            size, kind, ident = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            self._dispatch(kind, ident, bytes(buffer[start + HEADER.size : end]))
            start = end
        del buffer[:start]

    def _dispatch(self, kind: int, ident: int, payload: bytes) -> None:
        if kind == MESSAGE[0]:
            stream = self.streams.get(ident)
            if stream is not None:
                self._take(stream, payload)
        elif kind == LAG[0]:
            late_ms, queued_us = LATENESS.unpack(payload)
            self.gateway.lag.late(late_ms / 1000 + max(0.0, time.time() - queued_us / 1e6), time.monotonic())
        elif kind == HANDSHAKE[0]:
            self.gateway.arrivals.connecting()
        elif kind == OPEN[0]:
            holder = json.loads(payload)
            speaker = speaker_from(
                holder["node"], holder["certificate"].encode(), holder.get("fenceAfter"), holder.get("resumed", False)
            )
            opened = Stream(self.gateway, speaker)
            self.streams[ident] = EdgeStream(ident, opened)
        elif kind == CLOSED[0]:
            stream = self.streams.get(ident)
            if stream is not None and stream.waiting is not None:
                stream.closing = True
            elif stream is not None:
                self._end(ident, grpc.StatusCode.OK, "")
        elif kind == LISTENING[0] and not self.listening.done():
            self.listening.set_result(int(payload))

    def _take(self, stream: EdgeStream, frame: bytes) -> None:
        """Take one frame of ``stream``: refuse it (ending the stream), or take its report and answer it,
        at once or, when it changed something, once that is recorded."""
        if stream.waiting is not None:
            stream.waiting.append(frame)
            # its holder's last report was taken and waits to be recorded: this one shows it alive
            self.gateway.ledger.waiting(stream.stream.holder.node, self.gateway.clock())
            return
        try:
            request, transitions = stream.stream.take_frame(frame)
        except Refused as refusal:
            self._end(stream.ident, STATUS_OF[refusal.reason], details(refusal))
            return
        if not transitions:
            self._answer(stream, stream.stream.answer(request, transitions, True))
            return
        stream.waiting = collections.deque()
        recording = asyncio.get_running_loop().create_task(self._record(stream, request, transitions))
        self._records.add(recording)
        recording.add_done_callback(self._records.discard)

    async def _record(self, stream: EdgeStream, request: health_pb2.ReportRequest, transitions: list[Transition]) -> None:
        recorded = await self.gateway.record(transitions)
        if self.streams.get(stream.ident) is not stream:
            return  # ended meanwhile
        self._answer(stream, stream.stream.answer(request, transitions, recorded))
        waiting, stream.waiting = stream.waiting or collections.deque(), None
        while waiting and stream.waiting is None and self.streams.get(stream.ident) is stream:
            self._take(stream, waiting.popleft())
        if stream.waiting is not None:
            stream.waiting.extend(waiting)  # another record under way: the rest wait behind it
        elif stream.closing and self.streams.get(stream.ident) is stream:
            self._end(stream.ident, grpc.StatusCode.OK, "")

    def _answer(self, stream: EdgeStream, answer: health_pb2.ReportResponse | None) -> None:
        if answer is not None:
            self._send(ANSWER, stream.ident, answer.SerializeToString())

    def _end(self, ident: int, code: grpc.StatusCode, message: str) -> None:
        stream = self.streams.pop(ident, None)
        if stream is not None:
            stream.stream.close()
            self._send(END, ident, UINT32.pack(code.value[0]) + message.encode())

    def _send(self, kind: bytes, ident: int, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(HEADER.pack(len(payload), kind[0], ident) + payload)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class EdgeServer:
    """A running edge process and its socket; stops like a grpc.aio server."""

    def __init__(self, process: asyncio.subprocess.Process, edge: Edge, stderr: asyncio.Task[list[str]]) -> None:
        self.process, self.edge, self._stderr = process, edge, stderr
        self._stopping = False

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Until the edge ends; raises ``EdgeLost`` when it ended without ``stop``."""
        try:
            await asyncio.wait_for(asyncio.shield(self.edge.lost), timeout)
        except TimeoutError:
            return False
        if not self._stopping:
            code = await self.process.wait()
            raise EdgeLost(f"the gateway's edge exited with status {code}: {' '.join(await self._stderr)}")
        return True

    async def stop(self, grace: float | None) -> None:
        """Close the socket (the edge ends every stream and exits); killed if it has not within ``grace``."""
        self._stopping = True
        self.edge.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace or 1.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        await self._stderr


async def _relay(stream: asyncio.StreamReader) -> list[str]:
    """The edge's stderr into the gateway's log; returns its last lines."""
    last: list[str] = []
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        log.warning("%s", line)
        last = [*last[-4:], line]
    return last


async def serve_edge(
    gateway: HealthGateway, address: str, tls: GatewayTls, binary: Path, vouched_until: Callable[[], float] | None = None
) -> tuple[EdgeServer, int]:
    """Start ``binary`` (gigafab-edge) on ``address`` for ``gateway``; returns it and the bound port.
    ``vouched_until``: until when (monotonic) the gateway vouches for its site (see the module).
    Raises ``OSError`` with the edge's reason when it cannot listen (the port is taken, a certificate unreadable)."""
    ours, theirs = socket.socketpair()
    with theirs:
        argv = [str(binary), "--listen", address, "--cert", str(tls.cert), "--key", str(tls.key), "--ca", str(tls.ca)]
        process = await asyncio.create_subprocess_exec(
            *argv, "--core-fd", str(theirs.fileno()), pass_fds=(theirs.fileno(),), stderr=asyncio.subprocess.PIPE
        )
    assert process.stderr is not None
    stderr = asyncio.create_task(_relay(process.stderr))
    _, edge = await asyncio.get_running_loop().create_unix_connection(lambda: Edge(gateway, vouched_until), sock=ours)
    server = EdgeServer(process, edge, stderr)
    try:
        port = await asyncio.wait_for(asyncio.shield(edge.listening), START_SECONDS)
    except (EdgeLost, TimeoutError) as failed:
        await server.stop(1.0)
        raise OSError(f"the gateway's edge did not start on {address}: {' '.join(await stderr) or failed}") from failed
    return server, port
