"""GpuWorkload handlers: place new work on a lawful site and start it there.

A GpuWorkload without a site is judged by ``placement.place`` against a snapshot
built from memory (Sites, nodes by zone, GPUs in use by gigafab pods, GPUs placed by
site). When a site fits, the Deployment for the current epoch is created with the
site's node affinity and the status says where and why; when none fits, the workload stays
Pending with every site's reason and a hint, and is judged again every 10 s. Each
decision is an Event on the GpuWorkload and a log line.

Moving placed work (failover, draining) is not built yet: a placed workload keeps
its site.
"""

from __future__ import annotations

from typing import Any

import kopf
from gigafab.operator import audit, conditions
from gigafab.operator.conditions import Condition, now_rfc3339
from gigafab.operator.placement import Decision, TenantView, WorkloadView, place
from gigafab.operator.state import Client, first
from gigafab.operator.workload_plan import WORKLOAD_LABEL, pod_gpus, runner_for, site_views

from gigafab.api.v1alpha1 import GpuWorkloadSpec, SiteSpec

GROUP, VERSION, PLURAL = "gigafab.nl", "v1alpha1", "gpuworkloads"


@kopf.index("", "v1", "pods", labels={WORKLOAD_LABEL: kopf.PRESENT})
def workload_pod_index(spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, int]:
    """GPUs held by gigafab pods, by node."""
    node = spec.get("nodeName")
    if not node or status.get("phase") in ("Succeeded", "Failed"):
        return {}
    return {str(node): pod_gpus(dict(spec))}


@kopf.index(GROUP, VERSION, PLURAL)
def workload_index(spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, int]:
    """GPUs placed, by site."""
    site = status.get("site")
    if not site:
        return {}
    return {str(site): int(spec.get("gpus", 0)) * int(spec.get("replicas", 1))}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def workload_changed(body: kopf.Body, **kwargs: Any) -> None:
    if not (body.get("status") or {}).get("site"):
        place_workload(dict(body), kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=10, idle=5)
def pending_retry(body: kopf.Body, **kwargs: Any) -> None:
    if (body.get("status") or {}).get("phase") == "Pending":
        place_workload(dict(body), kwargs)


def place_workload(body: dict[str, Any], indexes: dict[str, Any]) -> None:
    meta = body["metadata"]
    spec = GpuWorkloadSpec.from_body(body.get("spec"))
    tenant_name = first(indexes["namespace_index"], meta["namespace"]) or ""
    record = first(indexes["tenant_index"], tenant_name) if tenant_name else None
    if record is None:
        _pending(body, None, f"namespace {meta['namespace']} belongs to no Tenant; GpuWorkloads run in tenant namespaces")
        return
    tenant_spec = record.spec
    workload = WorkloadView(
        name=meta["name"],
        gpus=spec.gpus,
        replicas=spec.replicas,
        data_class=str(spec.data_class or tenant_spec.get("dataClass", "internal")),
        preferred_sites=tuple(spec.sites),
        current_site=None,
    )
    sites = [entry["body"] for store in indexes["site_index"].values() for entry in store]
    in_use = {node: sum(store) for node, store in indexes["workload_pod_index"].items()}
    placed = {site: sum(store) for site, store in indexes["workload_index"].items()}
    views = site_views(sites, indexes["node_index"], in_use, placed)
    decision = place(views, workload, TenantView(tenant_name, frozenset(tenant_spec.get("allowedSites") or [])))
    if decision.site is None:
        _pending(body, decision, decision.message)
        return
    chosen = next(site for site in sites if site["metadata"]["name"] == decision.site)
    zone = SiteSpec.from_body(chosen.get("spec")).zone or decision.site
    epoch = int((body.get("status") or {}).get("epoch") or 0) + 1
    Client.get().ensure(runner_for(body, zone, decision.site, epoch))
    _write_status(
        body,
        decision,
        {
            "site": decision.site,
            "phase": "Placed",
            "epoch": epoch,
            "placements": [
                *((body.get("status") or {}).get("placements") or [])[-31:],
                {"site": decision.site, "epoch": epoch, "at": now_rfc3339(), "reason": decision.message[:1024]},
            ],
        },
        Condition("Placed", True, "Placed", decision.message),
    )
    audit.normal(body, "Placed", f"epoch {epoch}: {decision.message}")


def _pending(body: dict[str, Any], decision: Decision | None, message: str) -> None:
    status = body.get("status") or {}
    if status.get("phase") == "Pending" and conditions.status_of(status.get("conditions"), "Placed") == "False":
        previous: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Placed"), {})
        if previous.get("message") == message:
            return  # nothing new to say
    _write_status(body, decision, {"phase": "Pending"}, Condition("Placed", False, "NoSiteFits", message))
    audit.warning(body, "NoSiteFits", message)


def _write_status(body: dict[str, Any], decision: Decision | None, fields: dict[str, Any], placed: Condition) -> None:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    status = body.get("status") or {}
    ranked = decision.verdicts if decision else ()
    verdicts = [{"site": v.site, "verdict": str(v.rule), "reason": v.reason[:1024]} for v in ranked]
    patch = {
        **fields,
        "observedGeneration": generation,
        "verdicts": verdicts,
        "conditions": conditions.merge(status.get("conditions"), [placed], generation),
    }
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}/status"
    Client.get().merge_patch(path, {"status": patch})
