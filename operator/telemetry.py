"""The operator's metrics and spans, taken at its edges: kopf handlers, placements, failovers.

- ``reconciles(kind)`` wraps a kopf handler: each run is a span ``reconcile <kind>`` and an
  observation of ``gigafab_reconcile_duration_seconds{kind, handler}``;
- ``placing`` is the span of one placement, and ``placement_decided`` times its decision;
- ``fail_over`` (and ``resume_failover``, for work that waited Pending) is the span of one failover
  and counts it once the work is placed elsewhere;
- ``site_observed`` keeps the per-site gauges (healthy GPUs, power draw and cap);
- ``health_record_refused`` counts a health record the operator did not apply (``health_records``).

Spans carry ``gigafab.site``, ``gigafab.tenant`` and ``gigafab.workload`` (namespace/name)
where they apply. The decisions themselves (``placement``, ``failover``) stay pure.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from gigafab.agents.fencing import WORKLOAD_LABEL
from gigafab.operator import conditions
from gigafab.operator.conditions import seconds_of
from gigafab.operator.failover import Cause
from gigafab.operator.health_records import Refusal
from gigafab.operator.placement import Decision
from gigafab.operator.site_contact import CONTACTS
from gigafab.operator.site_health import ZONE_LABEL
from gigafab.operator.state import first
from gigafab.operator.tenancy import TENANT_LABEL

from gigafab.telemetry import tracing
from gigafab.telemetry.metrics import OperatorMetrics

METRICS = OperatorMetrics()
"""The operator's one registry, served by ``gigafab operator --metrics-address``."""
for _reason in Refusal:  # exported from 0, so that a rate exists before the first refusal
    METRICS.health_records_refused.labels(str(_reason))
Handler = TypeVar("Handler", bound=Callable[..., Any])
_placement_started: ContextVar[float | None] = ContextVar("placement_started", default=None)
_nothing = contextlib.nullcontext()


def reconciles(kind: str, handler: str | None = None) -> Callable[[Handler], Handler]:
    """Measure every run of the decorated (synchronous) kopf handler; ``handler``: its name in the
    metrics (default: the function's). Put it below kopf's decorators."""

    def decorate(function: Handler) -> Handler:
        name = handler or function.__name__
        timing = METRICS.reconcile_seconds.labels(kind, name)

        @functools.wraps(function)
        def reconcile(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                if not tracing.enabled():
                    return function(*args, **kwargs)
                with tracing.span(f"reconcile {kind}", kind=kind, handler=name, **attributes(kind, kwargs)):
                    return function(*args, **kwargs)
            finally:
                timing.observe(time.perf_counter() - started)

        return cast(Handler, reconcile)

    return decorate


def attributes(kind: str, kwargs: Mapping[str, Any]) -> dict[str, str | None]:
    """Site, tenant and workload of what a handler was called for, from kopf's arguments."""
    name, namespace = kwargs.get("name"), kwargs.get("namespace")
    labels: Mapping[str, str] = kwargs.get("labels") or {}
    found: dict[str, str | None] = {}
    if kind == "Site":
        found["site"] = name
    elif kind == "Tenant":
        found["tenant"] = name
    elif kind == "GpuWorkload":
        found["workload"] = f"{namespace}/{name}"
        found["site"] = (kwargs.get("status") or {}).get("site")
    if WORKLOAD_LABEL in labels:
        found["workload"] = f"{namespace}/{labels[WORKLOAD_LABEL]}"
    if TENANT_LABEL in labels:
        found["tenant"] = labels[TENANT_LABEL]
    elif namespace and "tenant" not in found and "namespace_index" in kwargs:
        found["tenant"] = first(kwargs["namespace_index"], namespace)
    if ZONE_LABEL in labels and "site_index" in kwargs:
        site = first(kwargs["site_index"], labels[ZONE_LABEL])
        found["site"] = site["name"] if site is not None else labels[ZONE_LABEL]
    return found


def _workload(body: Mapping[str, Any], indexes: Mapping[str, Any]) -> dict[str, str | None]:
    meta = body["metadata"]
    tenant = first(indexes["namespace_index"], meta["namespace"]) if "namespace_index" in indexes else None
    return {"workload": f"{meta['namespace']}/{meta['name']}", "tenant": tenant}


@contextlib.contextmanager
def placing(body: Mapping[str, Any], indexes: Mapping[str, Any], leaving: tuple[str, str] | None) -> Iterator[None]:
    """One placement of ``body`` (moving away from ``leaving``'s site, if given): its span, and the
    start of its decision's time (``placement_decided``)."""
    started = _placement_started.set(time.perf_counter())
    try:
        leaves = leaving[0] if leaving else None
        with tracing.span("placement", from_site=leaves, **_workload(body, indexes)) if tracing.enabled() else _nothing:
            yield
    finally:
        _placement_started.reset(started)


def placement_decided(decision: Decision) -> None:
    """The decision of the current placement was taken: its time since ``placing`` began (the wait for
    the placement lock, the snapshot and the judgement of every site), and its outcome."""
    outcome = "placed" if decision.site is not None else "no_site_fits"
    started = _placement_started.get()
    if started is not None:
        METRICS.placement_seconds.labels(outcome).observe(time.perf_counter() - started)
    tracing.annotate(site=decision.site, outcome=outcome)


def fail_over(
    body: Mapping[str, Any], indexes: Mapping[str, Any], site: str, cause: Cause, since: float, move: Callable[[], bool]
) -> bool:
    """Run ``move`` (a placement away from ``site``) as one failover; counted when it placed the work
    elsewhere, with the seconds since ``since`` (wall clock), when the trouble began."""
    with tracing.span("failover", site=site, reason=str(cause), **_workload(body, indexes)) as current:
        moved = move()
        current.set_attribute("gigafab.moved", moved)
    if moved:
        METRICS.failovers.labels(site, str(cause)).inc()
        METRICS.failover_seconds.labels(site, str(cause)).observe(max(0.0, time.time() - since))
    return moved


def resume_failover(body: Mapping[str, Any], indexes: Mapping[str, Any], site: str, lost: bool, move: Callable[[], bool]) -> bool:
    """``fail_over`` for work that left ``site`` and waited Pending for room elsewhere: the trouble began
    when the site was lost or, when it is not, when the work went Pending."""
    cause = Cause.SITE_LOST if lost else Cause.NO_ROOM
    pending = conditions.find((body.get("status") or {}).get("conditions"), "Placed").get("lastTransitionTime")
    now = time.time()
    went = seconds_of(str(pending or ""))
    return fail_over(body, indexes, site, cause, trouble_since(cause, site, None, now - went if went else None, now), move)


def trouble_since(cause: Cause, site: str, site_body: Mapping[str, Any] | None, waited: float | None, now: float) -> float:
    """When the trouble behind ``cause`` began (wall clock): the site's loss (``CONTACTS``), the start
    of its Draining (its Ready condition), or ``waited`` seconds ago (replicas unschedulable)."""
    if cause is Cause.SITE_LOST:
        lost = CONTACTS.lost_since(site)
        return lost if lost is not None else now
    if cause is Cause.SITE_DRAINING and site_body is not None:
        ready = conditions.find((site_body.get("status") or {}).get("conditions"), "Ready")
        if ready.get("reason") == "Draining":
            return seconds_of(str(ready.get("lastTransitionTime") or "")) or now
    return now - (waited or 0.0)


def site_observed(
    site: str, *, healthy_gpus: int | None = None, power_draw_kw: float | None = None, power_cap_kw: float | None = None
) -> None:
    """Set the gauges of ``site`` that were given."""
    for gauge, value in (
        (METRICS.healthy_gpus, healthy_gpus),
        (METRICS.power_draw_kw, power_draw_kw),
        (METRICS.power_cap_kw, power_cap_kw),
    ):
        if value is not None:
            gauge.labels(site).set(value)


def health_record_refused(reason: str) -> None:
    """A health record was not applied, for ``reason`` (a ``health_records.Refusal``)."""
    METRICS.health_records_refused.labels(reason).inc()
