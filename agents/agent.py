"""The node agent: reads GPU health, classifies it, and streams it to its site's gateway.

It reports every ``interval`` seconds and at once when a verdict changes. While the
gateway is unreachable it keeps only the latest state (never a queue) and reconnects
with exponential backoff and jitter, trying each gateway address in turn. A silent
node (the simulated ``silent`` fault: its link is down) drops its stream and does not
reconnect until it is reset.

Given a ``Fence`` (see ``fencing``), the agent keeps its stream under gRPC keepalive so
that a dead gateway is noticed within ``Fence.blind`` seconds, and fences the node when
contact has been lost for ``fence_after`` or when the gateway orders it.

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
from gigafab.agents.fencing import FENCE_AFTER_HEADER, Fence, keepalive_seconds
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
        fence: Fence | None = None,
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
        self.sequence += 1
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
        """Reports until the certificate files change (then the stream ends and is opened anew)."""
        stamp = self.tls.stamp()
        while self.tls.stamp() == stamp and not self.backend.silent:
            self.sample()
            yield self.report()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.interval)

    def poke(self) -> None:
        """Report now (after an injected fault)."""
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

    async def _watch_fence(self) -> None:
        assert self.fence is not None
        while True:
            self.fence.check()
            await asyncio.sleep(0.25)

    async def run(self) -> None:
        watchdog = asyncio.create_task(self._watch_fence()) if self.fence is not None else None
        try:
            await self._connect_forever()
        finally:
            if watchdog is not None:
                watchdog.cancel()

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
