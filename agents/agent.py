"""The node agent: reads GPU health, classifies it, and streams it to its site's gateway.

It reports every ``interval`` seconds and at once when a verdict changes. While the
gateway is unreachable it keeps only the latest state (never a queue) and reconnects
with exponential backoff and jitter, trying each gateway address in turn. A silent
node (the simulated ``silent`` fault: its link is down) drops its stream and does not
reconnect until it is reset.

Given a ``FenceKeeper`` (see ``fencing`` and ``keeper``), the agent keeps its stream under
gRPC keepalive so that a dead gateway is noticed within ``Fence.blind`` seconds, tells the
keeper when contact comes and goes and when the gateway orders a fence, and runs the
keeper's loop beside its stream: the loop fences the node, keeps its fence on the host
and pets its watchdog.

The agent keeps the TLS sessions of its gateways (``SESSIONS_KEPT``) across its
connections, so that a reconnection after a blip resumes one: no certificate is signed
or verified again, which makes a gateway's storm of reconnections cheaper. The gateway
resumes only a session whose certificate chain still verifies against its current CA
and has not expired; after a restart of agent or gateway the handshake is a full one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import grpc
from gigafab.agents.classify import Health, Reading, Verdict, classify
from gigafab.agents.fencing import FENCE_AFTER_HEADER, keepalive_seconds
from gigafab.agents.keeper import FenceKeeper
from gigafab.agents.tls import AgentTls
from google.protobuf.timestamp_pb2 import Timestamp
from grpc.experimental import session_cache

from gigafab.health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger("gigafab.agent")

SESSIONS_KEPT = 4
"""TLS sessions the agent keeps to resume. gRPC keys them by the name the gateway's certificate is
verified against (``AgentTls.server_name``), which a site's gateways share: in practice one."""


class GpuInfo(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def uuid(self) -> str: ...
    @property
    def model(self) -> str: ...


class GpuBackend(Protocol):
    """Where readings come from: ``SimulatedBackend`` or ``NvmlBackend``."""

    @property
    def gpus(self) -> Sequence[GpuInfo]: ...
    @property
    def silent(self) -> bool: ...
    def read(self) -> list[Reading]: ...


VERSION = "0.1.0"


class Agent:
    """One node's agent."""

    def __init__(
        self,
        node: str,
        site: str,
        backend: GpuBackend,
        gateways: Sequence[str],
        tls: AgentTls,
        interval: float = 1.0,
        fence: FenceKeeper | None = None,
    ) -> None:
        self.node, self.site, self.backend = node, site, backend
        self.gateways, self.tls, self.interval = list(gateways), tls, interval
        self.verdicts = [Verdict() for _ in backend.gpus]
        # sequences keep rising across restarts of the agent, so none looks replayed
        self.sequence = time.time_ns() // 1000
        self.acknowledged = 0
        self.changed = asyncio.Event()
        self.connected = False
        self.fence = fence
        self.reset = False
        if fence is not None:
            fence.on_reset = self._node_reset
        self.sessions = session_cache.ssl_session_cache_lru(SESSIONS_KEPT)
        """TLS sessions of its gateways, shared by its connections: a reconnection resumes one."""

    def sample(self) -> bool:
        """Read and classify every GPU; True when a verdict changed."""
        changed = False
        for index, reading in enumerate(self.backend.read()):
            verdict = classify(self.verdicts[index], reading)
            changed |= (verdict.health, verdict.reason) != (self.verdicts[index].health, self.verdicts[index].reason)
            self.verdicts[index] = verdict
        return changed

    def report(self) -> health_pb2.ReportRequest:
        # follows the clock, so a gateway that holds a sequence pushed ahead by a thief takes this node again
        # once that moment has passed (``ledger.SEQUENCE_AHEAD_ALLOWED_US``), not 10^6 reports later
        self.sequence = max(self.sequence + 1, time.time_ns() // 1000)
        sent = Timestamp()
        sent.FromNanoseconds(time.time_ns())
        gpus = [
            health_pb2.GpuState(
                index=gpu.index,
                uuid=gpu.uuid,
                model=gpu.model,
                health=f"HEALTH_{verdict.health.name}",
                health_reason=verdict.reason if verdict.health > Health.HEALTHY else "",
            )
            for gpu, verdict in zip(self.backend.gpus, self.verdicts, strict=True)
        ]
        return health_pb2.ReportRequest(
            node=health_pb2.NodeIdentity(node=self.node, site=self.site, agent_version=VERSION),
            sequence=self.sequence,
            sent_at=sent,
            gpus=gpus,
        )

    async def _reports(self) -> AsyncIterator[health_pb2.ReportRequest]:
        """Reports until the certificate files change or the node was reset (then the stream ends and is opened anew)."""
        stamp = self.tls.stamp()
        self.reset = False
        while self.tls.stamp() == stamp and not self.backend.silent and not self.reset:
            self.sample()
            yield self.report()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.interval)

    def poke(self) -> None:
        """Report now (after an injected fault)."""
        self.changed.set()

    def _node_reset(self) -> None:
        """The node's watchdog stopped it (simulated: this agent lived on). As after a reboot, a new stream,
        whose first report a gateway with contact acknowledges, which lifts the fence."""
        self.reset = True
        self.changed.set()

    def _options(self) -> list[tuple[str, object]]:
        options: list[tuple[str, object]] = [
            ("grpc.ssl_target_name_override", self.tls.server_name),
            ("grpc.ssl_session_cache", self.sessions),
        ]
        if self.fence is not None:
            keepalive_ms = int(keepalive_seconds(self.fence.fence_after) * 1000)
            options += [
                ("grpc.keepalive_time_ms", keepalive_ms),
                ("grpc.keepalive_timeout_ms", keepalive_ms),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        return options

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """Tells the gateway when this agent fences, so it can refuse one that would fence too late."""
        return () if self.fence is None else ((FENCE_AFTER_HEADER, f"{self.fence.fence_after:g}"),)

    def _answered(self, answer: health_pb2.ReportResponse) -> None:
        self.connected = True
        if answer.WhichOneof("directive") == "fence":
            if self.fence is not None:
                self.fence.ordered(f"gateway: {answer.fence.reason}")
            return
        if self.fence is not None:
            self.fence.connected()
        self.acknowledged = max(self.acknowledged, answer.ack.sequence)

    async def run(self) -> None:
        keeper = asyncio.create_task(self.fence.run()) if self.fence is not None else None
        try:
            await self._connect_forever()
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper  # its clean stop: the watchdog and the record

    async def _connect_forever(self) -> None:
        backoff = 0.2
        attempt = 0
        while True:
            if self.backend.silent:
                await asyncio.sleep(self.interval)
                continue
            address = self.gateways[attempt % len(self.gateways)]
            attempt += 1
            try:
                async with grpc.aio.secure_channel(address, self.tls.credentials(), options=self._options()) as channel:
                    stub = health_pb2_grpc.HealthServiceStub(channel)  # type: ignore[no-untyped-call]
                    async for answer in stub.Report(self._reports(), metadata=self._metadata()):
                        backoff = 0.2
                        self._answered(answer)
            except grpc.aio.AioRpcError as failure:
                log.info("agent %s: gateway %s: %s", self.node, address, failure.code().name)
            except OSError as missing:  # an enrolling agent before its first certificate (agents/renewal.py)
                log.info("agent %s: no certificate to connect with yet: %s", self.node, missing)
            self.connected = False
            if self.fence is not None:
                self.fence.disconnected()
            await asyncio.sleep(backoff * (0.5 + random.random()))  # noqa: S311 - jitter, not security
            backoff = min(backoff * 2, 10.0)
