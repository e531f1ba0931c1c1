"""Prometheus metrics of the operator and of a site's health gateway, each in its own registry.

The operator sets its metrics where its handlers act (``OperatorMetrics``). A gateway
counts in plain integers on its hot path (ten thousand agents report every second) and
``GatewayCollector`` reads those counts only when scraped. ``serve`` starts the HTTP
server of one registry on ``HOST:PORT`` (``/metrics``, in the text format).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

FAILOVER_BUCKETS = (1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds: a failover waits at least for the lost site's fence (fenceAfter plus a margin)."""


class OperatorMetrics:
    """Everything the operator exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.reconcile_seconds = Histogram(
            "gigafab_reconcile_duration_seconds",
            "Seconds one run of a kopf handler took, by the kind it reconciles and the handler's name.",
            ["kind", "handler"],
            registry=registry,
        )
        self.placement_seconds = Histogram(
            "gigafab_placement_duration_seconds",
            "Seconds from asking where a GpuWorkload runs to the decision (the placement lock, the snapshot, "
            "the judgement of every site); outcome placed or no_site_fits.",
            ["outcome"],
            registry=registry,
        )
        self.failovers = Counter(
            "gigafab_failovers",
            "GpuWorkloads moved to another site because of trouble at theirs, by the site they left and why "
            "(site_lost, site_draining, no_room).",
            ["site", "reason"],
            registry=registry,
        )
        self.failover_seconds = Histogram(
            "gigafab_failover_duration_seconds",
            "Seconds from the loss or fault that made a GpuWorkload leave its site to its new placement.",
            ["site", "reason"],
            buckets=FAILOVER_BUCKETS,
            registry=registry,
        )
        self.healthy_gpus = Gauge(
            "gigafab_site_healthy_gpus",
            "GPUs of a Site that can take work (its status.gpusHealthy).",
            ["site"],
            registry=registry,
        )
        self.power_draw_kw = Gauge(
            "gigafab_site_power_draw_kw",
            "Power in kW of the work placed on a Site (its status.powerDrawKW).",
            ["site"],
            registry=registry,
        )
        self.power_cap_kw = Gauge(
            "gigafab_site_power_cap_kw",
            "Power in kW a Site may draw: min(spec.powerBudgetKW, spec.powerCapKW).",
            ["site"],
            registry=registry,
        )
        self.health_records_refused = Counter(
            "gigafab_health_records_refused",
            "Health records in etcd the operator did not apply, by why (malformed, key_mismatch, unknown_node, "
            "unlabelled_node, node_of_another_site).",
            ["reason"],
            registry=registry,
        )


class GatewayCounts(Protocol):
    """What a running gateway counts (``gigafab.agents.gateway.HealthGateway``)."""

    @property
    def reports(self) -> int:
        """Reports taken since start."""

    @property
    def refused(self) -> Mapping[str, int]:
        """Calls refused, by reason."""

    @property
    def transitions(self) -> Mapping[str, int]:
        """Health transitions, by the state they lead to."""

    @property
    def streams(self) -> int:
        """Report streams open now: one per connected agent."""

    @property
    def opened(self) -> Mapping[str, int]:
        """Report streams opened, by their connection's TLS handshake (``full``, ``resumed``)."""

    @property
    def lag_seconds(self) -> float:
        """How far behind the gateway runs (its event loop, its edge, the reports it reads); added to the Silent threshold."""

    @property
    def connections_waiting(self) -> int:
        """Connections whose handshake began and whose Report stream has not started yet."""


HANDSHAKES = ("full", "resumed")
"""The TLS handshakes a gateway counts its streams' connections by (``GatewayCounts.opened``)."""


class GatewayCollector(Collector):
    """A gateway's metrics, read from its counts at each scrape. ``reasons`` and ``states`` are
    exported at 0 before the first of them happens, so that rates exist from the start."""

    def __init__(self, site: str, counts: GatewayCounts, reasons: Iterable[str] = (), states: Iterable[str] = ()) -> None:
        self.site = site
        self.counts = counts
        self.reasons = tuple(reasons)
        self.states = tuple(states)

    def collect(self) -> Iterator[Metric]:
        counts, site = self.counts, self.site
        yield _counter(
            "gigafab_gateway_reports",
            "Health reports the gateway took from its agents (reports/s is its rate).",
            ["site"],
            [([site], counts.reports)],
        )
        yield _by_label(
            "gigafab_gateway_transitions",
            "Health transitions of nodes and GPUs the gateway saw, by the state they lead to "
            "(Healthy, Degraded, Failed, Silent).",
            site,
            "to_state",
            counts.transitions,
            self.states,
        )
        yield _by_label(
            "gigafab_gateway_rejected_calls",
            "Report calls the gateway refused, by reason (identity_mismatch, wrong_site, fence_mismatch, "
            "replayed_sequence, implausible_sequence, malformed, oversized).",
            site,
            "reason",
            counts.refused,
            self.reasons,
        )
        yield _by_label(
            "gigafab_gateway_opened_streams",
            "Report streams opened, by the TLS handshake of their connection: full (certificates signed and "
            "verified) or resumed (an earlier session of the same agent: cheaper, as after a network blip).",
            site,
            "handshake",
            counts.opened,
            HANDSHAKES,
        )
        agents = GaugeMetricFamily("gigafab_gateway_connected_agents", "Agents with a report stream open now.", labels=["site"])
        agents.add_metric([site], counts.streams)
        yield agents
        lag = GaugeMetricFamily(
            "gigafab_gateway_lag_seconds",
            "How far behind the gateway runs: its event loop, its edge, or the reports it reads (the median time "
            "from their agents to its ledger); nodes are declared Silent that much later.",
            labels=["site"],
        )
        lag.add_metric([site], counts.lag_seconds)
        yield lag
        waiting = GaugeMetricFamily(
            "gigafab_gateway_waiting_connections",
            "Connections whose handshake began and whose report stream the gateway has not started yet "
            "(those that never open one are forgotten after a while).",
            labels=["site"],
        )
        waiting.add_metric([site], counts.connections_waiting)
        yield waiting


def _by_label(
    name: str, documentation: str, site: str, label: str, counts: Mapping[str, int], known: Iterable[str]
) -> CounterMetricFamily:
    """A counter of ``site`` by ``label``: ``counts``, and 0 for each ``known`` value not counted yet."""
    values = dict.fromkeys(known, 0) | dict(counts)  # dict(): one atomic copy
    return _counter(name, documentation, ["site", label], [([site, value], count) for value, count in sorted(values.items())])


def _counter(name: str, documentation: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in rows:
        family.add_metric(values, count)
    return family


def gateway_registry(
    site: str, counts: GatewayCounts, reasons: Iterable[str] = (), states: Iterable[str] = ()
) -> CollectorRegistry:
    """A registry of its own for one gateway's metrics."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(site, counts, reasons, states))
    return registry


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9000`` for IPv6) → host and port."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - ":PORT" means every address, as the user asked


def serve(registry: CollectorRegistry, address: str) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` on ``HOST:PORT`` in a daemon thread; the server's ``server_port`` is the port
    bound (for port 0), and ``shutdown()`` stops it."""
    host, port = split_address(address)
    return start_http_server(port, host, registry)
