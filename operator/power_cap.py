"""Power caps: each Site's placed power in status, and work shed when a cap is lowered.

A timer per Site (every second) adds up the power of the work placed there
(``power.draw_kw``) and writes ``status.powerDrawKW`` when it changed. When the draw
is above ``min(powerBudgetKW, powerCapKW)``, say after a grid operator's request
lowered the cap, ``power.to_shed`` picks the work to take off, lowest first, and
each goes through placement as a move away from the site (its own power still
counted there, so it cannot land on it again); what fits nowhere is suspended.
Placement never puts work on a site without power headroom, so moves, failovers and
reclaims keep every site within its cap.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import kopf
from gigafab.operator import allocation, telemetry
from gigafab.operator.allocation import held_gpus
from gigafab.operator.borrowing import borrowed_workloads
from gigafab.operator.power import PlacedWork, draw_kw, placed_kw, to_shed, why
from gigafab.operator.runner_pods import Key
from gigafab.operator.state import Client, custom_path, first
from gigafab.operator.workload_plan import gpu_watts
from gigafab.operator.workloads import place_workload

from gigafab.api.v1alpha1 import SiteSpec

SHED_SECONDS = 10.0
"""A workload just shed is not shed again while the watch catches up with its move."""
_shed: dict[Key, float] = {}


@kopf.timer("gigafab.nl", "v1alpha1", "sites", interval=1.0)
@telemetry.reconciles("Site")
def site_power(name: str, body: kopf.Body, status: kopf.Status, **kwargs: Any) -> None:
    spec = SiteSpec.from_body(body.get("spec"))
    watts = gpu_watts(spec, kwargs["node_index"].get(spec.zone or name, []))
    bodies = kwargs["workload_bodies"]
    work = []
    for key, _, gpus in kwargs["workload_index"].get(name, []):
        workload = first(bodies, key)
        if workload is None or (workload.get("status") or {}).get("phase") == "Pending":
            continue
        criticality = str((workload.get("spec") or {}).get("criticality", "standard"))
        work.append(PlacedWork(key, criticality, False, placed_kw(gpus, watts)))
    draw = draw_kw(work)
    if status.get("powerDrawKW") != draw:
        Client.get().merge_patch(custom_path("sites", name, subresource="status"), {"status": {"powerDrawKW": draw}})
    limit = float(spec.effective_power_kw)
    telemetry.site_observed(name, power_draw_kw=draw, power_cap_kw=limit)
    if draw <= limit:
        return
    borrowed = borrowed_workloads(held_gpus(kwargs), allocation.QUOTAS, name)  # only over the cap: it walks every pod
    work = [replace(item, borrowed=item.key in borrowed) for item in work]
    now = time.monotonic()
    for key, at in list(_shed.items()):
        if now - at > SHED_SECONDS:
            del _shed[key]
    for item in to_shed(work, limit):
        workload = first(bodies, item.key)
        if workload is None or item.key in _shed or (workload.get("status") or {}).get("move"):
            continue
        _shed[item.key] = now
        place_workload(workload, kwargs, leaving=(name, why(item, name, draw, limit)), shedding=True)
