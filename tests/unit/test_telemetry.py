"""Metrics and spans without a cluster: tracing is off unless asked for; the operator's real
handlers, placement and failover make spans with their attributes and move their metrics; and
every metric renders in Prometheus' text format with its HELP text."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gigafab.operator import moves, reservations, telemetry, workload_status, workloads
from gigafab.operator.site_contact import Contacts
from gigafab.operator.site_health import NodeSummary
from gigafab.operator.state import Client, TenantRecord
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gigafab.cli import _parser
from gigafab.telemetry import tracing
from gigafab.telemetry.metrics import gateway_registry, split_address

NAMESPACE, TENANT = "umcg-research", "umcg"


def test_tracing_is_off_by_default_no_sdk_no_exporter() -> None:
    program = (
        "import sys\n"
        "from gigafab.telemetry import tracing\n"
        "provider = tracing.configure('gigafab-operator', None)\n"
        "with tracing.span('reconcile Site', site='niemeyer') as span:\n"
        "    recording = span.is_recording()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter')))\n"
        "print(provider, tracing.enabled(), recording, loaded)\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    answer = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=environment, check=True)
    assert answer.stdout.split() == ["None", "False", "False", "[]"]


def test_the_standard_variable_turns_the_exporter_on() -> None:
    assert tracing.endpoint_of(None, {}) is None
    assert tracing.endpoint_of(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "http://collector:4317"
    assert tracing.endpoint_of("http://mine:4317", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "http://mine:4317"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317"}
    assert tracing.endpoint_of(None, both) == "http://traces:4317"


def test_operator_and_gateway_take_metrics_and_otlp_options() -> None:
    operator = _parser().parse_args(["operator", "--metrics-address", "127.0.0.1:20940", "--otlp-endpoint", "http://c:4317"])
    assert (operator.metrics_address, operator.otlp_endpoint) == ("127.0.0.1:20940", "http://c:4317")
    assert _parser().parse_args(["operator"]).otlp_endpoint is None
    gateway = _parser().parse_args(["gateway", "--site=niemeyer", "--cert=c", "--key=k", "--ca=a", "--metrics-address=:9100"])
    assert gateway.metrics_address == ":9100"
    assert split_address(":9100") == ("0.0.0.0", 9100)
    assert split_address("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address("localhost")


# -- spans of the real handlers ------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)


class RecordingKube:
    """Stands in for the Kubernetes client: takes every write, answers nothing."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []

    def ensure(self, manifest: dict[str, Any]) -> None:
        self.writes.append(("ensure", manifest))

    def merge_patch(self, path: str, patch: dict[str, Any]) -> None:
        self.writes.append((path, patch))

    def delete(self, path: str) -> None:
        self.writes.append(("delete", path))

    def create(self, manifest: dict[str, Any]) -> None:
        self.writes.append(("create", manifest))


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> RecordingKube:
    recording = RecordingKube()
    monkeypatch.setattr(Client, "kube", recording)
    for module, memory in ((reservations, "_reserved"), (workloads, "_epochs"), (workload_status, "_running")):
        monkeypatch.setattr(module, memory, {})  # what placement remembers stays with the test
    return recording


def site(name: str, data_classes: list[str], healthy: str = "True") -> dict[str, Any]:
    return {
        "apiVersion": "gigafab.nl/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"jurisdiction": "NL", "dataClasses": data_classes, "powerBudgetKW": 4000, "lifecycle": "Active"},
        "status": {"conditions": [{"type": "Healthy", "status": healthy}, {"type": "Ready", "status": "True"}]},
    }


def gpu_workload(name: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "train", "image": "registry.example/train:1"}]}}
    return {
        "apiVersion": "gigafab.nl/v1alpha1",
        "kind": "GpuWorkload",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1},
        "spec": {"gpus": 2, "template": template, "sites": ["niemeyer"]},
        "status": status or {},
    }


def indexes(*placed: dict[str, Any], niemeyer_healthy: str = "True") -> dict[str, Any]:
    """kopf's indexes as the handlers see them: niemeyer and de-halm, two nodes each, and ``placed`` work."""
    sites = [site("niemeyer", ["internal", "health"], niemeyer_healthy), site("de-halm", ["internal"])]
    return {
        "namespace_index": {NAMESPACE: [TENANT]},
        "tenant_index": {TENANT: [TenantRecord(TENANT, "uid-umcg", 1, {"dataClass": "internal"}, {}, {})]},
        "site_index": {body["metadata"]["name"]: [{"name": body["metadata"]["name"], "body": body}] for body in sites},
        "node_index": {
            zone: [NodeSummary(f"{zone}-gpu-{index:03}", zone, 8, ready=True, healthy_gpus=8) for index in range(2)]
            for zone in ("niemeyer", "de-halm")
        },
        "runner_pod_index": {},
        "workload_index": {
            body["status"]["site"]: [((NAMESPACE, body["metadata"]["name"]), body["status"]["epoch"], 2)] for body in placed
        },
        "workload_bodies": {(NAMESPACE, body["metadata"]["name"]): [body] for body in placed},
    }


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def sample(name: str, labels: dict[str, str]) -> float:
    return telemetry.METRICS.registry.get_sample_value(name, labels) or 0.0


def test_a_new_workload_is_a_reconcile_span_with_a_placement_span_and_both_carry_its_names(
    spans: InMemorySpanExporter, kube: RecordingKube
) -> None:
    placements = sample("gigafab_placement_duration_seconds_count", {"outcome": "placed"})
    runs = sample("gigafab_reconcile_duration_seconds_count", {"kind": "GpuWorkload", "handler": "workload_changed"})
    body = gpu_workload("cohort-study")

    workloads.workload_changed(body=body, name="cohort-study", namespace=NAMESPACE, status={}, **indexes())

    found = by_name(spans)
    reconcile, placement = found["reconcile GpuWorkload"], found["placement"]
    assert placement.parent is not None
    assert placement.parent.span_id == reconcile.context.span_id
    assert dict(reconcile.attributes or {}) == {
        "gigafab.kind": "GpuWorkload",
        "gigafab.handler": "workload_changed",
        "gigafab.workload": f"{NAMESPACE}/cohort-study",
        "gigafab.tenant": TENANT,
    }
    assert dict(placement.attributes or {}) == {
        "gigafab.workload": f"{NAMESPACE}/cohort-study",
        "gigafab.tenant": TENANT,
        "gigafab.site": "niemeyer",
        "gigafab.outcome": "placed",
    }
    assert any(kind == "ensure" and manifest["kind"] == "Deployment" for kind, manifest in kube.writes)
    assert sample("gigafab_placement_duration_seconds_count", {"outcome": "placed"}) == placements + 1
    assert sample("gigafab_reconcile_duration_seconds_count", {"kind": "GpuWorkload", "handler": "workload_changed"}) == runs + 1


def test_a_lost_site_is_a_failover_span_counted_with_its_reason_and_duration(
    spans: InMemorySpanExporter, kube: RecordingKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    contacts = Contacts()
    for module in (workloads, moves, telemetry):
        monkeypatch.setattr(module, "CONTACTS", contacts)
    contacts.gateway_up("niemeyer", ttl=5, fence_after=4)
    lost_at = time.time() - 60
    contacts.gateway_lost("niemeyer", lost_at)  # its lease ran out a minute ago: last contact 5 s before
    running = gpu_workload("trial", {"site": "niemeyer", "epoch": 1, "phase": "Running"})
    labels = {"site": "niemeyer", "reason": "site_lost"}
    failovers = sample("gigafab_failovers_total", labels)
    durations = sample("gigafab_failover_duration_seconds_sum", labels)

    lost = site("niemeyer", ["internal", "health"], healthy="False")
    workloads.site_failover(name="niemeyer", body=lost, **indexes(running, niemeyer_healthy="False"))

    found = by_name(spans)
    failover, placement = found["failover"], found["placement"]
    assert dict(failover.attributes or {}) == {
        "gigafab.site": "niemeyer",
        "gigafab.reason": "site_lost",
        "gigafab.workload": f"{NAMESPACE}/trial",
        "gigafab.tenant": TENANT,
        "gigafab.moved": True,
    }
    assert (placement.attributes or {})["gigafab.site"] == "de-halm"
    assert (placement.attributes or {})["gigafab.from_site"] == "niemeyer"
    assert found["reconcile Site"].attributes == {
        "gigafab.kind": "Site",
        "gigafab.handler": "site_failover",
        "gigafab.site": "niemeyer",
    }
    assert sample("gigafab_failovers_total", labels) == failovers + 1
    assert sample("gigafab_failover_duration_seconds_sum", labels) - durations >= 65  # from the last contact, not the check


def test_site_gauges_and_operator_metrics_render_in_the_text_format() -> None:
    telemetry.site_observed("de-halm", healthy_gpus=14, power_draw_kw=3.5, power_cap_kw=70000)
    families = {
        family.name: family for family in text_string_to_metric_families(generate_latest(telemetry.METRICS.registry).decode())
    }
    expected = {
        "gigafab_reconcile_duration_seconds": ("histogram", {"kind", "handler"}),
        "gigafab_placement_duration_seconds": ("histogram", {"outcome"}),
        "gigafab_failovers": ("counter", {"site", "reason"}),
        "gigafab_failover_duration_seconds": ("histogram", {"site", "reason"}),
        "gigafab_site_healthy_gpus": ("gauge", {"site"}),
        "gigafab_site_power_draw_kw": ("gauge", {"site"}),
        "gigafab_site_power_cap_kw": ("gauge", {"site"}),
    }
    for name, (kind, labels) in expected.items():
        assert families[name].type == kind
        assert families[name].documentation
        assert all(set(s.labels) - {"le"} == labels for s in families[name].samples)
    gauges = {
        (family.name, s.labels.get("site")): s.value
        for family in families.values()
        for s in family.samples
        if family.type == "gauge"
    }
    assert gauges[("gigafab_site_healthy_gpus", "de-halm")] == 14
    assert gauges[("gigafab_site_power_draw_kw", "de-halm")] == 3.5
    assert gauges[("gigafab_site_power_cap_kw", "de-halm")] == 70000
    handlers = {(s.labels["kind"], s.labels["handler"]) for s in families["gigafab_reconcile_duration_seconds"].samples}
    assert handlers >= {("GpuWorkload", "workload_changed"), ("Site", "site_failover"), ("Pod", "runner_pod_changed")}


class Counts:
    reports = 41
    refused = {"identity_mismatch": 2}  # noqa: RUF012 - a stand-in, never changed
    transitions = {"Failed": 1}  # noqa: RUF012
    streams = 3
    opened = {"resumed": 4}  # noqa: RUF012
    lag_seconds = 1.5
    connections_waiting = 7


def test_gateway_metrics_render_with_every_reason_from_zero() -> None:
    registry = gateway_registry("niemeyer", Counts(), ("identity_mismatch", "wrong_site", "oversized"), ("Healthy", "Failed"))
    text = generate_latest(registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families.values() for s in family.samples}
    assert values[("gigafab_gateway_reports_total", (("site", "niemeyer"),))] == 41
    assert values[("gigafab_gateway_rejected_calls_total", (("reason", "identity_mismatch"), ("site", "niemeyer")))] == 2
    assert values[("gigafab_gateway_rejected_calls_total", (("reason", "wrong_site"), ("site", "niemeyer")))] == 0
    assert values[("gigafab_gateway_transitions_total", (("site", "niemeyer"), ("to_state", "Failed")))] == 1
    assert values[("gigafab_gateway_transitions_total", (("site", "niemeyer"), ("to_state", "Healthy")))] == 0
    assert values[("gigafab_gateway_connected_agents", (("site", "niemeyer"),))] == 3
    assert "# HELP gigafab_gateway_reports_total Health reports" in text
    assert families["gigafab_gateway_connected_agents"].type == "gauge"
    assert values[("gigafab_gateway_lag_seconds", (("site", "niemeyer"),))] == 1.5
    assert values[("gigafab_gateway_waiting_connections", (("site", "niemeyer"),))] == 7
    assert values[("gigafab_gateway_opened_streams_total", (("handshake", "resumed"), ("site", "niemeyer")))] == 4
    assert values[("gigafab_gateway_opened_streams_total", (("handshake", "full"), ("site", "niemeyer")))] == 0
