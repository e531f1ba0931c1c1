"""``gigafab status``: the facility at a glance — sites, tenants, workloads.

Sites with their healthy nodes and GPUs, placed power against the cap; tenants with
their track and GPU use; every GpuWorkload with its phase and where it runs. Tables
for people, ``-o json`` for scripts.

Exit codes: 0 all is well; 3 something needs a look (an Active site not Ready or not
Healthy, a workload Pending, FailingOver or Failed); 1 the cluster cannot be read; 2 usage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gigafab.operator import conditions

WELL, ATTENTION, UNREADABLE = 0, 3, 1
TROUBLED_PHASES = frozenset({"Pending", "FailingOver", "Failed"})

Body = Mapping[str, Any]


def _condition(body: Body, kind: str) -> str:
    return str(conditions.find((body.get("status") or {}).get("conditions"), kind).get("status", "Unknown"))


def site_row(body: Body) -> dict[str, Any]:
    spec, status = body.get("spec") or {}, body.get("status") or {}
    limits = [value for value in (spec.get("powerBudgetKW"), spec.get("powerCapKW")) if value is not None]
    return {
        "name": body["metadata"]["name"],
        "lifecycle": spec.get("lifecycle", "Active"),
        "ready": _condition(body, "Ready"),
        "healthy": _condition(body, "Healthy"),
        "nodes": status.get("nodes", 0),
        "nodesReady": status.get("nodesReady", 0),
        "gpus": status.get("gpus", 0),
        "gpusHealthy": status.get("gpusHealthy", 0),
        "powerDrawKW": status.get("powerDrawKW", 0),
        "powerLimitKW": min(limits) if limits else None,
    }


def tenant_row(body: Body) -> dict[str, Any]:
    spec, status = body.get("spec") or {}, body.get("status") or {}
    return {
        "name": body["metadata"]["name"],
        "track": spec.get("track"),
        "namespaces": list(status.get("namespaces") or []),
        "gpusUsed": status.get("gpusUsed", 0),
        "gpuQuota": status.get("gpuQuota", (spec.get("quota") or {}).get("gpus")),
        "ready": _condition(body, "Ready"),
    }


def workload_row(body: Body) -> dict[str, Any]:
    spec, status = body.get("spec") or {}, body.get("status") or {}
    return {
        "namespace": body["metadata"].get("namespace", ""),
        "name": body["metadata"]["name"],
        "criticality": spec.get("criticality", "standard"),
        "gpus": int(spec.get("gpus", 0)) * int(spec.get("replicas", 1)),
        "phase": status.get("phase") or "Unjudged",
        "site": status.get("site"),
        "epoch": status.get("epoch"),
    }


def report(sites: Iterable[Body], tenants: Iterable[Body], workloads: Iterable[Body]) -> dict[str, Any]:
    """What ``status`` says, as data, with the problems that set its exit code."""
    said: dict[str, Any] = {
        "sites": sorted((site_row(body) for body in sites), key=lambda row: row["name"]),
        "tenants": sorted((tenant_row(body) for body in tenants), key=lambda row: row["name"]),
        "workloads": sorted((workload_row(body) for body in workloads), key=lambda row: (row["namespace"], row["name"])),
    }
    problems = [problem for problem in map(_site_problem, said["sites"]) if problem]
    problems += [
        f"gpuworkload {row['namespace']}/{row['name']} is {row['phase']}"
        for row in said["workloads"]
        if row["phase"] in TROUBLED_PHASES
    ]
    said["problems"] = problems
    return said


def _site_problem(row: Mapping[str, Any]) -> str | None:
    """Only an Active site is expected to be Ready and Healthy (a Planned or Draining one is not)."""
    if row["lifecycle"] != "Active":
        return None
    if row["ready"] != "True":
        return f"site {row['name']} is not Ready"
    if row["healthy"] != "True":
        return f"site {row['name']} is not Healthy"
    return None


def exit_code(said: Mapping[str, Any]) -> int:
    return ATTENTION if said["problems"] else WELL


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(header) for header in headers]] + [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in cells]


def tables(said: Mapping[str, Any]) -> str:
    """The report for people: three tables and the problems, if any."""
    sites = [
        (
            s["name"],
            s["lifecycle"],
            s["ready"],
            s["healthy"],
            f"{s['nodesReady']}/{s['nodes']}",
            f"{s['gpusHealthy']}/{s['gpus']}",
            f"{s['powerDrawKW']:g}",
            "-" if s["powerLimitKW"] is None else f"{s['powerLimitKW']:g}",
        )
        for s in said["sites"]
    ]
    tenants = [
        (t["name"], t["track"], ",".join(t["namespaces"]), f"{t['gpusUsed']}/{t['gpuQuota']}", t["ready"])
        for t in said["tenants"]
    ]
    workloads = [
        (w["namespace"], w["name"], w["criticality"], w["gpus"], w["phase"], w["site"], w["epoch"]) for w in said["workloads"]
    ]
    lines = _table(("SITE", "LIFECYCLE", "READY", "HEALTHY", "NODES", "GPUS", "DRAW-KW", "LIMIT-KW"), sites)
    lines += ["", *_table(("TENANT", "TRACK", "NAMESPACES", "GPUS", "READY"), tenants)]
    lines += ["", *_table(("NAMESPACE", "WORKLOAD", "CRITICALITY", "GPUS", "PHASE", "SITE", "EPOCH"), workloads)]
    if said["problems"]:
        lines += ["", "needs a look:", *(f"  - {problem}" for problem in said["problems"])]
    return "\n".join(lines)


def run(kubeconfig: str | None, output: str) -> int:
    """Read the cluster, print, and return the exit code."""
    from gigafab.connect import custom_objects

    try:
        api = custom_objects(kubeconfig)
        listed = {
            plural: api.list_cluster_custom_object("gigafab.nl", "v1alpha1", plural)["items"]
            for plural in ("sites", "tenants", "gpuworkloads")
        }
    except Exception as failure:  # any failure to read is reported the same way
        print(f"gigafab status: cannot read the cluster: {failure}", file=sys.stderr)
        return UNREADABLE
    said = report(listed["sites"], listed["tenants"], listed["gpuworkloads"])
    print(json.dumps(said, indent=2) if output == "json" else tables(said))
    return exit_code(said)
