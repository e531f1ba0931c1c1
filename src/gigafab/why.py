"""``gigafab why gpuworkload/NAME -n NS``: where a GpuWorkload runs, or why it does not.

Reads the workload's status (the operator's last decision) and prints every site's
verdict as a table, the chosen site first; ``-o json`` prints the same for scripts.
Exit codes: 0 placed, 3 pending (no site fits), 1 not found or unreadable, 2 usage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from gigafab.operator import conditions

PLACED, PENDING, MISSING, USAGE = 0, 3, 1, 2


def report(body: Mapping[str, Any]) -> dict[str, Any]:
    """What ``why`` says of one GpuWorkload, as data."""
    status = body.get("status") or {}
    placed = conditions.find(status.get("conditions"), "Placed")
    return {
        "name": body["metadata"]["name"],
        "namespace": body["metadata"].get("namespace", ""),
        "phase": status.get("phase") or "Unjudged",
        "site": status.get("site"),
        "epoch": status.get("epoch"),
        "message": placed.get("message") or "the operator has not judged this workload yet",
        "verdicts": [dict(v) for v in status.get("verdicts") or []],
    }


def table(said: Mapping[str, Any]) -> str:
    """The report for people: a headline and a site / verdict / reason table."""
    where = f"on {said['site']} (epoch {said['epoch']})" if said["site"] else "nowhere"
    lines = [f"gpuworkload/{said['name']} in {said['namespace']}: {said['phase']}, {where}", f"  {said['message']}", ""]
    rows = [("SITE", "VERDICT", "REASON")] + [(v["site"], v["verdict"], v["reason"]) for v in said["verdicts"]]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    lines += [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}" for row in rows]
    return "\n".join(lines)


def exit_code(said: Mapping[str, Any]) -> int:
    return PLACED if said["site"] else PENDING


def run(target: str, namespace: str, kubeconfig: str | None, output: str) -> int:
    """Fetch, print, and return the exit code."""
    kind, _, name = target.partition("/")
    if kind not in ("gpuworkload", "gpuworkloads", "gw") or not name:
        print(f"gigafab why: expected gpuworkload/NAME, not {target!r}", file=sys.stderr)
        return USAGE
    body = _fetch(name, namespace, kubeconfig)
    if body is None:
        print(f"gigafab why: gpuworkload/{name} not found in namespace {namespace}", file=sys.stderr)
        return MISSING
    said = report(body)
    print(json.dumps(said, indent=2) if output == "json" else table(said))
    return exit_code(said)


def _fetch(name: str, namespace: str, kubeconfig: str | None) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    from gigafab.connect import custom_objects

    try:
        found = custom_objects(kubeconfig).get_namespaced_custom_object("gigafab.nl", "v1alpha1", namespace, "gpuworkloads", name)
    except ApiException as failure:
        if failure.status == 404:
            return None
        raise
    return found if isinstance(found, dict) else None
