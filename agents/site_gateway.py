"""``gigafab gateway --site S``: the health gateway of one site, end to end.

Serves ``HealthService`` over mTLS (grpc.aio in this process, or through the compiled edge:
``edge``), keeps the ledger, sweeps it for silent nodes ten times a second, and writes every
transition to etcd under the gateway's lease. The sweep allows for how far behind the gateway
runs (its own lag, its edge's and its reports': ``ledger.Lag``, ``ledger.Delays``) and, for
nodes whose stream ended, for the connections it has not taken yet (``arrivals.Arrivals``).
With ``metrics_address`` it serves its metrics there (``gigafab.telemetry.metrics``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import aetcd
from gigafab.agents.gateway import STATUS_OF, HealthGateway, Listener, serve_shared
from gigafab.agents.ledger import DEGRADED, FAILED, HEALTHY, SILENT, Ledger
from gigafab.agents.records import ETCD_CHANNEL, EtcdRecords
from gigafab.agents.tls import GatewayTls

SWEEP_SECONDS = 0.1
"""Nodes are kept oldest report first, so a sweep looks at few of them: it can be frequent."""


@dataclass(frozen=True)
class GatewayConfig:
    site: str
    listen: str
    tls: GatewayTls
    etcd_host: str = "127.0.0.1"
    etcd_port: int = 2379
    silent_after: float = 3.0
    lease_ttl: int = 5
    fence_after: float = 4.0
    """Seconds without contact after which the site's agents stop their workloads."""
    stats_file: str | None = None
    """Where to write counters and latencies every 2 s, as JSON (for benchmarks)."""
    metrics_address: str | None = None
    """``HOST:PORT`` to serve Prometheus metrics on (None: none)."""
    edge: Path | None = None
    """The ``gigafab-edge`` binary, to carry the agents' connections in a compiled process (``edge``);
    None: grpc.aio servers in this one."""


class SiteGateway:
    """A running gateway: server, ledger, sweeper and etcd records."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.client = aetcd.Client(host=config.etcd_host, port=config.etcd_port, timeout=config.lease_ttl, options=ETCD_CHANNEL)
        self.ledger = Ledger(config.site, config.silent_after)
        identity = f"{socket.gethostname()}/{config.site}/{time.time_ns()}"
        self.records = EtcdRecords(self.client, self.ledger, identity, ttl=config.lease_ttl, fence_after=config.fence_after)
        self.service = HealthGateway(self.ledger, self.records, fence_after=config.fence_after)
        self.servers: list[Listener] = []
        self.port = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[bool]] = set()
        self.silenced = 0
        """Nodes turned Silent since start."""
        self.metrics: WSGIServer | None = None

    async def start(self) -> int:
        await self.records.start()
        if self.config.edge is not None:
            from gigafab.agents.edge import serve_edge

            edge, self.port = await serve_edge(
                self.service, self.config.listen, self.config.tls, self.config.edge, self.records.vouched_until
            )
            self.servers = [edge]
        else:
            grpc_servers, self.port = await serve_shared(self.service, self.config.listen, self.config.tls)
            self.servers = list(grpc_servers)
        self._sweeper = asyncio.create_task(self._sweep())
        if self.config.metrics_address:
            self.metrics = self._serve_metrics(self.config.metrics_address)
        if self.config.stats_file:
            self._stats = asyncio.create_task(self._write_stats(self.config.stats_file))
        return self.port

    def _serve_metrics(self, address: str) -> WSGIServer:
        from gigafab.telemetry.metrics import gateway_registry, serve

        registry = gateway_registry(self.config.site, self.service, STATUS_OF, (HEALTHY, DEGRADED, FAILED, SILENT))
        server, _ = serve(registry, address)
        return server

    async def _write_stats(self, path: str) -> None:
        while True:
            await asyncio.sleep(2.0)
            latencies = sorted(self.service.latencies)
            self.service.latencies.clear()
            document = {
                "at": time.time(),
                "reports": self.service.reports,
                "refused": dict(self.service.refused),
                "writes": self.records.writes,
                "nodes": len(self.ledger.nodes),
                "silenced": self.silenced,
                "lag_s": round(self.service.lag_seconds, 3),
                "connections_waiting": self.service.connections_waiting,
                "latency_p50": quantile(latencies, 0.50),
                "latency_p99": quantile(latencies, 0.99),
                "samples": len(latencies),
            }
            staged = Path(f"{path}.tmp")
            staged.write_text(json.dumps(document))
            staged.replace(path)  # readers never see half a document

    async def _sweep(self) -> None:
        while True:
            due = time.monotonic() + SWEEP_SECONDS
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            self.service.fence_reason = self.records.fence_reason(now)
            behind = self.service.behind(now - due, now)
            silent = self.ledger.sweep(now, behind=behind, reconnecting=self.service.arrivals.waiting(now))
            self.silenced += len(silent)
            if silent:  # written in the background: without contact a write waits, the sweep must not
                writing = asyncio.create_task(self.service.record(silent))
                self._writes.add(writing)
                writing.add_done_callback(self._writes.discard)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*(server.stop(1) for server in self.servers))
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.shutdown)  # waits for its loop's next poll (0.5 s)
            self.metrics.server_close()
        await self.records.stop()
        await self.client.close()


def quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of an ascending list (None when empty)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


async def run(config: GatewayConfig) -> None:
    gateway = SiteGateway(config)
    await gateway.start()
    try:
        await gateway.servers[0].wait_for_termination()
    finally:
        await gateway.stop()
