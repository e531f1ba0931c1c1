"""Metrics (Prometheus) and traces (OpenTelemetry) of the operator and the health gateways.

``metrics`` defines every metric and serves a registry over HTTP; ``tracing`` sets up the
tracer (OTLP over gRPC, off unless an endpoint is given) and the ``span`` helper. Both are
leaves: they import nothing else of gigafab, and the operator and the gateway use them at
their edges only (handlers, the gRPC servicer).
"""
