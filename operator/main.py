"""Run the operator: ``gigafab operator`` (kopf, cluster-wide)."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from gigafab.operator import (  # noqa: F401 - registers handlers
    allocation,
    drift,
    egress,
    health_watch,
    indexes,
    power_cap,
    sites,
    telemetry,
    tenants,
    workloads,
)
from gigafab.operator.state import Client, cluster_networks

from gigafab.telemetry import tracing
from gigafab.telemetry.metrics import serve


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """A kubeconfig (``--kubeconfig`` or ``$KUBECONFIG``) first, else the pod's ServiceAccount."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Operator settings, in one place."""
    settings.posting.level = logging.WARNING  # kopf's per-handler events off; ours are explicit
    settings.execution.max_workers = 48
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf runs a worker per object with events; bound them and let idle ones go soon,
    # so a burst of thousands of tenants and their objects costs bounded memory.
    settings.batching.worker_limit = 200
    settings.batching.idle_timeout = 0.5
    settings.persistence.finalizer = "gigafab.nl/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gigafab.nl")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="gigafab.nl", key="last-handled-configuration")
    cluster_networks()  # a bad $GIGAFAB_CLUSTER_NETWORKS stops the operator here, saying what to fix
    Client.get()


def run(
    kubeconfig: str | None,
    liveness: str | None,
    *,
    verbose: bool = False,
    peering: str | None = None,
    priority: int = 0,
    metrics_address: str | None = None,
    otlp_endpoint: str | None = None,
) -> None:
    """Run until stopped. With ``peering``, instances that share the ClusterKopfPeering of that name
    see each other: the one with the highest ``priority`` acts and the others pause (equal priorities
    all pause, so two never act at once). ``metrics_address`` (HOST:PORT) serves Prometheus metrics;
    ``otlp_endpoint`` (or $OTEL_EXPORTER_OTLP_ENDPOINT) exports traces (see docs/observability.md)."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if metrics_address:
        serve(telemetry.METRICS.registry, metrics_address)
    traces = tracing.configure("gigafab-operator", otlp_endpoint)
    try:
        kopf.run(
            clusterwide=True,
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=liveness,
        )
    finally:
        if traces is not None:
            traces.shutdown()  # flushes the last spans
