"""Traces over a real OTLP/gRPC connection: a TraceService receiver (opentelemetry-proto's own
stubs) on a loopback socket, the operator's exporter pointed at it as ``--otlp-endpoint`` would,
and a real handler's span arriving there with the operator's service name and its attributes."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from gigafab.operator import telemetry
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from gigafab.telemetry import tracing


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: queue.Queue[trace_service_pb2.ExportTraceServiceRequest] = queue.Queue()

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any) -> Any:
        self.requests.put(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    keeper = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(keeper, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield keeper, port
    server.stop(None)


def values(attributes: list[KeyValue]) -> dict[str, Any]:
    return {item.key: getattr(item.value, item.value.WhichOneof("value")) for item in attributes}


def test_a_reconcile_span_reaches_a_real_otlp_receiver(receiver: tuple[Receiver, int]) -> None:
    keeper, port = receiver

    @telemetry.reconciles("Site")
    def site_checked(name: str, **_: Any) -> None:
        """Stands for a Site handler."""

    provider = tracing.configure("gigafab-operator", f"http://127.0.0.1:{port}")
    assert provider is not None
    try:
        site_checked(name="niemeyer", namespace=None)
    finally:
        provider.shutdown()  # flushes the batch: the export is over when it returns
        tracing.install(None)
    request = keeper.requests.get(timeout=10)
    resource = request.resource_spans[0]
    assert values(list(resource.resource.attributes))["service.name"] == "gigafab-operator"
    span = resource.scope_spans[0].spans[0]
    assert resource.scope_spans[0].scope.name == "gigafab"
    assert span.name == "reconcile Site"
    assert values(list(span.attributes)) == {
        "gigafab.kind": "Site",
        "gigafab.handler": "site_checked",
        "gigafab.site": "niemeyer",
    }
